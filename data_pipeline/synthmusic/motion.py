"""SynthMUSIC motion: per-frame wrist targets, finger flex and body sway of a player, driven by
the notes it plays. Each family function here is an `Instrument.motion` (see instruments.py); it
sets the wrist targets on a `MotionState` and may change its flex, sway, head, foot and params."""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipeline.synthmusic.melodies import Note

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


@dataclasses.dataclass
class MotionState:
  """What every instrument's motion starts from, and what it sets (lw, rw [T, 2])."""

  t: np.ndarray  # [T] frame times in seconds
  notes: list[Note]
  main: list[Note]  # voice-0 notes (all notes when there are none)
  main_on: np.ndarray  # their onsets
  low: int  # the instrument's playing range
  high: int
  pitch_norm: np.ndarray  # [T] latest main pitch within the range, in [0, 1]
  pulse: np.ndarray  # [T] decaying onset pulses of all notes
  zeros: np.ndarray  # [T]
  lflex: np.ndarray  # [T, 5] finger flex, thumb to little
  rflex: np.ndarray
  params: dict
  sway: np.ndarray  # [T, 2]
  head: np.ndarray  # [T, 2]
  foot: np.ndarray  # [T]
  rng: np.random.Generator
  lw: np.ndarray | None = None
  rw: np.ndarray | None = None

  @property
  def T(self) -> int:  # pylint: disable=invalid-name
    return len(self.t)

  def by_voice(self, v: int) -> tuple[list[Note], np.ndarray]:
    """Notes of voice v and their onsets."""
    chosen = [n for n in self.notes if n.voice == v]
    return chosen, np.array([n.start for n in chosen])


def motion(instrument, notes: list[Note], t: np.ndarray, rng: np.random.Generator) -> dict:
  """Per-frame wrist targets (lw, rw [T,2]), finger flex (lflex, rflex [T,5]), sway, params."""
  low, high = instrument.low, instrument.high
  T = len(t)
  main = [n for n in notes if n.voice == 0] or notes
  onsets = np.array([n.start for n in notes])
  main_on = np.array([n.start for n in main])
  pitch_norm = _latest(t, main_on, [(n.pitch - low) / max(high - low, 1) for n in main], 0.5)
  pitch_norm = np.clip(pitch_norm, 0, 1)
  pulse = _onset_pulses(t, onsets, 0.12)
  zeros = np.zeros(T)
  sway = np.stack([0.03 * np.sin(2 * np.pi * t / rng.uniform(3, 6) + rng.uniform(0, 6)),
                   0.01 * np.sin(2 * np.pi * t / rng.uniform(2, 4))], 1)
  state = MotionState(t=t, notes=notes, main=main, main_on=main_on, low=low, high=high,
                      pitch_norm=pitch_norm, pulse=pulse, zeros=zeros,
                      lflex=np.full((T, 5), 0.3), rflex=np.full((T, 5), 0.3), params={},
                      sway=sway, head=np.zeros((T, 2)), foot=zeros.copy(), rng=rng)
  instrument.motion(state)
  return dict(lw=state.lw, rw=state.rw, lflex=state.lflex, rflex=state.rflex, sway=state.sway,
              head=state.head, foot=state.foot, params=state.params)


def bowed(s: MotionState, *, contact, axis, neck_end, neck_start, neck_shift: float = 0.0):
  """Violin, cello, erhu: one bow stroke per note; the left hand slides along the neck."""
  t, T = s.t, s.T
  bow = _bow_position(t, s.main)
  s.params["bow"] = bow
  contact, axis = np.array(contact), np.array(axis)
  neck_end, neck_start = np.array(neck_end), np.array(neck_start)
  axis = axis / np.linalg.norm(axis)
  s.rw = contact[None] + axis[None] * (0.12 + 0.6 * bow)[:, None]
  s.lw = neck_end[None] + (neck_start - neck_end)[None] * (0.15 + 0.7 * s.pitch_norm)[:, None]
  # Left fingers stop the string: which finger depends on the pitch, pressed at each onset.
  finger = _latest(t, s.main_on, [1 + (n.pitch % 4) for n in s.main], 1).astype(int)
  s.lflex[np.arange(T), finger] = 0.9
  s.lflex[:, 0] = 0.5
  s.rflex[:] = 0.55
  s.params.update(contact=contact, axis=axis)
  if neck_shift:
    s.lw[:, 0] += neck_shift


