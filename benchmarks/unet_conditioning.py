"""Whether TriBERT's separation U-Net learns to use its conditioning feature, and how fast.

  python -m benchmarks.unet_conditioning                  # cpu size: 6 rows x 1000 updates
  python -m benchmarks.unet_conditioning --size tiny --steps 2 --rows oracle:paper

Rows are SOURCE:FUSION. FUSION is where and how the feature enters the U-Net:
  paper    the fused feature at the bottleneck only, self-attention fusion (paper, Music-Gesture);
  release  at the bottleneck only, the release's fusion (audio_net.py, Unet.forward;
           unet.bottleneck_channels set to the feature width, as in the release: C = 1536);
  film     the paper's bottleneck fusion plus FiLM after every decoder level (the cpu preset).
SOURCE is what the feature is:
  oracle   each video's instrument labels times a fixed random non-negative code per class
           (width = TriBERT's fused width): a perfectly informative feature, so the row measures
           only whether the U-Net turns a feature into per-video masks;
  learned  TriBERT's visual trunk on the video's frames, trained jointly with the U-Net
           (configs/separation_pretrain.py's model and loss: separation + the trunk's class-score
           BCE): the feature must be learned too.
Every row: the U-Net of config.model.unet at --size (everything but the FUSION keys), Adam at one
constant learning rate for every parameter (--lr, equal across rows), the same sequence of real
Mix-and-Separate training batches of SynthMUSIC (the pipeline of configs/pretrain.py, seed 0),
--steps updates. The recorded curve is the weighted mask BCE (the separation loss) at every
update. Every batch also gets two reference levels: every mask 0.5, and the best a
feature-blind model can do (each pixel predicted as the mean of the N ground-truth masks, the
optimum without knowing which video is which). The table and the plot compare each update with
the feature-blind level of the same batch (batches differ a lot, so a fixed level would not do):
a curve that stays at or above it never used the feature.

Writes the figures as JSON (--out, default benchmarks/results/unet_conditioning_<size>.json;
finished rows are reused, so an interrupted run resumes row by row) and the curves as a PNG
(--plot, default benchmarks/unet_conditioning_<size>.png); prints the Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from benchmarks import common

FUSIONS = ("paper", "release", "film")
FUSION_COLOURS = {"paper": "tab:blue", "release": "tab:orange", "film": "tab:green"}
SOURCES = ("oracle", "learned")
DEFAULT_ROWS = [f"{source}:{fusion}" for source in SOURCES for fusion in FUSIONS]
TAIL = 100  # updates averaged for the table's "last updates" column
SMOOTH = 25  # moving-average window of the plotted curves and of "first below"
MARGIN = 0.002  # "uses the feature": smoothed loss this far below the feature-blind level


def parse_row(row: str) -> tuple[str, str]:
  """'SOURCE:FUSION' -> (source, fusion); ValueError naming the row otherwise."""
  source, _, fusion = row.partition(":")
  if source not in SOURCES or fusion not in FUSIONS:
    raise ValueError(f"--rows {row!r}: expected SOURCE:FUSION with SOURCE in {SOURCES} and "
                     f"FUSION in {FUSIONS}")
  return source, fusion


def row_config(size: str, source: str, fusion: str, root: str) -> Any:
  """The training config of one row (pretrain at SIZE, or separation_pretrain for `learned`)."""
  from configs import pretrain, separation_pretrain  # pylint: disable=g-import-not-at-top
  from tribert_jax.models.separation_pretrain import fused_width  # pylint: disable=g-import-not-at-top
  config = (separation_pretrain if source == "learned" else pretrain).get_config(size)
  if root:
    config.data.root = root
  unet = config.model.unet
  unet.conditioning = "every_level" if fusion == "film" else "bottleneck"
  unet.fusion = "release" if fusion == "release" else "self_attention"
  if fusion == "release":
    unet.bottleneck_channels = fused_width(config.model)
  return config


def same_settings(previous: dict[str, Any], current: dict[str, Any]) -> bool:
  """Whether finished rows recorded under `previous` settings can be reused under `current`:
  the same keys and values, the reference losses equal to float32 rounding (the pipeline's
  decode and resize may sum in another order from one build of the libraries to the next,
  moving them by ~1e-9; a different batch sequence moves them by far more)."""
  import math  # pylint: disable=g-import-not-at-top
  if previous.keys() != current.keys():
    return False
  for key, value in current.items():
    if isinstance(value, float) and isinstance(previous[key], (int, float)):
      if not math.isclose(previous[key], value, rel_tol=1e-6, abs_tol=0.0):
        return False
    elif previous[key] != value:
      return False
  return True


def reference_levels(batches, data_config) -> tuple[float, float]:
  """(loss of all-0.5 masks, loss of the best feature-blind masks) averaged over batches."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  curves = reference_curves(batches, data_config)
  return float(np.mean(curves["half"])), float(np.mean(curves["blind"]))


