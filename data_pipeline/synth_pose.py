"""SynthMUSIC pose: Halpe-136 keypoints of a player whose arms, hands and fingers move with the
notes in an instrument-specific way (bowing, strumming, plucking, pressing keys, striking,
fingering), plus AlphaPose-like detection noise, missed detections and confidences."""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipeline.synth_audio import GM_MAP, Note

FPS = 8
NUM_KEYPOINTS = 136
LEFT_HAND = 94  # Halpe: 94..114 left hand, 115..135 right hand, 26..93 face
RIGHT_HAND = 115
FACE = 26

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

SEATED = {"acoustic_guitar", "banjo", "cello", "drum", "erhu", "guzheng", "piano", "pipa"}
BOWED = {"violin", "cello", "erhu"}
WINDS = {"bagpipe", "bassoon", "clarinet", "flute", "saxophone", "trumpet", "tuba"}

UPPER_ARM = 0.5
FOREARM = 0.5

@dataclasses.dataclass
class Performance:
  """Clean keypoints and instrument pose of one player over a clip."""

  keypoints: np.ndarray  # [T, 136, 2] pixels, noise-free (what the frame shows)
  origin: np.ndarray  # [T, 2] pixel position of the hip centre (sway included)
  unit: float  # pixels per body unit
  params: dict  # per-frame instrument parameters in body units, e.g. bow position
  category: str
  occluded: tuple[int, ...]  # body joints hidden by the instrument (low confidence)


# ---------------------------------------------------------------------------------------------
# Time signals from a note list, sampled at the frame times
# ---------------------------------------------------------------------------------------------


def _onset_pulses(t: np.ndarray, onsets: np.ndarray, tau: float) -> np.ndarray:
  """Sum of decaying pulses exp(-(t - onset)/tau) started at each onset, capped at 1.5. [T]"""
  if len(onsets) == 0:
    return np.zeros_like(t)
  d = t[:, None] - onsets[None, :]  # [T, notes]
  return np.minimum(np.where(d >= 0, np.exp(-np.maximum(d, 0) / tau), 0.0).sum(1), 1.5)