def fretted(s: MotionState, *, pluck, neck_start, neck_end, strum: bool = False,
            pluck_fingers=(1, 2, 3, 1), flick: bool = False):
  """Guitar family: left hand along the neck; the right hand strums chords (strum) or plucks
  with one finger per voice (pluck_fingers); flick adds the pipa's wrist flick."""
  t, T, zeros = s.t, s.T, s.zeros
  pluck, neck_start, neck_end = np.array(pluck), np.array(neck_start), np.array(neck_end)
  s.lw = neck_end[None] + (neck_start - neck_end)[None] * (0.1 + 0.75 * s.pitch_norm)[:, None]
  if strum:
    # Strum: each chord is one stroke, alternately down and up across the strings.
    strokes = np.array(sorted({round(n.start, 2) for n in s.notes}))
    # Group strum notes (staggered by < 30 ms) into one stroke each.
    keep = np.concatenate([[True], np.diff(strokes) > 0.05]) if len(strokes) else strokes
    strokes = strokes[keep] if len(strokes) else strokes
    count = np.searchsorted(strokes, t, side="right")
    down = (count % 2 == 1).astype(float)
    since, _ = _since_last(t, strokes)
    settle = np.exp(-np.where(np.isfinite(since), since, 10) / 0.35)
    s.rw = pluck[None] + np.stack([0.04 * (down - 0.5),
                                   0.2 * (down - 0.5) * (0.4 + 0.6 * settle)], 1)
    s.rflex[:] = 0.6
    chord_shape = _latest(t, s.main_on, [n.pitch % 5 for n in s.main], 0).astype(int)
    for f in range(1, 5):
      s.lflex[:, f] = 0.35 + 0.5 * ((chord_shape + f) % 3 == 0)
  else:
    # Finger plucks: the plucking finger curls briefly; the wrist flicks a little with it.
    s.rw = pluck[None] + np.stack([zeros, 0.06 * s.pulse], 1)
    for v in range(4):
      _, v_on = s.by_voice(v)
      s.rflex[:, pluck_fingers[v]] = 0.2 + 0.7 * np.minimum(_onset_pulses(t, v_on, 0.1), 1)
    if flick:
      s.rw = s.rw + np.stack([0.05 * s.pulse, zeros], 1)
    finger = _latest(t, s.main_on, [1 + (n.pitch % 4) for n in s.main], 1).astype(int)
    s.lflex[np.arange(T), finger] = 0.9
  s.params.update(neck_start=neck_start, neck_end=neck_end, pluck=pluck)


def zither(s: MotionState):
  """Guzheng: the right hand plucks along the strings by pitch, the left presses behind it."""
  t = s.t
  right_notes, right_on = s.by_voice(0)
  _, left_on = s.by_voice(1)
  span = s.high - s.low
  x_right = _latest(t, right_on, [-0.85 + 1.2 * (1 - (n.pitch - s.low) / span)
                                  for n in right_notes], -0.2)
  s.rw = np.stack([x_right, -0.1 + 0.07 * _onset_pulses(t, right_on, 0.1)], 1)
  s.lw = np.stack([np.clip(x_right + 0.75, 0.2, 0.9),
                   -0.1 + 0.08 * _onset_pulses(t, left_on, 0.12)], 1)
  s.rflex[:, 1] = 0.2 + 0.7 * np.minimum(_onset_pulses(t, right_on, 0.1), 1)
  s.rflex[:, 0] = 0.2 + 0.5 * np.minimum(_onset_pulses(t, right_on[::2], 0.1), 1)
  s.lflex[:, 1:3] = 0.4 + 0.5 * np.minimum(_onset_pulses(t, left_on, 0.12), 1)[:, None]


def keyboard(s: MotionState, *, bellows: bool = False):
  """Piano (keys seen from the front) or accordion (vertical treble keys on the player's right,
  the left hand working the bellows): each hand follows its voice and presses at its onsets."""
  t, T = s.t, s.T
  right_notes, right_on = s.by_voice(0)
  left_notes, left_on = s.by_voice(1)
  rn = np.clip(_latest(t, right_on, [(n.pitch - 55) / 30 for n in right_notes], 0.5), 0, 1)
  ln = np.clip(_latest(t, left_on, [(n.pitch - 36) / 22 for n in left_notes], 0.5), 0, 1)
  r_press = _onset_pulses(t, right_on, 0.12)
  l_press = _onset_pulses(t, left_on, 0.12)
  if not bellows:
    # Keyboard seen from the front: the player's right (high notes) is the image left.
    s.rw = np.stack([-(0.05 + 0.75 * rn), -0.22 + 0.06 * r_press], 1)
    s.lw = np.stack([0.05 + 0.75 * (1 - ln), -0.22 + 0.06 * l_press], 1)
  else:
    # Treble keys run vertically on the player's right; the left hand works the bellows.
    period = s.rng.uniform(2.0, 3.5)
    phase = (t / period) % 2
    opening = np.where(phase < 1, phase, 2 - phase)  # triangle wave in [0, 1]
    s.params["bellows"] = opening
    s.rw = np.stack([-0.42 - 0.05 * r_press, -0.95 + 0.65 * (1 - rn)], 1)
    s.lw = np.stack([0.5 + 0.3 * opening, -0.55 + 0.2 * ln - 0.04 * l_press], 1)
  r_finger = _latest(t, right_on, [1 + n.pitch % 4 for n in right_notes], 1).astype(int)
  l_finger = _latest(t, left_on, [1 + n.pitch % 4 for n in left_notes], 1).astype(int)
  s.rflex[np.arange(T), r_finger] = 0.3 + 0.6 * np.minimum(r_press, 1)
  s.lflex[np.arange(T), l_finger] = 0.3 + 0.6 * np.minimum(l_press, 1)


