"""Whole-body pose extraction inside the project (instead of running AlphaPose by hand):
rtmlib's RTMW / DWPose models on onnxruntime (estimator), COCO-WholeBody-133 -> Halpe-136
(keypoint_map), person tracking (tracking), the per-video loop, resume and report (extract) and
the command line (cli):

  python -m data_pipeline.extract_pose --root ROOT --det_model DET.onnx --pose_model POSE.onnx
"""
