"""TriBERT model config: `get_model_config(size, variant)`; one code path, three sizes, two variants.

size:    "paper" (the paper's widths), "cpu" (a laptop run: trains in minutes on 2 cores),
         "tiny" (unit tests: seconds).
variant: "paper" (the paper's description, the default everywhere) or "release" (the authors'
         public PyTorch code, github ubc-vision/TriBERT, where it differs from the paper).
Every place where the two differ is one key below; its comment says which value is which.
"""

from __future__ import annotations

import ml_collections

from configs.common import SIZES

VARIANTS = ("paper", "release")

# Logical axis -> mesh axis rules (flax nn.logical_axis_rules). Default: every parameter
# replicated; the batch split over "data". To shard the wide side of dense layers over an
# "fsdp" mesh axis, replace ("mlp", None) with ("mlp", "fsdp") (and likewise conv_out).
DEFAULT_SHARDING_RULES = (
    ("batch", "data"),
    ("embed", None),
    ("mlp", None),
    ("heads", None),
    ("classes", None),
    ("conv_in", None),
    ("conv_out", None),
    ("norm", None),
    ("vocab", None),
    ("joints", None),
)


def get_model_config(size: str = "paper", variant: str = "paper") -> ml_collections.ConfigDict:
  """Returns config.model for TriBERT at `size` in {paper, cpu, tiny}, `variant` in {paper, release}."""
  if size not in SIZES:
    raise ValueError(f"configs/parts/model.py: size must be one of {SIZES}, got {size!r}")
  if variant not in VARIANTS:
    raise ValueError(f"configs/parts/model.py: variant must be one of {VARIANTS}, got {variant!r}")
  release = variant == "release"
  c = ml_collections.ConfigDict()
  c.name = "tribert"  # which model the trainer builds (configs/sound_of_pixels.py: its baseline)
  c.size = size  # which size preset built this config (informational)
  c.variant = variant  # which variant built this config (informational)
  c.num_classes = 21  # MUSIC21 instruments (fine-tuning on MUSIC sets 11)
  c.dtype = "float32"  # compute dtype; "bfloat16" on accelerators
  c.param_dtype = "float32"  # parameter storage dtype
  c.sharding_rules = DEFAULT_SHARDING_RULES  # logical axis rules (see DEFAULT_SHARDING_RULES)
  c.log_eps = 1e-10  # audio input is log(mix_warped + log_eps) (both the VGG and the U-Net)

  # Reference input sizes: used by tribert_jax.summary and tests to build example inputs, and
  # checked against the embeddings' capacity; the data config must agree (image size aside, the
  # model is shape-agnostic).
  c.input = ml_collections.ConfigDict()
  c.input.num_mix = 2  # N videos per mixture
  c.input.num_frames = 3  # T RGB frames per video (paper: 3)
  c.input.image_size = 224  # S
  c.input.pose_window = 256  # W pose frames around the clip (paper: T = 256 for the ST-GCN)
  c.input.num_persons = 2  # P persons per frame (paper: 2)
  c.input.num_joints = 68  # J: Halpe body 26 + 2 hands x 21
  c.input.spectrogram_size = 256  # warped bins x STFT frames, fixed by the protocol

  # ---- Part 1: visual segmentation network (ResNet-50 + decoupled spatial attention) ----
  v = c.visual = ml_collections.ConfigDict()
  v.enabled = True  # False erases the visual modality (supp. Table 1): no tokens, no loss
  v.resnet_stage_sizes = (3, 4, 6, 3)  # ResNet-50 bottleneck blocks per stage
  v.resnet_width = 64  # stem width; stage widths are width * (1, 2, 4, 8), outputs x4
  v.frozen_batch_norm = False  # True: ResNet BatchNorm always uses running stats (pretrained)
  v.pretrained_path = ""  # torchvision ResNet-50 state dict as .npz ("" = from scratch)
  v.feature_channels = 1024  # channels of V_e after the 3x3 conv (paper: 1024)
  v.num_objects = 2  # object tokens per frame = top-k classes' attention maps (paper: 2)
  # Dropout inside the expansive detector (both dropouts): 0.5 = ours (paper: "dropout", no
  # rate); 0.2 = release (vision_net.py, ResnetFC.dp1/dp2).
  v.attention_dropout = 0.2 if release else 0.5
  # Release only: after the expansive 1x1 conv (and its ReLU) a second 1x1 conv C -> C and a ReLU
  # before the softmax over classes (vision_net.py, ResnetFC.conv1x1_11). Paper: one conv.
  v.expansive_extra_conv = release
  v.expansive_activation = "exp"  # F in eq. (1); "exp" makes eq. (2) a softmax over space
  # Expansive detector normalisation: "space" = paper eq. (2), F then divide by the sum over the
  # H x W map; "classes" = release, ReLU then softmax over the C classes at each position.
  v.expansive_normalization = "classes" if release else "space"
  # How class scores and object tokens pool A_m over space: "sum" = paper (with the spatially
  # normalised S_E the sum is the S_E-weighted average of S_D, as in decoupled attention [54]);
  # "mean" = release (7x7 average pool of the map-weighted features).
  v.pooling = "mean" if release else "sum"

  # ---- Part 2: pose (ST-GCN over the 68-joint graph) ----
  p = c.pose = ml_collections.ConfigDict()
  p.enabled = True  # False erases the pose modality (supp. Table 1)
  # ST-GCN blocks (out_channels, temporal_stride): the published ST-GCN layout, 256 out.
  p.stgcn_blocks = ((64, 1), (64, 1), (64, 1), (64, 1), (128, 2), (128, 1), (128, 1),
                    (256, 2), (256, 1), (256, 1))
  p.temporal_kernel = 9  # temporal convolution kernel (ST-GCN: 9)
  p.stgcn_dropout = 0.0  # dropout inside ST-GCN blocks (ST-GCN default 0)
  p.edge_importance = True  # learned edge-importance weights per block (ST-GCN)
  # Paper and release both use features of an ST-GCN trained beforehand (pose_pretrain phase):
  # True = stop gradients into the ST-GCN and use its BatchNorm running stats inside TriBERT.
  # False = train it end to end with the rest (our option; cheaper than two phases).
  p.freeze_stgcn = False
  # What the pose encoder reads: "pose" = the pose window, through its own ST-GCN in every step;
  # "features" = the paper's and release's way: features of a frozen, separately trained ST-GCN
  # (config.pose_features.checkpoint), computed once per clip and cached
  # (tribert_jax/pose_feature_cache.py); the model then has no ST-GCN and the step skips it.
  p.stgcn_input = "pose"
  p.box_embedding = True  # release: Linear(5 -> width) embedding of the person's keypoint box
  p.dropout = 0.1  # dropout on the pose token embeddings

  # ---- Part 3: audio encoder (on the log warped mixture, once per mixture) ----
  a = c.audio = ml_collections.ConfigDict()
  # "vggish" = paper: VGGish conv stack (64, 128, 256x2, 512x2, 4 max-pools), global average pool
  # over the remaining map (the input is 256x256, not VGGish's 96x64), then VGGish's FC stack;
  # "vgg7" = release: 7 x (3x3 conv, ReLU, 2x2 max-pool), flatten 2x2xC, Linear -> audio width.
  a.encoder = "vgg7" if release else "vggish"
  a.vggish_channels = ((64,), (128,), (256, 256), (512, 512))  # convs per pooling stage
  a.vggish_fc = (4096, 4096, 128)  # VGGish embedding MLP widths
  a.vgg7_channels = (64, 128, 256, 256, 512, 512, 512)  # release stack (vision_net.py, vggish)

  # ---- Part 4: transformer streams + tri-modal co-attention ----
  t = c.transformer = ml_collections.ConfigDict()
  t.visual_width = 1024  # visual stream hidden size (paper)
  t.pose_width = 1024  # pose stream hidden size (paper)
  t.audio_width = 512  # audio stream hidden size (paper)
  t.num_heads = 8  # attention heads in every stream (paper)
  t.num_layers = 6  # layers per stream (release; paper silent)
  t.intermediate_size = 1024  # feed-forward width (release)
  t.dropout = 0.1  # hidden dropout (release)
  t.attention_dropout = 0.1  # attention-probability dropout (release)
  t.activation = "gelu"  # feed-forward activation (release)
  t.max_frames = 8  # rows of the learned frame embedding (frame slot 0 = <SOS>/global)
  t.max_slots = 4  # rows of the learned object/person slot embedding
  t.mask_probability = 0.15  # random [MASK] replacement of visual and pose tokens, training only
  t.use_co_attention = True  # False: streams never exchange information (ablation)
  t.co_attention_width = 512  # common width of tri-modal co-attention Q/K/V (release: 512)
  t.co_attention_heads = 8  # heads of the co-attention (release: 8)
  # "tokens" = paper: K, V of the two other modalities concatenated along the token axis
  # (lengths may differ); "features" = release: K, V projected to half width and concatenated
  # along features (needs equal sequence lengths).
  # The release splits each modality's K/V into heads first and concatenates per head, so every
  # head scores both other modalities (vision_net.py, BertBiAttention).
  t.co_attention_concat = "features" if release else "tokens"
  # Where each layer's co-attention runs: "after" = ours for the paper (the paper does not say;
  # the project's original choice, kept so the paper variant is unchanged), co-attention after
  # each layer's self-attention; "before" = release (vision_net.py, BertEncoder.forward with
  # *_biattention_id = [0..5]: co-attention, then self-attention layer i; ViLBERT's Co-TRM ->
  # TRM order, which the paper says it extends).
  t.co_attention_order = "before" if release else "after"
  # "<SOS>" token: "learned" = paper (one learned token per stream, pooled output = its hidden
  # state); "global" = release (a global frame slot = per-object mean over frames, pooled
  # output = mean over that slot's tokens).
  t.sos_token = "global" if release else "learned"
  t.remat = False  # nn.remat every transformer layer (memory for compute)

  # ---- Part 5: heads and fusion ----
  h = c.heads = ml_collections.ConfigDict()
  h.activation = "gelu"  # prediction-head activation (release: dense, act, LayerNorm)
  h.pooled_width = 512  # pooler output per stream (release: 512 -> fused 3 x 512 = 1536)
  h.pooler_activation = "relu"  # ViLBERT's poolers: dense + ReLU
  h.fusion = "concat"  # "concat" (paper default, supp. Table 2) or "multiply" (supp. Table 2)
  # Pooler and fused feature: "mean_first" = ours (paper: the <SOS> output; with the release's
  # K global tokens: their mean, then dense + ReLU); "per_slot" = release (vision_net.py,
  # Bert*Pooler + BertPreTrainingHeads + forward_multiframe: dense + ReLU on every global slot,
  # streams fused per slot, dropout fused_dropout, then the mean over the slots).
  h.pooler_order = "per_slot" if release else "mean_first"
  h.fused_dropout = 0.1  # dropout on the fused feature (release); used with pooler_order per_slot
  # WSDDN regions of the visual/pose heads: "tokens" = paper (every non-<SOS> token is a region;
  # one dense to classes for each of the two softmaxes); "objects" = release (vision_net.py,
  # forward_multiframe: prediction head + decoder per token, mean over all frame slots incl. the
  # global one, then Linear(C, C) for classification (softmax over classes) and Linear(C, C) for
  # detection (softmax over the object slots)).
  h.wsddn_regions = "objects" if release else "tokens"
  # Audio classification: "mean_hidden" = paper (classifier on the mean hidden state, sigmoid
  # BCE on its logits; output audio_logits); "release" = prediction head + decoder per token,
  # logits averaged, softmax over classes, then BCE (output audio_scores).
  h.audio_classifier = "release" if release else "mean_hidden"
  # Applied to the fused feature before the U-Net: "none" = paper (not mentioned);
  # "sigmoid" = release.
  h.fused_activation = "sigmoid" if release else "none"

  # ---- Part 6: attention U-Net separation network ----
  u = c.unet = ml_collections.ConfigDict()
  u.depth = 4 if release else 7  # down/up levels (paper: 7 conv + 7 deconv; release: 4/4)
  u.base_channels = 64  # channels of the first level (doubles per level up to max_channels)
  u.max_channels = 512  # cap on level channels
  u.bottleneck_channels = 1536 if release else 512  # channels at the bottleneck (release: 1536)
  u.convs_per_level = 2  # 3x3 conv+BN+ReLU per level (attention U-Net's double conv)
  u.attention_gates = True  # additive attention gates on the skip connections
  # Early fusion of the fused feature at the bottleneck: "self_attention" = paper (following
  # Music-Gesture: one self-attention layer over bottleneck positions + the fused token);
  # "release" = audio_net.py Unet.forward: softmax over channels of f_c * sum_time B, times the
  # raw f, plus B, then a residual 2-layer MLP (tribert_jax/models/unet.py, BottleneckFusion).
  u.fusion = "release" if release else "self_attention"
  u.fusion_heads = 8  # heads of the self-attention fusion
  # Where the fused feature enters the decoder: "bottleneck" = paper and release (the fusion
  # above only); "every_level" = ours, also FiLM after every decoder level (zero-initialised),
  # which the cpu preset needs to learn to separate in minutes (tribert_jax/models/unet.py).
  u.conditioning = "bottleneck"
  # BatchNorm on the log mixture: True = ours (Sound-of-Pixels; paper silent); False = release
  # (audio_net.py, Unet has none).
  u.input_batch_norm = not release
  # BatchNorm + ReLU after each de-convolution: True = ours (attention U-Net [37] up-conv block);
  # False = release (bare ConvTranspose, audio_net.py Unet.upconv*).
  u.deconv_norm = not release
  # How the 2x2 stride-2 de-convolutions are computed (the same layer, parameters and values):
  # "conv_transpose" = XLA's transposed convolution; "matmul" = one matmul + depth-to-space
  # (tribert_jax/models/layers.py, BlockDeconv), whose backward avoids XLA:CPU's slow unfused
  # base-dilated convolution (benchmarks/README "Where the step's time goes"): 14.6 -> 8.2 s
  # for the paper-size step at batch 1. Default "matmul" since 2026-12-07.
  u.deconv_impl = "matmul"
  # BatchNorm after the attention gates' 1x1 W_x / W_g convs: False = ours; True = release
  # (audio_net.py, Attention_block).
  u.gate_norm = release
  u.remat = False  # nn.remat every U-Net level

  # ---- Part 7: loss weights (equal in the paper) ----
  w = c.loss_weights = ml_collections.ConfigDict()
  w.separation = 1.0  # per-pixel weighted BCE on the masks
  w.visual = 1.0  # BCE of the visual WSDDN scores
  w.pose = 1.0  # BCE of the pose WSDDN scores
  w.audio = 1.0  # BCE of the audio logits
  w.visual_class_scores = 1.0  # BCE of the decoupled-attention class scores (per frame)

  if size == "cpu":
    c.input.image_size = 96
    c.input.pose_window = 32
    v.resnet_stage_sizes = (1, 1, 1, 1)
    v.resnet_width = 8
    v.feature_channels = 128
    p.stgcn_blocks = ((16, 1), (32, 2), (32, 2))
    a.vggish_channels = ((8,), (16,), (32,), (64,))
    a.vggish_fc = (256, 128)
    a.vgg7_channels = (8, 16, 32, 64, 64, 128, 128)
    t.visual_width = t.pose_width = 128
    t.audio_width = 64
    t.num_heads = 4
    t.num_layers = 2
    t.intermediate_size = 256
    t.co_attention_width = 64
    t.co_attention_heads = 4
    h.pooled_width = 64
    u.depth = 7 if not release else 4
    u.base_channels = 8
    u.max_channels = 64
    u.bottleneck_channels = 192 if release else 64  # release fusion: = 3 x pooled_width
    u.convs_per_level = 1
    u.fusion_heads = 4
    # Not the paper's architecture: FiLM after every decoder level on top of the bottleneck
    # fusion, for speed. Measured (benchmarks/README.md, "Conditioning the U-Net"; oracle
    # feature, Adam 1e-3, 1000 updates): bottleneck-only fusion starts using the feature after
    # ~150 updates, FiLM after ~35, and FiLM ends lower; the 20-minute cpu run has ~720 updates.
    u.conditioning = "every_level"
  elif size == "tiny":
    c.input.image_size = 64
    c.input.pose_window = 16
    v.resnet_stage_sizes = (1, 1, 1, 1)
    v.resnet_width = 4
    v.feature_channels = 32
    p.stgcn_blocks = ((8, 1), (16, 2))
    a.vggish_channels = ((4,), (8,), (8,), (16,))
    a.vggish_fc = (32, 16)
    a.vgg7_channels = (4, 4, 8, 8, 16, 16, 16)
    t.visual_width = t.pose_width = 32
    t.audio_width = 16
    t.num_heads = 2
    t.num_layers = 1
    t.intermediate_size = 64
    t.co_attention_width = 16
    t.co_attention_heads = 2
    h.pooled_width = 16
    u.depth = 3
    u.base_channels = 4
    u.max_channels = 16
    u.bottleneck_channels = 48 if release else 16  # release fusion: = 3 x pooled_width
    u.convs_per_level = 1
    u.fusion_heads = 2
  return c