def xylophone(s: MotionState):
  """High bars on the player's right (image left); each mallet follows its last bar."""
  t = s.t
  right_notes, right_on = s.by_voice(1)
  left_notes, left_on = s.by_voice(0)
  rh = _strike_height(t, right_on)
  lh = _strike_height(t, left_on)

  def bar_x(ns, on, default):
    return _latest(t, on, [0.9 - 1.8 * (n.pitch - s.low) / (s.high - s.low) for n in ns],
                   default)

  rx, lx = bar_x(right_notes, right_on, -0.4), bar_x(left_notes, left_on, 0.4)
  rx, lx = np.minimum(rx, lx - 0.15), np.maximum(lx, rx + 0.15)
  s.rw = np.stack([rx, -0.28 - 0.3 * rh], 1)
  s.lw = np.stack([lx, -0.28 - 0.3 * lh], 1)
  s.rflex[:] = 0.85
  s.lflex[:] = 0.85
  s.params.update(right_height=rh, left_height=lh)


def hand_drums(s: MotionState):
  """Congas: each hand strikes its drum; open tones flat-handed, mutes (62) with curled fingers."""
  t, T = s.t, s.T
  right_notes, right_on = s.by_voice(0)
  _, left_on = s.by_voice(1)
  rh = _strike_height(t, right_on)
  lh = _strike_height(t, left_on)
  s.rw = np.stack([np.full(T, -0.3), -0.32 - 0.35 * rh], 1)
  s.lw = np.stack([np.full(T, 0.3), -0.27 - 0.35 * lh], 1)
  slap = _latest(t, right_on, [0.1 if n.pitch == 62 else 0.5 for n in right_notes], 0.3)
  s.rflex[:] = slap[:, None]
  s.params.update(right_height=rh, left_height=lh)


_KIT_POSITIONS = {42: (0.45, -0.32), 46: (0.45, -0.32), 38: (0.18, -0.08), 50: (0.15, -0.38),
                  48: (-0.15, -0.38), 45: (-0.5, -0.05), 49: (0.6, -0.85), 36: (0.0, 0.0)}


def drum_kit(s: MotionState):
  """Drum kit: sticks travel to the drum of each hit; the right foot works the kick pedal."""
  t, T, zeros = s.t, s.T, s.zeros
  positions = _KIT_POSITIONS
  right_notes, right_on = s.by_voice(0)
  left_notes, left_on = s.by_voice(1)
  _, foot_on = s.by_voice(2)
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
  s.rw = rpos + np.stack([-0.1 + zeros, -0.3 * rh], 1)
  s.lw = lpos + np.stack([0.08 + zeros, -0.3 * lh], 1)
  s.foot = 1.0 - _strike_height(t, foot_on, 0.1)
  s.params.update(right_height=rh, left_height=lh)
  s.rflex[:] = 0.8
  s.lflex[:] = 0.8


def wind(s: MotionState, *, left, right, valves: bool = False, bag: bool = False):
  """Winds: hands hold the instrument at fixed places (left / right wrist), fingers close holes
  (or press valves) by pitch, tonguing bobs the instrument; bag adds the bagpipe's squeeze."""
  t, T, zeros = s.t, s.T, s.zeros
  fingers = _fingering(np.round(_latest(t, s.main_on, [n.pitch for n in s.main], s.low)), s.low)
  articulation = s.pulse
  lw = np.tile(np.array(left), (T, 1))
  rw = np.tile(np.array(right), (T, 1))
  # Tonguing moves the instrument (and both hands) a little; the body sways with the phrase.
  bob = np.stack([zeros, 0.05 * np.minimum(articulation, 1)], 1)
  s.lw = lw + bob
  s.rw = rw + bob
  s.head = s.head + bob * 0.6
  if valves:
    pressed = _VALVES[np.round(_latest(t, s.main_on, [n.pitch for n in s.main],
                                       0)).astype(int) % 12]
    s.rflex[:, 1:4] = 0.15 + 0.8 * pressed
    s.lflex[:] = 0.7
  else:
    s.lflex[:, 0] = fingers[:, 0]
    s.lflex[:, 1:4] = fingers[:, 1:4]
    s.rflex[:, 1:4] = fingers[:, 4:7]
  s.sway = s.sway * 2.0
  if bag:
    s.params["squeeze"] = 0.5 + 0.5 * np.sin(2 * np.pi * t / s.rng.uniform(2.5, 4.0))
