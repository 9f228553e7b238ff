"""Video decoding through the ffmpeg binary shipped by imageio-ffmpeg (no ffprobe needed)."""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import re
import subprocess
import wave

import numpy as np


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