def oracle_codes(num_classes: int, width: int):
  """Fixed non-negative code per class [K, width] (|N(0, 1)|, seed 0): the oracle feature of a
  video is its labels times these codes, so it identifies the instrument exactly."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  return np.abs(np.random.default_rng(0).standard_normal((num_classes, width))).astype(np.float32)


def make_row(config, source: str, class_names):
  """(init(rng) -> variables, loss(params, batch_stats, batch, rng) -> (loss, (sep, stats)))."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from tribert_jax import losses, spectral  # pylint: disable=g-import-not-at-top
  from tribert_jax.models import unet  # pylint: disable=g-import-not-at-top
  from tribert_jax.models.separation_pretrain import fused_width  # pylint: disable=g-import-not-at-top
  from tribert_jax.tasks import separation  # pylint: disable=g-import-not-at-top

  if source == "learned":
    task = separation.separation_task(config, class_names)

    def learned_loss(params, batch_stats, batch, rng):
      total, (terms, stats) = task.loss_fn(params, batch_stats, batch, rng)
      return total, (terms["separation"], stats)
    return task.init_variables, learned_loss

  net = unet.AttentionUNet(config.model)
  codes = jnp.asarray(oracle_codes(config.data.num_classes, fused_width(config.model)))

  def inputs(batch):
    f = spectral.spectral_features(batch["waveform"], batch["mixture"], config.data)
    return jnp.log(f["mix_warped"] + config.model.log_eps), batch["labels"] @ codes, f

  def init(rng):
    b, n, size = 1, config.data.num_mix, config.model.input.spectrogram_size
    log_mix = jnp.zeros((b, size, size))
    return net.init(rng, log_mix, jnp.zeros((b, n, codes.shape[1])), train=False)

  def oracle_loss(params, batch_stats, batch, rng):
    del rng
    log_mix, feature, f = inputs(batch)
    logits, mutated = net.apply({"params": params, "batch_stats": batch_stats}, log_mix, feature,
                                train=True, mutable=["batch_stats"])
    loss = losses.separation_loss(logits, f["gt_masks"], f["weight"], batch["valid"])
    return loss, (loss, mutated["batch_stats"])
  return init, oracle_loss


def train_row(config, batches_fn, source: str, class_names, learning_rate: float, steps: int
              ) -> dict[str, Any]:
  """Trains one row; returns its separation-loss curve, seconds per update and load."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  init, loss_fn = make_row(config, source, class_names)
  variables = nn.meta.unbox(jax.jit(init)(jax.random.PRNGKey(0)))
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  tx = optax.adam(learning_rate)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, batch_stats, opt_state, batch, rng):
    (_, (separation, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, batch, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, separation

  curve, start, rng = [], None, jax.random.PRNGKey(1)
  load_start = os.getloadavg()[0]
  for i, batch in zip(range(steps), batches_fn()):
    if i == 1:
      start = time.perf_counter()  # the first update compiles
    params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state, batch,
                                                jax.random.fold_in(rng, i))
    curve.append(float(loss))
    if (i + 1) % 100 == 0:
      print(f"  update {i + 1}: separation loss {curve[-1]:.4f}", flush=True)
  seconds = (time.perf_counter() - start) / max(steps - 1, 1) if start else float("nan")
  return {"curve": curve, "seconds_per_update": seconds,
          "load_average": [load_start, os.getloadavg()[0]]}


def smooth(curve, window: int = SMOOTH):
  """Trailing moving average (shorter at the start)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  c = np.cumsum(np.insert(np.asarray(curve, np.float64), 0, 0.0))
  idx = np.arange(1, len(curve) + 1)
  lo = np.maximum(idx - window, 0)
  return (c[idx] - c[lo]) / (idx - lo)


