"""Tests of the full TriBERT model (tiny configs): shapes, gradients, masking, erasure, counts."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.parts.model import get_model_config
from tribert_jax import losses
from tribert_jax.models import stgcn
from tribert_jax.models.tribert import TriBERT, example_inputs, unbox


def key(i: int) -> jax.Array:
  """Typed keys with the rbg generator: initialisation compiles ~2x faster than threefry here."""
  return jax.random.key(i, impl="unsafe_rbg")


def compile_fast(fn, *args):
  """jit + compile at XLA optimisation level 0: about half the compile time of these one-off
  test programs on CPU (the compiled program accepts only arguments shaped like `args`)."""
  return jax.jit(fn).lower(*args).compile(compiler_options={"xla_backend_optimization_level": 0})


def random_variables(abstract, seed: int = 0):
  """Host-side random variables for an abstract variable tree (no init compile needed)."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path[-1:])
    if "var" in name:
      return jnp.ones(leaf.shape, leaf.dtype)
    if "mean" in name and "batch_stats" in jax.tree_util.keystr(path[:1]):
      return jnp.zeros(leaf.shape, leaf.dtype)
    if "scale" in name or "edge_importance" in name:
      return jnp.asarray(1.0 + 0.1 * rng.standard_normal(leaf.shape), leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 100
    return jnp.asarray(rng.standard_normal(leaf.shape) / np.sqrt(fan_in), leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def abstract_variables(cfg, inputs):
  model = TriBERT(cfg)
  rngs = {"params": key(0), "dropout": key(1), "masking": key(2)}
  return jax.eval_shape(lambda x: model.init(rngs, x, train=False), inputs)


def make_targets(cfg, b, n, seed=0):
  rng = np.random.default_rng(seed)
  labels = np.zeros((b, n, cfg.num_classes), np.float32)
  for i in range(b):
    for j in range(n):
      labels[i, j, rng.integers(cfg.num_classes)] = 1.0
  return dict(gt_masks=jnp.asarray(rng.random((b, n, 256, 256)) > 0.5, jnp.float32),
              weight=jnp.asarray(rng.random((b, 256, 256)) + 0.1, jnp.float32),
              labels=jnp.asarray(labels), valid=jnp.ones((b,), jnp.float32))


def perturbed_inputs(inputs, seed=1):
  """Inputs with random pose keypoints at every (person, frame) that is marked present."""
  rng = np.random.default_rng(seed)
  pose = np.asarray(rng.random(inputs["pose"].shape), np.float32)
  return {**inputs, "pose": jnp.asarray(pose)}


@pytest.fixture(scope="module")
def paper():
  """Paper-variant tiny model with real (jit) initialisation, B=2, N=2."""
  cfg = get_model_config("tiny", "paper")
  model = TriBERT(cfg)
  inputs = perturbed_inputs(example_inputs(cfg, 2, key=jax.random.PRNGKey(0)))
  rngs = {"params": key(0), "dropout": key(1), "masking": key(2)}
  boxed = compile_fast(lambda r, x: model.init(r, x, train=False), rngs, inputs)(rngs, inputs)
  variables = unbox(boxed)
  eval_fn = compile_fast(lambda v, x, r: model.apply(v, x, train=False, rngs=r), variables,
                         inputs, {"masking": key(5)})
  return dict(cfg=cfg, model=model, inputs=inputs, boxed=boxed, variables=variables,
              eval_fn=eval_fn, targets=make_targets(cfg, 2, 2))


def grad_function(model, variables, inputs, targets, weights):
  """compiled(params, inputs, rngs) -> (grads, outputs, terms) of the total loss in training."""

  def loss_fn(params, inputs, rngs):
    (outputs, _), _ = model.apply({**variables, "params": params}, inputs, train=True, rngs=rngs,
                                  mutable=["batch_stats"])
    total, terms = losses.tribert_loss(outputs, targets, weights)
    return total, (outputs, terms)

  def fn(params, inputs, rngs):
    grads, (outputs, terms) = jax.grad(loss_fn, has_aux=True)(params, inputs, rngs)
    return grads, outputs, terms

  return compile_fast(fn, variables["params"], inputs, {"dropout": key(0), "masking": key(0)})


@pytest.fixture(scope="module")
def paper_grads(paper):
  fn = grad_function(paper["model"], paper["variables"], paper["inputs"], paper["targets"],
                     paper["cfg"].loss_weights.to_dict())
  return fn, fn(paper["variables"]["params"], paper["inputs"],
                {"dropout": key(3), "masking": key(4)})


def zero_gradient_leaves(grads):
  """Paths of parameter leaves whose gradient is (numerically) zero everywhere."""
  return [jax.tree_util.keystr(p) for p, g in jax.tree_util.tree_flatten_with_path(grads)[0]
          if not np.any(np.abs(np.asarray(g)) > 1e-12)]


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["paper", "release"])
@pytest.mark.parametrize("num_mix", [2, 3])
@pytest.mark.parametrize("train", [True, False])
def test_output_shapes(variant, num_mix, train):
  cfg = get_model_config("tiny", variant)
  model = TriBERT(cfg)
  b, t, c = 2, cfg.input.num_frames, cfg.num_classes
  inputs = jax.eval_shape(lambda: example_inputs(cfg, b, num_mix))
  variables = abstract_variables(cfg, inputs)
  rngs = {"dropout": key(1), "masking": key(2)}
  (outputs, inter), *_ = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=train, rngs=rngs, mutable=["batch_stats"]),
      variables, inputs)
  n = num_mix
  assert outputs["mask_logits"].shape == (b, n, 256, 256)
  audio = "audio_logits" if variant == "paper" else "audio_scores"  # release: probabilities
  for k in ("visual_scores", "pose_scores", audio):
    assert outputs[k].shape == (b, n, c), k
  slots = 2
  length = 1 + t * slots if variant == "paper" else slots + t * slots
  assert inter["visual_hidden"].shape == (b, n, length, cfg.transformer.visual_width)
  assert inter["pose_hidden"].shape == (b, n, length, cfg.transformer.pose_width)
  assert inter["audio_hidden"].shape == (b, n, length, cfg.transformer.audio_width)
  for s in ("visual", "pose", "audio"):
    assert inter[f"pooled_{s}"].shape == (b, n, cfg.heads.pooled_width)
  assert inter["fused"].shape == (b, n, 3 * cfg.heads.pooled_width)
  h = cfg.input.image_size // 32
  assert inter["visual_attention_maps"].shape == (b, n, t, h, h, c)
  assert inter["visual_class_scores"].shape == (b, n, t, c)


