"""Builds the TFDS version of SynthMUSIC, MUSIC21 or MUSIC (see loading/tfds_builders.py).

  python -m data_pipeline.loading.build_tfds --dataset synthmusic --size tiny --data_dir DIR \
      [--manual_dir GENERATED_ROOT]        # without it the builder generates SynthMUSIC itself
  python -m data_pipeline.loading.build_tfds --dataset music21 --manual_dir ROOT --data_dir DIR
  python -m data_pipeline.loading.build_tfds --dataset music --manual_dir ROOT --data_dir DIR

ROOT is what `python -m data_pipeline.ingest` wrote. Add --skip_bad_clips to leave bad clips
out (counted in the report and the dataset's metadata) instead of failing. Then train from it with
config.data.source = "tfds", config.data.tfds_name = "<dataset>[/<size>]" and
config.data.tfds_data_dir = DIR. The builders also work with the tfds CLI where apache_beam is
installed (tfds 4.9.10's `tfds build` imports it; the project does not pin it):
  tfds build --imports data_pipeline.loading.tfds_builders synthmusic --config tiny --data_dir DIR \
      --file_format array_record [--manual_dir ROOT]
(there, TRIBERT_TFDS_SKIP_BAD_CLIPS=1 skips bad clips).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build(dataset: str, *, data_dir: str, size: str = "tiny", manual_dir: str | None = None,
          skip_bad_clips: bool = False, file_format: str = "array_record",
          overwrite: bool = False):
  """Builds (or reuses) one dataset; returns (builder, build report dict)."""
  import tensorflow_datasets as tfds

  from data_pipeline.loading import tfds_builders

  if dataset not in tfds_builders.BUILDERS:
    raise ValueError(f"unknown dataset {dataset!r}, expected one of "
                     f"{sorted(tfds_builders.BUILDERS)}")
  builder_class = tfds_builders.BUILDERS[dataset]
  kwargs: dict[str, Any] = {}
  if dataset == "synthmusic":
    kwargs["config"] = size
  elif not manual_dir:
    raise ValueError(f"--manual_dir is required for {dataset}:\n"
                     f"{builder_class.MANUAL_DOWNLOAD_INSTRUCTIONS}")
  builder = builder_class(data_dir=data_dir, file_format=file_format,
                          skip_bad_clips=skip_bad_clips, **kwargs)
  mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, download_mode=mode))
  report = builder.build_report or dict(builder.info.metadata.get("build_report", {}))
  return builder, report


def format_report(builder, report: dict[str, Any], data_dir: str) -> str:
  """Human-readable build summary."""
  lines = [f"{builder.name}/{builder.builder_config.name if builder.builder_config else ''} "
           f"{builder.version} in {builder.data_dir}",
           f"  source: {report.get('source_root')}"]
  splits = builder.info.splits
  for split in ("train", "val", "test"):
    lines.append(f"  {split:<6}{splits[split].num_examples:>7} clips "
                 f"({report.get('clips', {}).get(split, '?')} in the index)")
  skipped = report.get("skipped", {})
  lines.append(f"  skipped bad clips: {sum(skipped.values())}"
               + (" (" + ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())) + ")"
                  if skipped else ""))
  for line in report.get("bad_files", [])[:20]:
    lines.append(f"    {line}")
  if len(report.get("bad_files", [])) > 20:
    lines.append(f"    ... and {len(report['bad_files']) - 20} more (metadata.json)")
  config = builder.builder_config.name if builder.builder_config else None
  name = f"{builder.name}/{config}" if config and builder.name == "synthmusic" else builder.name
  lines.append(f'  use it: config.data.source = "tfds", config.data.tfds_name = "{name}", '
               f'config.data.tfds_data_dir = "{data_dir}"')
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry point; returns the exit status."""
  parser = argparse.ArgumentParser(prog="python -m data_pipeline.loading.build_tfds",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--dataset", required=True, choices=("synthmusic", "music21", "music"))
  parser.add_argument("--size", default="tiny", choices=("tiny", "default", "large"),
                      help="SynthMUSIC builder config")
  parser.add_argument("--data_dir", required=True, help="TFDS data_dir to write")
  parser.add_argument("--manual_dir", default=None,
                      help="dataset root in the shared layout (preprocess output; for SynthMUSIC "
                           "an already generated root of --size)")
  parser.add_argument("--skip_bad_clips", action="store_true",
                      help="leave bad clips out and count them instead of failing")
  parser.add_argument("--file_format", default="array_record",
                      choices=("array_record", "tfrecord"),
                      help="array_record (random access; what the input pipeline reads) or "
                           "tfrecord (streaming readers only)")
  parser.add_argument("--overwrite", action="store_true", help="rebuild an existing version")
  args = parser.parse_args(argv)
  try:
    builder, report = build(args.dataset, data_dir=args.data_dir, size=args.size,
                            manual_dir=args.manual_dir, skip_bad_clips=args.skip_bad_clips,
                            file_format=args.file_format, overwrite=args.overwrite)
  except (ValueError, FileNotFoundError) as error:  # BadClipsError lists every bad file
    print(f"error: {error}", file=sys.stderr)
    return 1
  print(format_report(builder, report, args.data_dir))
  return 0


if __name__ == "__main__":
  sys.exit(main())
