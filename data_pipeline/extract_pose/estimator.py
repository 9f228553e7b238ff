"""The whole-body pose estimator: rtmlib's person detector (YOLOX or RTMDet) and its top-down
RTMPose runner (RTMW / DWPose COCO-WholeBody-133 models) on onnxruntime.

rtmlib does the model I/O: `preprocess` (letterbox to the detector input, affine crop of each box
to the pose input, normalisation), `inference` (onnxruntime) and the SimCC decoding of RTMPose.
What is ours: the model paths are checked first (a missing file is a ModelError naming it;
rtmlib would otherwise try to download the path as a URL), the input sizes are read from the ONNX
files, the detection threshold is applied to the detector's scores (rtmlib fixes it at 0.3 for
YOLOX exports with built-in NMS), and the pose model must predict 133 keypoints.

ONNX signatures (as rtmlib's model zoo exports them with MMDeploy; the tests build tiny models
with the same ones):
  detector   input [1, 3, H, W] float (BGR 0..255, letterboxed with 114; RTMDet also normalised)
             outputs either dets [1, N, 5] (x1, y1, x2, y2, score in input pixels, NMS done)
             + labels [1, N] (0 = person), or raw YOLOX head output [1, A, 5 + C]
             (cx, cy, log w, log h offsets per anchor, objectness, class scores; rtmlib decodes
             and runs NMS)
  pose       input [1, 3, h, w] float (the box crop, normalised); outputs simcc_x [1, 133, 2w]
             and simcc_y [1, 133, 2h] (SimCC, split ratio 2)
Images are BGR uint8 arrays, as rtmlib's own demos pass cv2 frames.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
from typing import Sequence

import numpy as np

from data_pipeline.extract_pose.keypoint_map import COCO_WHOLEBODY_NUM_KEYPOINTS

DETECTORS = ("yolox", "rtmdet")
DOWNLOAD_MODES = ("performance", "balanced", "lightweight")  # rtmlib.Wholebody.MODE
DEFAULT_DET_INPUT = (640, 640)  # (height, width), when the ONNX input size is dynamic
DEFAULT_POSE_INPUT = (192, 256)  # (width, height), rtmlib's order for RTMPose


class ModelError(Exception):
  """A model file that is missing or unusable; the message names it."""


def resolve_models(det_model: str | None, pose_model: str | None,
                   download: str | None) -> tuple[str, str]:
  """The detector and pose model to load: local .onnx paths, or (only with `download`, one of
  DOWNLOAD_MODES) rtmlib's default URLs for the ones not given. A given path must exist."""
  sources = {}
  for flag, path, key in (("--det_model", det_model, "det"), ("--pose_model", pose_model, "pose")):
    if path is not None:
      if not pathlib.Path(path).is_file():
        raise ModelError(f"{flag} {path}: model file not found")
      sources[key] = str(path)
    elif download is None:
      raise ModelError(f"{flag} is required (an .onnx file; or pass --download MODE to let "
                       "rtmlib fetch its default model)")
    else:
      if download not in DOWNLOAD_MODES:
        raise ModelError(f"--download must be one of {DOWNLOAD_MODES}, got {download!r}")
      from rtmlib.tools.solution import wholebody  # pylint: disable=import-outside-toplevel
      sources[key] = wholebody.Wholebody.MODE[download][key]
  return sources["det"], sources["pose"]


def _static_hw(session) -> tuple[int, int] | None:
  """(height, width) of an onnxruntime session's first input [1, 3, H, W], None if dynamic."""
  shape = session.get_inputs()[0].shape
  if len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[2:]):
    return int(shape[2]), int(shape[3])
  return None


