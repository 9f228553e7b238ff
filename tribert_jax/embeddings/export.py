"""Embedding export for retrieval and the probe: per-clip features of a frozen TriBERT, cached.

`export_embeddings`: the trained TriBERT (config.init.checkpoint, a pretrain workdir, checked
against config.model by tribert_jax.initialization) runs in eval mode on every clip of the
config.export.splits, one clip at a time: num_mix = 1, so the audio input is the clip's own
warped spectrogram (the mixture of one source, no mixing partner, no gain jitter), centred audio
crop and central frame square as in the separation evaluation; the batch -> model inputs step is
tasks/separation.model_inputs. Per clip and stream s in {visual, pose, audio} it keeps
  tribert_<s>: the stream's last-layer hidden states (intermediates["<s>_hidden"], [L, D])
               pooled over tokens: "flatten" = the concatenation of all token states (the
               paper's "concatenation of the hidden representations h_s0..s3"), tokens that
               are padding (an undetected person) zeroed; "mean" = mean over real tokens;
  input_<s>:   the same pooling of the stream's input embeddings before the first transformer
               layer (intermediates["<s>_embeddings"]): the paper's pre-transformer baseline;
  pooled_<s>:  the stream's pooled <SOS> feature (intermediates["pooled_<s>"]).
Files: WORKDIR/embeddings/<split>.npz (+ ids, multi-hot labels, index rows, and the meta record
`ensure_embeddings` compares to decide whether to export again). The clips come from
data_pipeline.loading.pipeline.build_clip_pipeline: every clip of index/<split>.csv once (solos
only when config.export.solos_only), in index order, with the evaluation protocol.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any, Callable, Mapping

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data_pipeline.layout import reader
from data_pipeline.loading import pipeline as loading_pipeline
from data_pipeline import prepare
from tribert_jax import checkpointing
from tribert_jax import initialization
from tribert_jax import pose_feature_cache
from tribert_jax.models import tribert
from tribert_jax.tasks import separation

MODALITIES = ("visual", "pose", "audio")
EMBEDDING_KINDS = ("tribert", "input", "pooled")


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
  path = config.init.checkpoint
  if not path:
    raise ValueError("config.init.checkpoint is empty: set it to a pretrain workdir")
  model = tribert.TriBERT(config=config.model)
  inputs = tribert.example_inputs(config.model, batch_size=1, num_mix=1)
  abstract = jax.eval_shape(lambda r: tribert.unbox(model.init(
      {"params": r, "dropout": r, "masking": r}, inputs, train=False)), jax.random.PRNGKey(0))
  return initialization.load_checkpoint_variables(path, config.init.which, abstract)


def make_embed_fn(config: ml_collections.ConfigDict, data_config: ml_collections.ConfigDict
                  ) -> Callable[[Any, Mapping[str, jax.Array]], dict[str, jax.Array]]:
  """embed(variables, batch) -> {<kind>_<stream>: [B, E]} for one-clip batches (N = 1)."""
  model = tribert.TriBERT(config=config.model)
  streams = tribert.stream_names(config.model)
  pooling = config.export.token_pooling

  def embed(variables, batch):
    # N = 1: mixture == the clip's own waveform, so mix_warped is the clip's spectrogram.
    inputs, _ = separation.model_inputs(batch, data_config)
    _, intermediates = model.apply(variables, inputs, train=False)
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
  if config.data.source != "folder":
    raise ValueError("retrieval export reads the folder layout: set config.data.source=folder "
                     f"and config.data.root (got source {config.data.source!r})")
  prepare.prepare_dataset(config, jax.process_index())
  if pose_feature_cache.enabled(config):  # a staged-recipe TriBERT reads frozen ST-GCN features
    pose_feature_cache.ensure_cache(config, workdir)
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
    records = reader.read_index(data.root, split)
    # Every process exports every clip (process 0 of 1): embeddings are small, and no gather.
    pipeline = loading_pipeline.build_clip_pipeline(data, split,
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
