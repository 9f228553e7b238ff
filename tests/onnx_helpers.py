"""Tiny ONNX models with the real input / output signatures of rtmlib's person detectors and
COCO-WholeBody pose models, so data_pipeline.extract_pose runs its real code path on onnxruntime
in tests (tests/test_extract_pose.py, tests/test_separate.py).

The tiny detector (input [1, 3, 640, 640]) reports fixed person boxes whose score is the mean
brightness of the box region, so a bright region of a frame is a detected person and a black
frame has nobody. The tiny pose model (input [1, 3, 256, 192]) returns SimCC vectors with one
peak per keypoint: keypoint k decodes to its own place in the box, with confidence
keypoint_score(k) = 0.3 + 0.6 k / 132, so the keypoint mapping can be followed through the
whole pipeline.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Left and right player of a duet, in detector pixels (x1, y1, x2, y2 of the 640 x 640 input).
BOXES_640 = ((64, 64, 288, 576), (352, 64, 576, 576))


def keypoint_score(k: int) -> float:
  """The confidence the tiny pose model gives COCO-WholeBody keypoint k."""
  return 0.3 + 0.6 * k / 132


def _save(path: pathlib.Path, nodes, inputs, outputs, initializers) -> pathlib.Path:
  graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializers)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
  model.ir_version = 8
  onnx.checker.check_model(model)
  onnx.save(model, str(path))
  return path


def _const(name: str, array) -> onnx.TensorProto:
  return numpy_helper.from_array(np.asarray(array), name)


def make_detector(path: pathlib.Path, boxes=BOXES_640) -> pathlib.Path:
  """MMDeploy-style detector: dets [1, K, 5] (x1, y1, x2, y2, score) + labels [1, K]; the score
  of box k is the mean of the input inside box k / 255."""
  nodes, inits, parts = [], [_const("axes", np.array([2, 3], np.int64)),
                               _const("shape", np.array([1, 1, 1], np.int64))], []
  for k, (x1, y1, x2, y2) in enumerate(boxes):
    inits += [_const(f"starts{k}", np.array([y1, x1], np.int64)),
              _const(f"ends{k}", np.array([y2, x2], np.int64))]
    nodes += [helper.make_node("Slice", ["input", f"starts{k}", f"ends{k}", "axes"], [f"r{k}"]),
              helper.make_node("ReduceMean", [f"r{k}"], [f"m{k}"], axes=[1, 2, 3], keepdims=0),
              helper.make_node("Reshape", [f"m{k}", "shape"], [f"s{k}"])]
    parts.append(f"s{k}")
  inits += [_const("scale", np.array(1 / 255, np.float32)),
            _const("boxes", np.array([boxes], np.float32)),
            _const("labels_value", np.zeros((1, len(boxes)), np.int64))]
  nodes += [helper.make_node("Concat", parts, ["raw"], axis=1),
            helper.make_node("Mul", ["raw", "scale"], ["scores"]),
            helper.make_node("Concat", ["boxes", "scores"], ["dets"], axis=2),
            helper.make_node("Identity", ["labels_value"], ["labels"])]
  return _save(path, nodes,
               [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 640, 640])],
               [helper.make_tensor_value_info("dets", TensorProto.FLOAT, [1, len(boxes), 5]),
                helper.make_tensor_value_info("labels", TensorProto.INT64, [1, len(boxes)])],
               inits)


def _constant_plus_zero_times_input(name: str, value: np.ndarray, input_shape) -> tuple:
  """Nodes computing value + 0 * mean(input): a constant output that still reads the input."""
  nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2, 3], keepdims=0),
           helper.make_node("Mul", ["mean", "zero"], ["zeroed"]),
           helper.make_node("Add", [f"{name}_value", "zeroed"], [name])]
  inits = [_const("zero", np.array(0, np.float32)), _const(f"{name}_value", value)]
  return nodes, inits, helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)


def make_raw_detector(path: pathlib.Path, box=(64, 64, 288, 576)) -> pathlib.Path:
  """YOLOX head without NMS: [1, 8400, 6] (dx, dy, log w, log h, objectness, person score);
  one anchor of the stride-8 grid holds the box, rtmlib decodes it."""
  out = np.zeros((1, 8400, 6), np.float32)
  cx, cy, w, h = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]
  gx, gy = int(cx // 8), int(cy // 8)
  out[0, gy * 80 + gx] = (cx / 8 - gx, cy / 8 - gy, np.log(w / 8), np.log(h / 8), 1.0, 0.9)
  nodes, inits, value_info = _constant_plus_zero_times_input("output", out, [1, 3, 640, 640])
  return _save(path, nodes, [value_info],
               [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8400, 6])], inits)


def make_pose_model(path: pathlib.Path, keypoints: int = 133) -> pathlib.Path:
  """RTMPose-style SimCC: simcc_x [1, K, 384], simcc_y [1, K, 512] for a 256x192 input."""
  simcc_x = np.zeros((1, keypoints, 384), np.float32)
  simcc_y = np.zeros((1, keypoints, 512), np.float32)
  for k in range(keypoints):
    simcc_x[0, k, 134 + (2 * k) % 116] = keypoint_score(k)  # 0.35 .. 0.65 of the crop width
    simcc_y[0, k, 154 + (3 * k) % 204] = keypoint_score(k)  # 0.3 .. 0.7 of its height
  nodes_x, inits_x, value_info = _constant_plus_zero_times_input("simcc_x", simcc_x,
                                                                 [1, 3, 256, 192])
  nodes = nodes_x + [helper.make_node("Add", ["simcc_y_value", "zeroed"], ["simcc_y"])]
  return _save(path, nodes, [value_info],
               [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, keypoints, 384]),
                helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, keypoints, 512])],
               inits_x + [_const("simcc_y_value", simcc_y)])
