"""Training-loop keys shared by every phase: steps, optimiser, mesh, logging, checkpoints, eval.

Phase configs (configs/pretrain.py, finetune.py, pose_pretrain.py) call `add_train_config` and
then override what differs. Keys are read by tribert_jax/train.py, initialization.py and the tasks.
"""

from __future__ import annotations

import ml_collections

def add_train_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Adds the shared training keys to config (paper values; the phase shrinks them per size)."""
  config.seed = 0  # parameter init, dropout/masking rngs and data order all derive from it
  config.num_train_steps = 100_000  # optimiser updates (each one global batch)
  # Wall-clock budget in seconds of training (0 = none): the run stops at the first step after
  # it, saves, evaluates as at num_train_steps and writes WORKDIR/train_end.json. The clock
  # (tribert_jax/train_clock.py) leaves out compilation, evaluations and checkpoint saves and
  # continues across resumes. Schedules still follow num_train_steps.
  config.max_train_seconds = 0.0
  # Micro-batches per update: the global batch (config.data.batch_size) is split into this many
  # equal slices run one after another (lax.scan) with gradients averaged, so one device reaches
  # the paper's batch of 12. Must divide the per-device batch.
  config.grad_accum_steps = 1

  optim = config.optim = ml_collections.ConfigDict()
  # paper: Adam; "bert_adam" = the release's BertAdam (use_bert_adam below); "sgd" = torch's SGD
  # (Sound-of-Pixels: momentum, coupled weight decay on every parameter).
  optim.name = "adam"
  optim.learning_rate = 1e-5  # paper: 1e-5 (pretrain), 1e-7 (finetune)
  optim.warmup_steps = 0  # linear warmup from 0 (paper: none)
  # "constant" (paper), "cosine" (to end_lr_factor x peak), "step" (x decay_factor at each
  # update count of decay_steps and decay_fractions, after the warm-up) or "warmup_linear"
  # (BertAdam's: warm-up over warmup_proportion of the steps, then linear to 0; warmup_steps
  # unused).
  optim.decay = "constant"
  optim.decay_factor = 0.1  # step only
  optim.decay_steps = ()  # step only: absolute update counts
  # step only: fractions of the run's updates (resolved against num_train_steps when the
  # optimiser is built, so they follow an override of num_train_steps)
  optim.decay_fractions = ()
  optim.warmup_proportion = 0.1  # warmup_linear only (release: 0.1)
  optim.end_lr_factor = 0.0  # cosine floor as a fraction of the peak learning rate
  optim.b1 = 0.9
  optim.b2 = 0.999
  optim.eps = 1e-8
  optim.momentum = 0.9  # sgd only
  optim.weight_decay = 0.0  # adamw, bert_adam (release BertAdam: 0.01) and sgd (coupled)
  # bert_adam only: clip every gradient tensor on its own to this L2 norm (release: 1.0).
  optim.per_tensor_clip_norm = 1.0
  optim.grad_clip_norm = 0.0  # global-norm clipping; 0 = off (paper: none)
  # Parameter path prefix ("video_network" or "video_network/resnet") -> learning-rate factor
  # (e.g. a pretrained backbone at 0.1x); the longest matching prefix wins; a key that matches
  # no parameter is an error.
  optim.lr_multipliers = ml_collections.ConfigDict()

  mesh = config.mesh = ml_collections.ConfigDict()
  mesh.data = -1  # data-parallel axis size; -1 = all devices not used by the other axes
  mesh.fsdp = 1  # parameter-sharding axis size (with sharding rules mapping axes to "fsdp")

  config.log_every_steps = 50  # console/TensorBoard scalars (train metrics averaged over them)
  config.eval_every_steps = 5_000  # validation separation metrics (+ best checkpoint)
  config.checkpoint_every_steps = 1_000  # periodic async save of the latest state
  config.keep_checkpoints = 2  # latest checkpoints kept (the best one is kept separately)
  # Steps dispatched before waiting for a result. 1 = wait for every step: required for
  # multi-device CPU runs (XLA's CPU all-reduce rendezvous can deadlock on a 2-core machine
  # when steps pile up) and what the per-step NaN check needs; accelerators are fine with 2.
  config.max_steps_in_flight = 1

  # Initialisation from another phase when the workdir has no checkpoint (see
  # tribert_jax/initialization.py): a workdir or checkpoint folder; "" = from scratch.
  init = config.init = ml_collections.ConfigDict()
  init.checkpoint = ""
  init.which = "best"  # "best" (best validation SDR) or "latest" checkpoint of that workdir
  # (source prefix, target prefix) pairs of parameter paths, and regexes of target paths that
  # keep their fresh initialisation (e.g. classification layers whose class count changes).
  init.prefix_map = (("", ""),)
  init.reinit_patterns = ()
  init.copy_batch_stats = True
  # Parts of the model from other phases' checkpoints (the staged recipe: configs/pretrain.py
  # documents the chain). Applied to a fresh state (their target prefixes do not overlap), never
  # over a resume, and not together with init.checkpoint (validation refuses both). Each part copies only the
  # parameters under its target prefixes, and every array there must be in the checkpoint.
  parts = init.parts = ml_collections.ConfigDict()
  # The visual trunk and the U-Net from a separation_pretrain workdir (what the release's
  # weights_frame / weights_sound stand for; configs/separation_pretrain.py).
  parts.separation = init_part(("visual_encoder", "visual_encoder"),
                                ("separation_net", "separation_net"))
  # The ST-GCN from a pose_pretrain workdir into TriBERT's pose encoder (paper: ST-GCN trained on
  # the keypoints beforehand; freeze it with model.pose.freeze_stgcn).
  parts.pose = init_part(("stgcn", "pose_encoder/stgcn"))

  # Frozen ST-GCN features (model.pose.stgcn_input="features"): the pose_pretrain workdir whose
  # ST-GCN computes them, and where the cache goes ("" = WORKDIR/pose_features; a folder per
  # ST-GCN weights inside, so a shared cache_root serves several runs and is never stale).
  pose_features = config.pose_features = ml_collections.ConfigDict()
  pose_features.checkpoint = ""
  pose_features.which = "best"
  pose_features.cache_root = ""

  ev = config.eval = ml_collections.ConfigDict()
  ev.mask_type = "binary"  # "binary": threshold the un-warped mask (paper); "ratio": use as is
  ev.threshold = 0.5  # binary mask threshold
  ev.silent_policy = "skip"  # all-zero reference/prediction: "skip" and count, or "error"
  ev.backend = "mir_eval"  # "mir_eval" (reference) or "fast_bss_eval" (same numbers, faster)
  ev.num_workers = 0  # scoring processes; 0 = all CPU cores
  ev.ideal_mask = True  # also score the ideal binary mask (the ceiling)
  ev.max_batches = -1  # evaluation batches per run; -1 = every mixture of the list
  ev.num_examples = 2  # fixed validation mixtures written to TensorBoard (audio + images)
  ev.at_end = True  # evaluate after the last step
  # Cheap periodic evaluation between the full ones, so TensorBoard shows SDR over training
  # (quick_eval/*) and WORKDIR/eval/quick_<split>.jsonl holds one line per point (step, seconds,
  # mean/median SDR/SIR/SAR): the first quick_batches batches of the evaluation split's fixed
  # mixture list (the same mixtures every time), scored with quick_backend, no ideal mask, no
  # examples, no best-checkpoint update. 0 = off.
  ev.quick_every_steps = 1_000
  ev.quick_batches = 4
  ev.quick_backend = "fast_bss_eval"  # agrees with mir_eval (tests/test_evaluation_metrics.py)
  # The split whose fixed mixture list the quick evaluation reads ("val", "test" or "train");
  # independent of data.eval_split (the full evaluation's). The quality benchmark uses "test".
  ev.quick_split = "val"

  dist = config.distributed = ml_collections.ConfigDict()
  # Multi-process runs: jax.distributed.initialize is called when coordinator_address is set
  # here or in $JAX_COORDINATOR_ADDRESS, or when main.py --distributed is given (cluster
  # auto-detection, e.g. SLURM / TPU pods). num_processes / process_id: -1 = from
  # $JAX_NUM_PROCESSES / $JAX_PROCESS_ID or auto-detected.
  dist.coordinator_address = ""
  dist.num_processes = -1
  dist.process_id = -1

  return config


def init_part(*prefix_map: tuple[str, str]) -> ml_collections.ConfigDict:
  """One entry of config.init.parts: a checkpoint ("" = unused) and its (source prefix, target
  prefix) pairs."""
  part = ml_collections.ConfigDict()
  part.checkpoint = ""  # a workdir or checkpoint folder of the source phase
  part.which = "best"  # "best" or "latest" checkpoint of that workdir
  part.prefix_map = prefix_map
  return part


def use_bert_adam(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Switches config.optim to the release's optimiser (train_trimodal.py: BertAdam, lr 1e-5,
  warmup_proportion 0.1, t_total = the run's updates; BertAdam defaults eps 1e-6, weight decay
  0.01, per-tensor clipping at 1.0, no bias correction); the learning rate is left as set."""
  optim = config.optim
  optim.name = "bert_adam"
  optim.decay = "warmup_linear"
  optim.warmup_proportion = 0.1
  optim.b1, optim.b2, optim.eps = 0.9, 0.999, 1e-6
  optim.weight_decay = 0.01
  optim.per_tensor_clip_norm = 1.0
  optim.grad_clip_norm = 0.0  # BertAdam clips per tensor, not globally
  return config


