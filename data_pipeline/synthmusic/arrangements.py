"""SynthMUSIC arrangements: a melody excerpt turned into one instrument's note list and
expressive controls. Each function here is an `Instrument.arrange` (see instruments.py):
(instrument, rng, duration, bank) -> (notes, bends), bends = (start, end, vibrato depth, slide
semitones) per bent note."""

from __future__ import annotations

import numpy as np

from data_pipeline.synthmusic import melodies
from data_pipeline.synthmusic.melodies import Note, chord, fold


def _drum_pattern(rng: np.random.Generator, duration: float) -> list[Note]:
  """A rock kit groove with variations, fills and crashes (voice 0 right hand, 1 left, 2 foot)."""
  spq = rng.uniform(0.38, 0.65)
  eighth = spq / 2
  notes = []
  t = rng.uniform(0.0, 0.3)
  step = 0
  base = rng.uniform(70, 105)
  kick_steps = {0, 4} if rng.random() < 0.5 else {0, 3, 4}
  bars_per_fill = int(rng.choice([2, 4]))
  while t < duration - 0.05:
    bar_step = step % 8
    bar = step // 8
    v = lambda s: int(np.clip(base * s + rng.normal(0, 6), 30, 127))  # noqa: E731
    in_fill = bar % bars_per_fill == bars_per_fill - 1 and bar_step >= 4
    if in_fill:
      tom = [50, 48, 45, 45][bar_step - 4]
      notes.append(Note(t, t + 0.1, tom, v(1.0), voice=step % 2))
      notes.append(Note(t + eighth / 2, t + eighth / 2 + 0.1, tom, v(0.8), voice=(step + 1) % 2))
    else:
      if rng.random() > 0.08:
        hat = 46 if (bar_step == 7 and rng.random() < 0.3) else 42
        notes.append(Note(t, t + 0.08, hat, v(0.7), voice=0))
      if bar_step in (2, 6):
        notes.append(Note(t, t + 0.1, 38, v(1.05), voice=1))
    if bar_step in kick_steps or (rng.random() < 0.1 and bar_step % 2 == 1):
      notes.append(Note(t, t + 0.1, 36, v(1.0), voice=2))
    if bar_step == 0 and bar % 4 == 0 and bar > 0:
      notes.append(Note(t, t + 0.3, 49, v(0.9), voice=0))
    if rng.random() < 0.04 and t > 1.0:
      t += spq * 2  # a short break
      step += 4
      continue
    t += eighth
    step += 1
  return [n for n in notes if n.start < duration]


def _conga_part(bank, rng, duration) -> list[Note]:
  """Conga strokes on the rhythm of a corpus melody: high notes on the high drum, low on the low."""
  melody = melodies.melody(bank, rng, 48, 72, duration, rest_probability=0.04)
  notes = melody["notes"]
  if not notes:
    return []
  median = np.median([n.pitch for n in notes])
  out = []
  for i, n in enumerate(notes):
    if n.pitch >= median:
      drum = 63 if (i % 3) else 62  # open tone, with mutes
      voice = 0
    else:
      drum = 64
      voice = 1
    out.append(Note(n.start, n.start + 0.15, drum, n.velocity, voice))
    if n.end - n.start > 0.5 and rng.random() < 0.5:  # ghost stroke inside long notes
      t = n.start + (n.end - n.start) / 2
      out.append(Note(t, t + 0.1, 62, max(30, n.velocity - 30), 1 - voice))
  return out


def drum_kit(instrument, rng, duration, bank):
  """A rock kit groove (no melody)."""
  del instrument, bank
  return _drum_pattern(rng, duration), []


def congas(instrument, rng, duration, bank):
  """Conga strokes on a melody's rhythm."""
  del instrument
  return _conga_part(bank, rng, duration), []


def keyboard(instrument, rng, duration, bank, *, left_low: int, left_high: int,
             left_velocity: float):
  """Melody in the right hand, the piece's lower part in the left hand's range."""
  melody = melodies.melody(bank, rng, instrument.low, instrument.high, duration,
                           second_voice=True)
  notes = list(melody["notes"])
  if "second" in melody:
    notes += melodies.second_voice(melody, rng, duration, left_low, left_high, left_velocity)
  return notes, []


def strummed(instrument, rng, duration, bank, *, reentrant: bool = False):
  """Every melody note as a strummed chord, alternately down and up; a re-entrant tuning
  (ukulele) keeps the voicing in one octave."""
  melody = melodies.melody(bank, rng, instrument.low, instrument.high, duration)
  notes = []
  minor = rng.random() < 0.4
  down = True
  for n in melody["notes"]:
    tones = chord(n.pitch, minor, instrument.low)
    if reentrant:
      tones = sorted({fold(p, 60, 76) for p in tones})
    order = tones if down else tones[::-1]
    stagger = rng.uniform(0.012, 0.025)
    for k, p in enumerate(order):
      s = n.start + k * stagger
      notes.append(Note(s, max(n.end, s + 0.1), p, int(np.clip(n.velocity - 4 * k, 25, 127))))
    down = not down
  return notes, []


