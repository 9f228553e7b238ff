"""Representation probe (supplement Table 4): MLP instrument classifier on frozen features.

  python main.py --config=configs/probe.py:cpu --workdir=runs/retrieval_cpu --mode=probe

Same export keys as configs/retrieval.py (config.init = the pretrain run, config.export); with
the retrieval workdir the exported embeddings are reused.
"""

from __future__ import annotations

import ml_collections

from configs import common
from configs import pretrain
from configs import retrieval


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Probe config; arg = size in {paper (default), cpu, tiny}."""
  size = common.parse_size(arg)
  config = pretrain.get_config(size)
  config.phase = "probe"
  retrieval.add_export_config(config)

  p = config.probe = ml_collections.ConfigDict()
  # Rows of supplement Table 4: "<s> feature w/o <s> BERT stream" (input_<s>) and
  # "TriBERT <s> feature" (tribert_<s>); pooled_<s> adds the pooled <SOS> feature.
  p.features = ("input_audio", "tribert_audio", "input_visual", "tribert_visual", "input_pose",
                "tribert_pose")
  p.train_split = "train"
  p.eval_split = "test"
  p.hidden_widths = (512,)  # "a simple MLP" (paper: not specified)
  p.standardize = True  # per-feature standardisation with training statistics
  p.learning_rate = 1e-3
  p.batch_size = 64
  p.num_epochs = 100
  p.ks = (1, 5, 10)
  p.tie_policy = "pessimistic"

  if size == "cpu":
    p.hidden_widths = (256,)
  elif size == "tiny":
    p.hidden_widths = (16,)
    p.batch_size = 8
    p.num_epochs = 2
  return config
