"""Every benchmark runs at a tiny size and prints its table (so none rots); no timing asserts."""

import os
import sys

# Cheapest XLA CPU backend optimisation for these one-off programs (inherited by the benchmark
# subprocesses); must precede the first compilation of the session.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=0").strip()

import json  # noqa: E402
import math  # noqa: E402

import pytest  # noqa: E402

from benchmarks import accelerator  # noqa: E402
from benchmarks import common  # noqa: E402
from benchmarks import evaluation  # noqa: E402
from benchmarks import profile_step  # noqa: E402
from benchmarks import quality  # noqa: E402
from benchmarks import scaling  # noqa: E402
from benchmarks import train_throughput  # noqa: E402
from benchmarks import versus_release  # noqa: E402


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


def test_profile_step_attributes_the_traced_time_to_operations(monkeypatch, capsys, tmp_path):
  out_json = tmp_path / "profile.json"
  out, rows = run_main(profile_step, monkeypatch, capsys, "--size", "tiny", "--model",
                       "sound_of_pixels", "--steps", "1", "--warmup", "0", "--trace_dir",
                       str(tmp_path / "trace"), "--json", str(out_json))
  record = json.loads(out_json.read_text())
  kinds = {k["kind"]: k for k in record["kinds"]}
  # The train step's forward and backward convolutions were traced.
  assert kinds["conv forward"]["ms"] > 0 and kinds["conv weight gradient"]["ms"] > 0, out
  assert math.isclose(sum(k["share"] for k in record["kinds"]), 1.0, rel_tol=1e-6)
  assert math.isclose(sum(o["ms"] for o in record["ops"]), record["traced_ms_per_step"],
                      rel_tol=1e-6)
  assert record["traced_ms_per_step"] > 0 and record["executions"] == 1, out
  assert list(tmp_path.glob("trace/**/*.xplane.pb")), "the trace stays where it was asked"
  assert any(row[1] == "conv weight gradient" for row in rows), out