def banjo_roll(instrument, rng, duration, bank):
  """Forward rolls over the chord tones of each melody note."""
  melody = melodies.melody(bank, rng, instrument.low, instrument.high, duration)
  notes = []
  sixteenth = melody["spq"] / 4
  for n in melody["notes"]:
    tones = chord(n.pitch, False, instrument.low)[-3:]
    t = n.start
    k = 0
    while t < n.end - 0.02:  # forward roll over the chord tones
      p = tones[k % 3] if k else n.pitch
      velocity = int(np.clip(n.velocity - (0 if k == 0 else 12), 25, 127))
      notes.append(Note(t, min(t + 0.25, duration), p, velocity, voice=k % 3))
      t += max(sixteenth, 0.09)
      k += 1
  return notes, []


def tremolo(instrument, rng, duration, bank):
  """Pipa: long notes played as lunzhi tremolo (rapid repeated plucks)."""
  melody = melodies.melody(bank, rng, instrument.low, instrument.high, duration)
  notes = []
  for n in melody["notes"]:
    if n.end - n.start > 0.4 and rng.random() < 0.7:
      t = n.start
      rate = rng.uniform(0.06, 0.09)
      k = 0
      while t < n.end:  # lunzhi tremolo: rapid repeated plucks
        notes.append(Note(t, min(t + rate * 1.5, duration), n.pitch,
                          int(np.clip(n.velocity - (0 if k == 0 else 15), 25, 127)), voice=k % 4))
        t += rate
        k += 1
    else:
      notes.append(n)
  return notes, []


def zither(instrument, rng, duration, bank):
  """Guzheng: pentatonic glissandi into some notes, left-hand octave doublings."""
  low, high = instrument.low, instrument.high
  melody = melodies.melody(bank, rng, low, high, duration)
  notes = []
  pentatonic = np.array([0, 2, 4, 7, 9])
  for n in melody["notes"]:
    if rng.random() < 0.1 and n.start > 0.3:  # pentatonic glissando into the note
      scale = [p for p in range(n.pitch - 14, n.pitch) if (p - n.pitch) % 12 in pentatonic]
      scale = scale[-7:]
      for k, p in enumerate(scale):
        s = n.start - 0.035 * (len(scale) - k)
        notes.append(Note(max(s, 0.0), max(s, 0.0) + 0.3, fold(p, low, high), 55, voice=0))
    notes.append(n)
    if rng.random() < 0.25:  # octave doubling with the left hand
      notes.append(Note(n.start, n.end, fold(n.pitch - 12, low, high), n.velocity - 10, voice=1))
  return notes, []


def bagpipe(instrument, rng, duration, bank):
  """Chanter without articulation, high-G gracenotes, and an A drone."""
  melody = melodies.melody(bank, rng, instrument.low, instrument.high, duration,
                           rest_probability=0.0)
  notes = []
  for k, n in enumerate(melody["notes"]):
    if rng.random() < 0.3 and n.start > 0.1:  # high-G gracenote
      notes.append(Note(n.start - 0.04, n.start, 79, n.velocity))
    following = melody["notes"][k + 1].start if k + 1 < len(melody["notes"]) else duration
    notes.append(Note(n.start, max(n.end, following), n.pitch, 100))  # chanter: no articulation
  drone_start = max(0.0, melody["notes"][0].start - 0.3) if melody["notes"] else 0.0
  notes.append(Note(drone_start, duration, 57, 70, voice=1))
  notes.append(Note(drone_start, duration, 45, 70, voice=1))
  return notes, []


def mallets(instrument, rng, duration, bank):
  """Xylophone: two-mallet rolls on long notes, each bar struck by the nearer mallet."""
  low, high = instrument.low, instrument.high
  melody = melodies.melody(bank, rng, low, high, duration)
  notes = []
  for n in melody["notes"]:
    if n.end - n.start > 0.6 and rng.random() < 0.5:
      t, k = n.start, 0
      while t < n.end:  # two-mallet roll
        notes.append(Note(t, t + 0.1, n.pitch, int(np.clip(n.velocity - 10, 25, 127)),
                          voice=k % 2))
        t += 0.075
        k += 1
    else:
      notes.append(Note(n.start, n.start + 0.15, n.pitch, n.velocity,
                        voice=int(n.pitch >= (low + high) // 2)))
  return notes, []


def melodic(instrument, rng, duration, bank, *, rest_probability: float = 0.05,
            vibrato: float = 0.0, slides: bool = False):
  """The melody as played (winds breathe more often); bowed strings add vibrato (depth in
  semitones) and, for the erhu, portamento slides from the previous note."""
  melody = melodies.melody(bank, rng, instrument.low, instrument.high, duration,
                           rest_probability=rest_probability)
  notes = list(melody["notes"])
  bends = []
  if vibrato:
    for k, n in enumerate(notes):
      slide = 0.0
      if slides and k > 0 and rng.random() < 0.45:
        slide = float(np.clip(notes[k - 1].pitch - n.pitch, -2, 2))
      bends.append((n.start, n.end, vibrato, slide))
  return notes, bends


def arrange(instrument, rng: np.random.Generator, duration: float, bank) -> dict:
  """Note list (sorted by start, pitch) plus expressive controls (vibrato, slides) for one
  player of `instrument`."""
  notes, bends = instrument.arrange(instrument, rng, duration, bank)
  notes.sort(key=lambda n: (n.start, n.pitch))
  return {"notes": notes, "bends": bends}
