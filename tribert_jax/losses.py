"""Training losses as plain functions: weighted mask BCE + weak-label classification BCEs
(TriBERT, Sound-of-Pixels, AMnet), the pose pre-training classification loss, and AMnet's
Audio-Motion Embedding objective (symmetric InfoNCE over Pearson correlations).

Every term is a mean over the videos of a mixture and over the real examples of the batch
(`valid` = 0 rows, eval padding, contribute nothing). Terms whose prediction is absent from
`outputs` (an erased modality) are absent from the result.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import optax

PROBABILITY_EPS = 1e-6  # WSDDN scores are clipped to [eps, 1 - eps] before the log


def _valid_mean(per_example: jax.Array, valid: jax.Array) -> jax.Array:
  """Mean of per_example [B] over the examples with valid == 1 (0 if there are none)."""
  valid = valid.astype(jnp.float32)
  return jnp.sum(per_example * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def bce_with_logits(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Element-wise binary cross-entropy of logits (numerically stable form)."""
  logits = logits.astype(jnp.float32)
  return jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def bce_with_probabilities(probabilities: jax.Array, targets: jax.Array) -> jax.Array:
  """Element-wise binary cross-entropy of probabilities in [0, 1] (clipped away from 0 and 1)."""
  p = jnp.clip(probabilities.astype(jnp.float32), PROBABILITY_EPS, 1.0 - PROBABILITY_EPS)
  return -(targets * jnp.log(p) + (1.0 - targets) * jnp.log1p(-p))


def separation_loss(mask_logits: jax.Array, gt_masks: jax.Array, weight: jax.Array,
                    valid: jax.Array) -> jax.Array:
  """Per-pixel weighted BCE (Sound-of-Pixels): logits/gt [B,N,F,T], weight [B,F,T] -> scalar."""
  per_pixel = bce_with_logits(mask_logits, gt_masks) * weight[:, None].astype(jnp.float32)
  return _valid_mean(jnp.mean(per_pixel, axis=(1, 2, 3)), valid)


def classification_loss(predictions: jax.Array, labels: jax.Array, valid: jax.Array,
                        from_logits: bool) -> jax.Array:
  """Multi-label BCE: predictions [B, N, ..., C] vs labels [B, N, C] -> scalar (mean over C, N, ...)."""
  labels = labels.astype(jnp.float32).reshape(
      labels.shape[:2] + (1,) * (predictions.ndim - 3) + labels.shape[2:])
  labels = jnp.broadcast_to(labels, predictions.shape)
  bce = bce_with_logits if from_logits else bce_with_probabilities
  per_example = jnp.mean(bce(predictions, labels), axis=tuple(range(1, predictions.ndim)))
  return _valid_mean(per_example, valid)


# Output key -> (loss term name, whether the output holds logits).
CLASSIFICATION_TERMS = {
    "visual_scores": ("visual", False),  # WSDDN scores in [0, 1]
    "pose_scores": ("pose", False),  # WSDDN scores in [0, 1]
    "audio_logits": ("audio", True),  # paper: sigmoid BCE on the audio classifier's logits
    # release (config.model.heads.audio_classifier="release"): softmax over the classes, then
    # BCE on those probabilities (train_trimodal.py: F.binary_cross_entropy; torch clamps the
    # log at -100, here the probabilities are clipped to [1e-6, 1 - 1e-6]).
    "audio_scores": ("audio", False),
    # Decoupled spatial attention class scores [B, N, T, C] against the video's labels (every
    # frame): the weak label loss of the visual segmentation network.
    "visual_class_scores": ("visual_class_scores", True),
}


