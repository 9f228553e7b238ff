"""SynthMUSIC pose: Halpe-136 keypoints of a player whose arms, hands and fingers move with the
notes in an instrument-specific way (bowing, strumming, plucking, pressing keys, striking,
fingering; see motion.py), plus AlphaPose-like detection noise, missed detections and
confidences."""

from __future__ import annotations

import numpy as np

from data_pipeline.layout.schema import frame_file
from data_pipeline.layout.skeleton import HALPE_FACE, HALPE_LEFT_HAND
from data_pipeline.layout.skeleton import HALPE_NUM_KEYPOINTS as NUM_KEYPOINTS
from data_pipeline.synthmusic import instruments
from data_pipeline.synthmusic import motion as motion_lib
from data_pipeline.synthmusic.melodies import Note
from data_pipeline.synthmusic.motion import Performance

FPS = 8

# Body coordinates in "body units" (neck-to-hip = 1), origin at the hip centre, x to the image
# right (= the player's left: the player faces the camera), y down. Halpe body order.
_STAND = {
    0: (0.0, -1.30), 1: (0.07, -1.36), 2: (-0.07, -1.36), 3: (0.15, -1.32), 4: (-0.15, -1.32),
    5: (0.36, -0.95), 6: (-0.36, -0.95), 11: (0.2, 0.0), 12: (-0.2, 0.0), 13: (0.22, 0.8),
    14: (-0.22, 0.8), 15: (0.23, 1.6), 16: (-0.23, 1.6), 17: (0.0, -1.62), 18: (0.0, -1.0),
    19: (0.0, 0.0), 20: (0.3, 1.7), 21: (-0.3, 1.7), 22: (0.37, 1.68), 23: (-0.37, 1.68),
    24: (0.22, 1.67), 25: (-0.22, 1.67),
}
_SIT = dict(_STAND)
_SIT.update({13: (0.32, 0.22), 14: (-0.32, 0.22), 15: (0.34, 0.95), 16: (-0.34, 0.95),
             20: (0.42, 1.05), 21: (-0.42, 1.05), 22: (0.5, 1.03), 23: (-0.5, 1.03),
             24: (0.33, 1.02), 25: (-0.33, 1.02)})

UPPER_ARM = 0.5
FOREARM = 0.5


# ---------------------------------------------------------------------------------------------
# Skeleton geometry
# ---------------------------------------------------------------------------------------------


def _elbow(shoulder: np.ndarray, wrist: np.ndarray,
           outward: float) -> tuple[np.ndarray, np.ndarray]:
  """Two-link inverse kinematics: (elbow, reachable wrist) [T,2] with the elbow bent outwards."""
  d = wrist - shoulder
  dist = np.linalg.norm(d, axis=1, keepdims=True)
  reach = (UPPER_ARM + FOREARM) * 0.98
  direction = d / np.maximum(dist, 1e-6)
  dist = np.clip(dist, 0.15, reach)
  wrist = shoulder + direction * dist
  along = (UPPER_ARM ** 2 - FOREARM ** 2 + dist ** 2) / (2 * dist)
  height = np.sqrt(np.maximum(UPPER_ARM ** 2 - along ** 2, 0))
  normal = np.stack([-direction[:, 1], direction[:, 0]], 1)
  # Pick the bend whose elbow lies further outwards (and lower): how people hold instruments.
  score = normal[:, 0] * outward + 0.5 * normal[:, 1]
  normal = np.where(score[:, None] >= 0, normal, -normal)
  return shoulder + direction * along + normal * height, wrist


_FINGER_SPREAD = np.array([-0.55, -0.2, 0.0, 0.18, 0.36])  # radians, thumb to little
_SEGMENTS = np.array([[0.05, 0.035, 0.03, 0.025], [0.1, 0.045, 0.03, 0.025],
                      [0.1, 0.05, 0.033, 0.027], [0.095, 0.045, 0.03, 0.025],
                      [0.085, 0.035, 0.025, 0.02]])  # body units; first = palm to knuckle


