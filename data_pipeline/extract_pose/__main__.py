"""`python -m data_pipeline.extract_pose`: see data_pipeline.extract_pose.cli."""

import sys

from data_pipeline.extract_pose import cli

sys.exit(cli.main())
