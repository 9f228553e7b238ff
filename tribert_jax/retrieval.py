"""Cross-modal retrieval on frozen TriBERT embeddings (paper §4.2, Table 3; supplement §1).

  python -m tribert_jax.retrieval --config=configs/retrieval.py:cpu --workdir=runs/retrieval_cpu \
      [--config.init.checkpoint=runs/pretrain_cpu]

1. Export (`export_embeddings`): the trained TriBERT (config.init.checkpoint, a pretrain workdir,
   read with tribert_jax.checkpointing.load_state_tree) runs in eval mode on every clip of the
   train and test splits, one clip at a time: num_mix = 1, so the audio input is the clip's own
   warped spectrogram (the mixture of one source, no mixing partner, no gain jitter), centred
   audio crop and central frame square as in the separation evaluation. Per clip and stream s in
   {visual, pose, audio} it keeps
     tribert_<s>: the stream's last-layer hidden states (intermediates["<s>_hidden"], [L, D])
                  pooled over tokens: "flatten" = the concatenation of all token states (the
                  paper's "concatenation of the hidden representations h_s0..s3"), tokens that
                  are padding (an undetected person) zeroed; "mean" = mean over real tokens;
     input_<s>:   the same pooling of the stream's input embeddings before the first transformer
                  layer (intermediates["<s>_embeddings"]): the paper's pre-transformer baseline;
     pooled_<s>:  the stream's pooled <SOS> feature (intermediates["pooled_<s>"]).
   Files: WORKDIR/embeddings/<split>.npz (+ ids, multi-hot labels, index rows). The clips come
   from data_pipeline.input_pipeline.build_clip_pipeline: every clip of index/<split>.csv once
   (solos only when config.export.solos_only), in index order, with the evaluation protocol.
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
import json
import os
import pathlib
import time
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

MODALITIES = ("visual", "pose", "audio")
EMBEDDING_KINDS = ("tribert", "input", "pooled")
KIND_TITLES = {"tribert": "TriBERT", "input": "Pre-transformer", "pooled": "TriBERT pooled"}
MODALITY_TITLES = {"visual": "Vision", "pose": "Pose", "audio": "Audio"}
TIE_POLICIES = ("pessimistic", "expected")


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
# 1. Export.
# ----------------------------------------------------------------------------------------------


def pool_tokens(tokens: jax.Array, mask: jax.Array, pooling: str) -> jax.Array:
  """Per-clip embedding from token states: tokens [B, L, D], mask [B, L] -> [B, L*D] or [B, D]."""
  mask = mask.astype(tokens.dtype)[..., None]  # [B, L, 1]
  if pooling == "flatten":
    return (tokens * mask).reshape(tokens.shape[0], -1)
  if pooling == "mean":
    return jnp.sum(tokens * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
  raise ValueError(f"config.export.token_pooling: unknown {pooling!r} (flatten or mean)")


def load_tribert_variables(config: ml_collections.ConfigDict) -> tuple[dict[str, Any], int]:
  """(variables {params, batch_stats}, step) of config.init.checkpoint, checked against the
  shapes of config.model (a mismatch names the arrays and the checkpoint)."""
  from tribert_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from tribert_jax.models import tribert  # pylint: disable=g-import-not-at-top
  path = config.init.checkpoint
  if not path:
    raise ValueError("config.init.checkpoint is empty: set it to a pretrain workdir")
  state, _, step = checkpointing.load_state_tree(path, config.init.which)
  variables = {"params": state["params"], "batch_stats": state.get("batch_stats") or {}}
  model = tribert.TriBERT(config=config.model)
  inputs = tribert.example_inputs(config.model, batch_size=1, num_mix=1)
  abstract = jax.eval_shape(lambda r: tribert.unbox(model.init(
      {"params": r, "dropout": r, "masking": r}, inputs, train=False)), jax.random.PRNGKey(0))
  expected = checkpointing.flatten({k: abstract.get(k, {}) for k in variables})
  found = checkpointing.flatten(variables)
  problems = [f"{p}: missing" for p in expected if p not in found]
  problems += [f"{p}: checkpoint {tuple(np.shape(found[p]))} vs model {tuple(s.shape)}"
               for p, s in expected.items() if p in found and tuple(np.shape(found[p])) != s.shape]
  problems += [f"{p}: not in the model" for p in found if p not in expected]
  if problems:
    raise ValueError(f"checkpoint {path} (step {step}) does not fit config.model "
                     f"({len(problems)} arrays, e.g. {problems[:4]}); pass the pretrain run's "
                     "size / --config.model overrides")
  return variables, step


def make_embed_fn(config: ml_collections.ConfigDict, data_config: ml_collections.ConfigDict
                  ) -> Callable[[Any, Mapping[str, jax.Array]], dict[str, jax.Array]]:
  """embed(variables, batch) -> {<kind>_<stream>: [B, E]} for one-clip batches (N = 1)."""
  from tribert_jax import audio  # pylint: disable=g-import-not-at-top
  from tribert_jax import evaluate  # pylint: disable=g-import-not-at-top
  from tribert_jax.models import tribert  # pylint: disable=g-import-not-at-top
  model = tribert.TriBERT(config=config.model)
  streams = tribert.stream_names(config.model)
  pooling = config.export.token_pooling

  def embed(variables, batch):
    # N = 1: mixture == the clip's own waveform, so mix_warped is the clip's spectrogram.
    features = audio.spectral_features(batch["waveform"], batch["mixture"], data_config)
    _, intermediates = model.apply(variables, evaluate.model_inputs(batch, features), train=False)
    out = {}
    for s in streams:
      mask = intermediates[f"{s}_token_mask"][:, 0]  # [B, L]
      out[f"tribert_{s}"] = pool_tokens(intermediates[f"{s}_hidden"][:, 0], mask, pooling)
      out[f"input_{s}"] = pool_tokens(intermediates[f"{s}_embeddings"][:, 0], mask, pooling)
      out[f"pooled_{s}"] = intermediates[f"pooled_{s}"][:, 0]
    return {k: v.astype(jnp.float32) for k, v in out.items()}

  return embed


def _export_meta(config: ml_collections.ConfigDict, step: int) -> dict[str, Any]:
  """What an embedding file was computed from (a changed field means export again)."""
  return {"checkpoint": os.path.abspath(config.init.checkpoint), "which": config.init.which,
          "step": int(step), "token_pooling": config.export.token_pooling,
          "solos_only": bool(config.export.solos_only), "data_root": os.path.abspath(
              config.data.root), "erased": [m for m in ("visual", "pose")
                                            if not config.model[m].enabled]}


def export_embeddings(config: ml_collections.ConfigDict, workdir: str
                      ) -> tuple[dict[str, dict[str, np.ndarray]], int]:
  """Runs the checkpoint on every clip of config.export.splits; writes WORKDIR/embeddings and
  returns ({split: {tribert_<s>, input_<s>, pooled_<s>: [clips, E], ids, labels [clips, C],
  rows}}, checkpoint step)."""
  from data_pipeline import dataset_index  # pylint: disable=g-import-not-at-top
  from data_pipeline import input_pipeline  # pylint: disable=g-import-not-at-top
  from tribert_jax import train  # pylint: disable=g-import-not-at-top
  if config.data.source != "folder":
    raise ValueError("retrieval export reads the folder layout: set config.data.source=folder "
                     f"and config.data.root (got source {config.data.source!r})")
  train.prepare_dataset(config)
  variables, step = load_tribert_variables(config)
  splits = tuple(config.export.splits)
  data = config.data.copy_and_resolve_references()
  data.eval_batch_size = int(config.export.batch_size)
  embed = jax.jit(make_embed_fn(config, data))
  meta = _export_meta(config, step)
  out_dir = pathlib.Path(workdir, "embeddings")
  out_dir.mkdir(parents=True, exist_ok=True)
  exported = {}
  for split in splits:
    start = time.monotonic()
    records = dataset_index.read_index(data.root, split)
    # Every process exports every clip (process 0 of 1): embeddings are small, and no gather.
    pipeline = input_pipeline.build_clip_pipeline(data, split,
                                                  solos_only=bool(config.export.solos_only),
                                                  process_index=0, process_count=1)
    chunks: dict[str, list[np.ndarray]] = {}
    for batch in pipeline:
      valid = batch["valid"] > 0.5
      model_batch = {k: batch[k] for k in ("frames", "pose", "pose_mask", "pose_frame_index",
                                            "waveform", "mixture")}
      result = jax.device_get(embed(variables, model_batch))
      result["rows"] = batch["clip_index"][:, 0]
      result["labels"] = batch["labels"][:, 0]
      for k, v in result.items():
        chunks.setdefault(k, []).append(np.asarray(v)[valid])
    arrays = {k: np.concatenate(v) for k, v in chunks.items()}
    for k, v in arrays.items():
      if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
        raise FloatingPointError(f"export of {split}: non-finite values in {k} (checkpoint "
                                 f"{config.init.checkpoint} step {step})")
    arrays["ids"] = np.asarray([records[r].id for r in arrays["rows"]])
    np.savez(out_dir / f"{split}.npz", meta=json.dumps(meta), **arrays)
    exported[split] = arrays
    logging.info("exported %d %s clips in %.1f s (checkpoint step %d): %s", len(arrays["ids"]),
                 split, time.monotonic() - start, step,
                 {k: v.shape for k, v in arrays.items() if k.endswith(MODALITIES)})
  return exported, step


def load_embeddings(path: os.PathLike | str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """(arrays, meta) of one exported embedding file."""
  with np.load(path, allow_pickle=False) as data:
    arrays = {k: data[k] for k in data.files if k != "meta"}
    meta = json.loads(str(data["meta"])) if "meta" in data.files else {}
  return arrays, meta


def ensure_embeddings(config: ml_collections.ConfigDict, workdir: str
                      ) -> tuple[dict[str, dict[str, np.ndarray]], int]:
  """(embeddings {split: arrays}, checkpoint step) of WORKDIR, exporting first when missing or
  stale (another checkpoint step, pooling, dataset or erased modality than config asks for)."""
  from tribert_jax import checkpointing  # pylint: disable=g-import-not-at-top
  paths = {s: pathlib.Path(workdir, "embeddings", f"{s}.npz") for s in config.export.splits}
  if all(p.is_file() for p in paths.values()):
    _, step = checkpointing.resolve_checkpoint_dir(config.init.checkpoint,
                                                   config.init.which)
    loaded = {s: load_embeddings(p) for s, p in paths.items()}
    if all(meta == _export_meta(config, step) for _, meta in loaded.values()):
      logging.info("using the embeddings in %s/embeddings (checkpoint step %d)", workdir, step)
      return {s: arrays for s, (arrays, _) in loaded.items()}, step
    logging.info("embeddings in %s/embeddings are stale; exporting again", workdir)
  return export_embeddings(config, workdir)


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


def standardizer(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-feature mean and std (1 where a feature is constant) of training embeddings."""
  mean = train.mean(axis=0)
  std = train.std(axis=0)
  return mean, np.where(std > 1e-6, std, 1.0)


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
    query_stats = {m: standardizer(queries[m]) for m in variant.queries}
    result_stats = standardizer(results)
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


