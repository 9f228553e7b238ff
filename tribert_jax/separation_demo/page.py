"""The demo's results in --out, and nothing outside it: wavs, PNGs, separation.json, index.html.

  OUT/mixture.wav                      what the model separated (mode a: the sum of the inputs,
                                       each divided by N as in training; mode b: the video's audio)
  OUT/estimate_<k>_<name>.wav          one separated source per input video / player
  OUT/original_<k>_<name>.wav          mode (a): that video's own (scaled) audio, for comparison
  OUT/images/*.png                     log-frequency spectrograms (mixture, estimates, originals),
                                       predicted masks, the input frames or crops of the first
                                       window and, when the model exposes them, its visual
                                       attention maps over those frames; mode (b): the players'
                                       regions on one frame (regions.png)
  OUT/separation.json                  what was run and per source: files, level, silent or not
  OUT/index.html                       a page that opens offline (relative paths, no scripts):
                                       HTML5 <audio> players and the images, like the
                                       Sound-of-Pixels result pages
Wavs are mono PCM16 at the model's sample rate (clipped to [-1, 1]). A silent estimate (the
predicted mask under config.eval.threshold everywhere) is written as zeros and said so.
"""

from __future__ import annotations

import html
import json
import pathlib
import re
from typing import Any, Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw
import soundfile

from tribert_jax import spectral

# Anchors of a perceptually ordered dark-to-light colour map (magma-like).
_COLOURS = np.array([(0, 0, 4), (59, 15, 112), (140, 41, 129), (222, 73, 104),
                     (254, 159, 109), (252, 253, 191)], np.float64)
_REGION_COLOURS = ((255, 70, 70), (60, 200, 255), (255, 220, 0), (110, 255, 110))
TILE = 160  # pixels per shown frame
MAX_WIDTH = 1000  # spectrogram image width cap


def safe_name(name: str) -> str:
  """A file-name-safe version of a label."""
  return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "source"


def colourise(values: np.ndarray) -> np.ndarray:
  """uint8 [..., 3] of values in [0, 1]."""
  position = np.clip(values, 0.0, 1.0) * (len(_COLOURS) - 1)
  low = np.minimum(np.floor(position).astype(int), len(_COLOURS) - 2)
  fraction = (position - low)[..., None]
  return (_COLOURS[low] * (1 - fraction) + _COLOURS[low + 1] * fraction).astype(np.uint8)


def _save(pixels: np.ndarray, path: pathlib.Path, width: int | None = None) -> None:
  image = Image.fromarray(pixels)
  if width is not None and image.width != width:
    image = image.resize((width, image.height), Image.BILINEAR)
  path.parent.mkdir(parents=True, exist_ok=True)
  image.save(path)


def spectrogram_image(magnitude: np.ndarray, path: pathlib.Path, top: float) -> None:
  """A log-frequency magnitude [H, frames] in dB (80 dB below `top`), low frequencies at the
  bottom."""
  decibels = 20.0 * np.log10(np.maximum(magnitude, 1e-10))
  values = (decibels - (top - 80.0)) / 80.0
  _save(colourise(values[::-1]), path, min(MAX_WIDTH, max(magnitude.shape[1], 256)))


def mask_image(mask: np.ndarray, path: pathlib.Path) -> None:
  """A predicted mask [H, frames] in [0, 1], low frequencies at the bottom."""
  _save(colourise(mask[::-1]), path, min(MAX_WIDTH, max(mask.shape[1], 256)))


def warped_magnitude(waveform: np.ndarray, data_config) -> np.ndarray:
  """|STFT| of a waveform on the model's log-frequency axis [H, frames] (spectral.py)."""
  c = data_config
  magnitude = np.abs(np.asarray(spectral.stft(waveform, c.stft_frame_length, c.stft_hop,
                                               c.stft_pad_mode)))
  return np.asarray(spectral.warp(magnitude, c.warped_freq_bins))


