"""variant="release" against independent NumPy transcriptions of the authors' PyTorch release
(github ubc-vision/TriBERT, commit 17380dd), written in the release's own layouts (NCHW, torch
Linear y = x W^T + b), with the Flax modules' parameters copied in. Files: tribert/models/
audio_net.py (Unet.forward, Attention_block), vision_net.py (BertBiAttention, BertBiOutput,
Bert*Pooler, BertPreTrainingHeads, ResnetFC.forward_multiframe, vggish), train_trimodal.py
(the classification losses)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from configs.parts.model import get_model_config
from tribert_jax import losses
from tribert_jax.models import heads, unet
from tribert_jax.models.co_attention import TriModalCoAttention
from tribert_jax.models.transformer import TriBERTEncoder

unbox = nn.meta.unbox


def randomise(params, seed, scale=0.3):
  """Random values for every parameter (so biases, norms and tiny inits all matter)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: jnp.asarray(scale * rng.standard_normal(x.shape), jnp.float32),
                      unbox(params))


def linear(p, x):  # torch.nn.Linear with weight = kernel^T
  weight = np.asarray(p["kernel"]).T
  return x @ weight.T + np.asarray(p["bias"])


def softmax(x, axis):
  e = np.exp(x - x.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


def bert_layer_norm(p, x, eps=1e-12):  # BertLayerNorm (TF style)
  u = x.mean(-1, keepdims=True)
  s = ((x - u) ** 2).mean(-1, keepdims=True)
  return np.asarray(p["scale"]) * (x - u) / np.sqrt(s + eps) + np.asarray(p["bias"])


gelu = lambda x: x * 0.5 * (1.0 + erf(x / np.sqrt(2.0)))


# ---- audio_net.py, Unet.forward: bottleneck fusion -------------------------------------------
def release_fusion(p, bottleneck_nchw, feats):
  """feat_all = feats repeated to [b, C, F, T]; softmax_C(matmul(B, feat_all)) * feat_all + B;
  then mlp on channels-last + residual."""
  b, c, f, t = bottleneck_nchw.shape
  feat_all = np.tile(feats[:, :, None, None], (1, 1, f, t))
  combine = softmax(np.matmul(bottleneck_nchw, feat_all), axis=1) * feat_all + bottleneck_nchw
  x = combine.transpose(0, 2, 3, 1)
  mlp = linear(p["mlp_out"], np.maximum(linear(p["mlp_in"], x), 0.0))
  return (mlp + x).transpose(0, 3, 1, 2)


def test_unet_fusion_matches_release():
  c, f = 6, 4  # square bottleneck, as the release's matmul needs
  rng = np.random.default_rng(0)
  bottleneck = rng.standard_normal((2, f, f, c)).astype(np.float32)  # ours: [b, F, T, C]
  feats = rng.standard_normal((2, c)).astype(np.float32)
  module = unet.BottleneckFusion("release")
  variables = jax.jit(module.init)(jax.random.PRNGKey(0), bottleneck, feats)
  kernel = unbox(variables)["params"]["mlp_in"]["kernel"]
  assert set(unbox(variables)["params"]) == {"mlp_in", "mlp_out"}  # no projection of f
  assert float(np.std(np.asarray(kernel))) < 1e-3  # N(0, 1e-4) initialisation
  params = randomise(variables["params"], 1)
  got = np.asarray(jax.jit(module.apply)({"params": params}, bottleneck, feats))
  want = release_fusion(params, bottleneck.transpose(0, 3, 1, 2), feats).transpose(0, 2, 3, 1)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# ---- vision_net.py, BertBiAttention + BertBiOutput + intermediate/output ----------------------
HEADS, WIDTH = 2, 8
WIDTHS = dict(visual=16, pose=12, audio=8)


def release_co_attention(p, h1, h2, h3):
  """Streams 1 = vision, 2 = pose, 3 = audio, each [B, L, D]; masks all ones."""
  head = WIDTH // HEADS
  split = lambda x, d: x.reshape(*x.shape[:2], HEADS, d).transpose(0, 2, 1, 3)  # [B, H, L, d]
  names = {1: "visual", 2: "pose", 3: "audio"}
  h = {1: h1, 2: h2, 3: h3}
  q = {i: split(linear(p[f"{names[i]}_query"], h[i]), head) for i in h}
  k = {i: split(linear(p[f"{names[i]}_key"], h[i]), head // 2) for i in h}
  v = {i: split(linear(p[f"{names[i]}_value"], h[i]), head // 2) for i in h}
  out = {}
  for target, (a, b) in ((2, (1, 3)), (1, (2, 3)), (3, (1, 2))):  # the release's pairs
    scores = q[target] @ np.concatenate((k[a], k[b]), 3).transpose(0, 1, 3, 2) / np.sqrt(head)
    context = softmax(scores, -1) @ np.concatenate((v[a], v[b]), 3)
    context = context.transpose(0, 2, 1, 3).reshape(*h[target].shape[:2], WIDTH)
    s = names[target]
    x = bert_layer_norm(p[f"{s}_output_norm"], linear(p[f"{s}_output"], context) + h[target])
    ff = p[f"{s}_feed_forward"]
    y = linear(ff["output"], gelu(linear(ff["intermediate"], x)))
    out[s] = bert_layer_norm(ff["norm"], y + x)
  return out


def paper_co_attention(p, hidden):
  """The paper's description: K, V of the other two concatenated along tokens, standard heads."""
  head = WIDTH // HEADS
  split = lambda x: x.reshape(*x.shape[:2], HEADS, head).transpose(0, 2, 1, 3)
  out = {}
  for s in hidden:
    others = [o for o in hidden if o != s]
    k = np.concatenate([linear(p[f"{o}_key"], hidden[o]) for o in others], 1)
    v = np.concatenate([linear(p[f"{o}_value"], hidden[o]) for o in others], 1)
    scores = split(linear(p[f"{s}_query"], hidden[s])) @ split(k).transpose(0, 1, 3, 2)
    context = softmax(scores / np.sqrt(head), -1) @ split(v)
    context = context.transpose(0, 2, 1, 3).reshape(*hidden[s].shape[:2], WIDTH)
    x = bert_layer_norm(p[f"{s}_output_norm"], linear(p[f"{s}_output"], context) + hidden[s])
    ff = p[f"{s}_feed_forward"]
    out[s] = bert_layer_norm(ff["norm"], linear(ff["output"], gelu(linear(ff["intermediate"], x)))
                             + x)
  return out


@pytest.mark.parametrize("concat", ["features", "tokens"])
def test_co_attention_matches_release_and_paper(concat):
  rng = np.random.default_rng(2)
  lengths = dict(visual=6, pose=6, audio=6) if concat == "features" else dict(visual=5, pose=7,
                                                                              audio=3)
  hidden = {s: rng.standard_normal((2, lengths[s], d)).astype(np.float32)
            for s, d in WIDTHS.items()}
  masks = {s: np.ones((2, lengths[s]), np.float32) for s in hidden}
  layer = TriModalCoAttention(WIDTH, HEADS, 16, concat, deterministic=True)
  params = randomise(jax.jit(layer.init)(jax.random.PRNGKey(0), hidden, masks)["params"], 3)
  got = jax.jit(layer.apply)({"params": params}, hidden, masks)
  p = jax.tree.map(np.asarray, params)
  if concat == "features":
    assert p["pose_key"]["kernel"].shape == (WIDTHS["pose"], WIDTH // 2)  # half width per stream
    want = release_co_attention(p, hidden["visual"], hidden["pose"], hidden["audio"])
  else:
    want = paper_co_attention(p, hidden)
  for s in hidden:
    np.testing.assert_allclose(np.asarray(got[s]), want[s], rtol=1e-4, atol=1e-4, err_msg=s)


@pytest.mark.parametrize("variant,first", [("release", "co_attention"), ("paper", "layer")])
def test_co_attention_order(variant, first):
  """Release (BertEncoder.forward, biattention ids 0..5): co-attention before each layer."""
  cfg = get_model_config("tiny", variant)
  assert cfg.transformer.co_attention_order == ("before" if variant == "release" else "after")
  streams = {s: jnp.ones((1, 4, d)) for s, d in (("visual", 32), ("pose", 32), ("audio", 16))}
  masks = {s: jnp.ones((1, 4)) for s in streams}
  encoder = TriBERTEncoder(cfg, True)
  seen = []

  def interceptor(next_fun, args, kwargs, context):
    name = context.module.name or ""
    if context.method_name == "__call__" and (name.startswith("co_attention") or "_layer" in name):
      seen.append("co_attention" if name.startswith("co_attention") else "layer")
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    jax.eval_shape(encoder.init, jax.random.PRNGKey(0), streams, masks)
  assert seen[0] == first and seen.count("co_attention") == cfg.transformer.num_layers


# ---- vision_net.py, forward_multiframe: WSDDN heads -------------------------------------------
def release_prediction_head(p, x):  # Bert*PredictionHead: transform (dense, gelu, LN), decoder
  t = p["prediction_head"]
  x = bert_layer_norm(t["norm"], gelu(linear(t["dense"], x)))
  return x


def test_wsddn_matches_release():
  rng = np.random.default_rng(4)
  hidden = rng.standard_normal((3, 4, 2, 8)).astype(np.float32)  # [B, frame slots, objects, D]
  head = heads.WSDDNHead(5, regions="objects")
  mask = np.ones((3, 4, 2), np.float32)
  variables = jax.jit(head.init)(jax.random.PRNGKey(0), hidden, mask)
  params = randomise(variables["params"], 5, scale=1.0)
  p = jax.tree.map(np.asarray, params)
  scores = linear(p["decoder"], release_prediction_head(p, hidden)).mean(1)  # [B, 2, C]
  cls = softmax(linear(p["classification"], scores), 2)
  det = softmax(linear(p["detection"], scores), 1)
  want = np.clip((cls * det).sum(1), 0.0, 1.0)
  got = np.asarray(jax.jit(head.apply)({"params": params}, hidden, mask))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---- vision_net.py, Bert*Pooler + BertPreTrainingHeads ('cat'), forward_multiframe mean(1) ----
def test_pooler_and_fused_feature_match_release():
  rng = np.random.default_rng(6)
  widths = dict(visual=8, pose=8, audio=4)
  hidden = {s: rng.standard_normal((3, 4, 2, d)).astype(np.float32) for s, d in widths.items()}
  pooled, p = [], {}
  for s in widths:  # the streams' first frame slot (the global one), both object slots
    pooler = heads.Pooler(6, "relu", per_slot=True)
    sos, mask = hidden[s][:, 0], np.ones((3, 2), np.float32)
    variables = jax.jit(pooler.init)(jax.random.PRNGKey(0), sos, mask)
    p[s] = jax.tree.map(np.asarray, randomise(variables["params"], 7 + len(p)))
    pooled.append(jax.jit(pooler.apply)({"params": p[s]}, sos, mask))
  got = np.asarray(jax.nn.sigmoid(heads.fuse_pooled(pooled, "concat", per_slot=True)))
  release = [np.maximum(linear(p[s]["dense"], hidden[s][:, 0]), 0.0) for s in widths]
  want = 1 / (1 + np.exp(-np.concatenate(release, 2).mean(1)))  # eval: dropout is identity
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # The release's order differs from mean-then-dense whenever the ReLU cuts.
  mean_first = np.maximum(linear(p["visual"]["dense"], hidden["visual"][:, 0].mean(1)), 0.0)
  assert not np.allclose(mean_first, release[0].mean(1))


# ---- vision_net.py audio head + train_trimodal.py F.binary_cross_entropy ----------------------
def test_audio_classification_and_loss_match_release():
  rng = np.random.default_rng(8)
  hidden = rng.standard_normal((3, 8, 4)).astype(np.float32)  # [B*N, frames x slots, D]
  head = heads.AudioClassifier(5, kind="release")
  mask = np.ones((3, 8), np.float32)
  variables = jax.jit(head.init)(jax.random.PRNGKey(0), hidden, mask)
  params = randomise(variables["params"], 9, scale=1.0)
  p = jax.tree.map(np.asarray, params)
  logits = linear(p["classification"], release_prediction_head(p, hidden)).reshape(3, 4, 2, 5)
  probs = softmax(logits.mean(1).mean(1), 1)  # mean over frames, then slots; softmax over classes
  got = np.asarray(jax.jit(head.apply)({"params": params}, hidden, mask))
  np.testing.assert_allclose(got, probs, rtol=1e-5, atol=1e-6)
  labels = (rng.random((3, 5)) > 0.5).astype(np.float32)
  want = -np.mean(labels * np.log(probs) + (1 - labels) * np.log(1 - probs))
  loss = losses.classification_loss(jnp.asarray(got)[None], labels[None], jnp.ones(1),
                                    from_logits=False)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  assert losses.CLASSIFICATION_TERMS["audio_scores"] == ("audio", False)


# ---- structure: vggish stack, U-Net without input BN, bare ConvTranspose, gate BN -------------
def test_release_structure():
  cfg = get_model_config("paper", "release")
  assert tuple(cfg.audio.vgg7_channels) == (64, 128, 256, 256, 512, 512, 512)
  assert cfg.visual.attention_dropout == 0.2 and cfg.visual.expansive_extra_conv
  tiny = get_model_config("tiny", "release")
  model = unet.AttentionUNet(tiny)
  fused = jnp.zeros((1, 2, 3 * tiny.heads.pooled_width))
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 256, 256)),
                                                fused, train=False))
  params = unbox(variables)["params"]
  assert "input_bn" not in params
  level = params[f"up{tiny.unet.depth - 1}"]
  assert "deconv_bn" not in level and {"skip_bn", "gating_bn"} <= set(level["attention_gate"])
  paper = unbox(jax.eval_shape(lambda: unet.AttentionUNet(get_model_config("tiny")).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 256, 256)), fused, train=False)))["params"]
  assert "input_bn" in paper and "deconv_bn" in paper["up0"]
