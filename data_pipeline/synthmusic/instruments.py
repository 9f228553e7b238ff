"""The 21 SynthMUSIC instruments: one `Instrument` per class holds everything class-specific,
how it sounds (General MIDI program, range, arrangement), how its player moves (motion) and how
it is drawn (colour, drawing, what the hands hold), so adding or changing a class is one entry."""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

from data_pipeline.layout.schema import MUSIC21_CLASSES
from data_pipeline.synthmusic import arrangements, drawings, motion

PERCUSSION = "percussion"


@dataclasses.dataclass(frozen=True)
class Instrument:
  """One SynthMUSIC class."""

  name: str
  program: int | str  # 0-based GM program (GM lists them 1-based: add one), or PERCUSSION
  gm_name: str
  low: int  # MIDI pitch range the melody is folded into
  high: int
  reason: str  # why this GM sound stands for the class
  arrange: Callable  # (instrument, rng, duration, bank) -> (notes, bends); arrangements.py
  motion: Callable  # (motion.MotionState) -> None; motion.py
  draw: Callable  # (canvas, performance, frame, colour, dark, light) -> None; drawings.py
  colour: tuple[int, int, int]  # signature RGB; every clip jitters it a little (lighting, make)
  seated: bool = False
  occluded: tuple[int, ...] = ()  # Halpe body joints hidden by the instrument (low confidence)
  draw_held: Callable | None = None  # (canvas, performance, frame) -> None: bow, sticks


_p = functools.partial
_melody = _p(arrangements.melodic, rest_probability=0.05)
_wind_melody = _p(arrangements.melodic, rest_probability=0.07)
_LEGS_HIDDEN = (11, 12, 13, 14, 15, 16, 19, 20, 21, 22, 23, 24, 25)
_LAP_HIDDEN = (19, 11, 12)

