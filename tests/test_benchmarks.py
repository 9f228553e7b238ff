"""Every benchmark runs at a tiny size and prints its table (so none rots); no timing asserts."""

import os
import sys

# Cheapest XLA CPU backend optimisation for these one-off programs (inherited by the benchmark
# subprocesses); must precede the first compilation of the session.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=0").strip()

import pytest  # noqa: E402

from benchmarks import evaluation  # noqa: E402
from benchmarks import quality  # noqa: E402
from benchmarks import scaling  # noqa: E402
from benchmarks import train_throughput  # noqa: E402


def run_main(module, monkeypatch, capsys, *argv):
  """Runs module.main() with argv; returns the Markdown table rows it printed."""
  monkeypatch.setattr(sys, "argv", [module.__name__, *argv])
  module.main()
  out = capsys.readouterr().out
  rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
  assert rows, out
  return out, [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]


def test_train_throughput_tiny(monkeypatch, capsys):
  out, rows = run_main(train_throughput, monkeypatch, capsys, "--size", "tiny", "--models",
                       "sound_of_pixels", "--modes", "train", "--dtypes", "float32",
                       "--steps", "1", "--warmup", "0")
  assert len(rows) == 1, out
  model, mode, dtype, batch, step_ms, examples, *_ = rows[0]
  assert (model, mode, dtype, batch) == ("sound_of_pixels", "train", "float32", "2"), out
  assert float(step_ms) > 0 and float(examples) > 0
  flops_per_example = float(rows[0][9])
  assert flops_per_example > 0  # XLA's cost analysis counted the convolutions


def test_peak_flops_table():
  assert train_throughput.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
  assert train_throughput.peak_flops("cpu", "float32") is None


def test_scaling_two_simulated_devices(monkeypatch, capsys):
  out, rows = run_main(scaling, monkeypatch, capsys, "--model", "sound_of_pixels", "--devices",
                       "2", "--steps", "1", "--warmup", "0", "--timeout", "240")
  assert len(rows) == 1, out
  devices, global_batch, step_ms, examples, *_ = rows[0]
  assert (devices, global_batch) == ("2", "2"), out
  assert float(step_ms) > 0 and float(examples) > 0


def test_evaluation_tiny(monkeypatch, capsys):
  out, rows = run_main(evaluation, monkeypatch, capsys, "--size", "tiny", "--mixtures", "2",
                       "--backends", "fast_bss_eval", "--workers", "1")
  assert len(rows) == 2, out
  assert all(float(row[-1]) > 0 for row in rows)


def test_quality_tiny_trains_scores_and_reuses(synthmusic_tiny, tmp_path, monkeypatch, capsys):
  argv = ("--size", "tiny", "--models", "sound_of_pixels", "--root", str(synthmusic_tiny),
          "--workdir", str(tmp_path), "--max_batches", "1")
  out, rows = run_main(quality, monkeypatch, capsys, *argv)
  names = [row[0] for row in rows]
  assert names == ["unprocessed mixture (floor)", "ideal binary mask (ceiling)",
                   "sound_of_pixels"], out
  sdr_mean = lambda row: float(row[1].split("/")[0])  # noqa: E731
  assert sdr_mean(rows[1]) > sdr_mean(rows[0])  # the ideal mask beats the unprocessed mixture
  assert int(rows[2][-1]) > 0
  # A second run reuses the stored test report instead of training again.
  out_again, rows_again = run_main(quality, monkeypatch, capsys, *argv)
  assert "reusing" in out_again and rows_again == rows


def test_quality_rejects_unknown_models(monkeypatch):
  monkeypatch.setattr(sys, "argv", ["quality", "--models", "wav2vec"])
  with pytest.raises(SystemExit):
    quality.main()


def test_unet_conditioning_tiny(monkeypatch, capsys, synthmusic_tiny):
  from benchmarks import unet_conditioning  # pylint: disable=g-import-not-at-top
  out, rows = run_main(unet_conditioning, monkeypatch, capsys, "--size", "tiny", "--root",
                       str(synthmusic_tiny), "--steps", "2", "--window", "1", "--batches", "2",
                       "--rows", "bottleneck:1e-3", "every_level:1e-3")
  assert [row[0] for row in rows] == ["bottleneck", "every_level"], out
  assert all(0 < float(row[2]) < 1 for row in rows), out
  assert "best feature-blind masks" in out
