"""`python -m data_pipeline.synthmusic`: see data_pipeline.synthmusic.generator.main."""

from data_pipeline.synthmusic import generator

generator.main()
