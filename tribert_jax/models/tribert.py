"""TriBERT (Rahman et al., NeurIPS 2021): visual, pose and audio streams with tri-modal
co-attention, weakly supervised heads, and an attention U-Net that separates the mixture.

  model = TriBERT(config=config.model)
  variables = model.init({"params": k, "dropout": k, "masking": k}, inputs, train=False)
  (outputs, intermediates), mutated = model.apply(variables, inputs, train=True,
        rngs={"dropout": k1, "masking": k2}, mutable=["batch_stats"])
  outputs, intermediates = model.apply(variables, inputs, train=False)

inputs: frames [B,N,T,S,S,3], pose [B,N,P,W,J,3], pose_mask [B,N,P,W], pose_frame_index [B,N,T],
mix_warped [B,256,256], and with model.pose.stgcn_input="features" pose_features [B,N,T,P,J*C]. An erased modality (config.model.visual/pose.enabled = False) adds no
tokens, no co-attention input, no fused part, no output and hence no loss term; its inputs may
then be omitted.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from tribert_jax.models import layers
from tribert_jax.models.audio_encoder import AudioEncoder
from tribert_jax.models.heads import AudioClassifier, Pooler, WSDDNHead, fuse_pooled
from tribert_jax.models.stgcn import PoseEncoder
from tribert_jax.models.transformer import StreamEmbedding, TriBERTEncoder
from tribert_jax.models.unet import AttentionUNet
from tribert_jax.models.visual import VisualSegmentationNetwork


def unbox(variables: Any) -> Any:
  """Strips nn.Partitioned boxes (logical axis metadata) from a variable tree."""
  return nn.meta.unbox(variables)


def stream_names(config: ml_collections.ConfigDict) -> list[str]:
  """The streams present under config.model (audio always; visual/pose unless erased)."""
  return ([s for s, on in (("visual", config.visual.enabled), ("pose", config.pose.enabled)) if on]
          + ["audio"])


class TriBERT(nn.Module):
  """The full model: inputs dict -> (outputs, intermediates); see the module docstring."""
  config: ml_collections.ConfigDict  # config.model (configs/parts/model.py)

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], train: bool = False
               ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    cfg, tr = self.config, self.config.transformer
    dtype, param_dtype = layers.to_dtype(cfg.dtype), layers.to_dtype(cfg.param_dtype)
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    mix_warped = inputs["mix_warped"]
    b = mix_warped.shape[0]
    outputs: dict[str, jax.Array] = {}
    intermediates: dict[str, jax.Array] = {}
    streams, masks = {}, {}
    num_frames = None
    stream_slots = {}  # tokens per frame of each stream

    # ---- visual tokens: decoupled spatial attention pools k objects per frame ----
    if cfg.visual.enabled:
      frames = inputs["frames"]
      n, num_frames = frames.shape[1], frames.shape[2]
      visual = VisualSegmentationNetwork(cfg, name="visual_encoder")(frames, train)
      tokens = layers.dense(tr.visual_width, name="visual_projection", **kw)(visual["tokens"])
      k = tokens.shape[3]
      streams["visual"], masks["visual"] = StreamEmbedding(
          cfg, tr.mask_probability, not train, name="visual_embedding")(
              tokens.reshape(b * n, num_frames, k, -1), jnp.ones((b * n, num_frames, k)))
      intermediates["visual_attention_maps"] = visual["attention_maps"]  # [B, N, T, h, w, C]
      intermediates["visual_class_scores"] = visual["class_scores"]  # [B, N, T, C]
      outputs["visual_class_scores"] = visual["class_scores"]
      slots = stream_slots["visual"] = k

    # ---- pose tokens: ST-GCN per person, sampled at the RGB frames ----
    if cfg.pose.enabled:
      pose_frame_index = inputs["pose_frame_index"]
      n, num_frames = pose_frame_index.shape[1], pose_frame_index.shape[2]
      tokens, valid = PoseEncoder(cfg, tr.pose_width, name="pose_encoder")(
          inputs["pose"], inputs["pose_mask"], pose_frame_index, train,
          inputs.get("pose_features"))  # [B,N,T,P,D], [B,N,T,P]
      p = stream_slots["pose"] = tokens.shape[3]
      streams["pose"], masks["pose"] = StreamEmbedding(
          cfg, tr.mask_probability, not train, name="pose_embedding")(
              tokens.reshape(b * n, num_frames, p, -1), valid.reshape(b * n, num_frames, p))
      if not cfg.visual.enabled:
        slots = p
    if num_frames is None:
      raise ValueError("config.model: at least one of visual/pose must be enabled")

    # ---- audio token: one VGG feature per mixture, repeated over the frame/slot grid ----
    log_mixture = jnp.log(mix_warped + cfg.log_eps)  # [B, 256, 256]
    audio = AudioEncoder(cfg, tr.audio_width, name="audio_encoder")(log_mixture, train)  # [B, Da]
    intermediates["audio_feature"] = audio
    audio_tokens = jnp.broadcast_to(audio[:, None, None, None, :],
                                    (b, n, num_frames, slots, audio.shape[-1]))
    streams["audio"], masks["audio"] = StreamEmbedding(cfg, 0.0, not train,
                                                       name="audio_embedding")(
        audio_tokens.reshape(b * n, num_frames, slots, -1), jnp.ones((b * n, num_frames, slots)))

    for s in streams:
      intermediates[f"{s}_embeddings"] = streams[s].reshape(b, n, *streams[s].shape[1:])
      intermediates[f"{s}_token_mask"] = masks[s].reshape(b, n, -1)

    # ---- three streams with tri-modal co-attention ----
    hidden = TriBERTEncoder(cfg, not train, name="encoder")(streams, masks)

    # ---- heads ----
    hc = cfg.heads
    num_sos = 1 if tr.sos_token == "learned" else slots
    heads_kw = dict(activation=hc.activation, **kw)
    per_slot = hc.get("pooler_order", "mean_first") == "per_slot"
    if hc.get("pooler_order", "mean_first") not in ("mean_first", "per_slot"):
      raise ValueError(f"config.model.heads.pooler_order: unknown {hc.pooler_order!r}")
    regions = hc.get("wsddn_regions", "tokens")
    audio_kind = hc.get("audio_classifier", "mean_hidden")
    pooled = {}
    for s, h in hidden.items():
      intermediates[f"{s}_hidden"] = h.reshape(b, n, *h.shape[1:])  # [B, N, L, D]
      pooled[s] = Pooler(hc.pooled_width, hc.pooler_activation, per_slot, name=f"{s}_pooler",
                         **kw)(h[:, :num_sos], masks[s][:, :num_sos])  # [b*n, (K,) width]
      mean_pooled = jnp.mean(pooled[s], axis=1) if per_slot else pooled[s]
      intermediates[f"pooled_{s}"] = mean_pooled.reshape(b, n, -1).astype(jnp.float32)
      if s in ("visual", "pose"):  # WSDDN over the regions
        if regions == "objects":  # [b*n, frame slots, K, D], incl. a global slot if any
          first = 0 if tr.sos_token == "global" else num_sos
          kk = stream_slots[s]
          region_h = h[:, first:].reshape(b * n, -1, kk, h.shape[-1])
          region_mask = masks[s][:, first:].reshape(b * n, -1, kk)
        else:  # all tokens but <SOS>
          region_h, region_mask = h[:, num_sos:], masks[s][:, num_sos:]
        scores = WSDDNHead(cfg.num_classes, regions=regions, name=f"{s}_head", **heads_kw)(
            region_h, region_mask)
        outputs[f"{s}_scores"] = scores.reshape(b, n, -1)
      else:
        audio_out = AudioClassifier(cfg.num_classes, kind=audio_kind, name="audio_head",
                                    **heads_kw)(h, masks[s])
        key = "audio_scores" if audio_kind == "release" else "audio_logits"
        outputs[key] = audio_out.reshape(b, n, -1)  # probabilities / logits

    # ---- fused feature (supp. Table 2) ----
    # The product starts from audio (multiplication commutes; kept for identical numerics).
    order = list(hidden)
    if hc.fusion == "multiply":
      order = ["audio"] + [s for s in hidden if s != "audio"]
    fused = fuse_pooled([pooled[s] for s in order], hc.fusion, per_slot,
                        nn.Dropout(hc.get("fused_dropout", 0.1), deterministic=not train))
    fused = layers.activation(hc.fused_activation)(fused).reshape(b, n, -1)
    intermediates["fused"] = fused.astype(jnp.float32)

    # ---- separation: encoder once per mixture, decoder once per video ----
    outputs["mask_logits"] = AttentionUNet(cfg, name="separation_net")(log_mixture, fused, train)
    return outputs, intermediates


def example_inputs(config: ml_collections.ConfigDict, batch_size: int = 1,
                   num_mix: int | None = None, key: jax.Array | None = None) -> dict[str, jax.Array]:
  """Inputs of config.model.input's sizes (random if key is given, else zeros/ones)."""
  c = config.input
  n = num_mix or c.num_mix
  shapes = dict(frames=(batch_size, n, c.num_frames, c.image_size, c.image_size, 3),
                pose=(batch_size, n, c.num_persons, c.pose_window, c.num_joints, 3),
                pose_mask=(batch_size, n, c.num_persons, c.pose_window),
                mix_warped=(batch_size, c.spectrogram_size, c.spectrogram_size))
  index = jnp.broadcast_to(c.pose_window // 2 + jnp.arange(c.num_frames) - c.num_frames // 2,
                           (batch_size, n, c.num_frames)).astype(jnp.int32)
  if key is None:
    out = {k: jnp.zeros(s) for k, s in shapes.items()}
    out["pose_mask"] = jnp.ones(shapes["pose_mask"])
    out["mix_warped"] = jnp.ones(shapes["mix_warped"])
  else:
    k = jax.random.split(key, 4)
    out = dict(frames=jax.random.normal(k[0], shapes["frames"]),
               pose=jax.random.uniform(k[1], shapes["pose"]),
               pose_mask=jnp.ones(shapes["pose_mask"]),
               mix_warped=jax.random.uniform(k[2], shapes["mix_warped"]) ** 2)
  out["pose_frame_index"] = index
  if "num_classes" in config:  # multi-hot instrument labels [B, N, C] (read by oracle models)
    out["labels"] = (jnp.zeros((batch_size, n, config.num_classes)) if key is None else
                     jax.nn.one_hot(jax.random.randint(jax.random.fold_in(key, 7),
                                                       (batch_size, n), 0, config.num_classes),
                                    config.num_classes))
  if config.get("pose") and config.pose.get("stgcn_input", "pose") == "features":
    width = c.num_joints * config.pose.stgcn_blocks[-1][0]
    shape = (batch_size, n, c.num_frames, c.num_persons, width)
    out["pose_features"] = (jnp.zeros(shape) if key is None
                            else jax.random.normal(k[3], shape))
  return out