def test_init_has_batch_stats_and_logical_axes(paper):
  boxed = paper["boxed"]
  assert set(boxed) == {"params", "batch_stats"}
  allowed = {name for name, _ in paper["cfg"].sharding_rules} | {None}
  leaves = jax.tree_util.tree_flatten_with_path(
      boxed["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]
  for path, leaf in leaves:
    assert isinstance(leaf, nn.Partitioned), jax.tree_util.keystr(path)
    assert len(leaf.names) == leaf.value.ndim, jax.tree_util.keystr(path)
    assert set(leaf.names) <= allowed, (jax.tree_util.keystr(path), leaf.names)
  # The default rules map every logical name (replicated).
  specs = nn.get_partition_spec(boxed)
  mesh_axes = nn.logical_to_mesh(specs["params"], paper["cfg"].sharding_rules)
  assert all(all(a is None for a in s) for s in jax.tree.leaves(
      mesh_axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)))


def test_every_parameter_gets_gradient_paper(paper_grads):
  _, (grads, outputs, terms) = paper_grads
  assert set(terms) == {"separation", "visual", "pose", "audio", "visual_class_scores"}
  assert all(np.isfinite(float(v)) for v in terms.values())
  assert zero_gradient_leaves(grads) == []


def test_every_parameter_gets_gradient_release():
  cfg = get_model_config("tiny", "release")
  model = TriBERT(cfg)
  inputs = perturbed_inputs(example_inputs(cfg, 2, key=jax.random.PRNGKey(0)))
  variables = random_variables(unbox(abstract_variables(cfg, inputs)))
  fn = grad_function(model, variables, inputs, make_targets(cfg, 2, 2),
                     cfg.loss_weights.to_dict())
  grads, outputs, terms = fn(variables["params"], inputs, {"dropout": key(3), "masking": key(4)})
  assert all(np.isfinite(float(v)) for v in terms.values())
  assert zero_gradient_leaves(grads) == []


def test_random_masking_only_in_training(paper, paper_grads):
  fn, (_, outputs_a, _) = paper_grads
  v, x = paper["variables"], paper["inputs"]
  # Training: another masking key (same dropout key) replaces other tokens -> other scores.
  _, outputs_b, _ = fn(v["params"], x, {"dropout": key(3), "masking": key(40)})
  assert not np.allclose(outputs_a["visual_scores"], outputs_b["visual_scores"])
  # Eval: the masking stream is never used.
  (eval_a, _) = paper["eval_fn"](v, x, {"masking": key(5)})
  (eval_b, _) = paper["eval_fn"](v, x, {"masking": key(6)})
  for k in eval_a:
    np.testing.assert_array_equal(eval_a[k], eval_b[k])


def test_absent_persons_are_masked_tokens(paper):
  """A person absent from every frame changes nothing, whatever its (garbage) keypoints."""
  v, x = paper["variables"], paper["inputs"]
  pose_mask = np.asarray(x["pose_mask"]).copy()
  pose_mask[0, 1, 1] = 0.0  # example 0, video 1, person 1 absent in every frame
  x = {**x, "pose_mask": jnp.asarray(pose_mask)}
  pose = np.asarray(x["pose"]).copy()
  pose[0, 1, 1] = np.random.default_rng(7).random(pose[0, 1, 1].shape)
  (out_a, inter_a) = paper["eval_fn"](v, x, {"masking": key(5)})
  (out_b, inter_b) = paper["eval_fn"](v, {**x, "pose": jnp.asarray(pose)}, {"masking": key(5)})
  np.testing.assert_allclose(out_a["mask_logits"], out_b["mask_logits"], atol=1e-5)
  np.testing.assert_allclose(out_a["pose_scores"], out_b["pose_scores"], atol=1e-6)
  assert float(np.asarray(inter_a["pose_token_mask"])[0, 1].sum()) == 1 + 3  # <SOS> + person 0


def test_examples_never_mix_across_the_batch(paper):
  v, x = paper["variables"], paper["inputs"]
  changed = {k: a.at[1].set(a[1] * 0.5 + 0.3) if k not in ("pose_frame_index", "pose_mask") else a
             for k, a in x.items()}
  (out_a, _) = paper["eval_fn"](v, x, {"masking": key(5)})
  (out_b, _) = paper["eval_fn"](v, changed, {"masking": key(5)})
  for k in out_a:
    np.testing.assert_allclose(out_a[k][0], out_b[k][0], atol=1e-5, err_msg=k)
    assert not np.allclose(out_a[k][1], out_b[k][1]), k


def transplant(full, abstract_small, seed=0):
  """Variables for an erased model: the full model's leaves where paths and shapes agree."""
  rng = np.random.default_rng(seed)
  flat_full = {jax.tree_util.keystr(p): l for p, l in jax.tree_util.tree_flatten_with_path(full)[0]}

  def pick(path, leaf):
    old = flat_full.get(jax.tree_util.keystr(path))
    if old is not None and old.shape == leaf.shape:
      return old
    return jnp.asarray(rng.standard_normal(leaf.shape) * 0.05, leaf.dtype)

  return jax.tree_util.tree_map_with_path(pick, abstract_small)


@pytest.mark.parametrize("erased", ["visual", "pose"])
def test_erasing_a_modality_removes_its_influence(paper, erased):
  cfg = get_model_config("tiny", "paper")
  cfg[erased].enabled = False
  model = TriBERT(cfg)
  x = paper["inputs"]
  variables = transplant(paper["variables"], unbox(abstract_variables(cfg, x)))
  assert not any(k.startswith(erased) for k in variables["params"])
  apply = compile_fast(lambda v, x: model.apply(v, x, train=False), variables, x)
  out_a, inter_a = apply(variables, x)
  if erased == "visual":
    other = {**x, "frames": x["frames"] * -2.0 + 1.0}
  else:
    other = {**x, "pose": 1.0 - x["pose"], "pose_mask": x["pose_mask"].at[:, :, 1].set(0.0)}
  out_b, _ = apply(variables, other)
  np.testing.assert_array_equal(out_a["mask_logits"], out_b["mask_logits"])
  assert f"{erased}_scores" not in out_a and f"{erased}_hidden" not in inter_a
  assert inter_a["fused"].shape[-1] == 2 * cfg.heads.pooled_width
  _, terms = losses.tribert_loss(out_a, paper["targets"])
  assert erased not in terms
  # The erased modality's inputs may be omitted altogether.
  dropped = {k: a for k, a in x.items()
             if k not in ({"frames"} if erased == "visual" else {"pose", "pose_mask"})}
  jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, dropped)


