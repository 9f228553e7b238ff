"""The demo's inputs: one video as 8 fps frames, mono audio and (when there is one) its pose file.

  video = media.open_video(path, work_dir, sample_rate=11025, fps=8, pose=None)

`path` is either
  * a video file (mp4, or anything ffmpeg reads): decoded with data_pipeline/ingest/decode.py
    exactly as ingestion decodes the dataset (imageio-ffmpeg's ffmpeg, frames at `fps` where
    frame k shows time (k - 1) / fps, soxr-resampled mono PCM16 at `sample_rate`) into
    `work_dir`; its pose is the AlphaPose JSON given as `pose` (computed on those 8 fps frames
    or on the video's own pixels: same numbering and size, since frames keep the source size);
  * a clip folder of the dataset layout, ROOT/frames/<category>/<id>/: its audio is
    ROOT/audio/<category>/<id>.wav and its pose ROOT/pose/<category>/<id>.json when present
    (`pose` overrides it); ROOT/labels.json, when there, must agree on sample rate and fps.
Every problem (missing file, undecodable video, wrong sample rate, missing or unreadable frame)
raises InputError naming the file.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re

import numpy as np
from PIL import Image
import soundfile

from data_pipeline.ingest import decode
from data_pipeline.layout import reader
from data_pipeline.layout import schema


class InputError(ValueError):
  """An input the demo cannot use; the message names the file."""


@dataclasses.dataclass
class Video:
  """One input video: frames (8 fps JPEGs), audio and pose file."""
  name: str  # a short label: the file stem or the clip id
  path: pathlib.Path  # what was given (video file or clip folder)
  frame_paths: list[pathlib.Path]  # frame k (0-based) shows time k / fps
  audio: np.ndarray  # float32 [samples], mono
  pose: pathlib.Path | None  # AlphaPose (Halpe-136) JSON, or None
  frame_width: int
  frame_height: int

  @property
  def num_frames(self) -> int:
    return len(self.frame_paths)

  def usable_samples(self, fps: float, sample_rate: int) -> int:
    """Samples where both audio and frames exist."""
    return min(int(self.audio.shape[0]), int(self.num_frames / fps * sample_rate))

  def frame(self, index: int) -> np.ndarray:
    """uint8 [H, W, 3] RGB of frame `index`; InputError naming the file if it does not decode."""
    path = self.frame_paths[index]
    try:
      with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as error:
      raise InputError(f"{path}: unreadable frame ({error})") from error
    if pixels.shape[:2] != (self.frame_height, self.frame_width):
      raise InputError(f"{path}: frame is {pixels.shape[1]}x{pixels.shape[0]}, frame 1 of "
                       f"{self.path} is {self.frame_width}x{self.frame_height}")
    return pixels


def _frame_list(folder: pathlib.Path) -> list[pathlib.Path]:
  """The numbered JPEGs 000001.jpg ... of a folder, checked for gaps."""
  if not folder.is_dir():
    raise InputError(f"{folder}: frames folder not found")
  names = sorted(n for n in os.listdir(folder) if re.fullmatch(r"\d{6}\.jpg", n))
  if not names:
    raise InputError(f"{folder}: no frames (000001.jpg, ...)")
  expected = [schema.frame_file(i) for i in range(len(names))]
  if names != expected:
    missing = sorted(set(expected) - set(names))
    raise InputError(f"{folder / (missing[0] if missing else names[0])}: frame missing "
                     f"(numbering has gaps)")
  return [folder / n for n in names]


def _frame_size(path: pathlib.Path) -> tuple[int, int]:
  """(width, height) of the first frame; InputError naming it if it does not open."""
  try:
    with Image.open(path) as image:
      return image.size
  except (OSError, ValueError, SyntaxError) as error:
    raise InputError(f"{path}: unreadable frame ({error})") from error


def read_audio(path: pathlib.Path, sample_rate: int) -> np.ndarray:
  """float32 mono samples of a wav at `sample_rate` (nothing is resampled)."""
  if not path.is_file():
    raise InputError(f"{path}: audio file not found")
  try:
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
  except (RuntimeError, soundfile.LibsndfileError) as error:
    raise InputError(f"{path}: unreadable audio ({error})") from error
  if rate != sample_rate:
    raise InputError(f"{path}: sample rate {rate} Hz, the model needs {sample_rate} Hz")
  if samples.shape[1] != 1:
    raise InputError(f"{path}: {samples.shape[1]} channels, expected mono")
  if not np.all(np.isfinite(samples)):
    raise InputError(f"{path}: non-finite (NaN / Inf) samples")
  return samples[:, 0]


def _decode_video(path: pathlib.Path, work_dir: pathlib.Path, sample_rate: int,
                  fps: float) -> tuple[list[pathlib.Path], np.ndarray]:
  """Frames and audio of a video file, decoded into work_dir (ingestion's ffmpeg call)."""
  try:
    info = decode.probe(path)
    if info.video_stream is None:
      raise InputError(f"{path}: no video stream")
    if info.audio_stream is None:
      raise InputError(f"{path}: no audio stream (the demo separates the video's sound)")
    frames_dir = work_dir / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    wav = work_dir / "audio.wav"
    decode.extract(path, info, frames_dir, wav, int(round(fps)), sample_rate,
                   (info.width, info.height))
  except decode.VideoError as error:
    raise InputError(str(error)) from error
  frames = _frame_list(frames_dir)
  audio = read_audio(wav, sample_rate)
  if audio.size == 0:
    raise InputError(f"{path}: decoding gave no audio samples")
  return frames, audio


def _clip_folder(folder: pathlib.Path, sample_rate: int, fps: float
                 ) -> tuple[list[pathlib.Path], np.ndarray, pathlib.Path | None]:
  """Frames, audio and pose file of ROOT/frames/<category>/<id>/."""
  folder = folder.resolve()
  if folder.parent.parent.name != "frames":
    raise InputError(f"{folder}: not a video file nor a clip folder of the dataset layout "
                     "(ROOT/frames/<category>/<id>/)")
  root, category, clip_id = folder.parents[2], folder.parent.name, folder.name
  if (root / schema.LABELS_FILE).is_file():
    try:
      info = reader.read_labels(root)
    except (FileNotFoundError, ValueError) as error:
      raise InputError(str(error)) from error
    if info.sample_rate != sample_rate or abs(info.fps - fps) > 1e-6:
      raise InputError(f"{root / schema.LABELS_FILE}: {info.sample_rate} Hz / {info.fps} fps, "
                       f"the model needs {sample_rate} Hz / {fps} fps")
  paths = schema.clip_paths(category, clip_id)
  frames = _frame_list(folder)
  audio = read_audio(root / paths["audio"], sample_rate)
  pose = root / paths["pose"]
  return frames, audio, pose if pose.is_file() else None


def open_video(path: str | os.PathLike, work_dir: str | os.PathLike, sample_rate: int,
               fps: float, pose: str | os.PathLike | None = None) -> Video:
  """One input (see the module docstring); work_dir receives a video file's decoded frames."""
  path = pathlib.Path(path)
  if not path.exists():
    raise InputError(f"{path}: no such video file or clip folder")
  if path.is_dir():
    frames, audio, layout_pose = _clip_folder(path, sample_rate, fps)
    name = path.resolve().name
  else:
    frames, audio = _decode_video(path, pathlib.Path(work_dir), sample_rate, fps)
    layout_pose, name = None, path.stem
  if pose is not None:
    pose = pathlib.Path(pose)
    if not pose.is_file():
      raise InputError(f"{pose}: pose file not found (given for {path})")
  width, height = _frame_size(frames[0])
  return Video(name=name, path=path, frame_paths=frames, audio=audio,
               pose=pose if pose is not None else layout_pose, frame_width=width,
               frame_height=height)