def use_frame_pretraining(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A frame classifier's schedule (configs/sound_of_pixels_frames.py, visual_pretrain.py):
  Adam 1e-3, 100 warm-up steps, cosine decay to 0, no weight decay, no gradient clipping, one
  rate for every parameter; 20k updates with an accuracy evaluation (no SDR, no ideal mask, no
  quick evaluation: the full one is cheap) every 2k. Sizes adjust the step counts after it."""
  optim = config.optim
  optim.name = "adam"
  optim.learning_rate = 1e-3
  optim.decay = "cosine"
  optim.end_lr_factor = 0.0
  optim.decay_fractions = ()
  optim.warmup_steps = 100
  optim.weight_decay = 0.0
  optim.grad_clip_norm = 0.0
  optim.lr_multipliers = ml_collections.ConfigDict()
  config.num_train_steps = 20_000
  config.eval_every_steps = 2_000
  config.eval.ideal_mask = False
  config.eval.quick_every_steps = 0
  return config


def shrink_for_tests(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The `tiny` loop: one step, one evaluation batch scored in-process (unit tests)."""
  config.num_train_steps = 1
  config.log_every_steps = 1
  config.eval_every_steps = 1_000
  config.checkpoint_every_steps = 1
  config.optim.warmup_steps = 0
  config.eval.max_batches = 1
  config.eval.num_workers = 1
  config.eval.num_examples = 1
  config.eval.quick_every_steps = 0
  return config
