"""`python -m data_pipeline.extract_pose`: whole-body pose for the stored frames of a dataset root.

  python -m data_pipeline.extract_pose --root /data/music21 \
      --det_model yolox_m_humanart.onnx --pose_model rtmw-dw-x-l_256x192.onnx
  # or let rtmlib fetch its default models (network needed, cached in ~/.cache/rtmlib):
  python -m data_pipeline.extract_pose --root /data/music21 --download balanced

then make the index point at the pose files (frames are skipped; the pose was computed on the
stored frames, hence --pose_on_frames):

  python -m data_pipeline.ingest ...the same flags... --pose_dir /data/music21/pose --pose_on_frames

Exit status: 0 done (videos without any person are named in the report, not errors), 1 some
videos failed (unreadable frames; named, the others were processed), 2 usage or model errors
(one `error:` line naming the file or flag; nothing was written).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from data_pipeline.extract_pose import estimator as estimator_lib
from data_pipeline.extract_pose import extract
from data_pipeline.layout import ownership


def _names(values: Sequence[str] | None) -> list[str] | None:
  """--ids a b,c -> [a, b, c]."""
  if not values:
    return None
  return [name for value in values for name in value.split(",") if name]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m data_pipeline.extract_pose",
      description="Whole-body pose (rtmlib RTMW / DWPose on onnxruntime) for ROOT/frames, "
                  "written as AlphaPose Halpe-136 JSON with person tracking.")
  parser.add_argument("--root", required=True, help="dataset root holding frames/<category>/<id>/")
  parser.add_argument("--out", help="write <category>/<id>.json here instead of ROOT/pose "
                      "(a new or empty folder, or an earlier --out)")
  parser.add_argument("--det_model", help="person detector .onnx (rtmlib's YOLOX / RTMDet "
                      "exports, e.g. yolox_m_8xb8-300e_humanart)")
  parser.add_argument("--pose_model", help="COCO-WholeBody-133 pose .onnx (RTMW or DWPose)")
  parser.add_argument("--download", choices=estimator_lib.DOWNLOAD_MODES,
                      help="let rtmlib download its Wholebody default for a model not given "
                           "(network needed; cached under ~/.cache/rtmlib)")
  parser.add_argument("--detector", choices=estimator_lib.DETECTORS, default="yolox",
                      help="how to pre-process the detector input (rtmlib class)")
  parser.add_argument("--device", default="cpu",
                      help="cpu, cuda or cuda:N (cuda needs onnxruntime-gpu)")
  parser.add_argument("--ids", nargs="+", help="only these video ids (space or comma separated)")
  parser.add_argument("--categories", nargs="+", help="only these category folders")
  parser.add_argument("--det_threshold", type=float, default=0.5,
                      help="person detection score threshold (rtmlib's Wholebody uses 0.3)")
  parser.add_argument("--max_persons", type=int, default=2,
                      help="keep the largest N detected people per frame")
  parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry point; returns the process exit status."""
  args = _parse_args(argv)
  if args.max_persons < 1:
    print("error: --max_persons must be at least 1", file=sys.stderr)
    return 2
  if not 0.0 <= args.det_threshold < 1.0:
    print("error: --det_threshold must be in [0, 1)", file=sys.stderr)
    return 2
  try:
    det_source, pose_source = estimator_lib.resolve_models(args.det_model, args.pose_model,
                                                           args.download)

    def make_estimator():
      return estimator_lib.WholeBodyEstimator(det_source, pose_source, detector=args.detector,
                                              device=args.device,
                                              det_threshold=args.det_threshold)

    report = extract.run(args.root, make_estimator, out=args.out, ids=_names(args.ids),
                         categories=_names(args.categories), max_persons=args.max_persons,
                         settings={"detector": args.detector, "device": args.device},
                         progress=not args.no_progress)
  except (estimator_lib.ModelError, extract.ExtractError, ownership.DatasetRootError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  print(extract.format_report(report))
  return 1 if report["this_run"]["failed"] else 0