def _hand(wrist: np.ndarray, angle: np.ndarray, flex: np.ndarray, side: float) -> np.ndarray:
  """21 hand keypoints (wrist, then 4 per finger thumb to little). [T, 21, 2]"""
  T = len(wrist)
  points = [wrist]
  for finger in range(5):
    position = wrist
    heading = angle + side * _FINGER_SPREAD[finger]
    for joint in range(4):
      if joint > 0:
        heading = heading + side * flex[:, finger] * 0.75  # curl towards the palm
      step = _SEGMENTS[finger, joint]
      position = position + step * np.stack([np.cos(heading), np.sin(heading)], 1)
      points.append(position)
  return np.stack(points, 1).reshape(T, 21, 2)


def _face_template() -> np.ndarray:
  """68 iBUG-style face points around the nose, in head units (head half-width = 1). [68, 2]"""
  pts = []
  for a in np.linspace(np.pi, 0, 17):  # jaw from the image-left ear round the chin
    pts.append((0.95 * np.cos(a), 0.15 + 0.95 * np.sin(a)))
  for side in (-1, 1):  # brows
    for k in range(5):
      x = side * (0.15 + 0.13 * (k if side > 0 else 4 - k))
      pts.append((x, -0.45 - 0.05 * np.sin(np.pi * k / 4)))
  for k in range(4):  # nose bridge
    pts.append((0.0, -0.3 + 0.1 * k))
  for k in range(5):  # nostrils
    pts.append((-0.16 + 0.08 * k, 0.12 + 0.03 * abs(k - 2) * -1))
  for side in (-1, 1):  # eyes, 6 points each
    cx = side * 0.35
    for a in np.linspace(0, 2 * np.pi, 7)[:-1]:
      pts.append((cx + 0.13 * np.cos(a + np.pi), -0.25 + 0.05 * np.sin(a + np.pi)))
  for a in np.linspace(0, 2 * np.pi, 13)[:-1]:  # outer lips
    pts.append((0.3 * np.cos(a + np.pi), 0.42 + 0.1 * np.sin(a + np.pi)))
  for a in np.linspace(0, 2 * np.pi, 9)[:-1]:  # inner lips
    pts.append((0.2 * np.cos(a + np.pi), 0.42 + 0.04 * np.sin(a + np.pi)))
  out = np.array(pts)
  assert out.shape == (68, 2), out.shape
  return out


FACE_TEMPLATE = _face_template()

def perform(category: str, notes: list[Note], num_frames: int, centre: tuple[float, float],
            unit: float, rng: np.random.Generator) -> Performance:
  """Clean Halpe-136 keypoints of one player of `category` playing `notes`."""
  t = np.arange(num_frames) / FPS
  instrument = instruments.INSTRUMENTS[category]
  motion = motion_lib.motion(instrument, notes, t, rng)
  base = _SIT if instrument.seated else _STAND
  body = np.zeros((num_frames, 26, 2))
  for joint, xy in base.items():
    body[:, joint] = xy
  # Personal proportions: shoulder width and head size vary between players.
  body[:, [5, 6], 0] *= rng.uniform(0.9, 1.1)
  sway = motion["sway"]
  upper = [0, 1, 2, 3, 4, 5, 6, 17, 18]
  body[:, upper] += sway[:, None]
  body[:, [0, 1, 2, 3, 4, 17]] += motion["head"][:, None]
  body[:, [16, 21, 23, 25], 1] -= 0.12 * motion["foot"][:, None]  # right foot works the pedal
  # Arms: wrists follow the instrument targets (which sway with the upper body).
  left_shoulder, right_shoulder = body[:, 5], body[:, 6]
  lw = motion["lw"] + sway
  rw = motion["rw"] + sway
  left_elbow, lw = _elbow(left_shoulder, lw, +1.0)
  right_elbow, rw = _elbow(right_shoulder, rw, -1.0)
  body[:, 7], body[:, 9] = left_elbow, lw
  body[:, 8], body[:, 10] = right_elbow, rw
  # Hands continue the forearm direction, bent slightly inwards.
  la = np.arctan2(*(lw - left_elbow)[:, ::-1].T) - 0.3
  ra = np.arctan2(*(rw - right_elbow)[:, ::-1].T) + 0.3
  left_hand = _hand(lw, la, motion["lflex"], -1.0)
  right_hand = _hand(rw, ra, motion["rflex"], +1.0)
  head_width = 0.16 * rng.uniform(0.95, 1.05)
  face = body[:, 0][:, None] + FACE_TEMPLATE[None] * head_width + np.array([0, 0.02])
  units = np.concatenate([body, face, left_hand, right_hand], 1)  # [T, 136, 2]
  origin = np.asarray(centre, float)[None] + np.zeros((num_frames, 2))
  keypoints = origin[:, None] + units * unit
  params = dict(motion["params"])
  params["sway"] = sway
  return Performance(keypoints=keypoints, origin=origin, unit=unit, params=params,
                     category=category, occluded=instrument.occluded)