def test_fusion_multiply_and_no_co_attention_build():
  cfg = get_model_config("tiny", "paper")
  cfg.heads.fusion = "multiply"
  cfg.transformer.use_co_attention = False
  inputs = jax.eval_shape(lambda: example_inputs(cfg, 2))
  variables = abstract_variables(cfg, inputs)
  assert not any(k.startswith("co_attention") for k in variables["params"]["encoder"])
  (_, inter) = jax.eval_shape(lambda v, x: TriBERT(cfg).apply(v, x), variables, inputs)
  assert inter["fused"].shape == (2, 2, cfg.heads.pooled_width)


# ---- parameter count of the paper config, checked against the layer shapes -----------------
def dense(i, o, bias=True):
  return i * o + (o if bias else 0)


def conv(k, i, o, bias=True):
  return k * i * o + (o if bias else 0)


def analytic_parameter_count(cfg) -> dict[str, int]:
  """Parameter count per top-level module from the layer shapes (paper variant, tokens mode)."""
  c = cfg.num_classes
  tr = cfg.transformer
  counts = {}
  # Visual: ResNet-50 trunk (torchvision resnet50 minus fc: 25,557,032 - 2,049,000).
  resnet = 23_508_032
  counts["visual_encoder"] = (resnet + conv(9, 2048, cfg.visual.feature_channels)
                              + 2 * conv(1, cfg.visual.feature_channels, c))
  counts["visual_projection"] = dense(cfg.visual.feature_channels, tr.visual_width)
  # Pose: data BN, ST-GCN blocks, projection of 256 x 68, box embedding.
  j = stgcn.NUM_JOINTS
  total, cin = 2 * 3 * j, 3
  for i, (cout, stride) in enumerate(cfg.pose.stgcn_blocks):
    total += conv(1, cin, 3 * cout) + 2 * cout + 9 * cout * cout + 2 * cout + 3 * j * j
    if i > 0 and (cin != cout or stride != 1):
      total += cin * cout + 2 * cout
    cin = cout
  counts["pose_encoder"] = total + dense(cin * j, tr.pose_width) + dense(5, tr.pose_width)
  # Audio: VGGish convs, FC stack, projection.
  total, cin = 0, 1
  for stage in cfg.audio.vggish_channels:
    for cout in stage:
      total += conv(9, cin, cout)
      cin = cout
  for width in cfg.audio.vggish_fc:
    total += dense(cin, width)
    cin = width
  counts["audio_encoder"] = total + dense(cin, tr.audio_width)
  # Embeddings: <SOS>, [MASK] (visual/pose), frame and slot tables, LayerNorm.
  for s, d, masked in (("visual", tr.visual_width, True), ("pose", tr.pose_width, True),
                       ("audio", tr.audio_width, False)):
    counts[f"{s}_embedding"] = d * (1 + masked + tr.max_frames + tr.max_slots + 2)
  # Encoder: per layer, a BERT layer per stream and a co-attention layer.
  ffn = lambda d: dense(d, tr.intermediate_size) + dense(tr.intermediate_size, d) + 2 * d
  w = tr.co_attention_width
  total = 0
  for d in (tr.visual_width, tr.pose_width, tr.audio_width):
    bert = 4 * dense(d, d) + 2 * d + ffn(d)
    co = 3 * dense(d, w) + dense(w, d) + 2 * d + ffn(d)
    total += tr.num_layers * (bert + co)
  counts["encoder"] = total
  # Heads and poolers.
  for s, d in (("visual", tr.visual_width), ("pose", tr.pose_width)):
    counts[f"{s}_head"] = dense(d, d) + 2 * d + 2 * dense(d, c)
  counts["audio_head"] = dense(tr.audio_width, tr.audio_width) + 2 * tr.audio_width + dense(
      tr.audio_width, c)
  for s, d in (("visual", tr.visual_width), ("pose", tr.pose_width), ("audio", tr.audio_width)):
    counts[f"{s}_pooler"] = dense(d, cfg.heads.pooled_width)
  # Attention U-Net.
  u = cfg.unet
  ch = [min(u.base_channels * 2**i, u.max_channels) for i in range(u.depth)]
  block = lambda i, o: sum(conv(9, i if k == 0 else o, o, bias=False) + 2 * o
                           for k in range(u.convs_per_level))
  total, cin = 2, 1  # input BN
  for o in ch:
    total += block(cin, o)
    cin = o
  total += block(cin, u.bottleneck_channels)
  cb = u.bottleneck_channels
  total += dense(3 * cfg.heads.pooled_width, cb) + 4 * dense(cb, cb) + 2 * cb  # fusion
  cin = cb
  for o in reversed(ch):
    gate = o // 2
    total += conv(4, cin, o) + 2 * o  # de-convolution + BN
    total += o * gate + dense(o, gate) + gate + 2  # attention gate
    total += block(2 * o, o)
    cin = o
  counts["separation_net"] = total + dense(cin, 1)
  return counts