class WholeBodyEstimator:
  """detect(image) -> person boxes; estimate(image, boxes) -> COCO-WholeBody keypoints."""

  def __init__(self, det_source: str, pose_source: str, *, detector: str = "yolox",
               device: str = "cpu", det_threshold: float = 0.5):
    try:
      import onnxruntime  # pylint: disable=import-outside-toplevel
      import rtmlib  # pylint: disable=import-outside-toplevel
    except ImportError as error:
      raise ModelError(f"pose extraction needs rtmlib and onnxruntime ({error}); install "
                       "requirements.txt and `pip install --no-deps rtmlib==0.0.16`") from error
    if detector not in DETECTORS:
      raise ModelError(f"--detector must be one of {DETECTORS}, got {detector!r}")
    if device.startswith("cuda") and \
        "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
      raise ModelError(f"--device {device}: this onnxruntime has no CUDA provider "
                       "(install onnxruntime-gpu instead of onnxruntime)")
    onnxruntime.set_default_logger_severity(3)  # errors only
    self.det_threshold = det_threshold
    detector_class = rtmlib.YOLOX if detector == "yolox" else rtmlib.RTMDet
    # rtmlib prints "load <model> with onnxruntime backend" for each model.
    with contextlib.redirect_stdout(io.StringIO()):
      self.det = self._load(det_source, "--det_model", lambda path: detector_class(
          path, backend="onnxruntime", device=device, det_mode="multiclass",
          score_thr=det_threshold))
      self.pose = self._load(pose_source, "--pose_model", lambda path: rtmlib.RTMPose(
          path, backend="onnxruntime", device=device))
    size = _static_hw(self.det.session)
    self.det.model_input_size = size or DEFAULT_DET_INPUT
    size = _static_hw(self.pose.session)
    self.pose.model_input_size = (size[1], size[0]) if size else DEFAULT_POSE_INPUT
    outputs = self.pose.session.get_outputs()
    if len(outputs) != 2 or any(isinstance(o.shape[1], int) and
                                o.shape[1] != COCO_WHOLEBODY_NUM_KEYPOINTS for o in outputs):
      raise ModelError(f"--pose_model {self.pose.onnx_model}: outputs "
                       f"{[o.shape for o in outputs]}, expected SimCC x / y of 133 keypoints "
                       "(a COCO-WholeBody model: RTMW or DWPose)")
    self.det_model_path = self.det.onnx_model
    self.pose_model_path = self.pose.onnx_model

  def description(self) -> dict:
    """What the report records about the models."""
    return {"det_model": os.fspath(self.det_model_path),
            "det_input_hw": list(self.det.model_input_size),
            "pose_model": os.fspath(self.pose_model_path),
            "pose_input_wh": list(self.pose.model_input_size),
            "det_threshold": self.det_threshold}

  @staticmethod
  def _load(source: str, flag: str, build):
    """build(source), any failure (a corrupt file, a failed download) as a ModelError."""
    try:
      return build(source)
    except Exception as error:  # noqa: BLE001  onnxruntime / download errors vary by version
      first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
      raise ModelError(f"{flag} {source}: cannot load ({type(error).__name__}: "
                       f"{first_line})") from error

  def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Person boxes [N, 4] (x1, y1, x2, y2 image pixels) and scores [N] (NaN where the export
    has no NMS: rtmlib's decoding keeps only boxes above the threshold, without scores)."""
    padded, ratio = self.det.preprocess(image)
    outputs = self.det.inference(padded)
    dets = np.asarray(outputs[0])
    if dets.ndim == 3 and dets.shape[-1] == 5:  # exported with NMS: dets (+ labels)
      boxes = dets[0, :, :4].astype(np.float64) / ratio
      scores = dets[0, :, 4].astype(np.float64)
      keep = scores > self.det_threshold
      if len(outputs) > 1 and np.asarray(outputs[1]).shape == dets.shape[:2]:
        keep &= np.asarray(outputs[1])[0] == 0  # class 0 = person
      return boxes[keep], scores[keep]
    result = self.det.postprocess(dets, ratio)  # raw head: rtmlib decodes and runs NMS
    boxes, classes = result if isinstance(result, tuple) else (result, None)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if classes is not None and len(classes) == len(boxes):
      boxes = boxes[np.asarray(classes) == 0]
    return boxes, np.full(len(boxes), np.nan)

  def estimate(self, image: np.ndarray,
               boxes: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """COCO-WholeBody keypoints [N, 133, 2] (image pixels) and scores [N, 133] of each box."""
    if not len(boxes):  # rtmlib would fall back to the whole image
      return np.zeros((0, COCO_WHOLEBODY_NUM_KEYPOINTS, 2)), np.zeros((0, 133))
    keypoints, scores = self.pose(image, bboxes=[list(map(float, b)) for b in boxes])
    keypoints = np.asarray(keypoints, np.float64)
    if keypoints.shape[1:] != (COCO_WHOLEBODY_NUM_KEYPOINTS, 2):
      raise ModelError(f"--pose_model {self.pose_model_path}: predicts {keypoints.shape[1]} "
                       "keypoints, expected 133 (COCO-WholeBody: RTMW or DWPose)")
    return keypoints, np.asarray(scores, np.float64)
