"""SynthMUSIC frames: PIL drawings of the players (thick skeleton, head, hands) holding their
instrument (drawn by drawings.py, coloured per class with a per-clip jitter) on a varied per-clip
background."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from data_pipeline.layout.skeleton import HALPE_LEFT_HAND, HALPE_RIGHT_HAND
from data_pipeline.synthmusic import drawings, instruments
from data_pipeline.synthmusic.drawings import shade
from data_pipeline.synthmusic.motion import Performance


def background(rng: np.random.Generator, size: int) -> Image.Image:
  """A random two-colour gradient with a random texture (stripes, checks, blobs, floor, plain)."""
  a, b = rng.uniform(30, 230, 3), rng.uniform(30, 230, 3)
  angle = rng.uniform(0, 2 * np.pi)
  y, x = np.mgrid[0:size, 0:size] / size
  ramp = (np.cos(angle) * x + np.sin(angle) * y)
  ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
  img = a[None, None] * (1 - ramp[..., None]) + b[None, None] * ramp[..., None]
  texture = int(rng.integers(5))
  if texture == 0:  # stripes
    period = rng.uniform(8, 40)
    img += 18 * np.sign(np.sin(2 * np.pi * (x * np.cos(angle + 1) + y * np.sin(angle + 1))
                                * size / period))[..., None]
  elif texture == 1:  # checks
    cell = int(rng.integers(12, 40))
    img += 15 * (((np.arange(size)[:, None] // cell) + (np.arange(size)[None] // cell)) % 2 * 2
                 - 1)[..., None]
  elif texture == 2:  # soft blobs
    for _ in range(6):
      cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.25)
      img += rng.uniform(-40, 40, 3)[None, None] * np.exp(-((x - cx) ** 2 + (y - cy) ** 2)
                                                          / r ** 2)[..., None]
  elif texture == 3:  # floor and wall
    horizon = rng.uniform(0.55, 0.8)
    img = np.where((y > horizon)[..., None], img * 0.6 + rng.uniform(20, 120, 3) * 0.4, img)
  img += rng.normal(0, 3, img.shape)  # sensor grain
  return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


class Style:
  """Per-player colours: skin, shirt, trousers, hair and the jittered instrument colour."""

  def __init__(self, category: str, rng: np.random.Generator):
    skins = ((255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36),
             (92, 60, 40))
    self.skin = skins[int(rng.integers(len(skins)))]
    # Clothes in muted colours (a random hue mixed with grey), so the instrument stands out.
    grey = rng.uniform(60, 200)
    self.shirt = tuple(int(0.45 * v + 0.55 * grey) for v in rng.uniform(20, 235, 3))
    self.trousers = tuple(int(0.5 * v + 0.5 * grey * 0.5) for v in rng.uniform(15, 120, 3))
    self.hair = tuple(int(v) for v in rng.uniform(10, 90, 3))
    jitter = rng.uniform(0.85, 1.1)
    self.instrument = tuple(int(np.clip(c * jitter + rng.normal(0, 6), 0, 255))
                            for c in instruments.INSTRUMENTS[category].colour)


def _draw_player(draw: ImageDraw.ImageDraw, perf: Performance, style: Style, frame: int) -> None:
  """One player (legs, torso, head, instrument, arms, hands, bow/sticks) in one frame."""
  c = drawings.Canvas(draw, perf, frame)
  instrument = instruments.INSTRUMENTS[perf.category]
  kp = perf.keypoints[frame]
  u = perf.unit

  def seg(a, b, colour, width):
    c.pixel_line(kp[a], kp[b], colour, width)

  for a, b in ((11, 13), (13, 15), (12, 14), (14, 16)):
    seg(a, b, style.trousers, 0.16)
  for a, b in ((15, 20), (16, 21)):
    seg(a, b, (30, 30, 30), 0.08)
  torso = [tuple(map(float, kp[j])) for j in (5, 6, 12, 11)]
  draw.polygon(torso, fill=style.shirt)
  seg(18, 19, style.shirt, 0.3)
  seg(0, 18, style.skin, 0.1)
  head = kp[0] + np.array([0.0, -0.05]) * u
  rx, ry = 0.17 * u, 0.22 * u
  draw.ellipse((head[0] - rx, head[1] - ry, head[0] + rx, head[1] + ry), fill=style.skin)
  draw.chord((head[0] - rx, head[1] - ry - 2, head[0] + rx, head[1] + ry * 0.4), 180, 360,
             fill=style.hair)
  for j in (1, 2):  # eyes
    x, y = kp[j]
    draw.ellipse((x - 1.2, y - 1.2, x + 1.2, y + 1.2), fill=(20, 20, 20))
  colour = style.instrument
  instrument.draw(c, perf, frame, colour, shade(colour, 0.55), shade(colour, 1.35))
  for a, b in ((5, 7), (7, 9), (6, 8), (8, 10)):
    seg(a, b, style.shirt if a in (5, 6) else shade(style.shirt, 0.85), 0.12)
  for start in (HALPE_LEFT_HAND, HALPE_RIGHT_HAND):
    hand = kp[start:start + 21]
    palm = [tuple(map(float, hand[j])) for j in (0, 5, 9, 13, 17)]
    draw.polygon(palm, fill=style.skin)
    for finger in range(5):
      chain = [tuple(map(float, hand[0 if k == 0 else 1 + finger * 4 + k - 1]))
               for k in range(5)]
      draw.line(chain[1:] if finger else chain, fill=shade(style.skin, 0.9),
                width=max(1, int(0.03 * u)))
  if instrument.draw_held is not None:
    instrument.draw_held(c, perf, frame)


def render_frame(back: Image.Image, performances: list[Performance], styles: list[Style],
                 frame: int, quality: int = 85) -> bytes:
  """JPEG bytes of one frame showing every player."""
  image = back.copy()
  draw = ImageDraw.Draw(image)
  for perf, style in zip(performances, styles):
    _draw_player(draw, perf, style, frame)
  buffer = io.BytesIO()
  image.save(buffer, format="JPEG", quality=quality)
  return buffer.getvalue()
