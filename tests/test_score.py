"""`python -m tribert_jax.score`: its numbers equal a direct mir_eval call on the same arrays,
the silent-threshold flag, and errors that name the file."""

import json
import re
import warnings

import mir_eval.separation
import numpy as np
import pytest
import soundfile

from tribert_jax import score

RATE = 11025
LENGTH = RATE // 4
SOURCES = ("flute.wav", "violin.wav")


def _pcm16(x):
  """Values on the int16 grid, so a PCM_16 wav reads back exactly these float64 values."""
  return np.round(np.clip(x, -1, 1 - 1 / 32768) * 32768) / 32768


def _direct(reference, estimate):
  """mir_eval itself, not the project's wrapper."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(
        np.asarray(reference, np.float64), np.asarray(estimate, np.float64),
        compute_permutation=False)
  return {"sdr": sdr, "sir": sir, "sar": sar}


def _write(path, samples, rate=RATE, subtype="PCM_16"):
  path.parent.mkdir(parents=True, exist_ok=True)
  soundfile.write(str(path), samples, rate, subtype=subtype)


def _make_set(root, num_mixtures=3, seed=0):
  """root/{references,estimates}/mK/<source>.wav and root/mixtures/mK.wav; returns arrays."""
  rng = np.random.default_rng(seed)
  t = np.arange(LENGTH) / RATE
  data = {}
  for k in range(num_mixtures):
    reference = _pcm16(np.stack([
        0.3 * np.sin(2 * np.pi * (220 + 40 * k) * t) + 0.02 * rng.standard_normal(LENGTH),
        0.3 * np.sign(np.sin(2 * np.pi * (330 + 25 * k) * t)) * rng.uniform(0.5, 1, LENGTH)]))
    leak = 0.1 + 0.15 * k
    estimate = _pcm16(reference + leak * reference[::-1] + 0.03 * rng.standard_normal(
        reference.shape))
    mixture = _pcm16(reference.sum(0) / 2)
    name = f"m{k}"
    for n, source in enumerate(SOURCES):
      _write(root / "references" / name / source, reference[n])
      _write(root / "estimates" / name / source, estimate[n])
    _write(root / "mixtures" / f"{name}.wav", mixture)
    data[name] = (reference, estimate, mixture)
  return data


def _argv(root, out, *extra, mixtures=True):
  argv = [f"--estimates={root / 'estimates'}", f"--references={root / 'references'}",
          f"--out={out}", "--num_workers=1", *extra]
  return argv + ([f"--mixtures={root / 'mixtures'}"] if mixtures else [])


def test_numbers_equal_direct_mir_eval(tmp_path, capsys):
  data = _make_set(tmp_path / "wav")
  out = tmp_path / "out"
  report = score.main(_argv(tmp_path / "wav", out))

  assert sorted(p.name for p in out.iterdir()) == ["score.json", "score.md"]
  assert json.loads((out / "score.json").read_text()) == report
  printed = capsys.readouterr().out
  assert "## Per file" in printed and printed.strip() == (out / "score.md").read_text().strip()

  rows = {(r["mixture"], r["source"]): r for r in report["files"]}
  assert len(rows) == 6
  per_mixture = {m: [] for m in ("sdr", "sir", "sar", "mixture_sdr")}
  for name, (reference, estimate, mixture) in data.items():
    expected = _direct(reference, estimate)
    floor = _direct(reference, np.stack([mixture, mixture]))
    for n, source in enumerate(SOURCES):
      row = rows[(name, source)]
      for m in ("sdr", "sir", "sar"):
        np.testing.assert_allclose(row[m], expected[m][n], rtol=1e-9)
      np.testing.assert_allclose(row["mixture_sdr"], floor["sdr"][n], rtol=1e-9)
    for m in ("sdr", "sir", "sar"):
      per_mixture[m].append(np.mean(expected[m]))
    per_mixture["mixture_sdr"].append(np.mean(floor["sdr"]))

  summary = report["summary"]
  assert summary["num_mixtures"] == summary["num_scored"] == 3
  assert summary["skipped"] == {"silent_reference": 0, "silent_prediction": 0}
  for m, values in per_mixture.items():
    np.testing.assert_allclose(summary[m], np.mean(values), rtol=1e-9)
    np.testing.assert_allclose(summary[f"{m}_median"], np.median(values), rtol=1e-9)
  np.testing.assert_allclose(
      summary["sdr_improvement"],
      np.mean(np.subtract(per_mixture["sdr"], per_mixture["mixture_sdr"])), rtol=1e-9)
  assert report["settings"]["silent_threshold"] == 0.0

  # Without --mixtures: no floor anywhere, the same separated numbers.
  bare = score.main(_argv(tmp_path / "wav", tmp_path / "bare", mixtures=False))
  assert "mixture_sdr" not in bare["summary"] and "sdr_improvement" not in bare["summary"]
  assert bare["summary"]["sdr"] == summary["sdr"]
  assert all("mixture_sdr" not in r for r in bare["files"])
  assert "unprocessed mixture" not in (tmp_path / "bare" / "score.md").read_text()


def test_silent_threshold_project_vs_release(tmp_path, capsys):
  root = tmp_path / "wav"
  data = _make_set(root, num_mixtures=2, seed=1)
  # m1's violin estimate: nonzero but sum(|x|) ~ 3e-6 (float wav: PCM_16 cannot hold it).
  quiet = np.float32(np.random.default_rng(2).uniform(0.5, 1.5, LENGTH) * 1e-9 *
                     np.where(np.arange(LENGTH) % 2, 1, -1)).astype(np.float64)
  assert 0 < np.abs(quiet).sum() <= 1e-5
  _write(root / "estimates" / "m1" / "violin.wav", quiet, subtype="FLOAT")

  project = score.main(_argv(root, tmp_path / "project", mixtures=False))
  assert project["summary"]["num_scored"] == 2 and project["skipped"] == []
  reference, estimate, _ = data["m1"]
  expected = _direct(reference, np.stack([estimate[0], quiet]))
  row = next(r for r in project["files"] if r["mixture"] == "m1" and r["source"] == "violin.wav")
  np.testing.assert_allclose(row["sdr"], expected["sdr"][1], rtol=1e-9)

  release = score.main(_argv(root, tmp_path / "release", "--silent_threshold=1e-5", mixtures=False))
  summary = release["summary"]
  assert summary["num_mixtures"] == 2 and summary["num_scored"] == 1
  assert summary["skipped"] == {"silent_reference": 0, "silent_prediction": 1}
  assert release["skipped"] == [{"mixture": "m1",
                                 "reason": "silent prediction: source(s) [1] have sum(|x|) <= 1e-05"}]
  np.testing.assert_allclose(summary["sdr"], np.mean(_direct(*data["m0"][:2])["sdr"]), rtol=1e-9)
  assert "skipped: silent prediction" in (tmp_path / "release" / "score.md").read_text()

  # An exactly silent estimate is skipped under the project's default too.
  _write(root / "estimates" / "m1" / "violin.wav", np.zeros(LENGTH))
  zero = score.main(_argv(root, tmp_path / "zero", mixtures=False))
  assert zero["summary"]["skipped"]["silent_prediction"] == 1
  assert "are all zeros" in zero["skipped"][0]["reason"]

  with pytest.raises(SystemExit):
    score.parse_args(["--help"])
  text = " ".join(capsys.readouterr().out.split())
  assert "0.0 (default, the project's policy)" in text and "1e-5 is the TriBERT" in text


def test_errors_name_the_file(tmp_path):
  root = tmp_path / "wav"
  _make_set(root, num_mixtures=2)
  stray = root / "estimates" / "m1" / "viola.wav"
  (root / "estimates" / "m1" / "violin.wav").rename(stray)
  with pytest.raises(score.ScoreInputError) as error:
    score.main(_argv(root, tmp_path / "out"))
  message = str(error.value)
  assert str(root / "references" / "m1" / "violin.wav") in message
  assert str(stray) in message and "unmatched files" in message
  stray.rename(root / "estimates" / "m1" / "violin.wav")

  (root / "mixtures" / "m0.wav").unlink()
  with pytest.raises(score.ScoreInputError,
                     match=re.escape(f"mixtures without a mixture wav: {root / 'mixtures' / 'm0.wav'}")):
    score.main(_argv(root, tmp_path / "out"))

  wrong = root / "estimates" / "m0" / "flute.wav"
  _write(wrong, np.zeros(LENGTH * 2) + 0.1, rate=2 * RATE)
  with pytest.raises(score.ScoreInputError) as error:
    score.main(_argv(root, tmp_path / "out", mixtures=False))
  assert str(wrong) in str(error.value) and "22050 Hz" in str(error.value)
  assert "not resampled" in str(error.value)

  _write(wrong, np.zeros(LENGTH - 10) + 0.1)
  with pytest.raises(score.ScoreInputError, match=re.escape(f"{wrong}: {LENGTH - 10} samples")):
    score.main(_argv(root, tmp_path / "out", mixtures=False))

  _write(wrong, np.full(LENGTH, np.nan), subtype="FLOAT")
  with pytest.raises(score.ScoreInputError, match=re.escape(f"{wrong}: NaN/Inf")):
    score.main(_argv(root, tmp_path / "out", mixtures=False))
  assert not (tmp_path / "out").exists()
