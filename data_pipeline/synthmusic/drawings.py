"""SynthMUSIC drawings: the Canvas (body units around a player) and one drawing per instrument
(an `Instrument.draw`, see instruments.py), plus what moves with the hands (bows, sticks)."""

from __future__ import annotations

import numpy as np
from PIL import ImageDraw

from data_pipeline.synthmusic.motion import Performance

_RAINBOW = ((220, 40, 40), (240, 140, 30), (240, 220, 40), (60, 180, 60), (40, 120, 220),
            (100, 60, 200), (200, 60, 160))


def shade(colour, factor):
  """The colour darkened (factor < 1) or lightened (factor > 1)."""
  return tuple(max(0, min(255, int(c * factor))) for c in colour)


class Canvas:
  """Drawing helpers in body units relative to one player's hip centre in one frame."""

  def __init__(self, draw: ImageDraw.ImageDraw, perf: Performance, frame: int):
    self.draw = draw
    self.unit = perf.unit
    self.origin = perf.origin[frame] + perf.params["sway"][frame] * perf.unit
    self.fixed_origin = perf.origin[frame]
    self.kp = perf.keypoints[frame]

  def p(self, xy, fixed=False):
    o = self.fixed_origin if fixed else self.origin
    return (float(o[0] + xy[0] * self.unit), float(o[1] + xy[1] * self.unit))

  def w(self, width):
    return max(1, int(round(width * self.unit)))

  def ellipse(self, centre, rx, ry, fill, outline=None, width=1, fixed=False):
    cx, cy = self.p(centre, fixed)
    self.draw.ellipse((cx - rx * self.unit, cy - ry * self.unit, cx + rx * self.unit,
                       cy + ry * self.unit), fill=fill, outline=outline, width=width)

  def line(self, points, fill, width, fixed=False):
    self.draw.line([self.p(q, fixed) for q in points], fill=fill, width=self.w(width))

  def polygon(self, points, fill, outline=None, fixed=False):
    self.draw.polygon([self.p(q, fixed) for q in points], fill=fill, outline=outline)

  def pixel_line(self, a, b, fill, width):
    self.draw.line([tuple(map(float, a)), tuple(map(float, b))], fill=fill, width=self.w(width))


def _neck(c: Canvas, start, end, colour, width, frets=0, fret_colour=(200, 200, 200)):
  """A neck from start to end (body units) with `frets` frets."""
  c.line([start, end], colour, width)
  start, end = np.array(start), np.array(end)
  for k in range(1, frets + 1):
    m = start + (end - start) * k / (frets + 1)
    d = (end - start) / np.linalg.norm(end - start)
    n = np.array([-d[1], d[0]]) * width * 0.5
    c.line([m - n, m + n], fret_colour, 0.012)


