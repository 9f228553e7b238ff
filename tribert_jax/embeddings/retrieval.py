"""Cross-modal retrieval on frozen TriBERT embeddings (paper §4.2, Table 3; supplement §1).

  python main.py --mode=retrieval --config=configs/retrieval.py:cpu --workdir=runs/retrieval_cpu \
      [--config.init.checkpoint=runs/pretrain_cpu]

1. Export: tribert_jax/embeddings/export.py (per-clip tribert_<s>, input_<s>, pooled_<s>
   embeddings of the train and test splits, cached in WORKDIR/embeddings).
2. Train (`train_variant`), per variant and embedding kind: n-way multiple choice. The anchor
   is a training clip's query embedding; choice 0 is its own result embedding, the others are
   distractors: hard ones drawn without replacement from the result embeddings of the
   `num_neighbours` (25) clips whose query embedding (for vision+audio: the vision embedding, as
   the supplement says) is nearest to the anchor's, easy ones uniformly from all other training
   clips. The anchor's own clip is never a distractor; the paper does not exclude clips of the
   positive's class (the nearest neighbours mostly are), and neither do we unless
   config.retrieval.exclude_same_class. Single-modality variants: n = 3 (2 hard);
   vision+audio -> pose: n = 4 (1 hard + 2 easy). Network (shared over the n choices): linear
   layers to a common width per modality, for vision+audio a fusion MLP on the two projected
   embeddings, element-wise product of query and result, a 4-layer MLP with Tanh -> one logit;
   softmax over the n logits, cross-entropy; Adam (paper: 2e-5, batch 64, 750 epochs).
   Embeddings are standardised per feature with training-set statistics (our choice; the paper
   does not say) before nearest neighbours and the network.
3. Evaluate (`evaluate_variant`): every test clip is a query; every test clip's result embedding
   is scored (the pool), the query's own clip is the answer; top-1/5/10 accuracy next to random
   selection (k / pool size). Ties are never resolved in the answer's favour: "pessimistic"
   (default) ranks the answer after every item with an equal score; "expected" gives the mean
   accuracy over random orderings of the ties. All-equal scores thus score 0 (or k / pool).
Report: WORKDIR/retrieval.json and WORKDIR/retrieval.md (paper Table 3 layout).
"""

from __future__ import annotations

import dataclasses
import os
import time
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

KIND_TITLES = {"tribert": "TriBERT", "input": "Pre-transformer", "pooled": "TriBERT pooled"}
MODALITY_TITLES = {"visual": "Vision", "pose": "Pose", "audio": "Audio"}


@dataclasses.dataclass(frozen=True)
class Variant:
  """A retrieval task: query modalities -> result modality."""
  name: str
  queries: tuple[str, ...]  # the first one is the anchor for nearest-neighbour hard negatives
  result: str

  @property
  def title(self) -> str:
    """'Vision + Audio → Pose' style name (paper Table 3)."""
    return " + ".join(MODALITY_TITLES[m] for m in self.queries) + " → " + \
        MODALITY_TITLES[self.result]


VARIANTS = {v.name: v for v in (
    Variant("audio_to_vision", ("audio",), "visual"),
    Variant("vision_to_audio", ("visual",), "audio"),
    Variant("audio_to_pose", ("audio",), "pose"),
    Variant("pose_to_audio", ("pose",), "audio"),
    Variant("vision_audio_to_pose", ("visual", "audio"), "pose"),
)}


# ----------------------------------------------------------------------------------------------
# 2. The retrieval network and its multiple-choice training.
# ----------------------------------------------------------------------------------------------


class TanhMLP(nn.Module):
  """Dense layers with Tanh between them (the last layer is linear)."""
  widths: tuple[int, ...]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, width in enumerate(self.widths):
      x = nn.Dense(width, name=f"dense_{i}")(x)
      if i < len(self.widths) - 1:
        x = jnp.tanh(x)
    return x


