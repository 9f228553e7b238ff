"""SynthMUSIC audio: real melodies from music21's corpus, arranged per instrument, rendered offline
from a General MIDI SoundFont with tinysoundfont at 11025 Hz."""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Sequence

import numpy as np

SAMPLE_RATE = 11025

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

PERCUSSION = "percussion"


@dataclasses.dataclass(frozen=True)
class InstrumentSound:
  """How one SynthMUSIC class sounds: a GM program (or percussion notes) and a playing range."""

  program: int | str  # 0-based GM program, or PERCUSSION
  gm_name: str
  low: int  # MIDI pitch range the melody is folded into
  high: int
  reason: str


# Class -> General MIDI sound. Program numbers are 0-based (GM lists them 1-based: add one).
GM_MAP: dict[str, InstrumentSound] = {
    "accordion": InstrumentSound(21, "Accordion", 55, 81, "GM has it"),
    "acoustic_guitar": InstrumentSound(25, "Acoustic Guitar (steel)", 40, 69,
                                       "GM has it; strummed chords"),
    "bagpipe": InstrumentSound(109, "Bagpipe", 67, 81, "GM has it; chanter plus an A drone"),
    "banjo": InstrumentSound(105, "Banjo", 50, 76, "GM has it; picked rolls"),
    "bassoon": InstrumentSound(70, "Bassoon", 36, 62, "GM has it"),
    "cello": InstrumentSound(42, "Cello", 38, 67, "GM has it; vibrato"),
    "clarinet": InstrumentSound(71, "Clarinet", 55, 79, "GM has it"),
    "congas": InstrumentSound(PERCUSSION, "percussion ch.10: 62 Mute Hi Conga, 63 Open Hi Conga, "
                              "64 Low Conga", 62, 64, "GM percussion has congas"),
    "drum": InstrumentSound(PERCUSSION, "percussion ch.10 kit: 36 Bass Drum 1, 38 Acoustic Snare, "
                            "42 Closed Hi-Hat, 46 Open Hi-Hat, 45/48/50 Toms, 49 Crash", 35, 51,
                            "a drum kit, as MUSIC21's drum videos show"),
    "electric_bass": InstrumentSound(33, "Electric Bass (finger)", 28, 52, "GM has it"),
    "erhu": InstrumentSound(110, "Fiddle", 62, 86, "GM lacks erhu: the closest bowed two-string "
                            "timbre is Fiddle; played high with portamento slides and wide "
                            "vibrato"),
    "flute": InstrumentSound(73, "Flute", 67, 91, "GM has it"),
    "guzheng": InstrumentSound(107, "Koto", 50, 86, "GM lacks guzheng: koto is its Japanese "
                               "relative (plucked long zither); pentatonic glissandi added"),
    "piano": InstrumentSound(0, "Acoustic Grand Piano", 36, 84, "GM has it; melody + bass line"),
    "pipa": InstrumentSound(106, "Shamisen", 52, 81, "GM lacks pipa: shamisen is the closest "
                            "plucked lute; long notes played as pipa-style tremolo"),
    "saxophone": InstrumentSound(65, "Alto Sax", 53, 77, "GM has it"),
    "trumpet": InstrumentSound(56, "Trumpet", 58, 80, "GM has it"),
    "tuba": InstrumentSound(58, "Tuba", 29, 55, "GM has it"),
    "ukulele": InstrumentSound(24, "Acoustic Guitar (nylon)", 60, 81, "GM lacks ukulele: nylon "
                               "guitar in the ukulele's register, high re-entrant strummed chords"),
    "violin": InstrumentSound(40, "Violin", 55, 88, "GM has it; light vibrato"),
    "xylophone": InstrumentSound(13, "Xylophone", 65, 89, "GM has it; rolls on long notes"),
}

CLASSES: tuple[str, ...] = tuple(sorted(GM_MAP))


@dataclasses.dataclass(frozen=True)
class Note:
  """One sounding note; `voice` tells the pose which hand/limb plays it."""

  start: float  # seconds
  end: float
  pitch: int  # MIDI pitch (percussion: GM drum note)
  velocity: int
  voice: int = 0  # 0 main (melody / right hand), 1 second part (bass / left hand / drone), 2 foot


