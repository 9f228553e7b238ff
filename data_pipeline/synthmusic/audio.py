"""SynthMUSIC audio: arrangements rendered offline from a General MIDI SoundFont with
tinysoundfont at 11025 Hz, mixed into PCM16 stems that sum exactly to the mixture."""

from __future__ import annotations

import pathlib
import wave
from typing import Sequence

import numpy as np

from data_pipeline.synthmusic import instruments

SAMPLE_RATE = 11025


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
    sound = instruments.INSTRUMENTS[category]
    synth = self.synth
    synth.sounds_off()
    synth.notes_off()
    channel = 9 if sound.program == instruments.PERCUSSION else 0
    try:
      if sound.program == instruments.PERCUSSION:
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


def write_wav(path: pathlib.Path, samples: np.ndarray) -> None:
  """Mono 16-bit PCM wav (stdlib writer: fixed header, byte-deterministic)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with wave.open(str(path), "wb") as out:
    out.setnchannels(1)
    out.setsampwidth(2)
    out.setframerate(SAMPLE_RATE)
    out.writeframes(samples.astype("<i2").tobytes())