class RetrievalNetwork(nn.Module):
  """Alignment score of (query embeddings, result embedding): linear projections to a common
  width, a fusion MLP for two query modalities, element-wise product, Tanh MLP -> one logit."""
  query_modalities: tuple[str, ...]
  width: int  # common width of the projected embeddings
  hidden_width: int  # width of the scoring MLP's hidden layers
  num_layers: int = 4  # layers of the scoring MLP (paper: 4), the last one -> 1 logit

  def setup(self):
    self.query_projections = {m: nn.Dense(self.width, name=f"query_projection_{m}")
                              for m in self.query_modalities}
    self.result_projection = nn.Dense(self.width, name="result_projection")
    if len(self.query_modalities) > 1:  # vision + audio -> one query vector
      self.fusion = TanhMLP((self.width, self.width), name="fusion")
    self.scorer = TanhMLP((self.hidden_width,) * (self.num_layers - 1) + (1,), name="scorer")

  def encode_query(self, queries: Mapping[str, jax.Array]) -> jax.Array:
    """{modality: [..., D_m]} -> [..., width]."""
    projected = [self.query_projections[m](queries[m]) for m in self.query_modalities]
    if len(projected) == 1:
      return projected[0]
    return self.fusion(jnp.concatenate(projected, axis=-1))

  def encode_result(self, results: jax.Array) -> jax.Array:
    """[..., D_r] -> [..., width]."""
    return self.result_projection(results)

  def score(self, query: jax.Array, results: jax.Array) -> jax.Array:
    """Encoded query [B, W] x encoded results [B, n, W] -> logits [B, n]."""
    return self.scorer(query[:, None, :] * results)[..., 0]

  def __call__(self, queries: Mapping[str, jax.Array], results: jax.Array) -> jax.Array:
    """queries {m: [B, D_m]}, results [B, n, D_r] -> logits [B, n]."""
    return self.score(self.encode_query(queries), self.encode_result(results))


def nearest_neighbours(embeddings: np.ndarray, k: int, allowed: np.ndarray | None = None
                       ) -> np.ndarray:
  """[N, k] indices of each row's k nearest other rows (Euclidean; ties by index), only among
  allowed[i] (default: every row but i itself; row i itself is never returned)."""
  x = np.asarray(embeddings, np.float64)
  n = len(x)
  squared = np.sum(x * x, axis=1)
  distances = squared[:, None] + squared[None, :] - 2.0 * x @ x.T  # [N, N]
  ok = ~np.eye(n, dtype=bool) if allowed is None else (np.asarray(allowed, bool)
                                                       & ~np.eye(n, dtype=bool))
  fewest = int(ok.sum(axis=1).min()) if n else 0
  if fewest < k:
    raise ValueError(f"nearest_neighbours: a row has only {fewest} allowed neighbours, "
                     f"{k} requested")
  distances = np.where(ok, np.maximum(distances, 0.0), np.inf)
  return np.argsort(distances, axis=1, kind="stable")[:, :k]


def sample_choices(rng: np.random.Generator, anchors: np.ndarray, neighbours: np.ndarray,
                   allowed: np.ndarray, num_hard: int, num_easy: int) -> np.ndarray:
  """[B, 1 + hard + easy] item indices: column 0 = the anchor (the positive), then hard
  distractors drawn without replacement from neighbours[anchor], then easy ones uniformly from
  allowed[anchor] minus the hard ones. All distinct, never the anchor."""
  b = len(anchors)
  rows = np.arange(b)[:, None]
  order = np.argsort(rng.random((b, neighbours.shape[1])), axis=1)[:, :num_hard]
  hard = np.take_along_axis(neighbours[anchors], order, axis=1)  # [B, hard]
  parts = [anchors[:, None], hard]
  if num_easy:
    ok = allowed[anchors].copy()  # [B, N]
    ok[rows, anchors[:, None]] = False
    ok[rows, hard] = False
    if int(ok.sum(axis=1).min()) < num_easy:
      raise ValueError(f"not enough items for {num_easy} easy distractors per anchor")
    keys = np.where(ok, rng.random(ok.shape), -1.0)
    parts.append(np.argsort(-keys, axis=1, kind="stable")[:, :num_easy])
  return np.concatenate(parts, axis=1)


