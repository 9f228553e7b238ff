"""optim.name="bert_adam" against a NumPy transcription of the release's BertAdam step
(pytorch_pretrained_bert / tribert/optimization.py: BertAdam.step, WarmupLinearSchedule);
optim.name="sgd" against torch.optim.SGD's update formula; the step decay; per-prefix learning
rates; validation of the optimiser keys."""

import jax
import jax.numpy as jnp
import ml_collections
import optax
import numpy as np
import pytest

from configs.parts.train import add_train_config, use_bert_adam
from tribert_jax import optimizers


def np_warmup_linear(step, total, warmup):
  progress = step / total
  if progress < warmup:
    return progress / warmup
  return max((progress - 1.0) / (warmup - 1.0), 0.0)


def np_bert_adam_step(params, grads, state, lr, total, warmup=0.1, b1=0.9, b2=0.999, e=1e-6,
                      weight_decay=0.01, max_grad_norm=1.0):
  """One BertAdam.step over a dict of tensors; state {name: (m, v)} and a shared step count."""
  step = state["step"]
  out, moments = {}, {}
  for name, p in params.items():
    g = grads[name].astype(np.float64)
    norm = np.sqrt(np.sum(g * g))  # torch clip_grad_norm_(p, max_norm)
    coef = max_grad_norm / (norm + 1e-6)
    if coef < 1:
      g = g * coef
    m, v = state["moments"][name]
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    update = m / (np.sqrt(v) + e)
    if p.ndim >= 2:  # ours decays >= 2-D parameters (the release: names without bias/LayerNorm)
      update = update + weight_decay * p
    out[name] = p - lr * np_warmup_linear(step, total, warmup) * update
    moments[name] = (m, v)
  return out, {"step": step + 1, "moments": moments}


def test_warmup_linear_schedule_matches_numpy():
  sched = optimizers.warmup_linear_schedule(2e-3, 50, 0.1)
  for step in (0, 1, 4, 5, 6, 30, 49, 50, 70):
    np.testing.assert_allclose(float(sched(step)), 2e-3 * np_warmup_linear(step, 50, 0.1),
                               rtol=1e-6, atol=1e-12)


def test_bert_adam_matches_numpy_transcription():
  config = use_bert_adam(add_train_config(ml_collections.ConfigDict()))
  config.optim.learning_rate = 1e-2
  total = 20
  tx, _ = optimizers.make_optimizer(config.optim, total)
  rng = np.random.default_rng(0)
  params = {"kernel": rng.standard_normal((4, 3)), "bias": rng.standard_normal((3,)),
            "table": rng.standard_normal((2, 5)) * 3}
  np_params = dict(params)
  np_state = {"step": 0, "moments": {k: (0.0 * v, 0.0 * v) for k, v in params.items()}}
  jparams = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  opt_state = tx.init(jparams)
  for i in range(6):
    # Mixed scales: some tensors are clipped (norm > 1), some are not.
    grads = {k: rng.standard_normal(v.shape) * (5.0 if i % 2 else 0.1) for k, v in params.items()}
    np_params, np_state = np_bert_adam_step(np_params, grads, np_state, 1e-2, total)
    updates, opt_state = tx.update(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), grads),
                                   opt_state, jparams)
    jparams = jax.tree.map(lambda p, u: p + u, jparams, updates)
    for k in params:
      np.testing.assert_allclose(np.asarray(jparams[k]), np_params[k], rtol=1e-5, atol=1e-6,
                                 err_msg=f"step {i}, {k}")
  # The first update is zero (lr schedule 0 at step 0); later ones moved every tensor.
  assert all(not np.allclose(np_params[k], params[k]) for k in params)


