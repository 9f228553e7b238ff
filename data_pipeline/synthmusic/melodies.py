"""SynthMUSIC melodies: monophonic parts of music21 corpus pieces, excerpted, tempo-scaled and
folded into an instrument's range (what every arrangement starts from)."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

# The pieces whose parts give the melodies (all ship inside music21's wheel, parse offline, ~3 s in
# total). Chorales give singable phrases; the Corelli, Haydn and Mozart string parts add dotted,
# syncopated and running rhythms.
CORPUS_PIECES = (
    "bach/bwv66.6",
    "bach/bwv1.6",
    "bach/bwv10.7",
    "bach/bwv110.7",
    "corelli/opus3no1/1grave",
    "haydn/opus74no1/movement3",
    "mozart/k155/movement1",
)

@dataclasses.dataclass(frozen=True)
class Note:
  """One sounding note; `voice` tells the pose which hand/limb plays it."""

  start: float  # seconds
  end: float
  pitch: int  # MIDI pitch (percussion: GM drum note)
  velocity: int
  voice: int = 0  # 0 main (melody / right hand), 1 second part (bass / left hand / drone), 2 foot



# ---------------------------------------------------------------------------------------------
# Melody bank (parsed once per process in the parent, then passed to workers as plain tuples)
# ---------------------------------------------------------------------------------------------

# A part is a tuple of (midi pitch, onset in quarter notes, duration in quarter notes).
Part = tuple[tuple[int, float, float], ...]


@functools.lru_cache(maxsize=None)
def melody_bank() -> tuple[tuple[Part, ...], ...]:
  """Monophonic parts (top note of chords, grace notes dropped) of CORPUS_PIECES, per piece."""
  from music21 import corpus  # imported lazily: only the parent process needs it
  pieces = []
  for name in CORPUS_PIECES:
    score = corpus.parse(name)
    parts = []
    for part in score.parts:
      by_onset: dict[float, tuple[int, float]] = {}
      for element in part.flatten().notes:
        duration = float(element.quarterLength)
        if duration <= 0:  # grace note
          continue
        onset = float(element.offset)
        top = max(p.midi for p in element.pitches)
        if onset not in by_onset or top > by_onset[onset][0]:
          by_onset[onset] = (top, duration)
      notes = tuple((p, o, d) for o, (p, d) in sorted(by_onset.items()))
      if len(notes) >= 24:
        parts.append(notes)
    if not parts:
      raise ValueError(f"music21 corpus piece {name} has no usable part")
    pieces.append(tuple(parts))
  return tuple(pieces)


def fold(pitch: int, low: int, high: int) -> int:
  """Moves a pitch by octaves into [low, high]."""
  while pitch < low:
    pitch += 12
  while pitch > high:
    pitch -= 12
  return pitch


def excerpt(part: Part, rng: np.random.Generator, duration: float,
             seconds_per_quarter: float) -> list[tuple[int, float, float]]:
  """Consecutive notes of a part (looping) covering `duration` seconds, times in seconds."""
  total_quarters = part[-1][1] + part[-1][2]
  start_index = int(rng.integers(0, len(part)))
  origin = part[start_index][1]
  out = []
  loop = 0.0
  index = start_index
  while True:
    pitch, onset, length = part[index]
    t = (onset - origin + loop) * seconds_per_quarter
    if t >= duration:
      break
    out.append((pitch, t, length * seconds_per_quarter))
    index += 1
    if index == len(part):
      index = 0
      loop += total_quarters
  return out


def melody(bank, rng: np.random.Generator, low: int, high: int, duration: float,
           part_choice: tuple[int, int] | None = None, second_voice: bool = False,
           rest_probability: float = 0.05):
  """Picks a corpus part, a tempo, a transposition into range, rests and dynamics."""
  piece = bank[int(rng.integers(len(bank)))] if part_choice is None else bank[part_choice[0]]
  part_index = int(rng.integers(len(piece))) if part_choice is None else part_choice[1]
  part = piece[part_index]
  median_quarters = float(np.median([d for _, _, d in part]))
  # Tempo chosen so the typical note lasts 0.2-0.55 s, as in played solos.
  seconds_per_quarter = float(np.clip(rng.uniform(0.2, 0.55) / median_quarters, 0.3, 1.0))
  lead_in = float(rng.uniform(0.0, 0.4))
  raw = excerpt(part, rng, duration - lead_in, seconds_per_quarter)
  pitches = np.array([p for p, _, _ in raw])
  centre = (low + high) / 2 + rng.uniform(-3, 3)
  shift = int(round(centre - np.median(pitches)))
  legato = rng.uniform(0.65, 0.97)
  base_velocity = rng.uniform(60, 105)
  arc_period = rng.uniform(3.0, 8.0)
  arc_phase = rng.uniform(0, 2 * np.pi)
  notes = []
  skip_until = -1.0
  for pitch, t, length in raw:
    t += lead_in
    if t < skip_until:
      continue
    if rng.random() < rest_probability and t > 0.5:
      # A rest of one to two beats: breath, phrase end, bow change.
      skip_until = t + rng.uniform(1.0, 2.0) * seconds_per_quarter
      continue
    velocity = base_velocity + 15 * np.sin(2 * np.pi * t / arc_period + arc_phase)
    velocity += rng.normal(0, 5) + (8 if (t - lead_in) % (4 * seconds_per_quarter) < 1e-3 else 0)
    end = min(t + max(length * legato, 0.08), duration)
    notes.append(Note(t, end, fold(pitch + shift, low, high),
                      int(np.clip(velocity, 30, 127))))
  result = {"notes": notes, "spq": seconds_per_quarter, "piece": piece, "part_index": part_index,
            "shift": shift}
  if second_voice and len(piece) > 1:
    # A lower part of the same piece, time-aligned, for the left hand (piano, accordion).
    other = len(piece) - 1 if part_index != len(piece) - 1 else 0
    result["second"] = piece[other]
  return result


def second_voice(melody, rng, duration, low, high, velocity_scale=0.8):
  """The time-aligned lower part of the melody's piece, folded into [low, high]."""
  part = melody["second"]
  spq = melody["spq"]
  first = melody["notes"]
  if not first:
    return []
  lead_in = first[0].start
  # Align by musical position: the melody excerpt starts at some quarter-note offset; reuse it.
  rng_local = np.random.default_rng(int(rng.integers(1 << 31)))
  raw = excerpt(part, rng_local, duration - lead_in, spq)
  pitches = np.array([p for p, _, _ in raw]) if raw else np.array([low])
  shift = int(round((low + high) / 2 - np.median(pitches)))
  notes = []
  for pitch, t, length in raw:
    t += lead_in
    velocity = int(np.clip(rng.normal(70, 8) * velocity_scale, 25, 120))
    notes.append(Note(t, min(t + length * 0.9, duration), fold(pitch + shift, low, high), velocity,
                      voice=1))
  return notes


def chord(top: int, minor: bool, low: int) -> list[int]:
  """A close triad under `top` (top, third below, fifth below, root an octave down)."""
  third = 4 if not minor else 3
  root = top - 7 if top - 7 >= low else top + 5
  return sorted({root, root + third, root + 7, fold(root - 12, low, low + 24)})
