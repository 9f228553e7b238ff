"""SynthMUSIC: a deterministic MUSIC21-like dataset (21 instruments, solos and duets) with real
SoundFont instrument audio, pose that plays the notes, and drawn video frames.

  python -m data_pipeline.synthmusic --out DIR --size {tiny,default,large} --seed N \
      [--soundfont PATH] [--workers K]

Modules: generator (plan, render, index files, CLI), instruments (one `Instrument` per class),
melodies + arrangements + audio (sound), motion + pose (keypoints), drawings + frames (video).
"""

from data_pipeline.synthmusic.generator import COMPLETE_MARKER, SIZES, generate

__all__ = ["COMPLETE_MARKER", "SIZES", "generate"]