def test_profile_step_tells_the_three_convolutions_apart():
  """Forward, input-gradient and weight-gradient convolutions of XLA's compiled programs (which
  XLA:CPU rewrites into one canonical layout) get their own kinds."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
  conv = lambda x, w: jnp.sum(jax.lax.conv_general_dilated(  # noqa: E731
      x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) ** 2)

  def conv_kinds(fn, *args):
    ops = profile_step.instructions(jax.jit(fn).lower(*args).compile().as_text())
    return {op["kind"] for op in ops.values() if op["kind"].startswith("conv")}
  assert conv_kinds(conv, x, w) == {"conv forward"}
  assert conv_kinds(jax.grad(conv, argnums=1), x, w) == {"conv forward", "conv weight gradient"}
  assert conv_kinds(jax.grad(conv, argnums=0), x, w) == {"conv forward", "conv input gradient"}


def test_peak_flops_table():
  assert train_throughput.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
  assert train_throughput.peak_flops("cpu", "float32") is None
  assert common.peak_flops("NVIDIA H200", "tfloat32") == 495e12
  assert common.peak_flops("NVIDIA H100 PCIe", "bfloat16") == 756e12  # not the SXM figure
  assert common.peak_flops("TPU v5 lite", "bfloat16") == 197e12  # v5e, not v5p's "TPU v5"
  assert common.peak_flops("TPU v5", "bfloat16") == 459e12
  assert common.device_slug("NVIDIA H200") == "nvidia_h200"


def test_accelerator_mfu_and_memory_fields():
  record = dict(device_kind="NVIDIA A100-SXM4-40GB", achieved_flops=15.6e12, peak_rss_mib=900.0,
                peak_device_mib=2048.0)
  accelerator.add_mfu(record, "float32", None)
  assert record["mfu"] == pytest.approx(0.8) and record["mfu_tf32"] == pytest.approx(0.1)
  assert (record["peak_memory_mib"], record["peak_memory_source"]) == (2048.0, "device")
  record = dict(device_kind="cpu", achieved_flops=1e9, peak_rss_mib=900.0, peak_device_mib=None)
  accelerator.add_mfu(record, "bfloat16", None)
  assert record["mfu"] is None and record["peak_memory_source"] == "rss"
  accelerator.add_mfu(record, "bfloat16", 2e-3)  # --peak_tflops 0.002
  assert record["mfu"] == pytest.approx(0.5)


def test_accelerator_tiny_writes_json(synthmusic_tiny, tmp_path, monkeypatch, capsys):
  # --mode forward: the tiny TriBERT training step alone takes ~1-2 min to compile on 2 cores;
  # test_train_throughput_tiny runs the same measuring code (common.measure_step) in train mode.
  out_path = tmp_path / "accelerator.json"
  out, rows = run_main(accelerator, monkeypatch, capsys, "--size", "tiny", "--mode", "forward",
                       "--dtypes",
                       "float32", "--steps", "1", "--warmup", "0", "--peak_tflops", "1",
                       "--data_root", str(synthmusic_tiny), "--pipeline_batches", "2",
                       "--pipeline_warmup", "1", "--out", str(out_path))
  assert [row[0] for row in rows] == ["float32"], out
  result = json.loads(out_path.read_text())
  assert (result["config"], result["mode"]) == ("configs/pretrain.py:tiny", "forward")
  step = result["results"]["float32"]
  assert "error" not in step, step
  assert step["batch"] == 2 and step["dtype"] == "float32" and step["params"] > 0
  for key in ("step_s", "examples_per_s", "flops_per_step", "flops_per_example",
              "achieved_flops", "mfu", "compile_s", "peak_memory_mib", "peak_rss_mib"):
    assert math.isfinite(step[key]) and step[key] > 0, (key, step[key])
  assert step["peak_memory_source"] == "rss"  # the CPU backend reports no allocator peak
  pipeline = result["input_pipeline"]
  assert "error" not in pipeline, pipeline
  assert pipeline["batch"] == 2 and pipeline["examples_per_s"] > 0


def test_apply_overrides():
  config = versus_release.load_config("configs/pretrain.py:tiny,variant=release",
                                      versus_release.RELEASE_WORK_OVERRIDES)
  assert config.model.variant == "release"
  assert config.optim.name == "bert_adam" and config.optim.weight_decay == 0.01  # use_bert_adam
  assert config.model.pose.stgcn_input == "features"  # the model reads cached ST-GCN features
  assert config.data.pose_window == 3 and config.model.input.pose_window == 3  # linked keys
  with pytest.raises(KeyError):
    common.apply_overrides(config, ["model.pose.no_such_key=1"])


def test_versus_release_quoted_rows():
  row = versus_release.release_row("train", 1)
  assert row[:4] == ["PyTorch release (quoted)", "train", "1", "13.2 (12.7–14.6)"]
  assert versus_release.release_row("forward", 1)[3] == "3.3–3.5"
  assert versus_release.release_row("forward", 2) is None


def test_versus_release_tiny(monkeypatch, capsys):
  # Evaluation forward only (each training step would cost ~1-2 min of compiling); at batch 2 the
  # default row's programs are the accelerator test's, served by the shared compilation cache.
  # The configurations are measured in this process (the benchmark starts a fresh interpreter
  # per row only so that peak memory figures do not mix; the accelerator test runs that path).
  monkeypatch.setattr(common, "run_worker",
                      lambda module, arguments, timeout_s: versus_release.worker(arguments))
  out, rows = run_main(versus_release, monkeypatch, capsys, "--size", "tiny", "--batch_sizes",
                       "2", "--modes", "forward", "--steps", "1", "--warmup", "0")
  assert [row[0] for row in rows] == ["ours, default", "ours, release's work"], out
  for row in rows:
    assert row[1:3] == ["forward", "2"], out
    assert float(row[3]) > 0 and float(row[4]) > 0 and float(row[7]) > 0, out
  assert "PyTorch release (quoted)" not in out  # quoted figures are for the paper size only


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


def test_quality_plots_sdr_against_updates_and_seconds_for_either_budget(tmp_path,
                                                                         monkeypatch):
  import matplotlib.figure  # pylint: disable=g-import-not-at-top
  saved = []
  monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                      lambda figure, path, **kwargs: saved.append(figure))
  point = lambda step, seconds, sdr: {"step": step, "train_seconds": seconds, "sdr": sdr,  # noqa: E731
                                      "sdr_median": sdr, "mixture_sdr": 0.2,
                                      "mixture_sdr_median": 0.1}
  records = {"fast": {"curve": [point(10, 5.0, -1.0), point(20, 10.0, 2.0)]},
             "slow": {"curve": [point(10, 20.0, -3.0)]}}
  for budget, first in (("updates", "updates"), ("seconds", "training seconds")):
    quality.plot(records, budget, budget, str(tmp_path / f"{budget}.png"))
    axes = saved[-1].axes
    assert len(axes) == 4
    labels = [axis.get_xlabel() for axis in axes]
    assert labels[0].startswith(first) and labels[1].startswith(first), labels
    assert {label.split(" ")[0] for label in labels[2:]} == ({"training"} if first == "updates"
                                                            else {"updates"}), labels
    # Each model's points along each axis: "fast" at 5 and 10 s, "slow" at 20 s.
    seconds_axis = axes[2] if first == "updates" else axes[0]
    lines = {line.get_label(): list(line.get_xdata()) for line in seconds_axis.get_lines()}
    assert lines["fast"] == [5.0, 10.0] and lines["slow"] == [20.0], lines


def test_quality_tiny_both_budgets_writes_tables_json_and_plots(synthmusic_tiny, tmp_path,
                                                                 monkeypatch, capsys):
  # Equal updates (2) and equal training seconds (a budget the first update spends; horizon 20
  # updates, so the clock, not num_train_steps, stops the run); one quick evaluation per run
  # (every 2 and every 20 updates: the updates run's last update, the seconds run's own last).
  argv = ("--size", "tiny", "--models", "sound_of_pixels", "--root", str(synthmusic_tiny),
          "--workdir", str(tmp_path / "work"), "--output_dir", str(tmp_path / "out"),
          "--max_batches", "1", "--seconds", "0.001", "--horizon_steps", "20", "--points", "1")
  out, rows = run_main(quality, monkeypatch, capsys, *argv)
  rows = [row for row in rows if row[1] != "SDR mean / median (dB)"]  # the second table's header
  names = [row[0] for row in rows]
  assert names == ["unprocessed mixture (floor)", "ideal binary mask (ceiling)",
                   "sound_of_pixels"] * 2, out
  sdr_mean = lambda row: float(row[1].split("/")[0])  # noqa: E731
  assert sdr_mean(rows[1]) > sdr_mean(rows[0])  # the ideal mask beats the unprocessed mixture
  assert rows[2][4] == "2" and rows[5][4] == "1" and int(rows[2][-1]) > 0, out  # updates made
  record = json.loads((tmp_path / "out" / "quality_tiny.json").read_text())
  assert record["protocol"]["updates"] == 2 and record["protocol"]["seconds"] == 0.001
  updates = record["budgets"]["updates"]["sound_of_pixels"]
  seconds = record["budgets"]["seconds"]["sound_of_pixels"]
  assert (updates["end"]["step"], updates["end"]["reason"]) == (2, "steps")
  assert (seconds["end"]["step"], seconds["end"]["reason"]) == (1, "seconds")
  assert seconds["num_train_steps"] == 20 and seconds["max_train_seconds"] == 0.001
  for run, steps in ((updates, [2]), (seconds, [1])):
    assert [p["step"] for p in run["curve"]] == steps
    for point in run["curve"]:
      for key in ("train_seconds", "sdr", "sdr_median", "sir", "sir_median", "sar",
                  "sar_median", "mixture_sdr"):
        assert math.isfinite(point[key]), (key, point)
    assert run["curve"][-1]["train_seconds"] == run["end"]["train_seconds"] > 0
    for key in ("sdr", "sdr_median", "sir", "sar", "mixture_sdr", "ideal_mask_sdr"):
      assert math.isfinite(run["final"][key]), key
  for budget in ("updates", "seconds"):
    assert (tmp_path / "out" / f"quality_tiny_{budget}.png").stat().st_size > 0
  # Sound-of-Pixels' trunk came from the frame pre-training, trained once before both budgets.
  frames = record["protocol"]["sound_of_pixels_frames"]
  assert frames["workdir"] == str(tmp_path / "work" / "sound_of_pixels_frames")
  assert frames["end"]["step"] > 0 and out.count("pre-training the frame trunk") == 1, out
  for budget in ("updates", "seconds"):
    run_config = json.loads((tmp_path / "work" / budget / "sound_of_pixels" / "config.json")
                            .read_text())
    assert run_config["init"]["parts"]["frames"]["checkpoint"] == frames["workdir"]
  # A second run reuses the finished runs instead of training again.
  out_again, rows_again = run_main(quality, monkeypatch, capsys, *argv)
  assert out_again.count("reusing") == 2 and "training up to" not in out_again
  assert "pre-training the frame trunk" not in out_again
  assert [r for r in rows_again if r[1] != "SDR mean / median (dB)"] == rows


def test_quality_seconds_horizon_follows_the_measured_speed(tmp_path):
  from tribert_jax import train_clock  # pylint: disable=g-import-not-at-top
  args = quality.argparse.Namespace(size="cpu", root="", steps=0, seconds=600.0, horizon_steps=0,
                                    points=12, quick_batches=0, max_batches=-1,
                                    workdir=str(tmp_path))
  config, note = quality.model_config("sound_of_pixels", "seconds", args)
  assert config.num_train_steps == 7200 and "10 x" in note  # no speed known yet
  train_clock.write_end(quality.workdir_of(args, "updates", "sound_of_pixels"),
                        {"step": 720, "train_seconds": 360.0, "reason": "steps"})
  config, note = quality.model_config("sound_of_pixels", "seconds", args)
  # 2 updates/s x 600 s x 1.25; everything that follows num_train_steps follows it.
  assert config.num_train_steps == 1500 and config.max_train_seconds == 600.0
  assert config.eval_every_steps == 1500 and config.eval.quick_every_steps == 125
  assert (config.data.eval_split, config.eval.quick_split) == ("test", "test")
  config, _ = quality.model_config("tribert", "updates", args)
  assert (config.num_train_steps, config.max_train_seconds) == (720, 0.0)


def test_quality_rejects_unknown_models_and_needs_staged_workdirs(monkeypatch):
  monkeypatch.setattr(sys, "argv", ["quality", "--models", "wav2vec"])
  with pytest.raises(SystemExit):
    quality.main()
  args = quality.argparse.Namespace(size="tiny", root="", steps=0, points=2, quick_batches=0,
                                    max_batches=1, pose_pretrain_workdir="",
                                    separation_pretrain_workdir="/tmp/sep")
  with pytest.raises(ValueError, match="--pose_pretrain_workdir"):
    quality.model_config("tribert_staged", "updates", args)
  args.pose_pretrain_workdir = "/tmp/pose"
  config, _ = quality.model_config("tribert_staged", "updates", args)
  assert config.pose_features.checkpoint == "/tmp/pose"
  assert config.init.parts.separation.checkpoint == "/tmp/sep"


def test_quality_chains_amnet_motion_stage_to_its_appearance_run_and_ame(tmp_path):
  args = quality.argparse.Namespace(size="tiny", root="", steps=0, seconds=2.0, points=2,
                                    quick_batches=0, max_batches=1, workdir=str(tmp_path),
                                    horizon_steps=0, horizon=[], amnet_ame_workdir="",
                                    amnet_appearance_workdir="")
  with pytest.raises(ValueError, match="--amnet_ame_workdir"):
    quality.model_config("amnet", "updates", args)
  args.amnet_ame_workdir = "/tmp/ame"
  for budget in quality.BUDGETS:
    config, _ = quality.model_config("amnet", budget, args)
    assert (config.phase, config.model.stage) == ("amnet", "motion")
    assert config.init.parts.motion.checkpoint == "/tmp/ame"
    # The appearance stage trained under the same budget, in the same benchmark workdir.
    assert config.init.parts.appearance.checkpoint == str(tmp_path / budget / "amnet_appearance")
  args.amnet_appearance_workdir = "/tmp/appearance"
  config, _ = quality.model_config("amnet", "seconds", args)
  assert config.init.parts.appearance.checkpoint == "/tmp/appearance"
  config, _ = quality.model_config("amnet_appearance", "updates", args)
  assert (config.model.stage, config.num_train_steps) == ("appearance", 2)
  # Per-model schedule horizons of the seconds runs.
  args.horizon, args.horizon_steps = ["amnet=30", "tribert=500"], 99
  assert quality.model_config("amnet", "seconds", args)[0].num_train_steps == 30
  assert quality.model_config("amnet_appearance", "seconds", args)[0].num_train_steps == 99
  for bad in (["amnet"], ["amnet=0"], ["wav2vec=3"]):
    args.horizon = bad
    with pytest.raises(ValueError, match="--horizon"):
      quality.model_config("amnet", "seconds", args)


def test_unet_conditioning_tiny_writes_curves_table_and_plot(monkeypatch, capsys,
                                                            synthmusic_tiny, tmp_path):
  from benchmarks import unet_conditioning  # pylint: disable=g-import-not-at-top
  out_json, png = tmp_path / "conditioning.json", tmp_path / "conditioning.png"
  argv = ["--size", "tiny", "--root", str(synthmusic_tiny), "--steps", "2", "--out",
          str(out_json), "--plot", str(png), "--rows", "oracle:release", "learned:film"]
  out, rows = run_main(unet_conditioning, monkeypatch, capsys, *argv)
  assert [row[0] for row in rows] == ["oracle:release", "learned:film"], out
  assert all(0 < float(row[1]) < 1 for row in rows), out
  assert "best feature-blind masks" in out
  assert png.stat().st_size > 0
  record = json.loads(out_json.read_text())
  assert set(record["rows"]) == {"oracle:release", "learned:film"}
  assert all(len(row["curve"]) == 2 and row["summary"]["tail_loss"] > 0
             for row in record["rows"].values())
  # Every update is compared with the feature-blind level of its own batch.
  references = record["references"]
  assert len(references["blind"]) == len(references["half"]) == 2
  assert all(0 < b < h for b, h in zip(references["blind"], references["half"]))
  # A rerun with the same settings reuses the finished rows instead of training them again.
  out_again, rows_again = run_main(unet_conditioning, monkeypatch, capsys, *argv)
  assert out_again.count("reusing the finished row") == 2 and rows_again == rows


def test_unet_conditioning_rejects_unknown_rows():
  from benchmarks import unet_conditioning  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="--rows 'oracle:bottleneck'"):
    unet_conditioning.parse_row("oracle:bottleneck")


def test_unet_conditioning_reuses_rows_across_float_rounding_of_reference_levels():
  from benchmarks import unet_conditioning  # pylint: disable=g-import-not-at-top
  recorded = {"size": "cpu", "steps": 1000, "lr": 0.001, "batch_size": 4,
              "half_loss": 0.2157652907073498, "blind_loss": 0.20740511640906334}
  # The same batches read by another build of the pipeline: levels moved by ~1e-9.
  rerun = dict(recorded, half_loss=0.2157652921974659, blind_loss=0.20740511417388915)
  assert unet_conditioning.same_settings(recorded, rerun)
  # Other batches, steps or learning rate: the rows are not reusable.
  assert not unet_conditioning.same_settings(recorded, dict(recorded, blind_loss=0.2075))
  assert not unet_conditioning.same_settings(recorded, dict(recorded, steps=500))
  assert not unet_conditioning.same_settings(recorded, dict(recorded, lr=3e-4))
  assert not unet_conditioning.same_settings(recorded, dict(recorded, size="tiny"))
  assert not unet_conditioning.same_settings(recorded, {k: v for k, v in recorded.items()
                                                        if k != "lr"})