def frames_image(crops: np.ndarray, path: pathlib.Path,
                 attention: np.ndarray | None = None) -> None:
  """The T input crops side by side ([T, h, w, 3]); with attention [T, h', w'], each crop
  blended with its map (normalised over the T maps)."""
  tiles = []
  maps = None
  if attention is not None:
    low, high = float(attention.min()), float(attention.max())
    maps = (attention - low) / (high - low) if high > low else np.zeros_like(attention)
  for t, crop in enumerate(crops):
    tile = np.asarray(Image.fromarray(crop).resize((TILE, TILE), Image.BILINEAR), np.float64)
    if maps is not None:
      heat = Image.fromarray((maps[t] * 255).astype(np.uint8)).resize((TILE, TILE),
                                                                      Image.BILINEAR)
      tile = 0.45 * tile + 0.55 * colourise(np.asarray(heat, np.float64) / 255.0)
    tiles.append(tile.astype(np.uint8))
  _save(np.concatenate(tiles, axis=1), path)


def regions_image(frame: np.ndarray, regions, path: pathlib.Path) -> None:
  """A frame with each (name, (offset_y, offset_x, height, width)) region outlined."""
  scale = max(1, 512 // max(frame.shape[:2]))  # small frames drawn larger
  image = Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale),
                                        Image.BILINEAR)
  draw = ImageDraw.Draw(image)
  for k, (name, box) in enumerate(regions):
    top, left, height, width = (v * scale for v in box)
    colour = _REGION_COLOURS[k % len(_REGION_COLOURS)]
    draw.rectangle([left, top, left + width - 1, top + height - 1], outline=colour, width=3)
    draw.text((left + 6, top + 6), name, fill=colour)
  path.parent.mkdir(parents=True, exist_ok=True)
  image.save(path)


def write_wav(path: pathlib.Path, samples: np.ndarray, sample_rate: int) -> None:
  soundfile.write(str(path), np.clip(samples, -1.0, 1.0), sample_rate, subtype="PCM_16")


def _level(samples: np.ndarray) -> dict[str, Any]:
  peak = float(np.max(np.abs(samples))) if samples.size else 0.0
  return {"rms": float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
          if samples.size else 0.0, "peak": peak, "silent": peak == 0.0}


