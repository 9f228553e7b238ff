"""`python -m data_pipeline.ingest`: see data_pipeline.ingest.cli."""

import sys

from data_pipeline.ingest import cli

sys.exit(cli.main())
