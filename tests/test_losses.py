"""TriBERT loss terms against NumPy, padding examples, erased terms and weights."""

import jax.numpy as jnp
import numpy as np

from tribert_jax import losses


def np_bce_logits(x, y):
  p = 1 / (1 + np.exp(-x))
  return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def make(seed=0, b=3, n=2, c=4, t=3):
  rng = np.random.default_rng(seed)
  outputs = dict(mask_logits=rng.standard_normal((b, n, 8, 8)).astype(np.float32),
                 visual_scores=rng.random((b, n, c)).astype(np.float32),
                 pose_scores=rng.random((b, n, c)).astype(np.float32),
                 audio_logits=rng.standard_normal((b, n, c)).astype(np.float32),
                 visual_class_scores=rng.standard_normal((b, n, t, c)).astype(np.float32))
  targets = dict(gt_masks=(rng.random((b, n, 8, 8)) > 0.5).astype(np.float32),
                 weight=rng.random((b, 8, 8)).astype(np.float32),
                 labels=(rng.random((b, n, c)) > 0.5).astype(np.float32),
                 valid=np.array([1.0, 1.0, 0.0], np.float32))
  return outputs, targets


def test_terms_match_numpy_and_ignore_padding():
  outputs, targets = make()
  total, terms = losses.tribert_loss({k: jnp.asarray(v) for k, v in outputs.items()},
                                     {k: jnp.asarray(v) for k, v in targets.items()})
  assert set(terms) == {"separation", "visual", "pose", "audio", "visual_class_scores"}
  real = slice(0, 2)  # example 2 is padding
  sep = (np_bce_logits(outputs["mask_logits"], targets["gt_masks"])
         * targets["weight"][:, None])[real].mean()
  np.testing.assert_allclose(terms["separation"], sep, rtol=1e-5)
  p, y = outputs["visual_scores"][real], targets["labels"][real]
  np.testing.assert_allclose(terms["visual"], (-(y * np.log(p) + (1 - y) * np.log(1 - p))).mean(),
                             rtol=1e-5)
  np.testing.assert_allclose(terms["audio"], np_bce_logits(outputs["audio_logits"][real], y).mean(),
                             rtol=1e-5)
  frame_labels = np.broadcast_to(y[:, :, None], outputs["visual_class_scores"][real].shape)
  np.testing.assert_allclose(terms["visual_class_scores"],
                             np_bce_logits(outputs["visual_class_scores"][real], frame_labels).mean(),
                             rtol=1e-5)
  np.testing.assert_allclose(total, sum(terms.values()), rtol=1e-6)
  # The padding example contributes nothing, whatever it holds.
  outputs2 = dict(outputs, mask_logits=outputs["mask_logits"].copy())
  outputs2["mask_logits"][2] = 1e3
  total2, _ = losses.tribert_loss(outputs2, targets)
  np.testing.assert_allclose(total2, total, rtol=1e-6)


def test_saturated_scores_stay_finite_and_weights_apply():
  outputs, targets = make()
  outputs["pose_scores"][:] = 0.0
  outputs["visual_scores"][:] = 1.0
  total, terms = losses.tribert_loss(outputs, targets, {"pose": 0.0, "separation": 2.0})
  assert all(np.isfinite(float(v)) for v in terms.values())
  expected = 2 * terms["separation"] + terms["visual"] + terms["audio"] + terms[
      "visual_class_scores"]
  np.testing.assert_allclose(total, expected, rtol=1e-6)


def test_erased_modality_has_no_term_and_all_padding_is_zero():
  outputs, targets = make()
  del outputs["pose_scores"]
  targets["valid"][:] = 0.0
  total, terms = losses.tribert_loss(outputs, targets)
  assert "pose" not in terms
  assert float(total) == 0.0