def test_paper_parameter_count_matches_layer_shapes():
  cfg = get_model_config("paper", "paper")
  inputs = jax.eval_shape(lambda: example_inputs(cfg, 1))
  params = unbox(abstract_variables(cfg, inputs))["params"]
  actual = {k: int(sum(np.prod(x.shape) for x in jax.tree.leaves(v))) for k, v in params.items()}
  expected = analytic_parameter_count(cfg)
  assert actual == expected
  assert sum(actual.values()) == 305_668_380


def test_remat_and_bfloat16_trace():
  """remat per transformer layer / U-Net level and bf16 compute (f32 params) build and trace."""
  cfg = get_model_config("tiny", "release")
  cfg.transformer.remat = cfg.unet.remat = True
  cfg.dtype = "bfloat16"
  model = TriBERT(cfg)
  inputs = jax.eval_shape(lambda: example_inputs(cfg, 1))
  variables = unbox(abstract_variables(cfg, inputs))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables["params"]))

  def loss(params, batch_stats, x):
    (outputs, inter), _ = model.apply({"params": params, "batch_stats": batch_stats}, x,
                                      train=True,
                                      rngs={"dropout": key(0), "masking": key(1)},
                                      mutable=["batch_stats"])
    return jnp.mean(outputs["mask_logits"]), inter

  value, inter = jax.eval_shape(loss, variables["params"], variables["batch_stats"], inputs)
  assert value.dtype == jnp.float32 and inter["visual_hidden"].dtype == jnp.bfloat16