def _since_last(t: np.ndarray, onsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(seconds since the latest onset <= t (inf if none), its index or -1). [T] each"""
  index = np.searchsorted(onsets, t, side="right") - 1
  since = np.where(index >= 0, t - onsets[np.maximum(index, 0)], np.inf)
  return since, index


def _latest(t, onsets, values, default):
  """Value attached to the most recent onset <= t (held through rests). [T, ...]"""
  _, index = _since_last(t, onsets)
  values = np.asarray(values, float)
  out = values[np.maximum(index, 0)] if len(values) else np.full(len(t), default, float)
  return np.where((index >= 0).reshape((-1,) + (1,) * (out.ndim - 1)), out, default)


def _strike_height(t, onsets, rise=0.14):
  """Stick/mallet/hand height: 0 at the moment of a hit, rising back to 1 afterwards. [T]"""
  since, _ = _since_last(t, onsets)
  return 1.0 - np.exp(-np.where(np.isfinite(since), since, 10.0) / rise)


def _bow_position(t, notes: list[Note]):
  """Bow position in [0, 1] along the bow; each note is one stroke, alternating direction,
  front-loaded (fast at the attack, slowing towards the end) as in detache bowing. [T]"""
  position = np.full(len(t), 0.5)
  current = 0.5
  direction = 1.0
  boundaries = [(n.start, n.end) for n in notes]
  prev_end = 0.0
  for k, (start, end) in enumerate(boundaries):
    stop = boundaries[k + 1][0] if k + 1 < len(boundaries) else np.inf
    length = max(min(end, stop) - start, 0.1)
    target = 1.0 if direction > 0 else 0.0
    span = target - current
    stroke = (t >= start) & (t < stop)
    f = np.clip((t - start) / length, 0, 1)
    position = np.where(stroke, current + span * (1 - (1 - f) ** 2), position)
    hold = (t >= prev_end) & (t < start) if k else (t < start)
    position = np.where(hold, current, position)
    current = target
    direction = -direction
    prev_end = stop
  return position


def _fingering(pitch: np.ndarray, low: int) -> np.ndarray:
  """Woodwind-like fingering: six holes closed from the top down for lower scale degrees, plus an
  octave key on the left thumb. [T, 7] flex in [0, 1] (left thumb, L1-L3, R1-R3)."""
  semis = np.maximum(pitch - low, 0).astype(int)
  degree = np.array([0, 0, 1, 1, 2, 3, 3, 4, 4, 5, 5, 6])[semis % 12]
  octave = (semis // 12) % 2
  holes = 6 - degree  # closed holes counted from the top
  closed = (np.arange(6)[None, :] < holes[:, None]).astype(float)
  return np.concatenate([octave[:, None].astype(float), closed], 1) * 0.85 + 0.1


_VALVES = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0], [0, 1, 0],
                    [0, 0, 0], [1, 0, 1], [1, 1, 0], [1, 0, 0], [0, 1, 0]], float)


# ---------------------------------------------------------------------------------------------
# Instrument-specific motion: wrist targets, hand flex and body sway per frame (body units)
# ---------------------------------------------------------------------------------------------


def _motion(category: str, notes: list[Note], t: np.ndarray, rng: np.random.Generator) -> dict:
  """Per-frame wrist targets (lw, rw [T,2]), finger flex (lflex, rflex [T,5]), sway, params."""
  sound = GM_MAP[category]
  T = len(t)
  main = [n for n in notes if n.voice == 0] or notes
  onsets = np.array([n.start for n in notes])
  main_on = np.array([n.start for n in main])
  pitch_norm = _latest(t, main_on, [(n.pitch - sound.low) / max(sound.high - sound.low, 1)
                                    for n in main], 0.5)
  pitch_norm = np.clip(pitch_norm, 0, 1)
  pulse = _onset_pulses(t, onsets, 0.12)
  zeros = np.zeros(T)
  lflex = np.full((T, 5), 0.3)
  rflex = np.full((T, 5), 0.3)
  params: dict = {}
  sway = np.stack([0.03 * np.sin(2 * np.pi * t / rng.uniform(3, 6) + rng.uniform(0, 6)),
                   0.01 * np.sin(2 * np.pi * t / rng.uniform(2, 4))], 1)
  head = np.zeros((T, 2))
  foot = zeros.copy()

  def by_voice(v):
    chosen = [n for n in notes if n.voice == v]
    return chosen, np.array([n.start for n in chosen])

  if category in BOWED:
    bow = _bow_position(t, main)
    params["bow"] = bow
    if category == "violin":
      contact = np.array([0.22, -1.0])
      axis = np.array([-0.94, 0.34])
      neck_end, neck_start = np.array([0.85, -1.12]), np.array([0.45, -1.05])
    elif category == "cello":
      contact = np.array([0.0, 0.22])
      axis = np.array([-0.99, 0.12])
      neck_end, neck_start = np.array([0.05, -1.05]), np.array([0.03, -0.45])
    else:  # erhu: bow passes between the strings just above the resonator on the left thigh
      contact = np.array([0.26, -0.02])
      axis = np.array([-1.0, 0.05])
      neck_end, neck_start = np.array([0.26, -1.15]), np.array([0.26, -0.55])
    axis = axis / np.linalg.norm(axis)
    rw = contact[None] + axis[None] * (0.12 + 0.6 * bow)[:, None]
    lw = neck_end[None] + (neck_start - neck_end)[None] * (0.15 + 0.7 * pitch_norm)[:, None]
    # Left fingers stop the string: which finger depends on the pitch, pressed at each onset.
    finger = _latest(t, main_on, [1 + (n.pitch % 4) for n in main], 1).astype(int)
    lflex[np.arange(T), finger] = 0.9
    lflex[:, 0] = 0.5
    rflex[:] = 0.55
    params.update(contact=contact, axis=axis)
    if category == "cello":
      lw[:, 0] += 0.08
  elif category in ("acoustic_guitar", "ukulele", "banjo", "electric_bass", "pipa"):
    layout = {
        # (strum/pluck point, neck start, neck end)
        "acoustic_guitar": ((-0.12, -0.3), (0.15, -0.42), (0.9, -0.62)),
        "ukulele": ((-0.08, -0.62), (0.12, -0.7), (0.6, -0.82)),
        "banjo": ((-0.12, -0.28), (0.15, -0.4), (0.95, -0.62)),
        "electric_bass": ((-0.12, -0.15), (0.15, -0.28), (1.0, -0.55)),
        "pipa": ((-0.02, -0.12), (0.0, -0.55), (0.02, -1.15)),
    }[category]
    pluck, neck_start, neck_end = (np.array(p) for p in layout)
    lw = neck_end[None] + (neck_start - neck_end)[None] * (0.1 + 0.75 * pitch_norm)[:, None]
    if category in ("acoustic_guitar", "ukulele"):
      # Strum: each chord is one stroke, alternately down and up across the strings.
      strokes = np.array(sorted({round(n.start, 2) for n in notes}))
      # Group strum notes (staggered by < 30 ms) into one stroke each.
      keep = np.concatenate([[True], np.diff(strokes) > 0.05]) if len(strokes) else strokes
      strokes = strokes[keep] if len(strokes) else strokes
      count = np.searchsorted(strokes, t, side="right")
      down = (count % 2 == 1).astype(float)
      since, _ = _since_last(t, strokes)
      settle = np.exp(-np.where(np.isfinite(since), since, 10) / 0.35)
      rw = pluck[None] + np.stack([0.04 * (down - 0.5),
                                   0.2 * (down - 0.5) * (0.4 + 0.6 * settle)], 1)
      rflex[:] = 0.6
      chord_shape = _latest(t, main_on, [n.pitch % 5 for n in main], 0).astype(int)
      for f in range(1, 5):
        lflex[:, f] = 0.35 + 0.5 * ((chord_shape + f) % 3 == 0)
    else:
      # Finger plucks: the plucking finger curls briefly; the wrist flicks a little with it.
      rw = pluck[None] + np.stack([zeros, 0.06 * pulse], 1)
      for v in range(4):
        _, v_on = by_voice(v)
        finger = 1 + (v % 3) if category != "banjo" else (0, 1, 2, 1)[v]
        rflex[:, finger] = 0.2 + 0.7 * np.minimum(_onset_pulses(t, v_on, 0.1), 1)
      if category == "pipa":
        rw = rw + np.stack([0.05 * pulse, zeros], 1)
      finger = _latest(t, main_on, [1 + (n.pitch % 4) for n in main], 1).astype(int)
      lflex[np.arange(T), finger] = 0.9
    params.update(neck_start=neck_start, neck_end=neck_end, pluck=pluck)
  elif category == "guzheng":
    right_notes, right_on = by_voice(0)
    left_notes, left_on = by_voice(1)
    span = sound.high - sound.low
    x_right = _latest(t, right_on, [-0.85 + 1.2 * (1 - (n.pitch - sound.low) / span)
                                    for n in right_notes], -0.2)
    rw = np.stack([x_right, -0.1 + 0.07 * _onset_pulses(t, right_on, 0.1)], 1)
    lw = np.stack([np.clip(x_right + 0.75, 0.2, 0.9),
                   -0.1 + 0.08 * _onset_pulses(t, left_on, 0.12)], 1)
    rflex[:, 1] = 0.2 + 0.7 * np.minimum(_onset_pulses(t, right_on, 0.1), 1)
    rflex[:, 0] = 0.2 + 0.5 * np.minimum(_onset_pulses(t, right_on[::2], 0.1), 1)
    lflex[:, 1:3] = 0.4 + 0.5 * np.minimum(_onset_pulses(t, left_on, 0.12), 1)[:, None]
  elif category in ("piano", "accordion"):
    right_notes, right_on = by_voice(0)
    left_notes, left_on = by_voice(1)
    rn = np.clip(_latest(t, right_on, [(n.pitch - 55) / 30 for n in right_notes], 0.5), 0, 1)
    ln = np.clip(_latest(t, left_on, [(n.pitch - 36) / 22 for n in left_notes], 0.5), 0, 1)
    r_press = _onset_pulses(t, right_on, 0.12)
    l_press = _onset_pulses(t, left_on, 0.12)
    if category == "piano":
      # Keyboard seen from the front: the player's right (high notes) is the image left.
      rw = np.stack([-(0.05 + 0.75 * rn), -0.22 + 0.06 * r_press], 1)
      lw = np.stack([0.05 + 0.75 * (1 - ln), -0.22 + 0.06 * l_press], 1)
    else:
      # Treble keys run vertically on the player's right; the left hand works the bellows.
      period = rng.uniform(2.0, 3.5)
      phase = (t / period) % 2
      bellows = np.where(phase < 1, phase, 2 - phase)  # triangle wave in [0, 1]
      params["bellows"] = bellows
      rw = np.stack([-0.42 - 0.05 * r_press, -0.95 + 0.65 * (1 - rn)], 1)
      lw = np.stack([0.5 + 0.3 * bellows, -0.55 + 0.2 * ln - 0.04 * l_press], 1)
    r_finger = _latest(t, right_on, [1 + n.pitch % 4 for n in right_notes], 1).astype(int)
    l_finger = _latest(t, left_on, [1 + n.pitch % 4 for n in left_notes], 1).astype(int)
    rflex[np.arange(T), r_finger] = 0.3 + 0.6 * np.minimum(r_press, 1)
    lflex[np.arange(T), l_finger] = 0.3 + 0.6 * np.minimum(l_press, 1)
  elif category in ("xylophone", "congas"):
    right_notes, right_on = by_voice(0 if category == "congas" else 1)
    left_notes, left_on = by_voice(1 if category == "congas" else 0)
    rh = _strike_height(t, right_on)
    lh = _strike_height(t, left_on)
    if category == "xylophone":
      # High bars on the player's right (image left); each mallet follows its last bar.
      def bar_x(ns, on, default):
        return _latest(t, on, [0.9 - 1.8 * (n.pitch - sound.low) / (sound.high - sound.low)
                               for n in ns], default)
      rx, lx = bar_x(right_notes, right_on, -0.4), bar_x(left_notes, left_on, 0.4)
      rx, lx = np.minimum(rx, lx - 0.15), np.maximum(lx, rx + 0.15)
      rw = np.stack([rx, -0.28 - 0.3 * rh], 1)
      lw = np.stack([lx, -0.28 - 0.3 * lh], 1)
      rflex[:] = 0.85
      lflex[:] = 0.85
    else:
      rw = np.stack([np.full(T, -0.3), -0.32 - 0.35 * rh], 1)
      lw = np.stack([np.full(T, 0.3), -0.27 - 0.35 * lh], 1)
      slap = _latest(t, right_on, [0.1 if n.pitch == 62 else 0.5 for n in right_notes], 0.3)
      rflex[:] = slap[:, None]
    params.update(right_height=rh, left_height=lh)
  elif category == "drum":
    positions = {42: (0.45, -0.32), 46: (0.45, -0.32), 38: (0.18, -0.08), 50: (0.15, -0.38),
                 48: (-0.15, -0.38), 45: (-0.5, -0.05), 49: (0.6, -0.85), 36: (0.0, 0.0)}
    right_notes, right_on = by_voice(0)
    left_notes, left_on = by_voice(1)
    _, foot_on = by_voice(2)
    # Before its first hit each hand hovers over its home drum (hi-hat / snare).
    rpos = _latest(t, right_on, [positions.get(n.pitch, (0.15, -0.38)) for n in right_notes],
                   (0.45, -0.32))
    lpos = _latest(t, left_on, [positions.get(n.pitch, (0.18, -0.08)) for n in left_notes],
                   (0.18, -0.08))
    if rpos.ndim == 1:
      rpos = np.tile([0.45, -0.32], (T, 1))
    if lpos.ndim == 1:
      lpos = np.tile([0.18, -0.08], (T, 1))
    rh = _strike_height(t, right_on, 0.12)
    lh = _strike_height(t, left_on, 0.12)
    rw = rpos + np.stack([-0.1 + zeros, -0.3 * rh], 1)
    lw = lpos + np.stack([0.08 + zeros, -0.3 * lh], 1)
    foot = 1.0 - _strike_height(t, foot_on, 0.1)
    params.update(right_height=rh, left_height=lh)
    rflex[:] = 0.8
    lflex[:] = 0.8
  else:  # winds
    fingers = _fingering(np.round(_latest(t, main_on, [n.pitch for n in main], sound.low)),
                         sound.low)
    articulation = pulse
    layout = {
        # (left wrist, right wrist)
        "flute": ((-0.18, -1.2), (-0.58, -1.17)),
        "clarinet": ((0.02, -0.92), (0.0, -0.6)),
        "saxophone": ((-0.06, -0.78), (-0.02, -0.42)),
        "bassoon": ((0.12, -0.85), (-0.1, -0.42)),
        "trumpet": ((-0.32, -1.12), (-0.22, -1.22)),
        "tuba": ((0.32, -0.72), (-0.18, -0.62)),
        "bagpipe": ((0.04, -0.78), (0.04, -0.5)),
    }[category]
    lw = np.tile(np.array(layout[0]), (T, 1))
    rw = np.tile(np.array(layout[1]), (T, 1))
    # Tonguing moves the instrument (and both hands) a little; the body sways with the phrase.
    bob = np.stack([zeros, 0.05 * np.minimum(articulation, 1)], 1)
    lw = lw + bob
    rw = rw + bob
    head = head + bob * 0.6
    if category in ("trumpet", "tuba"):
      valves = _VALVES[np.round(_latest(t, main_on, [n.pitch for n in main], 0)).astype(int) % 12]
      rflex[:, 1:4] = 0.15 + 0.8 * valves
      lflex[:] = 0.7
    else:
      lflex[:, 0] = fingers[:, 0]
      lflex[:, 1:4] = fingers[:, 1:4]
      rflex[:, 1:4] = fingers[:, 4:7]
    sway = sway * 2.0
    if category == "bagpipe":
      params["squeeze"] = 0.5 + 0.5 * np.sin(2 * np.pi * t / rng.uniform(2.5, 4.0))
  return dict(lw=lw, rw=rw, lflex=lflex, rflex=rflex, sway=sway, head=head, foot=foot,
              params=params)


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

# Body joints hidden behind each instrument (the estimator gives them low confidence).
_OCCLUDED = {
    "cello": (11, 12, 13, 14, 19), "piano": (11, 12, 13, 14, 15, 16, 19, 20, 21, 22, 23, 24, 25),
    "drum": (11, 12, 13, 14, 15, 16, 19, 20, 21, 22, 23, 24, 25), "guzheng": (11, 12, 13, 14, 19),
    "congas": (13, 14, 11, 12, 19), "xylophone": (11, 12, 19), "tuba": (19, 11, 12),
    "acoustic_guitar": (19, 11, 12), "banjo": (19, 11, 12), "pipa": (19, 11, 12),
    "accordion": (18,), "erhu": (11,),
}


def perform(category: str, notes: list[Note], num_frames: int, centre: tuple[float, float],
            unit: float, rng: np.random.Generator) -> Performance:
  """Clean Halpe-136 keypoints of one player of `category` playing `notes`."""
  t = np.arange(num_frames) / FPS
  motion = _motion(category, notes, t, rng)
  base = _SIT if category in SEATED else _STAND
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
                     category=category, occluded=_OCCLUDED.get(category, ()))


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
  sigma[LEFT_HAND:] = 1.3
  base_conf = np.full(NUM_KEYPOINTS, 0.0)
  base_conf[:26], base_conf[FACE:LEFT_HAND], base_conf[LEFT_HAND:] = 0.0, -0.05, -0.2
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
          "image_id": f"{frame + 1:06d}.jpg",
          "category_id": 1,
          "keypoints": np.round(keypoints, 2).tolist(),
          # AlphaPose's proposal score: mean + 1.25 * max keypoint score + the detector's score.
          "score": round(float(conf.mean() + 1.25 * conf.max() + box_score), 4),
          "box": [round(float(v), 2) for v in (lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1])],
          "idx": person + 1,
      })
  return records
