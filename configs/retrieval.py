"""Cross-modal retrieval on frozen TriBERT embeddings (paper §4.2, Table 3; supplement §1).

  python main.py --config=configs/pretrain.py:cpu --workdir=runs/pretrain_cpu
  python main.py --config=configs/retrieval.py:cpu --workdir=runs/retrieval_cpu --mode=retrieval
  # another pretrain run: --config.init.checkpoint=/path/to/pretrain_workdir

Built on configs/pretrain.py: config.model and config.data must be the pretrain run's (the
checkpoint is checked against config.model's shapes). config.export says how clips become
embeddings (shared with configs/probe.py); config.retrieval is the multiple-choice training and
the top-k evaluation (see tribert_jax/embeddings/retrieval.py for the protocol).
"""

from __future__ import annotations

import ml_collections

from configs import common
from configs import pretrain


def add_export_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.init (the pretrain checkpoint) and config.export (embedding extraction)."""
  size = config.size
  config.init.checkpoint = f"./runs/pretrain_{size}"  # the pretrain workdir (README commands)
  config.init.which = "best"  # best validation SDR ("latest" for the last save)
  export = config.export = ml_collections.ConfigDict()
  export.splits = ("train", "test")  # training clips for the heads, test clips for the pool
  # Tokens -> one vector per stream: "flatten" = concatenation of every token's state (paper:
  # "concatenations of the hidden representations"); "mean" = mean over real tokens.
  export.token_pooling = "flatten"
  export.solos_only = False  # paper: every clip of the split (solos and duets)
  export.batch_size = 8 if size == "tiny" else config.data.eval_batch_size
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Retrieval config; arg = size in {paper (default), cpu, tiny}."""
  size = common.parse_size(arg)
  config = pretrain.get_config(size)
  config.phase = "retrieval"
  add_export_config(config)

  r = config.retrieval = ml_collections.ConfigDict()
  r.variants = ("audio_to_vision", "vision_to_audio", "audio_to_pose", "pose_to_audio",
                "vision_audio_to_pose")
  # "tribert" = transformer hidden states, "input" = pre-transformer embeddings (baseline),
  # "pooled" = the pooled <SOS> features (not in the paper).
  r.embedding_kinds = ("tribert", "input")
  r.train_split = "train"
  r.eval_split = "test"  # the pool: every clip of this split
  r.standardize = True  # per-feature standardisation with training statistics (our choice)
  # n-way multiple choice (supplement §1): single query n = 3 (2 hard distractors);
  # vision + audio -> pose n = 4 (1 hard + 2 easy).
  r.single_hard_negatives = 2
  r.single_easy_negatives = 0
  r.pair_hard_negatives = 1
  r.pair_easy_negatives = 2
  r.num_neighbours = 25  # hard distractors come from the anchor's 25 nearest neighbours
  r.exclude_same_class = False  # paper: no class filter on distractors
  r.width = 1024  # common width of the projected embeddings (paper: not given)
  r.hidden_width = 1024  # scoring-MLP hidden width (paper: not given)
  r.mlp_layers = 4  # paper: 4-layer MLP with Tanh
  r.learning_rate = 2e-5  # paper: Adam 2e-5
  r.batch_size = 64  # paper
  r.num_epochs = 750  # paper
  r.ks = (1, 5, 10)
  r.tie_policy = "pessimistic"  # or "expected"; ties never count for the answer

  if size == "cpu":
    r.width = 256
    r.hidden_width = 256
    # ~450 training clips: 8 updates per epoch; 2e-5 barely moves in minutes on a CPU.
    r.learning_rate = 1e-4
    r.num_epochs = 200
  elif size == "tiny":
    r.width = 16
    r.hidden_width = 16
    r.batch_size = 8
    r.learning_rate = 1e-3
    r.num_epochs = 2
  return config
