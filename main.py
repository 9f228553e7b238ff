"""Entry point: train or evaluate one TriBERT phase.

  python main.py --config=configs/pretrain.py:cpu --workdir=runs/pretrain_cpu
  python main.py --config=configs/finetune.py:cpu --workdir=runs/finetune_cpu
  python main.py --config=configs/pretrain.py:cpu --workdir=runs/pretrain_cpu --mode=evaluate \
      --config.data.eval_split=test [--checkpoint=600]
  tensorboard --logdir=runs

Config keys can be overridden on the command line (--config.data.batch_size=4); the final
config is written to WORKDIR/config.json. A run resumes from WORKDIR's latest checkpoint.

Multi-process (multi-host) runs: every process runs this same command; jax.distributed is
initialised when --distributed is given (cluster auto-detection: SLURM, TPU pods, ...) or when
a coordinator address is known (--config.distributed.coordinator_address=host:port or
$JAX_COORDINATOR_ADDRESS, with the process count / id from config.distributed or
$JAX_NUM_PROCESSES / $JAX_PROCESS_ID).
"""

from __future__ import annotations

import importlib
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Phase config file, e.g. configs/pretrain.py:cpu.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard and reports.")
flags.DEFINE_enum("mode", "train", ["train", "evaluate", "retrieval", "probe", "ablations"],
                  "train (resumes if WORKDIR has a checkpoint), evaluate a checkpoint, or run "
                  "the retrieval / probe / ablations phase of configs/{retrieval,probe,ablations}.py.")
flags.DEFINE_integer("checkpoint", None, "--mode=evaluate: step to score (default: latest).")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() with cluster auto-detection.")
flags.mark_flags_as_required(["config", "workdir"])


def _distributed_arguments(config) -> dict[str, object] | None:
  """jax.distributed.initialize arguments, or None for a single-process run."""
  address = config.distributed.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if not address and not FLAGS.distributed:
    return None
  arguments: dict[str, object] = {}
  if address:
    arguments["coordinator_address"] = address
  num_processes = config.distributed.num_processes
  process_id = config.distributed.process_id
  if num_processes < 0 and "JAX_NUM_PROCESSES" in os.environ:
    num_processes = int(os.environ["JAX_NUM_PROCESSES"])
  if process_id < 0 and "JAX_PROCESS_ID" in os.environ:
    process_id = int(os.environ["JAX_PROCESS_ID"])
  if num_processes >= 0:
    arguments["num_processes"] = num_processes
  if process_id >= 0:
    arguments["process_id"] = process_id
  return arguments


def main(argv):
  """Hides GPUs from TensorFlow, initialises jax.distributed if asked, runs the phase."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  # Heavy imports here, not at module level: evaluation's worker processes re-import nothing.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # tf.data only feeds the host; JAX owns the accelerators.
  tf.config.set_visible_devices([], "GPU")
  import jax  # pylint: disable=g-import-not-at-top

  config = FLAGS.config
  arguments = _distributed_arguments(config)
  if arguments is not None:
    jax.distributed.initialize(**arguments)
  logging.info("JAX process %d/%d, local devices %s", jax.process_index(), jax.process_count(),
               jax.local_devices())

  from tribert_jax import train  # pylint: disable=g-import-not-at-top
  if FLAGS.mode == "train":
    train.train_and_evaluate(config, FLAGS.workdir)
  elif FLAGS.mode == "evaluate":
    train.evaluate_checkpoint(config, FLAGS.workdir, FLAGS.checkpoint)
  elif FLAGS.mode in ("retrieval", "probe"):
    importlib.import_module(f"tribert_jax.{FLAGS.mode}").run(config, FLAGS.workdir)
  else:
    from tribert_jax import ablations  # pylint: disable=g-import-not-at-top
    ablations.run_config(config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
