"""Ingestion decoding: one video -> 8 fps JPEG frames and a mono 11025 Hz PCM16 wav, through the
ffmpeg binary shipped by imageio-ffmpeg (no ffprobe needed), moved into place atomically with a
resume marker (ROOT/.preprocess/done/<id>.json) so reruns skip finished videos."""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import pathlib
import re
import shutil
import subprocess
import threading
import wave
from typing import Any

import numpy as np
from PIL import Image

from data_pipeline.ingest.labels import VIDEO_EXTENSIONS, Clip
from data_pipeline.layout import schema, writer

MIN_FRAME_SIDE = 224  # the models crop 224x224 frames
MARKER_VERSION = 1


class VideoError(Exception):
  """A video that cannot be turned into a clip; `kind` names the report counter it belongs to."""

  def __init__(self, kind: str, path: pathlib.Path | str, reason: str):
    super().__init__(f"{path}: {reason}")
    self.kind = kind
    self.path = str(path)
    self.reason = reason


@functools.cache
def ffmpeg_exe() -> str:
  """Path of the ffmpeg binary bundled with the imageio-ffmpeg wheel."""
  import imageio_ffmpeg  # pylint: disable=g-import-not-at-top

  return imageio_ffmpeg.get_ffmpeg_exe()


@dataclasses.dataclass(frozen=True)
class StreamInfo:
  """What `ffmpeg -i` says about a file: the streams that decoding will use."""

  video_stream: int | None  # absolute stream index of the first real video stream
  audio_stream: int | None  # absolute stream index of the first audio stream
  width: int  # display width (after the rotation ffmpeg applies when decoding)
  height: int
  duration: float | None  # container duration in seconds, None when ffmpeg prints N/A


_STREAM_RE = re.compile(r"^\s*Stream #\d+:(\d+)\S*: (Video|Audio): (.*)$")
_SIZE_RE = re.compile(r"\b(\d{2,5})x(\d{2,5})\b")
_ROTATION_RE = re.compile(r"rotation of (-?[\d.]+) degrees", re.IGNORECASE)
_DURATION_RE = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")


def probe(path: pathlib.Path) -> StreamInfo:
  """Parses the stream list of `ffmpeg -i path`; raises VideoError for unreadable files."""
  # ffmpeg exits with 1 here because no output is given; only its stderr matters.
  result = subprocess.run(
      [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
      capture_output=True, text=True, errors="replace", check=False)
  text = result.stderr
  if "Input #0" not in text:
    last = [line for line in text.strip().splitlines() if line.strip()]
    raise VideoError("unreadable", path,
                     f"ffmpeg cannot open it ({last[-1] if last else 'no output'})")
  video_stream = audio_stream = None
  width = height = 0
  rotation = 0.0
  lines = text.splitlines()
  for i, line in enumerate(lines):
    match = _STREAM_RE.match(line)
    if not match:
      continue
    index, kind, rest = int(match.group(1)), match.group(2), match.group(3)
    if kind == "Audio" and audio_stream is None:
      audio_stream = index
    # Embedded cover art (youtube-dl --embed-thumbnail) shows up as a one-frame video stream.
    if kind == "Video" and video_stream is None and "attached pic" not in rest:
      size = _SIZE_RE.search(rest)
      if size is None:
        continue
      video_stream = index
      width, height = int(size.group(1)), int(size.group(2))
      # The display matrix, if any, is printed in the lines below the stream line.
      for follow in lines[i + 1:]:
        if _STREAM_RE.match(follow):
          break
        rot = _ROTATION_RE.search(follow)
        if rot:
          rotation = float(rot.group(1))
  if round(rotation / 90) % 2 == 1:
    # ffmpeg auto-rotates while decoding, so the frames come out transposed.
    width, height = height, width
  duration = None
  dur = _DURATION_RE.search(text)
  if dur:
    duration = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3))
  return StreamInfo(video_stream, audio_stream, width, height, duration)


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
  """Frame size after scaling the short side to `short_side` (0 keeps the size), aspect kept."""
  if short_side <= 0:
    return width, height
  if width <= height:
    return short_side, max(1, round(height * short_side / width))
  return max(1, round(width * short_side / height)), short_side


