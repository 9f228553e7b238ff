"""Loading a torchvision-style ResNet .npz into TriBERT variables."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.parts.model import get_model_config
from tribert_jax.models import pretrained
from tribert_jax.models.tribert import TriBERT, example_inputs, unbox


def run_o0(fn, *args):
  """fn(*args) compiled once at XLA optimisation level 0: a one-off test program compiles in
  about half the time (eager mode would compile every op separately)."""
  return jax.jit(fn).lower(*args).compile(
      compiler_options={"xla_backend_optimization_level": 0})(*args)


def abstract_tribert(cfg):
  inputs = jax.eval_shape(lambda: example_inputs(cfg, 1, 1))
  rngs = {k: jax.random.PRNGKey(0) for k in ("params", "dropout", "masking")}
  return jax.eval_shape(lambda x: TriBERT(cfg).init(rngs, x, train=False), inputs)


def zeros_like_tree(tree):
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tree)


def torchvision_state(cfg, rng):
  """A random torchvision-layout ResNet state dict with the tiny config's shapes (OIHW)."""
  w = cfg.visual.resnet_width
  state = {"conv1.weight": (w, 3, 7, 7)}
  bn = lambda name, c: {f"{name}.{f}": (c,) for f in
                        ("weight", "bias", "running_mean", "running_var")}
  state.update(bn("bn1", w))
  cin = w
  for s, blocks in enumerate(cfg.visual.resnet_stage_sizes):
    width = w * 2**s
    for b in range(blocks):
      p = f"layer{s + 1}.{b}"
      state[f"{p}.conv1.weight"] = (width, cin, 1, 1)
      state[f"{p}.conv2.weight"] = (width, width, 3, 3)
      state[f"{p}.conv3.weight"] = (4 * width, width, 1, 1)
      for i, c in ((1, width), (2, width), (3, 4 * width)):
        state.update(bn(f"{p}.bn{i}", c))
      if b == 0:
        state[f"{p}.downsample.0.weight"] = (4 * width, cin, 1, 1)
        state.update(bn(f"{p}.downsample.1", 4 * width))
        state[f"{p}.downsample.1.num_batches_tracked"] = ()
      cin = 4 * width
  state["fc.weight"], state["fc.bias"] = (1000, cin), (1000,)
  return {k: rng.standard_normal(s).astype(np.float32) for k, s in state.items()}


