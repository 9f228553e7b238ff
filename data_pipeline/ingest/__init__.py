"""Real-video ingestion (MUSIC21 / MUSIC): label and split lists (labels), decoding with resume
markers (decode), AlphaPose import (pose_import), the report (report) and the command line (cli):

  python -m data_pipeline.ingest --videos DIR --out ROOT --split_dir SPLITS ...
"""