INSTRUMENTS: dict[str, Instrument] = {i.name: i for i in (
    Instrument("accordion", 21, "Accordion", 55, 81, "GM has it",
               _p(arrangements.keyboard, left_low=41, left_high=57, left_velocity=0.6),
               _p(motion.keyboard, bellows=True), drawings.accordion, (200, 25, 35),
               occluded=(18,)),
    Instrument("acoustic_guitar", 25, "Acoustic Guitar (steel)", 40, 69,
               "GM has it; strummed chords", arrangements.strummed,
               _p(motion.fretted, pluck=(-0.12, -0.3), neck_start=(0.15, -0.42),
                  neck_end=(0.9, -0.62), strum=True),
               drawings.acoustic_guitar, (205, 140, 70), seated=True, occluded=_LAP_HIDDEN),
    Instrument("bagpipe", 109, "Bagpipe", 67, 81, "GM has it; chanter plus an A drone",
               arrangements.bagpipe,
               _p(motion.wind, left=(0.04, -0.78), right=(0.04, -0.5), bag=True),
               drawings.bagpipe, (30, 110, 50)),
    Instrument("banjo", 105, "Banjo", 50, 76, "GM has it; picked rolls", arrangements.banjo_roll,
               _p(motion.fretted, pluck=(-0.12, -0.28), neck_start=(0.15, -0.4),
                  neck_end=(0.95, -0.62), pluck_fingers=(0, 1, 2, 1)),
               drawings.banjo, (245, 240, 225), seated=True, occluded=_LAP_HIDDEN),
    Instrument("bassoon", 70, "Bassoon", 36, 62, "GM has it", _wind_melody,
               _p(motion.wind, left=(0.12, -0.85), right=(-0.1, -0.42)),
               drawings.bassoon, (140, 50, 25)),
    Instrument("cello", 42, "Cello", 38, 67, "GM has it; vibrato",
               _p(arrangements.melodic, vibrato=0.2),
               _p(motion.bowed, contact=(0.0, 0.22), axis=(-0.99, 0.12), neck_end=(0.05, -1.05),
                  neck_start=(0.03, -0.45), neck_shift=0.08),
               drawings.cello, (105, 38, 18), seated=True, occluded=(11, 12, 13, 14, 19),
               draw_held=_p(drawings.bow, length=0.95)),
    Instrument("clarinet", 71, "Clarinet", 55, 79, "GM has it", _wind_melody,
               _p(motion.wind, left=(0.02, -0.92), right=(0.0, -0.6)),
               drawings.clarinet, (22, 22, 25)),
    Instrument("congas", PERCUSSION, "percussion ch.10: 62 Mute Hi Conga, 63 Open Hi Conga, "
               "64 Low Conga", 62, 64, "GM percussion has congas", arrangements.congas,
               motion.hand_drums, drawings.congas, (215, 125, 55), occluded=(13, 14, 11, 12, 19)),
    Instrument("drum", PERCUSSION, "percussion ch.10 kit: 36 Bass Drum 1, 38 Acoustic Snare, "
               "42 Closed Hi-Hat, 46 Open Hi-Hat, 45/48/50 Toms, 49 Crash", 35, 51,
               "a drum kit, as MUSIC21's drum videos show", arrangements.drum_kit,
               motion.drum_kit, drawings.drum_kit, (35, 35, 40), seated=True,
               occluded=_LEGS_HIDDEN,
               draw_held=_p(drawings.sticks, colour=(225, 200, 150), mallet_heads=False)),
    Instrument("electric_bass", 33, "Electric Bass (finger)", 28, 52, "GM has it", _melody,
               _p(motion.fretted, pluck=(-0.12, -0.15), neck_start=(0.15, -0.28),
                  neck_end=(1.0, -0.55)),
               drawings.electric_bass, (30, 90, 220)),
    Instrument("erhu", 110, "Fiddle", 62, 86, "GM lacks erhu: the closest bowed two-string "
               "timbre is Fiddle; played high with portamento slides and wide vibrato",
               _p(arrangements.melodic, vibrato=0.45, slides=True),
               # The bow passes between the strings just above the resonator on the left thigh.
               _p(motion.bowed, contact=(0.26, -0.02), axis=(-1.0, 0.05), neck_end=(0.26, -1.15),
                  neck_start=(0.26, -0.55)),
               drawings.erhu, (25, 18, 15), seated=True, occluded=(11,),
               draw_held=_p(drawings.bow, length=0.95)),
    Instrument("flute", 73, "Flute", 67, 91, "GM has it", _wind_melody,
               _p(motion.wind, left=(-0.18, -1.2), right=(-0.58, -1.17)),
               drawings.flute, (200, 200, 212)),
    Instrument("guzheng", 107, "Koto", 50, 86, "GM lacks guzheng: koto is its Japanese relative "
               "(plucked long zither); pentatonic glissandi added", arrangements.zither,
               motion.zither, drawings.guzheng, (150, 40, 30), seated=True,
               occluded=(11, 12, 13, 14, 19)),
    Instrument("piano", 0, "Acoustic Grand Piano", 36, 84, "GM has it; melody + bass line",
               _p(arrangements.keyboard, left_low=36, left_high=57, left_velocity=0.75),
               motion.keyboard, drawings.piano, (12, 12, 12), seated=True,
               occluded=_LEGS_HIDDEN),
    Instrument("pipa", 106, "Shamisen", 52, 81, "GM lacks pipa: shamisen is the closest plucked "
               "lute; long notes played as pipa-style tremolo", arrangements.tremolo,
               _p(motion.fretted, pluck=(-0.02, -0.12), neck_start=(0.0, -0.55),
                  neck_end=(0.02, -1.15), flick=True),
               drawings.pipa, (235, 215, 160), seated=True, occluded=_LAP_HIDDEN),
    Instrument("saxophone", 65, "Alto Sax", 53, 77, "GM has it", _wind_melody,
               _p(motion.wind, left=(-0.06, -0.78), right=(-0.02, -0.42)),
               drawings.saxophone, (225, 170, 35)),
    Instrument("trumpet", 56, "Trumpet", 58, 80, "GM has it", _wind_melody,
               _p(motion.wind, left=(-0.32, -1.12), right=(-0.22, -1.22), valves=True),
               drawings.trumpet, (245, 215, 90)),
    Instrument("tuba", 58, "Tuba", 29, 55, "GM has it", _wind_melody,
               _p(motion.wind, left=(0.32, -0.72), right=(-0.18, -0.62), valves=True),
               drawings.tuba, (180, 182, 192), occluded=_LAP_HIDDEN),
    Instrument("ukulele", 24, "Acoustic Guitar (nylon)", 60, 81, "GM lacks ukulele: nylon "
               "guitar in the ukulele's register, high re-entrant strummed chords",
               _p(arrangements.strummed, reentrant=True),
               _p(motion.fretted, pluck=(-0.08, -0.62), neck_start=(0.12, -0.7),
                  neck_end=(0.6, -0.82), strum=True),
               drawings.ukulele, (60, 190, 190)),
    Instrument("violin", 40, "Violin", 55, 88, "GM has it; light vibrato",
               _p(arrangements.melodic, vibrato=0.2),
               _p(motion.bowed, contact=(0.22, -1.0), axis=(-0.94, 0.34), neck_end=(0.85, -1.12),
                  neck_start=(0.45, -1.05)),
               drawings.violin, (190, 90, 30), draw_held=_p(drawings.bow, length=0.85)),
    Instrument("xylophone", 13, "Xylophone", 65, 89, "GM has it; rolls on long notes",
               arrangements.mallets, motion.xylophone, drawings.xylophone, (180, 80, 50),
               occluded=(11, 12, 19),
               draw_held=_p(drawings.sticks, colour=(120, 80, 50), mallet_heads=True)),
)}

CLASSES: tuple[str, ...] = MUSIC21_CLASSES
assert tuple(sorted(INSTRUMENTS)) == CLASSES, "one Instrument per MUSIC21 class"