_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}
img{max-width:100%;border:1px solid #ccc;display:block;margin:4px 0}
section{border-top:2px solid #ddd;padding-top:1em;margin-top:1em}
.note{background:#fff6d6;padding:.6em;border-left:4px solid #e0b000}
.silent{color:#a00}td{vertical-align:top;padding-right:1.5em}"""


def write_results(out: pathlib.Path, *, mode: str, summary: dict[str, Any], names: Sequence[str],
                  inputs: Sequence[str], origins: Sequence[str], result, originals,
                  data_config, class_names: Sequence[str], attention_note: str,
                  overview=None) -> dict:
  """Writes every file of the module docstring; returns the separation.json record."""
  rate = int(data_config.sample_rate)
  images = out / "images"
  images.mkdir(parents=True, exist_ok=True)
  write_wav(out / "mixture.wav", result.mixture, rate)
  mixture_mag = warped_magnitude(result.mixture, data_config)
  top = 20.0 * np.log10(max(float(mixture_mag.max()), 1e-10))
  spectrogram_image(mixture_mag, images / "mixture_spectrogram.png", top)
  record = {**summary, "mode": mode, "sample_rate": rate,
            "seconds": result.mixture.shape[0] / rate, "windows": result.num_windows,
            "mixture": {"wav": "mixture.wav", **_level(result.mixture)}, "sources": []}
  for k, name in enumerate(names):
    stem = f"{k + 1}_{safe_name(name)}"
    entry = {"name": name, "input": inputs[k], "origin": origins[k],
             "wav": f"estimate_{stem}.wav", **_level(result.estimates[k]),
             "spectrogram": f"images/estimate_{stem}_spectrogram.png",
             "mask": f"images/mask_{stem}.png", "frames": f"images/frames_{stem}.png"}
    write_wav(out / entry["wav"], result.estimates[k], rate)
    spectrogram_image(warped_magnitude(result.estimates[k], data_config),
                      out / entry["spectrogram"], top)
    mask_image(result.masks[k], out / entry["mask"])
    frames_image(result.crops[k], out / entry["frames"])
    if result.attention is not None:
      entry["attention"] = f"images/attention_{stem}.png"
      frames_image(result.crops[k], out / entry["attention"], result.attention[k])
    if result.class_scores is not None:
      entry["predicted_class"] = class_names[int(np.argmax(result.class_scores[k]))]
    if originals is not None:
      entry["original"] = f"original_{stem}.wav"
      entry["original_spectrogram"] = f"images/original_{stem}_spectrogram.png"
      write_wav(out / entry["original"], originals[k], rate)
      spectrogram_image(warped_magnitude(originals[k], data_config),
                        out / entry["original_spectrogram"], top)
    record["sources"].append(entry)
  if result.attention is not None:
    record["attention_size"] = "x".join(str(v) for v in result.attention.shape[-2:])
  if overview is not None:
    record["overview"] = "images/regions.png"
    regions_image(overview[0], overview[1], out / record["overview"])
  (out / "separation.json").write_text(json.dumps(record, indent=2))
  (out / "index.html").write_text(render_html(record, attention_note))
  return record


def render_html(record: dict[str, Any], attention_note: str) -> str:
  """The result page (relative links only)."""
  e = lambda x: html.escape(str(x), quote=True)  # noqa: E731
  mode = ("Mix-and-Separate: the inputs' soundtracks mixed, then separated"
          if record["mode"] == "mix" else "One video, one source per player")
  parts = [
      "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
      f"<title>Separation: {e(record['model'])} step {e(record['step'])}</title>",
      f"<style>{_STYLE}</style></head><body>",
      f"<h1>{e(mode)}</h1>",
      f"<p>Model <b>{e(record['model'])}</b> (phase {e(record['phase'])}), checkpoint step "
      f"{e(record['step'])} of <code>{e(record['workdir'])}</code>; "
      f"{record['seconds']:.2f} s at {e(record['sample_rate'])} Hz in {e(record['windows'])} "
      f"window(s) of {e(record['window_samples'])} samples, joined without cross-fade; masks: "
      f"{e(record['mask_type'])}.</p>",
      f'<p class="note">{e(record["note"])}</p>',
      "<section><h2>Mixture</h2>",
      '<audio controls preload="metadata" src="mixture.wav"></audio>',
      '<img src="images/mixture_spectrogram.png" alt="mixture spectrogram">',
      "<p>Spectrograms: log-frequency axis (the model's), low frequencies at the bottom, "
      "80 dB range below the mixture's peak. Masks: predicted probability per time-frequency "
      "bin (bright = this source).</p></section>",
  ]
  if "overview" in record:
    parts.append('<section><h2>Players</h2><p>Each player\'s region (the visual input of '
                 'that source) on the frame at the centre of the first window:</p>'
                 f'<img src="{e(record["overview"])}" alt="players\' regions"></section>')
  for source in record["sources"]:
    silent = ('<p class="silent">This estimate is silent: the predicted mask is below the '
              "threshold everywhere.</p>" if source["silent"] else "")
    predicted = (f"; the visual stream's top class: <b>{e(source['predicted_class'])}</b>"
                 if "predicted_class" in source else "")
    visual = (f"<p>Attention of the visual stream for its top class over the input frames of "
              f"the first window ({e(record.get('attention_size', '?'))} map per frame, "
              f'upsampled and overlaid):</p><img src="{e(source["attention"])}" alt="attention">'
              if "attention" in source else f"<p>{e(attention_note)}</p>")
    original = ""
    if "original" in source:
      original = (f'<h4>Original (what was mixed)</h4><audio controls preload="metadata" '
                  f'src="{e(source["original"])}"></audio><img src="'
                  f'{e(source["original_spectrogram"])}" alt="original spectrogram">')
    parts += [
        f"<section><h2>{e(source['name'])}</h2>",
        f"<p>Input <code>{e(source['input'])}</code>; {e(source['origin'])}{predicted}.</p>",
        f'<p>Input frames of the first window (the model\'s visual input):</p>'
        f'<img src="{e(source["frames"])}" alt="input frames">', visual,
        "<table><tr><td>",
        f'<h4>Estimate</h4><audio controls preload="metadata" src="{e(source["wav"])}"></audio>',
        silent, f'<img src="{e(source["spectrogram"])}" alt="estimate spectrogram">',
        f'<h4>Predicted mask</h4><img src="{e(source["mask"])}" alt="predicted mask">',
        f"</td><td>{original}</td></tr></table></section>",
    ]
  parts.append("</body></html>")
  return "\n".join(parts) + "\n"
