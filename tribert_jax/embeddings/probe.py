"""Representation probe (supplement §2.4, Table 4): an MLP on frozen features -> instrument.

  python main.py --mode=probe --config=configs/probe.py:cpu --workdir=runs/retrieval_cpu \
      [--config.init.checkpoint=runs/pretrain_cpu]

Features are the per-clip embeddings of tribert_jax/embeddings/export.py (shared files in
WORKDIR/embeddings: pointing the probe at the retrieval workdir reuses them):
  input_<s>   the stream's pre-transformer input embeddings (the paper's "feature w/o BERT
              stream" baseline: the raw uni-modal features TriBERT receives),
  tribert_<s> the stream's TriBERT hidden states (paper: "TriBERT <s> feature"),
  pooled_<s>  the stream's pooled <SOS> feature.
Solo clips only (one instrument each; duets are counted and left out): a softmax classifier
trained on the train split, scored on the test split by top-1/5/10 accuracy with the same
tie rule as retrieval (ties never count for the true class).
Not reproduced: the paper's "TriBERT <s> feature with the other modalities masked" rows (the
model has no switch to mask whole streams at inference).
Report: WORKDIR/probe.json and WORKDIR/probe.md.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from tribert_jax.embeddings import export
from tribert_jax.embeddings import ranking
from tribert_jax.evaluation import reports

KIND_ROW_TITLES = {
    "input": "{M} feature w/o {m} BERT stream",
    "tribert": "TriBERT {m} feature",
    "pooled": "TriBERT {m} feature (pooled <SOS>)",
}


def feature_title(name: str) -> str:
  """'tribert_audio' -> 'TriBERT audio feature' (supplement Table 4 wording)."""
  kind, modality = name.split("_", 1)
  word = {"visual": "visual", "pose": "pose", "audio": "audio"}[modality]
  return KIND_ROW_TITLES[kind].format(M=word.capitalize(), m=word)


class ProbeMLP(nn.Module):
  """ReLU MLP -> class logits."""
  hidden_widths: tuple[int, ...]
  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, width in enumerate(self.hidden_widths):
      x = nn.relu(nn.Dense(width, name=f"hidden_{i}")(x))
    return nn.Dense(self.num_classes, name="classifier")(x)


def train_probe(features: np.ndarray, targets: np.ndarray, num_classes: int,
                cfg: ml_collections.ConfigDict, seed: int = 0
                ) -> tuple[ProbeMLP, Any, tuple[np.ndarray, np.ndarray], list[float]]:
  """Trains the MLP on features [N, D] -> targets [N] (class indices); cfg = config.probe.
  Returns (module, params, standardisation (mean, std), mean loss per epoch)."""
  n = len(features)
  stats = ranking.standardizer(features) if cfg.standardize else (
      np.zeros(features.shape[1]), np.ones(features.shape[1]))
  x = jnp.asarray((features - stats[0]) / stats[1], jnp.float32)
  y = jnp.asarray(targets, jnp.int32)
  model = ProbeMLP(tuple(int(w) for w in cfg.hidden_widths), num_classes)
  params = model.init(jax.random.PRNGKey(seed), x[:1])
  tx = optax.adam(float(cfg.learning_rate))
  opt_state = tx.init(params)

  @jax.jit
  def train_step(params, opt_state, index, x_all, y_all):
    def loss_fn(params):
      logits = model.apply(params, x_all[index])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y_all[index]).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(seed)
  batch = min(int(cfg.batch_size), n)
  steps = -(-n // batch)
  history = []
  for _ in range(int(cfg.num_epochs)):
    order = rng.permutation(n)
    order = np.concatenate([order, rng.permutation(n)[:steps * batch - n]])  # full batches
    losses = []
    for index in order.reshape(steps, batch):
      params, opt_state, loss = train_step(params, opt_state, index, x, y)
      losses.append(loss)
    history.append(float(np.mean(jax.device_get(losses))))
  if history and not np.isfinite(history[-1]):
    raise FloatingPointError("probe: non-finite training loss")
  return model, params, stats, history


def evaluate_probe(model: ProbeMLP, params: Any, stats: tuple[np.ndarray, np.ndarray],
                   features: np.ndarray, targets: np.ndarray, ks: Sequence[int],
                   tie_policy: str) -> dict[int, float]:
  """Top-k accuracy (%) of the probe's class ranking on features [N, D], targets [N]."""
  logits = model.apply(params, jnp.asarray((features - stats[0]) / stats[1], jnp.float32))
  return ranking.topk_accuracy(np.asarray(logits), targets, ks, tie_policy)