def test_bert_adam_with_lr_multipliers_builds():
  config = use_bert_adam(add_train_config(ml_collections.ConfigDict()))
  config.optim.lr_multipliers = ml_collections.ConfigDict({"a": 0.1})
  tx, schedule = optimizers.make_optimizer(config.optim, 10, param_names=["a", "b"])
  params = {"a": {"kernel": jnp.ones((2, 2))}, "b": {"kernel": jnp.ones((2, 2))}}
  state = tx.init(params)
  for _ in range(3):
    updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
  ratio = updates["a"]["kernel"] / updates["b"]["kernel"]
  np.testing.assert_allclose(np.asarray(ratio), 0.1, rtol=1e-5)
  assert float(schedule(0)) == 0.0 and float(schedule(1)) > 0.0


def test_frozen_parameters_never_change_even_with_weight_decay():
  config = use_bert_adam(add_train_config(ml_collections.ConfigDict()))
  config.optim.learning_rate = 0.1
  config.optim.warmup_proportion = 0.0
  params = {"pose_encoder": {"stgcn": {"kernel": np.ones((3, 3), np.float32)},
                             "feature_projection": {"kernel": np.ones((3, 3), np.float32)}},
            "pose_encoder_extra": {"kernel": np.ones((3, 3), np.float32)}}
  tx, _ = optimizers.make_optimizer(config.optim, 10, frozen=("pose_encoder/stgcn",))
  state = tx.init(params)
  grads = jax.tree.map(lambda p: np.full_like(p, 0.5), params)
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(params["pose_encoder"]["stgcn"]["kernel"], np.ones((3, 3)))
  # A sibling whose name merely starts with the prefix is trained.
  assert not np.allclose(params["pose_encoder_extra"]["kernel"], 1.0)
  assert not np.allclose(params["pose_encoder"]["feature_projection"]["kernel"], 1.0)


def np_torch_sgd_step(params, grads, buffers, lr, momentum, weight_decay):
  """One torch.optim.SGD.step (dampening 0, nesterov False) over a dict of tensors, as its
  documented update: d_p = g + wd * p; buf = d_p at the first step, else momentum * buf + d_p;
  p = p - lr * buf."""
  out, new_buffers = {}, {}
  for name, p in params.items():
    d_p = grads[name] + weight_decay * p
    buf = d_p.copy() if buffers.get(name) is None else momentum * buffers[name] + d_p
    out[name], new_buffers[name] = p - lr * buf, buf
  return out, new_buffers


def test_sgd_matches_torch_formula_with_momentum_weight_decay_and_step_decay():
  config = add_train_config(ml_collections.ConfigDict())
  optim = config.optim
  optim.name, optim.learning_rate, optim.momentum, optim.weight_decay = "sgd", 0.1, 0.9, 1e-2
  optim.decay, optim.decay_steps, optim.decay_factor = "step", (3,), 0.1
  tx, schedule = optimizers.make_optimizer(optim, 10)
  rng = np.random.default_rng(0)
  params = {"kernel": rng.standard_normal((4, 3)), "bias": rng.standard_normal((3,))}
  np_params, buffers = dict(params), {}
  jparams = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  opt_state = tx.init(jparams)
  for i in range(6):
    grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    lr = 0.1 if i < 3 else 0.01  # torch: the scheduler changes group["lr"] between steps
    assert np.isclose(float(schedule(i)), lr)
    np_params, buffers = np_torch_sgd_step(np_params, grads, buffers, lr, 0.9, 1e-2)
    updates, opt_state = tx.update(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), grads),
                                   opt_state, jparams)
    jparams = optax.apply_updates(jparams, updates)
    for k in params:  # every parameter is decayed, biases too (torch decays the whole group)
      np.testing.assert_allclose(np.asarray(jparams[k]), np_params[k], rtol=1e-5, atol=1e-6,
                                 err_msg=f"step {i}, {k}")