def topk_accuracy(scores: np.ndarray, targets: np.ndarray, ks: Sequence[int],
                  tie_policy: str = "pessimistic") -> dict[int, float]:
  """Top-k accuracy in percent of scores [Q, P] (higher = better) with answer targets[q].

  Ties never help: "pessimistic" puts the answer after every other item with the same score;
  "expected" credits (k - #better) / (#tied incl. the answer), clipped to [0, 1], the mean over
  random orderings of the ties.
  """
  scores = np.asarray(scores, np.float64)
  targets = np.asarray(targets, np.int64)
  if scores.ndim != 2 or targets.shape != (scores.shape[0],):
    raise ValueError(f"scores {scores.shape} and targets {targets.shape} do not match")
  if not np.all(np.isfinite(scores)):
    raise FloatingPointError("topk_accuracy: non-finite scores")
  answer = scores[np.arange(len(targets)), targets][:, None]  # [Q, 1]
  better = np.sum(scores > answer, axis=1)
  tied = np.sum(scores == answer, axis=1) - 1  # other items scoring exactly like the answer
  out = {}
  for k in ks:
    if tie_policy == "pessimistic":
      hits = (better + tied < k).astype(np.float64)
    elif tie_policy == "expected":
      hits = np.clip((k - better) / (tied + 1.0), 0.0, 1.0)
    else:
      raise ValueError(f"tie_policy must be one of {TIE_POLICIES}, got {tie_policy!r}")
    out[int(k)] = 100.0 * float(np.mean(hits))
  return out