def extract(path: pathlib.Path, info: StreamInfo, frames_dir: pathlib.Path,
            wav_path: pathlib.Path, fps: int, sample_rate: int,
            size: tuple[int, int]) -> None:
  """Decodes once: JPEG frames at `fps` (000001.jpg ...) and a mono PCM16 wav at `sample_rate`."""
  assert info.video_stream is not None and info.audio_stream is not None
  width, height = size
  video_filter = f"fps={fps}"
  if (width, height) != (info.width, info.height):
    video_filter += f",scale={width}:{height}:flags=area"
  command = [
      ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
      "-i", str(path),
      # Frames: the fps filter keeps the frame at each 1/fps tick, so frame k (1-based) shows
      # time (k - 1) / fps, the numbering AlphaPose's image_id refers to.
      "-map", f"0:{info.video_stream}", "-vf", video_filter, "-q:v", "3",
      "-start_number", "1", str(frames_dir / "%06d.jpg"),
      # Audio: soxr resampling (librosa's default family), downmix to mono, 16-bit PCM.
      "-map", f"0:{info.audio_stream}", "-af", f"aresample={sample_rate}:resampler=soxr",
      "-ac", "1", "-c:a", "pcm_s16le",
      # A plain 44-byte RIFF header: no LIST/encoder chunk for readers to trip over.
      "-map_metadata", "-1", "-fflags", "+bitexact", "-f", "wav", str(wav_path),
  ]
  result = subprocess.run(command, capture_output=True, text=True, errors="replace",
                          check=False)
  if result.returncode != 0:
    last = [line for line in result.stderr.strip().splitlines() if line.strip()]
    raise VideoError("unreadable", path,
                     f"ffmpeg failed with exit code {result.returncode}"
                     f" ({last[-1] if last else 'no message'})")


def read_wav_mono16(path: pathlib.Path) -> tuple[np.ndarray, int]:
  """Reads a mono PCM16 wav as int16 samples and its sample rate."""
  with wave.open(str(path), "rb") as handle:
    if handle.getnchannels() != 1 or handle.getsampwidth() != 2:
      raise ValueError(f"{path}: expected mono 16-bit PCM, got {handle.getnchannels()} "
                       f"channel(s) of {8 * handle.getsampwidth()} bits")
    rate = handle.getframerate()
    samples = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
  return samples, rate


@dataclasses.dataclass(frozen=True)
class Options:
  """Decoding settings; all of them are recorded in each done marker."""

  fps: int = 8
  sample_rate: int = 11025
  short_side: int = 0
  min_seconds: float = 6.0


def find_videos(videos_dir: pathlib.Path) -> tuple[dict[str, pathlib.Path], list[str]]:
  """Maps video id (file stem) -> path for every video file under videos_dir, nested or not."""
  found: dict[str, list[pathlib.Path]] = collections.defaultdict(list)
  for directory, _, names in os.walk(videos_dir, followlinks=True):
    for name in names:
      stem, extension = os.path.splitext(name)
      if extension.lower() in VIDEO_EXTENSIONS:
        found[stem].append(pathlib.Path(directory) / name)
  chosen, warnings = {}, []
  for stem, paths in found.items():
    paths.sort(key=lambda p: (VIDEO_EXTENSIONS.index(p.suffix.lower()), str(p)))
    chosen[stem] = paths[0]
    if len(paths) > 1:
      warnings.append(f"several files for video {stem!r}: using {paths[0]}, ignoring "
                      f"{', '.join(map(str, paths[1:]))}")
  return chosen, warnings


def _count_jpegs(frames_dir: pathlib.Path) -> int:
  """Number of NNNNNN.jpg files in a frames folder (0 if it does not exist)."""
  try:
    return sum(1 for entry in os.scandir(frames_dir) if entry.name.endswith(".jpg"))
  except FileNotFoundError:
    return 0


def _remove_outputs(root: pathlib.Path, clip: Clip) -> None:
  """Deletes whatever a previous, possibly interrupted, run left for this clip."""
  paths = schema.clip_paths(clip.category, clip.id)
  shutil.rmtree(root / paths["frames"], ignore_errors=True)
  for key in ("audio", "pose"):
    (root / paths[key]).unlink(missing_ok=True)


def _marker_path(root: pathlib.Path, video_id: str) -> pathlib.Path:
  return root / ".preprocess" / "done" / f"{video_id}.json"


def _expected_marker_fields(clip: Clip, video: pathlib.Path, options: Options) -> dict[str, Any]:
  """Marker fields that must match for a finished video to be reused."""
  return {
      "version": MARKER_VERSION,
      "id": clip.id,
      "category": clip.category,
      "source_bytes": video.stat().st_size,
      **dataclasses.asdict(options),
  }


def _load_done_marker(root: pathlib.Path, clip: Clip, video: pathlib.Path,
                      options: Options) -> dict[str, Any] | None:
  """The marker of a finished video whose outputs are complete, else None."""
  path = _marker_path(root, clip.id)
  try:
    marker = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError):
    return None
  expected = _expected_marker_fields(clip, video, options)
  if any(marker.get(key) != value for key, value in expected.items()):
    return None
  paths = schema.clip_paths(clip.category, clip.id)
  wav = root / paths["audio"]
  if not wav.is_file() or wav.stat().st_size != marker.get("audio_bytes"):
    return None
  if _count_jpegs(root / paths["frames"]) != marker.get("num_frames"):
    return None
  return marker