def reference_curves(batches, data_config) -> dict[str, list[float]]:
  """Per batch of the training sequence: the loss of all-0.5 masks ("half") and of the best
  feature-blind masks ("blind"), so every update is compared with the same batch's levels."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from tribert_jax import losses, spectral  # pylint: disable=g-import-not-at-top

  @jax.jit
  def levels(waveform, mixture, valid):
    f = spectral.spectral_features(waveform, mixture, data_config)
    gt, weight = f["gt_masks"], f["weight"]
    p = jnp.clip(jnp.mean(gt, axis=1, keepdims=True), 1e-4, 1 - 1e-4)
    blind = jnp.broadcast_to(jnp.log(p / (1 - p)), gt.shape)
    return (losses.separation_loss(jnp.zeros_like(gt), gt, weight, valid),
            losses.separation_loss(blind, gt, weight, valid))

  half, blind = [], []
  for batch in batches:
    h, b = levels(batch["waveform"], batch["mixture"], batch["valid"])
    half.append(float(h))
    blind.append(float(b))
  return {"half": half, "blind": blind}


def summarise(result: dict[str, Any], references: dict[str, list[float]]) -> dict[str, Any]:
  """Table figures of one finished row, against the feature-blind level of the same batches."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  curve = np.asarray(result["curve"])
  blind = np.asarray(references["blind"][:len(curve)])
  tail, blind_tail = float(np.mean(curve[-TAIL:])), float(np.mean(blind[-TAIL:]))
  excess = smooth(curve - blind)
  below = [i for i in np.nonzero(excess < -MARGIN)[0] if i >= SMOOTH - 1]
  return {"tail_loss": tail, "blind_tail_loss": blind_tail, "vs_blind": tail - blind_tail,
          "first_below_blind": int(below[0]) + 1 if below else None}