def solo_targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mask of one-label clips [N], their class indices [N'])."""
  solo = labels.sum(axis=1) == 1
  return solo, np.argmax(labels[solo], axis=1)


def markdown_table(report: Mapping[str, Any]) -> str:
  """Supplement Table 4 layout: one row per feature, Top-1/5/10 columns."""
  ks = report["ks"]
  lines = [f"Instrument classification probe on frozen features: {report['train_size']} "
           f"{report['train_split']} solos -> {report['test_size']} {report['eval_split']} "
           f"solos ({report['duets_left_out']} duets left out), {report['num_classes']} classes, "
           f"checkpoint step {report['checkpoint_step']}.", "",
           "| Features | " + " | ".join(f"Top-{k}" for k in ks) + " |",
           "|---|" + "---|" * len(ks)]
  for name, accuracy in report["features"].items():
    cells = ["n/a" if accuracy is None else f"{accuracy[str(k)]:.2f}" for k in ks]
    lines.append(f"| {feature_title(name)} | " + " | ".join(cells) + " |")
  lines.append("| Random selection | " + " | ".join(
      f"{report['random'][str(k)]:.2f}" for k in ks) + " |")
  return "\n".join(lines) + "\n"


def run_on_embeddings(config: ml_collections.ConfigDict,
                      embeddings: Mapping[str, Mapping[str, np.ndarray]], workdir: str,
                      checkpoint_step: int | None = None) -> dict[str, Any]:
  """Trains and scores one probe per config.probe.features; writes probe.json / probe.md."""
  cfg = config.probe
  train_e, test_e = embeddings[cfg.train_split], embeddings[cfg.eval_split]
  num_classes = train_e["labels"].shape[1]
  train_solo, train_targets = solo_targets(train_e["labels"])
  test_solo, test_targets = solo_targets(test_e["labels"])
  ks = tuple(int(k) for k in cfg.ks)
  report: dict[str, Any] = {
      "train_split": cfg.train_split, "eval_split": cfg.eval_split,
      "train_size": int(train_solo.sum()), "test_size": int(test_solo.sum()),
      "duets_left_out": int((~train_solo).sum() + (~test_solo).sum()),
      "num_classes": num_classes, "ks": list(ks), "tie_policy": cfg.tie_policy,
      "checkpoint_step": checkpoint_step,
      "random": {str(k): ranking.random_accuracy(k, num_classes) for k in ks},
      "features": {}, "losses": {}}
  for name in cfg.features:
    kind, modality = name.split("_", 1)
    if kind not in KIND_ROW_TITLES or modality not in export.MODALITIES:
      raise ValueError(f"config.probe.features: unknown {name!r} (<input|tribert|pooled>_"
                       "<visual|pose|audio>)")
    if name not in train_e or name not in test_e:
      logging.warning("probe %s: not exported (modality erased from the model); skipped", name)
      report["features"][name] = None
      continue
    model, params, stats, history = train_probe(train_e[name][train_solo], train_targets,
                                                num_classes, cfg, seed=config.seed)
    accuracy = evaluate_probe(model, params, stats, test_e[name][test_solo], test_targets, ks,
                              cfg.tie_policy)
    report["features"][name] = {str(k): v for k, v in accuracy.items()}
    report["losses"][name] = {"first_epoch": history[0] if history else None,
                              "last_epoch": history[-1] if history else None}
    logging.info("probe %s: %s", name, {k: round(v, 2) for k, v in accuracy.items()})
  reports.write_table_report(report, markdown_table(report), workdir, "probe")
  return report


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Exports embeddings if needed (tribert_jax/embeddings/export.py), then runs every probe."""
  embeddings, step = export.ensure_embeddings(config, workdir)
  return run_on_embeddings(config, embeddings, workdir, step)