def tribert_loss(outputs: Mapping[str, jax.Array], targets: Mapping[str, jax.Array],
                 weights: Mapping[str, float] | None = None
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Total loss and its named terms.

  outputs: TriBERT outputs (mask_logits and whichever classification outputs are present).
  targets: gt_masks [B,N,F,T], weight [B,F,T], labels [B,N,C], valid [B].
  weights: term name -> weight (config.model.loss_weights); missing names weigh 1.
  """
  weights = dict(weights or {})
  valid = targets["valid"]
  terms = {"separation": separation_loss(outputs["mask_logits"], targets["gt_masks"],
                                         targets["weight"], valid)}
  for key, (name, from_logits) in CLASSIFICATION_TERMS.items():
    if key in outputs:
      terms[name] = classification_loss(outputs[key], targets["labels"], valid, from_logits)
  total = sum(weights.get(name, 1.0) * value for name, value in terms.items())
  return total, terms


def video_classification_loss(logits: jax.Array, labels: jax.Array, valid: jax.Array
                              ) -> jax.Array:
  """Pose pre-training loss: mean over valid videos of the per-class-averaged sigmoid BCE of
  logits [V, C] vs labels [V, C] (optax's form; valid [V])."""
  per_video = optax.sigmoid_binary_cross_entropy(logits, labels).mean(axis=-1)
  return jnp.sum(per_video * valid) / jnp.maximum(jnp.sum(valid), 1.0)


# ----------------------------------------------------------------------------------------------
# AMnet's Audio-Motion Embedding (AME) pre-training objective.
# ----------------------------------------------------------------------------------------------

PEARSON_EPS = 1e-6  # keeps the correlation of a constant embedding finite (it is then ~0)


def pearson_correlation(a: jax.Array, b: jax.Array) -> jax.Array:
  """Pearson correlation over the last axis of a [..., T] and b [..., T] (broadcast)."""
  a = a.astype(jnp.float32) - jnp.mean(a, axis=-1, keepdims=True)
  b = b.astype(jnp.float32) - jnp.mean(b, axis=-1, keepdims=True)
  numerator = jnp.sum(a * b, axis=-1)
  return numerator / jnp.sqrt(jnp.sum(a * a, axis=-1) * jnp.sum(b * b, axis=-1) + PEARSON_EPS)


def circular_shifts(length: int, min_shift: int) -> list[int]:
  """The circular time shifts whose copies of a clip's embedding are its negatives: every k in
  [min_shift, length - min_shift]."""
  return list(range(min_shift, length - min_shift + 1))


def audio_motion_embedding_loss(motion: jax.Array, sound: jax.Array, valid: jax.Array,
                                temperature: float, min_shift: int = 1
                                ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Symmetric InfoNCE over Pearson correlations (AMnet's AME objective, our formulation).

  motion, sound: embeddings [V, T'] of V clips (f_M3 and the sound network's output); valid [V].
  For clip i, motion -> sound: the positive is r(m_i, s_i); the negatives are r(m_i, s_j) for
  every other valid clip j of the batch and r(m_i, roll(s_i, k)) for the circular time shifts k
  of circular_shifts(T', min_shift) of its own sound (same content, wrong alignment). Sound ->
  motion is the mirror image (r(s_i, m_j), r(s_i, roll(m_i, k))). Each direction is the
  cross-entropy of softmax(r / temperature) at the positive, averaged over valid clips; the loss
  is the mean of the two directions. Also returns the matched / mismatched mean correlations and
  the batch retrieval accuracy (motion -> sound, shifts included) as metrics.
  """
  motion = motion.astype(jnp.float32)
  sound = sound.astype(jnp.float32)
  valid = valid.astype(jnp.float32)
  v, length = motion.shape
  shifts = circular_shifts(length, min_shift)
  cross = pearson_correlation(motion[:, None, :], sound[None, :, :])  # [V(motion), V(sound)]
  column_ok = valid[None, :] > 0

  def direction(correlations, anchors, others):
    shifted = [pearson_correlation(anchors, jnp.roll(others, k, axis=-1)) for k in shifts]
    logits = jnp.where(column_ok, correlations, -1e9) / temperature
    if shifted:
      logits = jnp.concatenate([logits, jnp.stack(shifted, axis=-1) / temperature], axis=-1)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -log_probs[jnp.arange(v), jnp.arange(v)]
    correct = (jnp.argmax(logits, axis=-1) == jnp.arange(v)).astype(jnp.float32)
    return _valid_mean(nll, valid), _valid_mean(correct, valid)

  motion_to_sound, accuracy = direction(cross, motion, sound)
  sound_to_motion, _ = direction(cross.T, sound, motion)
  loss = 0.5 * (motion_to_sound + sound_to_motion)
  pair_valid = valid[:, None] * valid[None, :]
  off_diagonal = pair_valid * (1.0 - jnp.eye(v))
  metrics = dict(
      ame=loss,
      matched_correlation=_valid_mean(jnp.diagonal(cross), valid),
      mismatched_correlation=jnp.sum(cross * off_diagonal) / jnp.maximum(jnp.sum(off_diagonal), 1),
      retrieval_accuracy=accuracy)
  return loss, metrics