def plot(results: dict[str, dict], references: dict[str, list[float]], title: str,
         path: str) -> None:
  """Per source, each row's loss minus the feature-blind loss of the same batch (moving
  average): 0 = what a model blind to the feature can reach, below 0 = the feature is used."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  half, blind = np.asarray(references["half"]), np.asarray(references["blind"])
  sources = [s for s in SOURCES if any(r.startswith(s + ":") for r in results)]
  fig, axes = plt.subplots(1, len(sources), figsize=(6 * len(sources), 4.2), squeeze=False,
                           sharey=True)
  for ax, source in zip(axes[0], sources):
    for row, result in results.items():
      if row.startswith(source + ":"):
        curve = np.asarray(result["curve"])
        fusion = row.split(":")[1]
        ax.plot(range(1, len(curve) + 1), smooth(curve - blind[:len(curve)]),
                color=FUSION_COLOURS[fusion], label=fusion)
    ax.plot(range(1, len(half) + 1), smooth(half - blind), color="grey", linestyle=":",
            label="all masks 0.5")
    ax.axhline(0.0, color="black", linestyle="--", label="best feature-blind")
    ax.set_title(f"{source} feature")
    ax.set_xlabel("update")
    ax.grid(alpha=0.3)
    ax.legend()  # in every panel: each fusion keeps its colour across panels
  axes[0][0].set_ylabel(f"mask BCE minus feature-blind BCE\n({SMOOTH}-update moving average)")
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def table(results: dict[str, dict], references: dict[str, list[float]]) -> str:
  """Markdown table of every finished row."""
  rows = []
  for row, result in results.items():
    s = summarise(result, references)
    first = s["first_below_blind"] or f"not within {len(result['curve'])}"
    rows.append([row, f"{s['tail_loss']:.4f}", f"{s['blind_tail_loss']:.4f}",
                 f"{s['vs_blind']:+.4f}", first, f"{result['seconds_per_update']:.2f}"])
  return common.markdown(["source:fusion", f"mask BCE, last {TAIL} updates",
                          "feature-blind, same batches", "difference",
                          f"first update {MARGIN} below feature-blind ({SMOOTH}-update mean)",
                          "s/update"], rows)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="cpu", choices=("cpu", "tiny", "paper"))
  parser.add_argument("--root", default="", help="dataset root (default: the config's)")
  parser.add_argument("--steps", type=int, default=1000, help="updates per row")
  parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of every row")
  parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, help="SOURCE:FUSION rows")
  parser.add_argument("--out", default="", help="JSON (default benchmarks/results/"
                      "unet_conditioning_<size>.json)")
  parser.add_argument("--plot", default="", help="PNG (default benchmarks/"
                      "unet_conditioning_<size>.png)")
  args = parser.parse_args(argv)
  rows = [parse_row(row) for row in args.rows]
  out = args.out or os.path.join(common.REPO, "benchmarks", "results",
                                 f"unet_conditioning_{args.size}.json")
  png = args.plot or os.path.join(common.REPO, "benchmarks", f"unet_conditioning_{args.size}.png")

  import numpy as np  # pylint: disable=g-import-not-at-top
  from data_pipeline import prepare  # pylint: disable=g-import-not-at-top
  from data_pipeline.loading import pipeline as loading_pipeline  # pylint: disable=g-import-not-at-top

  from data_pipeline.layout import reader  # pylint: disable=g-import-not-at-top

  base = row_config(args.size, "oracle", "paper", args.root)
  prepare.prepare_dataset(base, process_index=0)
  class_names = reader.read_labels(base.data.root).classes
  def batches_fn():  # the same batch sequence for every row (seed 0)
    for batch in loading_pipeline.build_train_pipeline(base.data, seed=0):
      batch.pop("clip_ids", None)  # host-only strings
      yield batch

  first = [b for b, _ in zip(batches_fn(), range(20))]
  half, blind = reference_levels(first, base.data)
  settings = {"size": args.size, "steps": args.steps, "lr": args.lr,
              "batch_size": base.data.batch_size, "half_loss": half, "blind_loss": blind}
  record = {"settings": settings, "rows": {}}
  if os.path.isfile(out):
    with open(out) as file:
      previous = json.load(file)
    if same_settings(previous.get("settings", {}), settings):
      record["rows"] = previous["rows"]
      if "references" in previous:  # per-batch levels of the same batches: no need to redo
        record["references"] = previous["references"]
  title = (f"U-Net conditioning, size {args.size}, batch {base.data.batch_size}, Adam "
           f"{args.lr:g} for every row, {args.steps} updates")
  print(f"# {title}\n{common.machine()}\nReference levels: all masks 0.5: {half:.4f}; "
        f"best feature-blind masks: {blind:.4f}.\n", flush=True)
  for (source, fusion), name in zip(rows, args.rows):
    if name in record["rows"]:
      print(f"[{name}] reusing the finished row in {out}", flush=True)
      continue
    print(f"[{name}] training {args.steps} updates ...", flush=True)
    config = row_config(args.size, source, fusion, args.root)
    result = train_row(config, batches_fn, source, class_names, args.lr, args.steps)
    result["machine"] = common.machine()
    record["rows"][name] = result
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as file:
      json.dump(record, file)
    print(f"[{name}] loss over the last {TAIL} updates {np.mean(result['curve'][-TAIL:]):.4f}",
          flush=True)
  if len(record.get("references", {}).get("blind", ())) != args.steps:
    print("levels of all-0.5 and feature-blind masks on every batch ...", flush=True)
    record["references"] = reference_curves(
        (b for b, _ in zip(batches_fn(), range(args.steps))), base.data)
  references = record["references"]
  finished = {name: record["rows"][name] for name in args.rows if name in record["rows"]}
  for name in finished:
    finished[name]["summary"] = summarise(finished[name], references)
  with open(out, "w") as file:
    json.dump(record, file)
  plot(finished, references, title, png)
  print(table(finished, references))
  print(f"\nJSON: {out}\nplot: {png}")


if __name__ == "__main__":
  main()