def _distractor_counts(variant: Variant, cfg: ml_collections.ConfigDict) -> tuple[int, int]:
  """(hard, easy) distractors of a variant (single query: n = 3, two queries: n = 4)."""
  if len(variant.queries) == 1:
    return int(cfg.single_hard_negatives), int(cfg.single_easy_negatives)
  return int(cfg.pair_hard_negatives), int(cfg.pair_easy_negatives)


def _allowed(labels: np.ndarray, exclude_same_class: bool) -> np.ndarray:
  """[N, N] which items may be distractors for which anchor (never itself)."""
  n = len(labels)
  allowed = ~np.eye(n, dtype=bool)
  if exclude_same_class:  # "same class" = identical label set (solo class or duet pair)
    same = np.all(labels[:, None, :] == labels[None, :, :], axis=-1)
    allowed &= ~same
  return allowed


@dataclasses.dataclass
class TrainedRetrieval:
  """A trained retrieval network with the standardisation it was trained with."""
  variant: Variant
  network: RetrievalNetwork
  params: Any
  query_stats: dict[str, tuple[np.ndarray, np.ndarray]]
  result_stats: tuple[np.ndarray, np.ndarray]
  history: list[float]  # mean training loss per epoch


def train_variant(variant: Variant, queries: Mapping[str, np.ndarray], results: np.ndarray,
                  labels: np.ndarray, cfg: ml_collections.ConfigDict,
                  seed: int = 0) -> TrainedRetrieval:
  """Trains the n-way multiple-choice network on training clips (queries {m: [N, D_m]},
  results [N, D_r], labels [N, C]); cfg = config.retrieval."""
  n = len(results)
  if cfg.standardize:
    query_stats = {m: ranking.standardizer(queries[m]) for m in variant.queries}
    result_stats = ranking.standardizer(results)
  else:
    query_stats = {m: (np.zeros(queries[m].shape[1]), np.ones(queries[m].shape[1]))
                   for m in variant.queries}
    result_stats = (np.zeros(results.shape[1]), np.ones(results.shape[1]))
  q = {m: ((queries[m] - query_stats[m][0]) / query_stats[m][1]).astype(np.float32)
       for m in variant.queries}
  r = ((results - result_stats[0]) / result_stats[1]).astype(np.float32)
  num_hard, num_easy = _distractor_counts(variant, cfg)
  allowed = _allowed(labels, bool(cfg.exclude_same_class))
  # Hard distractors: neighbours of the anchor's (first) query embedding.
  neighbours = nearest_neighbours(q[variant.queries[0]], min(int(cfg.num_neighbours), n - 1),
                                  allowed)
  if neighbours.shape[1] < num_hard:
    raise ValueError(f"{n} training clips: too few for {num_hard} hard distractors")

  network = RetrievalNetwork(tuple(variant.queries), int(cfg.width), int(cfg.hidden_width),
                             int(cfg.mlp_layers))
  batch = min(int(cfg.batch_size), n)
  choices_shape = (batch, 1 + num_hard + num_easy)
  params = network.init(jax.random.PRNGKey(seed), {m: jnp.zeros((1, v.shape[1]))
                                                   for m, v in q.items()},
                        jnp.zeros((1, choices_shape[1], r.shape[1])))
  tx = optax.adam(float(cfg.learning_rate))
  opt_state = tx.init(params)
  device_q = {m: jnp.asarray(v) for m, v in q.items()}
  device_r = jnp.asarray(r)

  def loss_fn(params, anchors, choices, q_all, r_all):
    logits = network.apply(params, {m: v[anchors] for m, v in q_all.items()},
                           r_all[choices])  # [B, n], choice 0 is the positive
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.zeros(anchors.shape, jnp.int32)).mean()

  @jax.jit
  def train_step(params, opt_state, anchors, choices, q_all, r_all):
    loss, grads = jax.value_and_grad(loss_fn)(params, anchors, choices, q_all, r_all)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(seed)
  steps_per_epoch = -(-n // batch)
  history = []
  for _ in range(int(cfg.num_epochs)):
    # Every clip is an anchor once per epoch; the last batch is filled with random other clips.
    order = rng.permutation(n)
    order = np.concatenate([order, rng.permutation(n)[:steps_per_epoch * batch - n]])
    losses = []
    for anchors in order.reshape(steps_per_epoch, batch):
      choices = sample_choices(rng, anchors, neighbours, allowed, num_hard, num_easy)
      params, opt_state, loss = train_step(params, opt_state, anchors, choices, device_q,
                                           device_r)
      losses.append(loss)
    history.append(float(np.mean(jax.device_get(losses))))
    if not np.isfinite(history[-1]):
      raise FloatingPointError(f"retrieval {variant.name}: non-finite loss at epoch "
                               f"{len(history)}")
  return TrainedRetrieval(variant, network, params, query_stats, result_stats, history)


# ----------------------------------------------------------------------------------------------
# 3. Evaluation over the test pool.
# ----------------------------------------------------------------------------------------------


def score_pool(trained: TrainedRetrieval, queries: Mapping[str, np.ndarray],
               results: np.ndarray, chunk: int = 64) -> np.ndarray:
  """[Q, P] alignment logits of every query against every pool item."""
  network, params = trained.network, trained.params
  q = {m: jnp.asarray((queries[m] - trained.query_stats[m][0]) / trained.query_stats[m][1],
                      jnp.float32) for m in trained.variant.queries}
  r = jnp.asarray((results - trained.result_stats[0]) / trained.result_stats[1], jnp.float32)
  encoded_q = network.apply(params, q, method=RetrievalNetwork.encode_query)  # [Q, W]
  encoded_r = network.apply(params, r, method=RetrievalNetwork.encode_result)  # [P, W]
  num_q, num_p = encoded_q.shape[0], encoded_r.shape[0]

  @jax.jit
  def score_chunk(query_chunk):
    pool = jnp.broadcast_to(encoded_r, (query_chunk.shape[0],) + encoded_r.shape)  # [c, P, W]
    return network.apply(params, query_chunk, pool, method=RetrievalNetwork.score)

  padded = -(-num_q // chunk) * chunk  # one compiled shape for every chunk
  encoded_q = jnp.pad(encoded_q, ((0, padded - num_q), (0, 0)))
  scores = [score_chunk(encoded_q[i:i + chunk]) for i in range(0, padded, chunk)]
  return np.asarray(jax.device_get(jnp.concatenate(scores)), np.float64)[:num_q, :num_p]


def variant_arrays(embeddings: Mapping[str, np.ndarray], kind: str, variant: Variant
                   ) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
  """({modality: [N, D]}, results [N, D]) of one embedding kind, or None when a modality is
  missing (erased from the model)."""
  keys = [f"{kind}_{m}" for m in variant.queries + (variant.result,)]
  if any(k not in embeddings for k in keys):
    return None
  return ({m: embeddings[f"{kind}_{m}"] for m in variant.queries},
          embeddings[f"{kind}_{variant.result}"])


def evaluate_variant(trained: TrainedRetrieval, queries: Mapping[str, np.ndarray],
                     results: np.ndarray, ks: Sequence[int], tie_policy: str
                     ) -> dict[int, float]:
  """Top-k accuracy (%) of retrieving each query's own clip from the pool of all results."""
  scores = score_pool(trained, queries, results)
  return ranking.topk_accuracy(scores, np.arange(len(results)), ks, tie_policy)


# ----------------------------------------------------------------------------------------------
# The whole experiment and its report.
# ----------------------------------------------------------------------------------------------


def markdown_table(report: Mapping[str, Any]) -> str:
  """Paper Table 3 layout: one row per variant, top-k columns per embedding kind."""
  kinds, ks = report["embedding_kinds"], report["ks"]
  pool = report["pool_size"]
  header = ["Retrieval variant"] + [f"Top-{k} {KIND_TITLES[kind]}" for k in ks for kind in kinds]
  lines = [f"Cross-modal retrieval on the {report['split']} split (pool of {pool} clips; "
           f"trained on {report['train_size']} {report['train_split']} clips, "
           f"{report['num_epochs']} epochs; ties: {report['tie_policy']}; checkpoint step "
           f"{report['checkpoint_step']}).", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for name, entry in report["variants"].items():
    cells = []
    for k in ks:
      for kind in kinds:
        accuracy = entry.get(kind)
        cells.append("n/a" if accuracy is None else f"{accuracy[str(k)]:.2f}")
    lines.append(f"| {VARIANTS[name].title} | " + " | ".join(cells) + " |")
  random_cells = [f"{report['random'][str(k)]:.2f}" for k in ks for _ in kinds]
  lines.append("| Random selection | " + " | ".join(random_cells) + " |")
  return "\n".join(lines) + "\n"


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Export (if needed), train and evaluate every variant x embedding kind; writes
  WORKDIR/retrieval.json and .md and returns the report."""
  cfg = config.retrieval
  os.makedirs(workdir, exist_ok=True)
  embeddings, step = export.ensure_embeddings(config, workdir)
  train_e, test_e = embeddings[cfg.train_split], embeddings[cfg.eval_split]
  ks = tuple(int(k) for k in cfg.ks)
  pool = len(test_e["ids"])
  report: dict[str, Any] = {
      "split": cfg.eval_split, "train_split": cfg.train_split, "pool_size": pool,
      "train_size": len(train_e["ids"]), "num_epochs": int(cfg.num_epochs), "ks": list(ks),
      "tie_policy": cfg.tie_policy, "embedding_kinds": list(cfg.embedding_kinds),
      "checkpoint": config.init.checkpoint, "checkpoint_step": step,
      "random": {str(k): ranking.random_accuracy(k, pool) for k in ks}, "variants": {},
      "losses": {}}
  for name in cfg.variants:
    if name not in VARIANTS:
      raise ValueError(f"config.retrieval.variants: unknown {name!r} (known {list(VARIANTS)})")
    variant = VARIANTS[name]
    entry: dict[str, Any] = {}
    for kind in cfg.embedding_kinds:
      train_arrays = variant_arrays(train_e, kind, variant)
      test_arrays = variant_arrays(test_e, kind, variant)
      if train_arrays is None or test_arrays is None:
        logging.warning("retrieval %s / %s: a modality is erased from the model; skipped",
                        name, kind)
        entry[kind] = None
        continue
      start = time.monotonic()
      trained = train_variant(variant, *train_arrays, train_e["labels"], cfg, seed=config.seed)
      accuracy = evaluate_variant(trained, *test_arrays, ks, cfg.tie_policy)
      entry[kind] = {str(k): v for k, v in accuracy.items()}
      report["losses"][f"{name}/{kind}"] = {"first_epoch": trained.history[0],
                                            "last_epoch": trained.history[-1]}
      logging.info("retrieval %s / %s: %s (loss %.4f -> %.4f, %.1f s)", name, kind,
                   {k: round(v, 2) for k, v in accuracy.items()}, trained.history[0],
                   trained.history[-1], time.monotonic() - start)
    report["variants"][name] = entry
  reports.write_table_report(report, markdown_table(report), workdir, "retrieval")
  return report