def default_soundfont() -> pathlib.Path:
  """Path of the TimGM6mb.sf2 General MIDI SoundFont that ships inside pretty_midi."""
  import importlib.util
  spec = importlib.util.find_spec("pretty_midi")
  if spec is None or spec.origin is None:
    raise FileNotFoundError("pretty_midi is not installed, so its TimGM6mb.sf2 is missing; pass "
                            "--soundfont PATH")
  path = pathlib.Path(spec.origin).parent / "TimGM6mb.sf2"
  if not path.is_file():
    raise FileNotFoundError(f"SoundFont not found: {path}")
  return path


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


# ---------------------------------------------------------------------------------------------
# Arrangement: a melody excerpt turned into an instrument-specific note list
# ---------------------------------------------------------------------------------------------


def _fold(pitch: int, low: int, high: int) -> int:
  """Moves a pitch by octaves into [low, high]."""
  while pitch < low:
    pitch += 12
  while pitch > high:
    pitch -= 12
  return pitch


def _excerpt(part: Part, rng: np.random.Generator, duration: float,
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


def _melody(bank, rng: np.random.Generator, sound: InstrumentSound, duration: float,
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
  raw = _excerpt(part, rng, duration - lead_in, seconds_per_quarter)
  pitches = np.array([p for p, _, _ in raw])
  centre = (sound.low + sound.high) / 2 + rng.uniform(-3, 3)
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
    notes.append(Note(t, end, _fold(pitch + shift, sound.low, sound.high),
                      int(np.clip(velocity, 30, 127))))
  result = {"notes": notes, "spq": seconds_per_quarter, "piece": piece, "part_index": part_index,
            "shift": shift}
  if second_voice and len(piece) > 1:
    # A lower part of the same piece, time-aligned, for the left hand (piano, accordion).
    other = len(piece) - 1 if part_index != len(piece) - 1 else 0
    result["second"] = piece[other]
  return result


def _second_voice(melody, rng, duration, low, high, velocity_scale=0.8):
  """The time-aligned lower part of the melody's piece, folded into [low, high]."""
  part = melody["second"]
  spq = melody["spq"]
  first = melody["notes"]
  if not first:
    return []
  lead_in = first[0].start
  # Align by musical position: the melody excerpt starts at some quarter-note offset; reuse it.
  rng_local = np.random.default_rng(int(rng.integers(1 << 31)))
  raw = _excerpt(part, rng_local, duration - lead_in, spq)
  pitches = np.array([p for p, _, _ in raw]) if raw else np.array([low])
  shift = int(round((low + high) / 2 - np.median(pitches)))
  notes = []
  for pitch, t, length in raw:
    t += lead_in
    velocity = int(np.clip(rng.normal(70, 8) * velocity_scale, 25, 120))
    notes.append(Note(t, min(t + length * 0.9, duration), _fold(pitch + shift, low, high), velocity,
                      voice=1))
  return notes


def _chord(top: int, minor: bool, low: int) -> list[int]:
  """A close triad under `top` (top, third below, fifth below, root an octave down)."""
  third = 4 if not minor else 3
  root = top - 7 if top - 7 >= low else top + 5
  return sorted({root, root + third, root + 7, _fold(root - 12, low, low + 24)})


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
  melody = _melody(bank, rng, InstrumentSound(0, "", 48, 72, ""), duration, rest_probability=0.04)
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


def arrange(category: str, rng: np.random.Generator, duration: float, bank) -> dict:
  """Note list plus expressive controls (vibrato, slides) for one player of `category`."""
  sound = GM_MAP[category]
  # (start, end, vibrato depth, slide semitones) per bent note
  bends: list[tuple[float, float, float, float]] = []
  if category == "drum":
    notes = _drum_pattern(rng, duration)
  elif category == "congas":
    notes = _conga_part(bank, rng, duration)
  elif category in ("piano", "accordion"):
    melody = _melody(bank, rng, sound, duration, second_voice=True)
    notes = list(melody["notes"])
    if "second" in melody:
      low, high = (36, 57) if category == "piano" else (41, 57)
      notes += _second_voice(melody, rng, duration, low, high,
                             0.75 if category == "piano" else 0.6)
  elif category in ("acoustic_guitar", "ukulele"):
    melody = _melody(bank, rng, sound, duration)
    notes = []
    minor = rng.random() < 0.4
    down = True
    for n in melody["notes"]:
      chord = _chord(n.pitch, minor, sound.low)
      if category == "ukulele":  # re-entrant tuning: voicing kept in one octave
        chord = sorted({_fold(p, 60, 76) for p in chord})
      order = chord if down else chord[::-1]
      stagger = rng.uniform(0.012, 0.025)
      for k, p in enumerate(order):
        s = n.start + k * stagger
        notes.append(Note(s, max(n.end, s + 0.1), p, int(np.clip(n.velocity - 4 * k, 25, 127))))
      down = not down
  elif category == "banjo":
    melody = _melody(bank, rng, sound, duration)
    notes = []
    sixteenth = melody["spq"] / 4
    for n in melody["notes"]:
      chord = _chord(n.pitch, False, sound.low)[-3:]
      t = n.start
      k = 0
      while t < n.end - 0.02:  # forward roll over the chord tones
        p = chord[k % 3] if k else n.pitch
        velocity = int(np.clip(n.velocity - (0 if k == 0 else 12), 25, 127))
        notes.append(Note(t, min(t + 0.25, duration), p, velocity, voice=k % 3))
        t += max(sixteenth, 0.09)
        k += 1
  elif category == "pipa":
    melody = _melody(bank, rng, sound, duration)
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
  elif category == "guzheng":
    melody = _melody(bank, rng, sound, duration)
    notes = []
    pentatonic = np.array([0, 2, 4, 7, 9])
    for n in melody["notes"]:
      if rng.random() < 0.1 and n.start > 0.3:  # pentatonic glissando into the note
        scale = [p for p in range(n.pitch - 14, n.pitch) if (p - n.pitch) % 12 in pentatonic]
        scale = scale[-7:]
        for k, p in enumerate(scale):
          s = n.start - 0.035 * (len(scale) - k)
          notes.append(Note(max(s, 0.0), max(s, 0.0) + 0.3, _fold(p, sound.low, sound.high), 55,
                            voice=0))
      notes.append(n)
      if rng.random() < 0.25:  # octave doubling with the left hand
        notes.append(Note(n.start, n.end, _fold(n.pitch - 12, sound.low, sound.high),
                          n.velocity - 10, voice=1))
  elif category == "bagpipe":
    melody = _melody(bank, rng, sound, duration, rest_probability=0.0)
    notes = []
    for k, n in enumerate(melody["notes"]):
      if rng.random() < 0.3 and n.start > 0.1:  # high-G gracenote
        notes.append(Note(n.start - 0.04, n.start, 79, n.velocity))
      following = melody["notes"][k + 1].start if k + 1 < len(melody["notes"]) else duration
      notes.append(Note(n.start, max(n.end, following), n.pitch, 100))  # chanter: no articulation
    drone_start = max(0.0, melody["notes"][0].start - 0.3) if melody["notes"] else 0.0
    notes.append(Note(drone_start, duration, 57, 70, voice=1))
    notes.append(Note(drone_start, duration, 45, 70, voice=1))
  elif category == "xylophone":
    melody = _melody(bank, rng, sound, duration)
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
                          voice=int(n.pitch >= (sound.low + sound.high) // 2)))
  else:
    melody = _melody(bank, rng, sound, duration, rest_probability=0.07 if category in (
        "flute", "clarinet", "saxophone", "trumpet", "tuba", "bassoon") else 0.05)
    notes = list(melody["notes"])
    if category in ("violin", "cello", "erhu"):
      depth = {"violin": 0.2, "cello": 0.2, "erhu": 0.45}[category]
      for k, n in enumerate(notes):
        slide = 0.0
        if category == "erhu" and k > 0 and rng.random() < 0.45:
          slide = float(np.clip(notes[k - 1].pitch - n.pitch, -2, 2))
        bends.append((n.start, n.end, depth, slide))
  notes.sort(key=lambda n: (n.start, n.pitch))
  return {"notes": notes, "bends": bends}


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


class Renderer:
  """Offline tinysoundfont renderer (one per process; the SoundFont is loaded once)."""

  def __init__(self, soundfont: str | pathlib.Path):
    import tinysoundfont
    self.path = str(soundfont)
    self.synth = tinysoundfont.Synth(gain=0, samplerate=SAMPLE_RATE)
    try:
      self.sfid = self.synth.sfload(self.path)
    except Exception as error:  # tinysoundfont raises its own exception type
      raise ValueError(f"cannot load SoundFont {self.path}: {error}") from error

  def render(self, category: str, arrangement: dict, num_samples: int) -> np.ndarray:
    """Mono float32 waveform [num_samples] of one player's arrangement."""
    sound = GM_MAP[category]
    synth = self.synth
    synth.sounds_off()
    synth.notes_off()
    channel = 9 if sound.program == PERCUSSION else 0
    try:
      if sound.program == PERCUSSION:
        synth.program_select(channel, self.sfid, 128, 0, is_drums=True)
      else:
        synth.program_select(channel, self.sfid, 0, int(sound.program))
    except Exception as error:
      raise ValueError(f"SoundFont {self.path} lacks the GM preset for {category} "
                       f"({sound.gm_name}): {error}") from error
    synth.pitchbend_range(channel, 2.0)
    synth.pitchbend(channel, 8192)
    # Events: (sample, order, kind, pitch, velocity); note-offs sort before note-ons at one time.
    events = []
    for n in arrangement["notes"]:
      events.append((int(round(n.start * SAMPLE_RATE)), 1, "on", n.pitch, n.velocity))
      events.append((int(round(n.end * SAMPLE_RATE)), 0, "off", n.pitch, 0))
    # Pitch-bend automation every 128 samples inside bent notes (vibrato 5.5 Hz, slides 120 ms).
    for start, end, depth, slide in arrangement["bends"]:
      s0, s1 = int(start * SAMPLE_RATE), int(end * SAMPLE_RATE)
      for s in range(s0, s1, 128):
        t = (s - s0) / SAMPLE_RATE
        semis = depth * np.sin(2 * np.pi * 5.5 * t) * min(1.0, t / 0.25)
        if slide:
          semis += slide * max(0.0, 1.0 - t / 0.12)
        events.append((s, 2, "bend", int(np.clip(8192 + semis / 2.0 * 8191, 0, 16383)), 0))
      events.append((s1, 2, "bend", 8192, 0))
    events.sort(key=lambda e: (e[0], e[1], e[3]))
    out = np.zeros(num_samples, np.float32)
    position = 0
    for sample, _, kind, value, velocity in events:
      sample = min(max(sample, 0), num_samples)
      if sample > position:
        block = np.frombuffer(synth.generate_simple(sample - position), np.float32)
        out[position:sample] = block.reshape(-1, 2).mean(axis=1)
        position = sample
      if kind == "on":
        synth.noteon(channel, value, velocity)
      elif kind == "off":
        synth.noteoff(channel, value)
      else:
        synth.pitchbend(channel, value)
    if position < num_samples:
      block = np.frombuffer(synth.generate_simple(num_samples - position), np.float32)
      out[position:] = block.reshape(-1, 2).mean(axis=1)
    synth.sounds_off()
    synth.generate_simple(256)  # flush voices so the next render starts silent
    if not np.isfinite(out).all() or float(np.sqrt(np.mean(out ** 2))) < 1e-4:
      raise ValueError(f"SoundFont {self.path} rendered silence for {category} ({sound.gm_name})")
    return out


def to_pcm16(stems: Sequence[np.ndarray], target_rms: Sequence[float]) -> list[np.ndarray]:
  """Scales stems to their target RMS, then all by one factor so their sum peaks <= 0.95; int16.

  The written mixture is the integer sum of the returned int16 stems, so sources add up to the mix
  exactly (no rounding residue) and the mix never clips.
  """
  scaled = [s * (r / max(float(np.sqrt(np.mean(s ** 2))), 1e-8)) for s, r in zip(stems, target_rms)]
  total = np.sum(scaled, axis=0)
  peak = max(float(np.max(np.abs(total))), max(float(np.max(np.abs(s))) for s in scaled))
  factor = min(1.0, 0.95 / max(peak, 1e-8))
  return [np.round(s * factor * 32767).astype(np.int16) for s in scaled]