def random_accuracy(k: int, pool_size: int) -> float:
  """Top-k accuracy in percent of picking k pool items at random."""
  return 100.0 * min(k, pool_size) / pool_size


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
  return topk_accuracy(scores, np.arange(len(results)), ks, tie_policy)


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
  embeddings, step = ensure_embeddings(config, workdir)
  train_e, test_e = embeddings[cfg.train_split], embeddings[cfg.eval_split]
  ks = tuple(int(k) for k in cfg.ks)
  pool = len(test_e["ids"])
  report: dict[str, Any] = {
      "split": cfg.eval_split, "train_split": cfg.train_split, "pool_size": pool,
      "train_size": len(train_e["ids"]), "num_epochs": int(cfg.num_epochs), "ks": list(ks),
      "tie_policy": cfg.tie_policy, "embedding_kinds": list(cfg.embedding_kinds),
      "checkpoint": config.init.checkpoint, "checkpoint_step": step,
      "random": {str(k): random_accuracy(k, pool) for k in ks}, "variants": {}, "losses": {}}
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
  with open(os.path.join(workdir, "retrieval.json"), "w") as handle:
    json.dump(report, handle, indent=2)
  table = markdown_table(report)
  with open(os.path.join(workdir, "retrieval.md"), "w") as handle:
    handle.write(table)
  print(table)
  return report


def main(argv: Sequence[str]) -> None:
  """absl entry point: --config=configs/retrieval.py:SIZE --workdir=DIR."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments {argv[1:]}")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")  # tf.data only feeds the host
  run(flags.FLAGS.config, flags.FLAGS.workdir)


def define_flags() -> None:
  """--config (a config file, e.g. configs/retrieval.py:cpu) and --workdir."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/retrieval.py:cpu.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Output directory (embeddings, reports).")
  flags.mark_flags_as_required(["config", "workdir"])


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(main)