def test_step_decay_values_warmup_and_fractions():
  config = add_train_config(ml_collections.ConfigDict())
  optim = config.optim
  optim.learning_rate, optim.decay, optim.decay_factor = 1.0, "step", 0.1
  optim.decay_steps, optim.warmup_steps = (4, 8), 2
  _, schedule = optimizers.make_optimizer(optim, 10)
  values = [float(schedule(c)) for c in range(10)]
  # Warm-up 0, 0.5; then 1 until the absolute count 4, 0.1 until 8, then 0.01.
  np.testing.assert_allclose(values, [0, 0.5, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01], rtol=1e-6)
  # Fractions follow the run's length (e.g. a --steps override of num_train_steps).
  optim.decay_steps, optim.warmup_steps, optim.decay_fractions = (), 0, (0.4, 0.8)
  for total in (10, 100):
    _, schedule = optimizers.make_optimizer(optim, total)
    assert optimizers.step_boundaries(optim, total) == [int(0.4 * total), int(0.8 * total)]
    np.testing.assert_allclose([float(schedule(c)) for c in
                                (0, int(0.4 * total) - 1, int(0.4 * total), int(0.8 * total))],
                               [1, 1, 0.1, 0.01], rtol=1e-6)


def _multiplier_updates(multipliers, params):
  config = add_train_config(ml_collections.ConfigDict())
  config.optim.name, config.optim.learning_rate, config.optim.momentum = "sgd", 1.0, 0.0
  config.optim.lr_multipliers = ml_collections.ConfigDict(multipliers)
  tx, _ = optimizers.make_optimizer(config.optim, 10, param_names=list(params))
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  return {optimizers.parameter_path(p): float(-u.reshape(-1)[0])
          for p, u in jax.tree_util.tree_flatten_with_path(updates)[0]}


def test_lr_multipliers_match_path_prefixes_longest_first():
  leaf = jnp.ones((2,))
  params = {"video_network": {"resnet": {"conv1": {"kernel": leaf}}, "resnet_head": {"b": leaf},
                              "channel_conv": {"kernel": leaf}},
            "audio_network": {"kernel": leaf}}
  rates = _multiplier_updates({"video_network": 2.0, "video_network/resnet": 0.1,
                               "audio_network": 3.0}, params)
  assert rates == pytest.approx({"video_network/resnet/conv1/kernel": 0.1,
                                 # a whole-component prefix only: resnet_head is not resnet
                                 "video_network/resnet_head/b": 2.0,
                                 "video_network/channel_conv/kernel": 2.0,
                                 "audio_network/kernel": 3.0})
  # No multiplier: the base rate.
  assert _multiplier_updates({"audio_network": 3.0}, params)[
      "video_network/channel_conv/kernel"] == pytest.approx(1.0)


def test_lr_multiplier_key_matching_nothing_is_an_error():
  params = {"video_network": {"resnet": {"kernel": jnp.ones((2,))}}}
  with pytest.raises(ValueError, match="video_network/resnett"):
    _multiplier_updates({"video_network/resnett": 0.1}, params)
  with pytest.raises(ValueError, match="vide_network"):
    _multiplier_updates({"vide_network": 0.1}, params)


def test_optimizer_keys_are_validated_naming_the_key():
  from tribert_jax import validation  # pylint: disable=g-import-not-at-top
  config = add_train_config(ml_collections.ConfigDict())
  config.optim.decay, config.optim.momentum, config.optim.decay_factor = "step", 1.5, 0.0
  config.optim.decay_fractions = (0.4, 1.2)
  config.optim.lr_multipliers = ml_collections.ConfigDict({"video_network/": 0.1, "a": -1.0})
  problems = "\n".join(validation.check_config(config))
  for key in ("optim.momentum", "optim.decay_factor", "optim.decay_fractions",
              "lr_multipliers['video_network/']", "lr_multipliers['a']"):
    assert key in problems, problems
  config = add_train_config(ml_collections.ConfigDict())
  config.optim.decay = "step"
  assert "config.optim.decay='step'" in "\n".join(validation.check_config(config))
