"""Video files and ingestion inputs for tests: mp4s made with the ffmpeg of imageio-ffmpeg (the
one ingestion uses), MUSIC-style label JSON and split files.

Shared by tests/test_ingest.py, tests/test_extract_pose.py and tests/test_separate.py.
"""

from __future__ import annotations

import json
import pathlib
import subprocess

from data_pipeline.ingest import decode

FFMPEG_QUIET = ("-y", "-hide_banner", "-nostdin", "-loglevel", "error")
H264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")


def make_video(path: pathlib.Path, *, seconds: float = 7.5, size: str = "320x240",
               frequency: float | None = 440.0, silent: bool = False,
               faststart: bool = False) -> pathlib.Path:
  """Writes an h264 mp4 of a moving test pattern with a stereo AAC sine (or no audio)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  command = [decode.ffmpeg_exe(), *FFMPEG_QUIET,
             "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}"]
  if silent:
    command += ["-f", "lavfi", "-i", f"anullsrc=r=44100:cl=stereo:d={seconds}"]
  elif frequency is not None:
    command += ["-f", "lavfi", "-i",
                f"sine=frequency={frequency}:sample_rate=44100:duration={seconds}"]
  command += list(H264)
  if silent or frequency is not None:
    command += ["-c:a", "aac", "-ac", "2", "-shortest"]
  if faststart:
    command += ["-movflags", "+faststart"]  # index first, so a truncated file still opens
  subprocess.run(command + [str(path)], check=True)
  return path


def render_clip(frames: pathlib.Path, audio: pathlib.Path, path: pathlib.Path, *,
                fps: int = 8, dark: bool = False) -> pathlib.Path:
  """Writes a clip of the dataset layout (frames/<...>/000001.jpg ..., its wav) as an h264 + AAC
  mp4 at `fps`. dark: every pixel black (a video where a person detector finds nobody)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  command = [decode.ffmpeg_exe(), *FFMPEG_QUIET, "-framerate", str(fps),
             "-i", str(frames / "%06d.jpg"), "-i", str(audio)]
  if dark:
    command += ["-vf", "lutrgb=r=0:g=0:b=0"]
  subprocess.run(command + [*H264, "-c:a", "aac", str(path)], check=True)
  return path


def write_inputs(base: pathlib.Path, solo: dict, duet: dict | None,
                 splits: dict[str, list[str]]) -> dict[str, pathlib.Path]:
  """Label JSONs ({"videos": {category: [ids]}}, as the MUSIC dataset publishes them) and split
  files (one id a line) under base: {"solo_json", "duet_json" (when duet), "split_dir"}."""
  base.mkdir(parents=True, exist_ok=True)
  (base / "solo.json").write_text(json.dumps({"version": 2.0, "videos": solo}))
  paths = {"solo_json": base / "solo.json", "split_dir": base / "splits"}
  if duet is not None:
    (base / "duet.json").write_text(json.dumps({"version": 1.0, "videos": duet}))
    paths["duet_json"] = base / "duet.json"
  paths["split_dir"].mkdir(exist_ok=True)
  for split, ids in splits.items():
    (paths["split_dir"] / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
  return paths