def test_load_resnet_npz_places_every_tensor(tmp_path):
  cfg = get_model_config("tiny")
  state = torchvision_state(cfg, np.random.default_rng(0))
  path = tmp_path / "resnet50.npz"
  np.savez(path, **state)
  boxed = zeros_like_tree(abstract_tribert(cfg))
  loaded = pretrained.load_resnet_npz(boxed, path)
  resnet = unbox(loaded)["params"]["visual_encoder"]["resnet"]
  stats = loaded["batch_stats"]["visual_encoder"]["resnet"]
  np.testing.assert_array_equal(resnet["conv1"]["kernel"], state["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(resnet["layer2_0"]["conv2"]["kernel"],
                                state["layer2.0.conv2.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(resnet["layer3_0"]["downsample_bn"]["scale"],
                                state["layer3.0.downsample.1.weight"])
  np.testing.assert_array_equal(stats["layer1_0"]["bn3"]["var"], state["layer1.0.bn3.running_var"])
  # Logical-partitioning boxes survive; nothing outside the ResNet changed.
  assert loaded["params"]["visual_encoder"]["resnet"]["conv1"]["kernel"].names[-1] == "conv_out"
  assert not np.any(unbox(loaded)["params"]["visual_encoder"]["feature_conv"]["kernel"])


def test_load_resnet_npz_errors_name_file_and_key(tmp_path):
  cfg = get_model_config("tiny")
  state = torchvision_state(cfg, np.random.default_rng(0))
  variables = zeros_like_tree(unbox(abstract_tribert(cfg)))
  bad = dict(state)
  bad["layer1.0.conv1.weight"] = np.zeros((3, 3, 1, 1), np.float32)
  np.savez(tmp_path / "bad.npz", **bad)
  with pytest.raises(ValueError, match=r"bad\.npz.*layer1\.0\.conv1\.weight"):
    pretrained.load_resnet_npz(variables, tmp_path / "bad.npz")
  missing = {k: v for k, v in state.items() if k != "layer4.0.bn2.running_mean"}
  np.savez(tmp_path / "missing.npz", **missing)
  with pytest.raises(ValueError, match=r"missing\.npz.*layer4_0/bn2/mean"):
    pretrained.load_resnet_npz(variables, tmp_path / "missing.npz")
  with pytest.raises(FileNotFoundError):
    pretrained.load_resnet_npz(variables, tmp_path / "absent.npz")


def torchvision_resnet18_state(width, stage_sizes, rng):
  """A random torchvision-layout ResNet-18 (basic blocks) state dict (OIHW kernels)."""
  state = {"conv1.weight": (width, 3, 7, 7)}
  bn = lambda name, c: {f"{name}.{f}": (c,) for f in
                        ("weight", "bias", "running_mean", "running_var")}
  state.update(bn("bn1", width))
  cin = width
  for s, blocks in enumerate(stage_sizes):
    out = width * 2**s
    for b in range(blocks):
      p = f"layer{s + 1}.{b}"
      state[f"{p}.conv1.weight"] = (out, cin, 3, 3)
      state[f"{p}.conv2.weight"] = (out, out, 3, 3)
      state.update(bn(f"{p}.bn1", out))
      state.update(bn(f"{p}.bn2", out))
      if b == 0 and s > 0:  # torchvision: a projection where the width (and stride) changes
        state[f"{p}.downsample.0.weight"] = (out, cin, 1, 1)
        state.update(bn(f"{p}.downsample.1", out))
      cin = out
  state["fc.weight"], state["fc.bias"] = (1000, cin), (1000,)
  return {k: rng.standard_normal(s).astype(np.float32) for k, s in state.items()}


def test_resnet18_npz_loads_into_sound_of_pixels(tmp_path):
  """Basic blocks (ResNet-18) into Sound-of-Pixels' dilated trunk, through load_pretrained."""
  from configs import sound_of_pixels as sop_config  # pylint: disable=g-import-not-at-top
  from tribert_jax.models import sound_of_pixels  # pylint: disable=g-import-not-at-top
  cfg = sop_config.get_config("tiny").model
  state = torchvision_resnet18_state(cfg.visual.resnet_width, cfg.visual.resnet_stage_sizes,
                                     np.random.default_rng(0))
  cfg.visual.pretrained_path = str(tmp_path / "resnet18.npz")
  np.savez(cfg.visual.pretrained_path, **state)
  model = sound_of_pixels.SoundOfPixels(cfg)
  abstract = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)},
                                               sound_of_pixels.example_inputs(cfg), train=False))
  loaded = unbox(pretrained.load_pretrained(zeros_like_tree(abstract), cfg))
  resnet = loaded["params"]["video_network"]["resnet"]
  stats = loaded["batch_stats"]["video_network"]["resnet"]
  np.testing.assert_array_equal(resnet["conv1"]["kernel"],
                                state["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(resnet["layer4_0"]["conv2"]["kernel"],  # the dilated stage
                                state["layer4.0.conv2.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(resnet["layer2_0"]["downsample_conv"]["kernel"],
                                state["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(stats["layer3_0"]["bn2"]["var"], state["layer3.0.bn2.running_var"])
  assert not np.any(loaded["params"]["video_network"]["channel_conv"]["kernel"])  # untouched
  # The oracle has no trunk to load into.
  cfg.visual_source = "oracle"
  with pytest.raises(ValueError, match="visual_source='oracle'"):
    pretrained.load_pretrained({}, cfg)


@pytest.mark.parametrize("phase", ["separation_pretrain", "visual_pretrain"])
def test_resnet50_npz_loads_into_the_staged_recipe_trunks(phase, tmp_path):
  """The staged recipe's first stages take the ImageNet ResNet-50 through
  model.visual.pretrained_path (README, "Staged recipe"), at TriBERT's visual_encoder/resnet."""
  import importlib  # pylint: disable=g-import-not-at-top
  from tribert_jax.models import separation_pretrain  # pylint: disable=g-import-not-at-top
  cfg = importlib.import_module(f"configs.{phase}").get_config("tiny").model
  state = torchvision_state(cfg, np.random.default_rng(1))
  cfg.visual.pretrained_path = str(tmp_path / "resnet50.npz")
  np.savez(cfg.visual.pretrained_path, **state)
  if phase == "separation_pretrain":
    model, inputs = separation_pretrain.SeparationPretrainNet(cfg), example_inputs(cfg, 1)
  else:
    s = cfg.input.image_size
    model, inputs = separation_pretrain.VisualClassifier(cfg), jnp.zeros((1, s, s, 3))
  rngs = {k: jax.random.PRNGKey(0) for k in ("params", "dropout", "masking")}
  abstract = jax.eval_shape(lambda: model.init(rngs, inputs, train=False))
  loaded = unbox(pretrained.load_pretrained(zeros_like_tree(abstract), cfg))
  resnet = loaded["params"]["visual_encoder"]["resnet"]
  np.testing.assert_array_equal(resnet["conv1"]["kernel"],
                                state["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(resnet["layer4_0"]["conv3"]["kernel"],
                                state["layer4.0.conv3.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(loaded["batch_stats"]["visual_encoder"]["resnet"]["bn1"]["mean"],
                                state["bn1.running_mean"])
  # Only the trunk: the rest of the model keeps its (here zero) initialisation.
  rest = {k: v for k, v in loaded["params"].items() if k != "visual_encoder"}
  rest["feature_conv"] = loaded["params"]["visual_encoder"]["feature_conv"]
  assert not any(np.any(leaf) for leaf in jax.tree.leaves(rest))