# ---------------------------------------------------------------------------------------------
# Detection: noise, confidences, misses -> AlphaPose records
# ---------------------------------------------------------------------------------------------


def detect(performances: list[Performance], num_frames: int, image_size: int,
           rng: np.random.Generator) -> list[dict]:
  """AlphaPose-style JSON records (one per detected person per frame) with estimator noise."""
  records = []
  quality = [rng.uniform(0.7, 0.95) for _ in performances]
  missing = []
  for _ in performances:
    miss = rng.random(num_frames) < 0.03
    for start in np.flatnonzero(rng.random(num_frames) < 0.01):  # occasional short dropouts
      miss[start:start + int(rng.integers(2, 6))] = True
    missing.append(miss)
  sigma = np.full(NUM_KEYPOINTS, 1.0)
  sigma[HALPE_LEFT_HAND:] = 1.3
  base_conf = np.full(NUM_KEYPOINTS, 0.0)
  base_conf[:HALPE_FACE], base_conf[HALPE_FACE:HALPE_LEFT_HAND], base_conf[HALPE_LEFT_HAND:] = (
      0.0, -0.05, -0.2)
  for frame in range(num_frames):
    for person, perf in enumerate(performances):
      noise_sigma = sigma.copy()
      conf = np.clip(quality[person] + base_conf - np.abs(rng.normal(0, 0.08, NUM_KEYPOINTS)),
                     0.05, 0.99)
      if perf.occluded:
        occluded = list(perf.occluded)
        conf[occluded] = rng.uniform(0.1, 0.45, len(occluded))
        noise_sigma[occluded] = 4.0
      xy = perf.keypoints[frame] + rng.normal(0, 1, (NUM_KEYPOINTS, 2)) * noise_sigma[:, None]
      outliers = rng.random(NUM_KEYPOINTS) < 0.01  # occasional jumps to a wrong place
      if outliers.any():
        xy[outliers] += rng.normal(0, 12, (int(outliers.sum()), 2))
        conf[outliers] = rng.uniform(0.05, 0.3, int(outliers.sum()))
      if missing[person][frame]:
        continue
      xy = np.clip(xy, 0, image_size - 1)
      lo, hi = xy.min(0), xy.max(0)
      margin = 0.1 * (hi - lo)
      lo, hi = np.maximum(lo - margin, 0), np.minimum(hi + margin, image_size - 1)
      box_score = rng.uniform(0.85, 1.0)
      keypoints = np.concatenate([xy, conf[:, None]], 1).reshape(-1)
      records.append({
          "image_id": frame_file(frame),
          "category_id": 1,
          "keypoints": np.round(keypoints, 2).tolist(),
          # AlphaPose's proposal score: mean + 1.25 * max keypoint score + the detector's score.
          "score": round(float(conf.mean() + 1.25 * conf.max() + box_score), 4),
          "box": [round(float(v), 2) for v in (lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1])],
          "idx": person + 1,
      })
  return records