def violin(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Violin under the chin, scroll towards the image right."""
  c.ellipse((0.32, -0.98), 0.19, 0.12, colour, dark, 1)
  c.ellipse((0.15, -1.0), 0.13, 0.1, colour, dark, 1)
  c.line([(0.22, -1.0), (0.28, -0.98)], dark, 0.02)
  _neck(c, (0.4, -1.02), (0.88, -1.12), (20, 15, 10), 0.045)
  c.ellipse((0.9, -1.12), 0.035, 0.035, dark)


def cello(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Cello between the knees on its endpin."""
  c.ellipse((0.0, 0.3), 0.34, 0.26, colour, dark, 2)
  c.ellipse((0.0, -0.08), 0.27, 0.2, colour, dark, 2)
  c.line([(-0.09, 0.0), (-0.09, 0.25)], (20, 10, 5), 0.02)
  c.line([(0.09, 0.0), (0.09, 0.25)], (20, 10, 5), 0.02)
  _neck(c, (0.02, -0.2), (0.06, -1.15), (15, 12, 10), 0.06)
  c.ellipse((0.06, -1.2), 0.05, 0.05, dark)
  c.line([(0.0, 0.55), (0.0, 0.9)], (120, 120, 130), 0.02)  # endpin


def erhu(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Erhu upright on the left thigh: hexagonal resonator, long neck, red tassel."""
  hexagon = [(0.26 + 0.13 * np.cos(a), 0.05 + 0.13 * np.sin(a))
             for a in np.linspace(0, 2 * np.pi, 7)[:-1]]
  c.polygon(hexagon, colour, (120, 90, 60))
  c.ellipse((0.26, 0.05), 0.07, 0.07, (180, 160, 120))  # python-skin membrane
  c.line([(0.26, 0.0), (0.26, -1.25)], (60, 30, 15), 0.05)
  c.line([(0.22, -1.05), (0.31, -1.05)], (60, 30, 15), 0.025)
  c.line([(0.22, -0.95), (0.31, -0.95)], (60, 30, 15), 0.025)
  c.line([(0.3, -0.6), (0.34, -0.3)], (220, 20, 30), 0.06)  # red tassel


def pipa(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Pipa upright on the lap: pear-shaped body, frets, four strings."""
  c.polygon([(-0.25, 0.05), (-0.2, -0.25), (-0.05, -0.52), (0.07, -0.52), (0.2, -0.25),
             (0.25, 0.05), (0.12, 0.2), (-0.12, 0.2)], colour, dark)
  for k in range(4):
    c.line([(-0.18 + 0.12 * k, 0.12), (-0.02 + 0.015 * k, -1.1)], (250, 250, 240), 0.006)
  _neck(c, (0.0, -0.52), (0.02, -1.15), shade(colour, 0.8), 0.08, 6, (240, 240, 230))
  c.polygon([(-0.04, -1.15), (0.08, -1.15), (0.05, -1.3), (-0.02, -1.3)], dark)


def guzheng(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Guzheng across the lap (fixed: does not sway), strings and bridges."""
  c.polygon([(-1.05, -0.12), (1.05, -0.16), (1.05, 0.08), (-1.05, 0.12)], colour, dark, True)
  for k in range(10):
    y = -0.1 + 0.02 * k
    c.line([(-1.0, y + 0.004 * k), (1.0, y - 0.004 * k)], (230, 200, 90), 0.005, True)
    c.ellipse((0.2 + 0.05 * np.sin(k), y), 0.015, 0.012, (245, 245, 245), fixed=True)
  c.line([(-1.05, 0.12), (1.05, 0.08)], dark, 0.04, True)


def piano(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Piano front with a keyboard (fixed)."""
  c.polygon([(-1.15, -0.34), (1.15, -0.34), (1.15, 0.9), (-1.15, 0.9)], colour, fixed=True)
  c.polygon([(-1.1, -0.3), (1.1, -0.3), (1.1, -0.14), (-1.1, -0.14)], (245, 245, 240),
            fixed=True)
  for k in range(36):
    x = -1.1 + 2.2 * k / 36
    c.line([(x, -0.3), (x, -0.14)], (120, 120, 120), 0.004, True)
    if k % 7 not in (2, 6):
      c.polygon([(x + 0.04, -0.3), (x + 0.075, -0.3), (x + 0.075, -0.2), (x + 0.04, -0.2)],
                (10, 10, 10), fixed=True)
  c.line([(-1.15, 0.9), (1.15, 0.9)], (60, 60, 60), 0.03, True)


def accordion(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Accordion: treble keys on the right, bellows opening with the left hand."""
  params = perf.params
  bellows = float(params["bellows"][frame])
  left = -0.42
  right = 0.25 + 0.3 * bellows
  c.polygon([(left - 0.08, -1.0), (left + 0.1, -1.0), (left + 0.1, -0.2), (left - 0.08, -0.2)],
            colour, dark)
  for k in range(12):  # treble keys
    y = -0.97 + 0.065 * k
    c.polygon([(left - 0.07, y), (left, y), (left, y + 0.05), (left - 0.07, y + 0.05)],
              (250, 250, 250) if k % 3 else (10, 10, 10))
  n_folds = 7
  for k in range(n_folds):  # bellows folds
    x0 = left + 0.1 + (right - left - 0.1) * k / n_folds
    x1 = left + 0.1 + (right - left - 0.1) * (k + 1) / n_folds
    c.polygon([(x0, -0.95), (x1, -0.95), (x1, -0.25), (x0, -0.25)],
              (240, 240, 240) if k % 2 else (20, 20, 20))
  c.polygon([(right, -0.95), (right + 0.14, -0.95), (right + 0.14, -0.25), (right, -0.25)],
            colour, dark)


def bagpipe(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Bagpipe: tartan bag under the arm (squeezed), drones, blowpipe, chanter."""
  params = perf.params
  squeeze = float(params["squeeze"][frame])
  centre = (0.4, -0.62)
  rx, ry = 0.22 - 0.03 * squeeze, 0.17
  c.ellipse(centre, rx, ry, colour, dark, 1)
  for k in range(-2, 3):  # tartan
    c.line([(centre[0] + 0.08 * k, centre[1] - ry * 0.9), (centre[0] + 0.08 * k,
                                                             centre[1] + ry * 0.9)],
           (200, 30, 30), 0.015)
    c.line([(centre[0] - rx * 0.9, centre[1] + 0.06 * k), (centre[0] + rx * 0.9,
                                                            centre[1] + 0.06 * k)],
           (30, 40, 150), 0.012)
  for k, (dx, top) in enumerate(((0.32, -1.55), (0.42, -1.65), (0.52, -1.5))):  # drones
    c.line([(0.35 + 0.05 * k, -0.7), (dx + 0.1, top)], (20, 20, 20), 0.035)
    c.ellipse((dx + 0.1, top), 0.03, 0.02, (235, 235, 220))
  c.line([(0.3, -0.7), (0.05, -1.18)], (20, 20, 20), 0.02)  # blowpipe
  c.line([(0.28, -0.55), (0.04, -0.8), (0.04, -0.3)], (15, 15, 15), 0.04)  # chanter


def flute(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Transverse flute held to the image left."""
  c.line([(0.12, -1.26), (-0.95, -1.2)], colour, 0.07)
  for k in range(8):
    c.ellipse((-0.1 - 0.1 * k, -1.22), 0.015, 0.015, shade(colour, 0.7))


def clarinet(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Clarinet pointing down from the mouth."""
  c.line([(0.0, -1.22), (0.02, -0.32)], colour, 0.09)
  c.polygon([(-0.06, -0.35), (0.1, -0.35), (0.15, -0.2), (-0.11, -0.2)], colour)
  for k in range(7):
    c.ellipse((0.01, -1.05 + 0.1 * k), 0.018, 0.012, (200, 200, 205))


def saxophone(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Alto saxophone: neck, body, bow and bell."""
  c.line([(0.0, -1.22), (-0.12, -1.1), (-0.14, -0.9)], colour, 0.035)
  c.line([(-0.14, -0.9), (-0.1, -0.3)], colour, 0.13)
  c.line([(-0.1, -0.3), (0.05, -0.2), (0.18, -0.3), (0.2, -0.5)], colour, 0.14)
  c.ellipse((0.2, -0.57), 0.13, 0.08, light, dark, 1)
  for k in range(6):
    c.ellipse((-0.12, -0.85 + 0.1 * k), 0.02, 0.02, (235, 225, 200))


def bassoon(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Bassoon held diagonally, with bocal and reed."""
  c.line([(-0.3, 0.15), (0.3, -1.65)], colour, 0.13)
  c.line([(-0.2, 0.12), (0.15, -0.95)], shade(colour, 0.8), 0.09)
  c.line([(0.15, -1.1), (0.03, -1.25)], (190, 190, 195), 0.015)  # bocal
  c.ellipse((0.3, -1.65), 0.05, 0.03, (235, 225, 210))
  for k in range(5):
    c.ellipse((-0.05 + 0.08 * k, -0.45 - 0.25 * k), 0.02, 0.02, (200, 200, 205))


def trumpet(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Trumpet pointing to the image left, with three valves."""
  c.line([(0.0, -1.24), (-0.55, -1.18)], colour, 0.06)
  c.line([(-0.1, -1.1), (-0.45, -1.08)], colour, 0.05)
  c.polygon([(-0.5, -1.24), (-0.82, -1.38), (-0.82, -0.98), (-0.5, -1.12)], colour, dark)
  for k in range(3):
    c.line([(-0.18 - 0.05 * k, -1.3), (-0.18 - 0.05 * k, -1.12)], (200, 200, 210), 0.025)


def tuba(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Tuba held in front of the chest, bell up."""
  c.ellipse((0.05, -0.5), 0.3, 0.28, colour, dark, 2)
  c.ellipse((0.05, -0.5), 0.17, 0.15, shade(colour, 0.8))
  c.line([(0.2, -0.7), (0.3, -1.3)], colour, 0.14)
  c.ellipse((0.32, -1.4), 0.3, 0.12, light, dark, 2)
  c.line([(0.0, -1.22), (-0.1, -0.85)], colour, 0.03)
  for k in range(4):
    c.line([(-0.25 + 0.06 * k, -0.8), (-0.25 + 0.06 * k, -0.62)], (230, 230, 235), 0.03)


def xylophone(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Xylophone bars in rainbow colours on a frame (fixed)."""
  c.polygon([(-1.1, -0.32), (1.1, -0.32), (1.1, -0.2), (-1.1, -0.2)], (30, 25, 20), fixed=True)
  bars = 16
  for k in range(bars):
    x = 0.95 - 1.9 * k / (bars - 1)
    h = 0.14 - 0.06 * k / bars
    c.polygon([(x - 0.05, -0.27 - h / 2), (x + 0.05, -0.27 - h / 2), (x + 0.05, -0.27 + h / 2),
               (x - 0.05, -0.27 + h / 2)], _RAINBOW[k % len(_RAINBOW)], fixed=True)
  c.line([(-1.0, -0.2), (-1.0, 0.8)], (30, 25, 20), 0.03, True)
  c.line([(1.0, -0.2), (1.0, 0.8)], (30, 25, 20), 0.03, True)


def congas(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Two congas standing in front of the player (fixed)."""
  for x, top in ((-0.3, -0.3), (0.3, -0.25)):
    c.polygon([(x - 0.2, top), (x + 0.2, top), (x + 0.24, top + 0.5), (x + 0.15, 1.1),
               (x - 0.15, 1.1), (x - 0.24, top + 0.5)], colour, dark, True)
    for k in range(4):  # staves
      c.line([(x - 0.12 + 0.08 * k, top + 0.05), (x - 0.09 + 0.06 * k, 1.05)], dark, 0.008, True)
    c.ellipse((x, top), 0.2, 0.06, (240, 232, 210), (190, 190, 200), 2, True)
    c.line([(x - 0.23, top + 0.35), (x + 0.23, top + 0.35)], (190, 190, 200), 0.02, True)


def drum_kit(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Drum kit: bass drum, toms, snare and cymbals (fixed)."""
  shell = colour
  c.ellipse((0.0, 0.35), 0.38, 0.38, shell, (200, 200, 210), 2, True)  # bass drum
  c.ellipse((0.0, 0.35), 0.3, 0.3, (235, 235, 230), fixed=True)
  for x, y, r in ((0.15, -0.45, 0.14), (-0.15, -0.45, 0.14)):  # rack toms
    c.polygon([(x - r, y), (x + r, y), (x + r, y + 0.18), (x - r, y + 0.18)], shell, fixed=True)
    c.ellipse((x, y), r, 0.05, (240, 240, 235), (180, 180, 180), 1, True)
  c.polygon([(-0.65, -0.05), (-0.35, -0.05), (-0.35, 0.35), (-0.65, 0.35)], shell, fixed=True)
  c.ellipse((-0.5, -0.05), 0.15, 0.05, (240, 240, 235), fixed=True)  # floor tom
  c.polygon([(0.04, -0.08), (0.32, -0.08), (0.32, 0.05), (0.04, 0.05)], (190, 190, 200),
            fixed=True)
  c.ellipse((0.18, -0.08), 0.14, 0.045, (245, 245, 240), fixed=True)  # snare
  for x, y, r in ((0.45, -0.38, 0.17), (0.62, -0.9, 0.22), (-0.72, -0.65, 0.24)):  # cymbals
    c.line([(x, y), (x, 0.9)], (150, 150, 160), 0.015, True)
    c.ellipse((x, y), r, 0.045, (215, 175, 60), (150, 120, 30), 1, True)


def _fretted_place(perf: Performance):
  """(neck start, neck end, body centre) of a guitar-family instrument (from its motion)."""
  params = perf.params
  body = np.array(params["pluck"]) + np.array([0.0, 0.02])
  return params["neck_start"], params["neck_end"], body


def acoustic_guitar(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Steel-string guitar on the lap: two-lobed body, sound hole, wood grain, fretted neck."""
  neck_start, neck_end, body = _fretted_place(perf)
  c.ellipse(body + (-0.12, 0.05), 0.3, 0.24, colour, dark, 2)
  c.ellipse(body + (0.12, -0.04), 0.22, 0.18, colour, dark, 2)
  c.ellipse(body + (0.05, -0.02), 0.07, 0.07, (25, 15, 10))
  for k in range(4):  # wood grain
    c.line([body + (-0.35, -0.1 + 0.07 * k), body + (0.25, -0.15 + 0.07 * k)], dark, 0.006)
  _neck(c, neck_start, neck_end, (70, 40, 20), 0.07, 5)


def ukulele(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Ukulele held high on the chest: small body, light neck."""
  neck_start, neck_end, body = _fretted_place(perf)
  c.ellipse(body + (-0.05, 0.02), 0.16, 0.12, colour, dark, 1)
  c.ellipse(body + (0.07, -0.02), 0.12, 0.09, colour, dark, 1)
  c.ellipse(body + (0.06, -0.02), 0.035, 0.035, (20, 20, 20))
  _neck(c, neck_start, neck_end, light, 0.05, 4, (60, 60, 60))


def banjo(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Banjo: round drum head in a metal rim, bridge, long fretted neck."""
  neck_start, neck_end, body = _fretted_place(perf)
  c.ellipse(body, 0.26, 0.26, (170, 170, 180))
  c.ellipse(body, 0.22, 0.22, colour, (120, 120, 120), 1)
  c.line([body + (-0.05, -0.1), body + (0.05, 0.1)], (90, 60, 40), 0.02)  # bridge
  _neck(c, neck_start, neck_end, (60, 35, 20), 0.05, 6)


def electric_bass(c: Canvas, perf: Performance, frame: int, colour, dark, light) -> None:
  """Electric bass: solid body with pickguard and pickup, long maple neck."""
  neck_start, neck_end, body = _fretted_place(perf)
  c.polygon([body + q for q in ((-0.35, 0.1), (-0.25, -0.2), (0.05, -0.15), (0.2, -0.28),
                                (0.25, -0.05), (0.1, 0.15), (-0.15, 0.22))], colour, dark)
  c.polygon([body + q for q in ((-0.2, 0.0), (-0.05, -0.1), (0.08, 0.0), (-0.1, 0.12))],
            (240, 240, 240))
  c.line([body + (-0.15, -0.1), body + (-0.12, 0.1)], (20, 20, 20), 0.03)  # pickup
  _neck(c, neck_start, neck_end, (200, 160, 90), 0.05, 8, (90, 90, 90))


# ---------------------------------------------------------------------------------------------
# What moves with the hands (an `Instrument.draw_held`)
# ---------------------------------------------------------------------------------------------


def bow(c: Canvas, perf: Performance, frame: int, *, length: float) -> None:
  """A bow held in the right hand along the bowing axis (`length` body units)."""
  kp = perf.keypoints[frame]
  rw = kp[10]
  axis = np.asarray(perf.params["axis"])
  tip = rw - axis * length * perf.unit
  c.pixel_line(rw, tip, (90, 55, 25), 0.02)
  c.pixel_line(rw + np.array([0, 0.03]) * perf.unit, tip + np.array([0, 0.03]) * perf.unit,
               (235, 230, 210), 0.012)  # horsehair


def sticks(c: Canvas, perf: Performance, frame: int, *, colour, mallet_heads: bool) -> None:
  """A stick (or mallet) in each hand, pointing forward-down at the drums / bars."""
  kp = perf.keypoints[frame]
  rw, lw = kp[10], kp[9]
  for wrist, elbow in ((rw, kp[8]), (lw, kp[7])):
    d = wrist - elbow
    d = d / max(np.linalg.norm(d), 1e-6)
    d = d + np.array([0.0, 0.9])  # sticks point forward-down, at the drums/bars
    d = d / max(np.linalg.norm(d), 1e-6)
    tip = wrist + d * 0.3 * perf.unit
    c.pixel_line(wrist, tip, colour, 0.025)
    if mallet_heads:
      r = 0.04 * perf.unit
      c.draw.ellipse((tip[0] - r, tip[1] - r, tip[0] + r, tip[1] + r), fill=(240, 240, 240))
