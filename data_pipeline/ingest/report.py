"""The ingestion report: failure kinds (every failed clip lands in exactly one counter) and the
human-readable closing summary of preprocess_report.json."""

from __future__ import annotations

import pathlib
from typing import Any

from data_pipeline.ingest.decode import MIN_FRAME_SIDE

# Every failed clip lands in exactly one of these report counters.
FAILURE_KINDS = ("unlabelled", "missing_video", "unreadable", "no_video", "no_audio",
                 "too_small", "too_short", "silent_audio", "no_pose", "bad_pose")
FAILURE_HELP = {
    "unlabelled": "id listed in a split file but in no label JSON",
    "missing_video": "in the label JSON and a split file, but no video file was found",
    "unreadable": "ffmpeg cannot decode it (corrupt or truncated)",
    "no_video": "no video stream",
    "no_audio": "no audio stream",
    "too_small": f"frame short side below {MIN_FRAME_SIDE} px (pass --short_side 256)",
    "too_short": "shorter than --min_seconds",
    "silent_audio": "the audio track is digital silence",
    "no_pose": "no AlphaPose JSON in --pose_dir",
    "bad_pose": "the AlphaPose JSON is malformed",
    # not a failure: clips in the index with an empty pose column
    "without_pose": "in the index without pose file (no --pose_dir, or --keep_without_pose)",
}


def format_report(report: dict[str, Any], list_failures: bool = True) -> str:
  """Human-readable closing report (the first failures of each kind unless list_failures=False)."""
  counts = report["counts"]
  lines = [f"preprocess report for {report['out']} ({report['dataset']})"]
  for key in ("listed", "processed", "skipped_done", *FAILURE_KINDS, "in_index",
              "without_pose", "labelled_not_in_split"):
    if key not in counts:  # reports written before the key existed
      continue
    note = f"  ({FAILURE_HELP[key]})" if key in FAILURE_HELP and counts[key] else ""
    lines.append(f"  {key:<22}{counts[key]:>7}{note}")
  lines.append("  splits: " + ", ".join(f"{k}={v}" for k, v in report["splits"].items())
               + (" (val carved from train)" if report["val_carved_from_train"] else ""))
  if report["mixtures"]:
    lines.append("  mixtures: " + ", ".join(f"{k}={v}" for k, v in report["mixtures"].items()))
  for kind, items in report["failures"].items() if list_failures else ():
    for failure in items[:10]:
      lines.append(f"  [{kind}] {failure['reason']}")
    if len(items) > 10:
      lines.append(f"  [{kind}] ... and {len(items) - 10} more")
  for warning in report["warnings"][:10]:
    lines.append(f"  warning: {warning}")
  if len(report["warnings"]) > 10:
    lines.append(f"  ... and {len(report['warnings']) - 10} more warnings")
  lines.append(f"  full report: {pathlib.Path(report['out']) / 'preprocess_report.json'}")
  return "\n".join(lines)
