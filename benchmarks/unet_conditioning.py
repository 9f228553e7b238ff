"""How fast TriBERT's separation U-Net learns to use its conditioning feature, in isolation.

  python -m benchmarks.unet_conditioning                  # cpu preset, 3 rows x 150 steps (~8 min)
  python -m benchmarks.unet_conditioning --size tiny --steps 2 --rows bottleneck:3e-4

The attention U-Net alone (config.model.unet at --size) is trained on real Mix-and-Separate
batches of SynthMUSIC (the training pipeline of configs/pretrain.py) with an *oracle* feature:
each video's one-hot instrument labels stand in for TriBERT's fused feature. So the rows measure
only whether the U-Net can turn a perfectly informative feature into per-video masks, with no
visual/pose/audio stream to learn first. Each row (conditioning:learning rate) prints the mean
weighted mask BCE (the training loss) over the last --window steps, next to two reference
levels on the same batches: every mask 0.5, and the best a feature-blind model can do (each
pixel predicted as the mean of the N ground-truth masks, i.e. the optimum without knowing which
video is which). A row whose loss stays at the feature-blind level never used the feature.
"""

from __future__ import annotations

import argparse
import time

from benchmarks import common


def reference_levels(batches, data_config) -> tuple[float, float]:
  """(loss of all-0.5 masks, loss of the best feature-blind masks) averaged over batches."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tribert_jax import losses, spectral  # pylint: disable=g-import-not-at-top

  half, blind = [], []
  for batch in batches:
    f = spectral.spectral_features(batch["waveform"], batch["mixture"], data_config)
    gt, weight, valid = f["gt_masks"], f["weight"], jnp.asarray(batch["valid"])
    half.append(float(losses.separation_loss(jnp.zeros_like(gt), gt, weight, valid)))
    p = jnp.clip(jnp.mean(gt, axis=1, keepdims=True), 1e-4, 1 - 1e-4)
    logits = jnp.broadcast_to(jnp.log(p / (1 - p)), gt.shape)
    blind.append(float(losses.separation_loss(logits, gt, weight, valid)))
  return float(np.mean(half)), float(np.mean(blind))


def train_row(config, batches, conditioning: str, learning_rate: float, steps: int,
              window: int) -> tuple[float, float]:
  """Trains the U-Net with oracle features; returns (mean loss of the last window, s/step)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from tribert_jax import spectral  # pylint: disable=g-import-not-at-top
  from tribert_jax import losses  # pylint: disable=g-import-not-at-top
  from tribert_jax.models import unet  # pylint: disable=g-import-not-at-top

  model_config = config.model.copy_and_resolve_references()
  model_config.unet.conditioning = conditioning
  net = unet.AttentionUNet(model_config)
  log_eps = model_config.log_eps

  def features(batch):
    f = spectral.spectral_features(batch["waveform"], batch["mixture"], config.data)
    return jnp.log(f["mix_warped"] + log_eps), f

  first = batches[0]
  variables = nn.meta.unbox(jax.jit(lambda b: net.init(
      jax.random.PRNGKey(0), features(b)[0], b["labels"], train=False))(first))
  tx = optax.adam(learning_rate)
  params, batch_stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(params)

  @jax.jit
  def step(params, batch_stats, opt_state, batch):
    log_mix, f = features(batch)

    def loss_fn(p):
      logits, mutated = net.apply({"params": p, "batch_stats": batch_stats}, log_mix,
                                  batch["labels"], train=True, mutable=["batch_stats"])
      return (losses.separation_loss(logits, f["gt_masks"], f["weight"], batch["valid"]),
              mutated["batch_stats"])

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  history, start = [], None
  for i in range(steps):
    if i == 1:
      start = time.perf_counter()  # the first step compiles
    params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state,
                                                batches[i % len(batches)])
    history.append(float(loss))
  per_step = (time.perf_counter() - start) / max(steps - 1, 1) if start else float("nan")
  return float(np.mean(history[-window:])), per_step


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="cpu", choices=("cpu", "tiny", "paper"))
  parser.add_argument("--root", default="", help="dataset root (default: the config's)")
  parser.add_argument("--steps", type=int, default=150, help="updates per row")
  parser.add_argument("--window", type=int, default=25, help="steps averaged for the result")
  parser.add_argument("--batches", type=int, default=150, help="distinct batches cycled over")
  parser.add_argument("--rows", nargs="+",
                      default=["bottleneck:3e-4", "bottleneck:3e-3", "every_level:3e-3"],
                      help="conditioning:learning_rate pairs")
  args = parser.parse_args()

  from data_pipeline.loading import pipeline as loading_pipeline
  from data_pipeline import prepare  # pylint: disable=g-import-not-at-top

  config = common.get_config("tribert", args.size)
  if args.root:
    config.data.root = args.root
  prepare.prepare_dataset(config, process_index=0)
  pipeline = iter(loading_pipeline.build_train_pipeline(config.data, seed=0))
  keys = ("waveform", "mixture", "labels", "valid")
  batches = [{k: b[k] for k in keys} for b, _ in zip(pipeline, range(args.batches))]
  half, blind = reference_levels(batches[:20], config.data)
  print(f"# U-Net conditioning with oracle (one-hot label) features\n\n{common.machine()}; "
        f"size {args.size}, batch {config.data.batch_size}, {args.steps} Adam steps per row, "
        f"loss = mean of the last {args.window} steps.\nReference levels: all masks 0.5: "
        f"{half:.4f}; best feature-blind masks: {blind:.4f}.\n", flush=True)
  rows = []
  for row in args.rows:
    conditioning, lr = row.split(":")
    loss, per_step = train_row(config, batches, conditioning, float(lr), args.steps,
                               args.window)
    rows.append([conditioning, lr, f"{loss:.4f}", f"{loss - blind:+.4f}", f"{per_step:.2f}"])
    print(f"[{row}] loss {loss:.4f}", flush=True)
  print(common.markdown(["conditioning", "learning rate", "mask BCE (last steps)",
                         "vs feature-blind", "s/step"], rows))


if __name__ == "__main__":
  main()