def process_video(clip: Clip, video: pathlib.Path, root: pathlib.Path,
                  options: Options) -> tuple[dict[str, Any], bool]:
  """Frames + wav of one video (or the existing ones); returns (done marker, was_skipped)."""
  if not video.is_file():
    raise VideoError("unreadable", video, "not a readable file (a broken link?)")
  marker = _load_done_marker(root, clip, video, options)
  if marker is not None:
    return marker, True
  # Drop the marker first: from here until the new marker lands the clip counts as unfinished.
  old_marker = _marker_path(root, clip.id)
  try:
    old = json.loads(old_marker.read_text())
    if old.get("category") and old["category"] != clip.category:
      _remove_outputs(root, Clip(clip.id, tuple(old["category"].split("+"))))
  except (OSError, json.JSONDecodeError):
    pass
  old_marker.unlink(missing_ok=True)
  try:
    return _decode_video(clip, video, root, options), False
  except VideoError:
    # Whatever an earlier run left for this clip must not outlive a failure now.
    _remove_outputs(root, clip)
    raise


def _decode_video(clip: Clip, video: pathlib.Path, root: pathlib.Path,
                  options: Options) -> dict[str, Any]:
  """Checks and decodes one video into place; returns its done marker."""
  info = probe(video)
  if info.video_stream is None:
    raise VideoError("no_video", video, "no video stream")
  if info.audio_stream is None:
    raise VideoError("no_audio", video, "no audio stream")
  if info.duration is not None and info.duration < options.min_seconds:
    raise VideoError("too_short", video, f"lasts {info.duration:.2f} s, less than "
                              f"--min_seconds {options.min_seconds}")
  size = scaled_size(info.width, info.height, options.short_side)
  if min(size) < MIN_FRAME_SIDE:
    raise VideoError("too_small", video, f"frames are {size[0]}x{size[1]}, short side "
                              f"below {MIN_FRAME_SIDE} px (use --short_side 256 to rescale)")

  temporary = root / ".preprocess" / "tmp" / f"{clip.id}.{os.getpid()}.{threading.get_ident()}"
  shutil.rmtree(temporary, ignore_errors=True)
  (temporary / "frames").mkdir(parents=True)
  try:
    wav = temporary / "audio.wav"
    extract(video, info, temporary / "frames", wav, options.fps, options.sample_rate,
                     size)
    num_frames = _count_jpegs(temporary / "frames")
    try:
      samples, rate = read_wav_mono16(wav)
    except (OSError, EOFError, ValueError, wave.Error) as error:
      raise VideoError("unreadable", video, f"no usable audio decoded ({error})")
    if num_frames == 0 or samples.size == 0 or rate != options.sample_rate:
      raise VideoError("unreadable", video, f"decoding gave {num_frames} frames and "
                                f"{samples.size} audio samples")
    if not (temporary / "frames" / f"{num_frames:06d}.jpg").is_file():
      raise VideoError("unreadable", video, "frame numbering has gaps")
    audio_seconds = samples.size / options.sample_rate
    video_seconds = num_frames / options.fps
    # A download cut short still opens when its index comes first (faststart mp4).
    if (info.duration is not None and
        max(audio_seconds, video_seconds) < 0.9 * info.duration - 1.0):
      raise VideoError(
          "unreadable", video, f"truncated: the container says {info.duration:.1f} s but only "
          f"{audio_seconds:.1f} s of audio and {video_seconds:.1f} s of video decode")
    if min(audio_seconds, video_seconds) < options.min_seconds:
      raise VideoError(
          "too_short", video, f"decodes to {audio_seconds:.2f} s of audio and "
          f"{video_seconds:.2f} s of video, less than --min_seconds {options.min_seconds}")
    if not np.any(samples):
      raise VideoError("silent_audio", video, "the audio track is all zeros")
    with Image.open(temporary / "frames" / "000001.jpg") as image:
      frame_size = list(image.size)

    # Move into place: frames folder and wav by rename (same filesystem), marker last.
    paths = schema.clip_paths(clip.category, clip.id)
    _remove_outputs(root, clip)
    (root / paths["frames"]).parent.mkdir(parents=True, exist_ok=True)
    (root / paths["audio"]).parent.mkdir(parents=True, exist_ok=True)
    os.replace(temporary / "frames", root / paths["frames"])
    os.replace(wav, root / paths["audio"])
    marker = {
        **_expected_marker_fields(clip, video, options),
        "source": str(video),
        "source_size": [info.width, info.height],
        "frame_size": frame_size,
        "num_frames": num_frames,
        "audio_samples": int(samples.size),
        "audio_bytes": (root / paths["audio"]).stat().st_size,
        "audio_seconds": audio_seconds,
        "video_seconds": video_seconds,
    }
    writer.write_json(_marker_path(root, clip.id), marker)
    return marker
  finally:
    shutil.rmtree(temporary, ignore_errors=True)
