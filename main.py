"""The one entry point for everything driven by a phase config.

  python main.py --config=configs/pretrain.py:cpu --workdir=runs/pretrain_cpu
  python main.py --config=configs/finetune.py:cpu --workdir=runs/finetune_cpu
  python main.py --config=configs/pretrain.py:cpu --workdir=runs/pretrain_cpu --mode=evaluate \
      --config.data.eval_split=test [--checkpoint=600]
  python main.py --config=configs/retrieval.py:cpu --workdir=runs/retrieval_cpu --mode=retrieval
  python main.py --config=configs/probe.py:cpu --workdir=runs/retrieval_cpu --mode=probe
  python main.py --config=configs/ablations.py:cpu --workdir=runs/ablations_cpu --mode=ablations
  python main.py --config=configs/pretrain.py:paper,variant=release --mode=summary
  tensorboard --logdir=runs

Config keys can be overridden on the command line (--config.data.batch_size=4); the final
config is written to WORKDIR/config.json. A run resumes from WORKDIR's latest checkpoint.
The console shows the project's progress lines; other libraries' INFO lines (orbax, JAX,
TensorFlow) appear only with --verbosity=1 or more.

Multi-process (multi-host) runs: every process runs this same command; jax.distributed is
initialised when --distributed is given (cluster auto-detection: SLURM, TPU pods, ...) or when
a coordinator address is known (--config.distributed.coordinator_address=host:port or
$JAX_COORDINATOR_ADDRESS, with the process count / id from config.distributed or
$JAX_NUM_PROCESSES / $JAX_PROCESS_ID).
"""

from __future__ import annotations

import importlib
import logging as python_logging
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Phase config file, e.g. configs/pretrain.py:cpu.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard and reports "
                    "(every mode but summary).")
flags.DEFINE_enum("mode", "train", ["train", "evaluate", "retrieval", "probe", "ablations",
                                    "summary"],
                  "train (resumes if WORKDIR has a checkpoint); evaluate a checkpoint; the "
                  "retrieval / probe / ablations phase of configs/{retrieval,probe,ablations}.py; "
                  "summary: parameters and FLOPs of the config's model.")
flags.DEFINE_integer("checkpoint", None, "--mode=evaluate: step to score (default: latest).")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() with cluster auto-detection.")
flags.DEFINE_bool("flops", True, "--mode=summary: also count FLOPs (lowers the model).")
flags.mark_flag_as_required("config")
flags.register_validator("workdir", lambda workdir: workdir or FLAGS.mode == "summary",
                         "--workdir is required (except with --mode=summary)")

# Packages whose log lines are the project's own; everything else is third-party.
PROJECT_PACKAGES = ("tribert_jax", "data_pipeline", "benchmarks", "main.py")


class _ThirdPartyInfoFilter(python_logging.Filter):
  """Drops third-party records below WARNING (orbax's per-save INFO lines, JAX backend notes)."""

  def __init__(self, root: str):
    super().__init__()
    self._prefixes = tuple(os.path.join(root, p) for p in PROJECT_PACKAGES)

  def filter(self, record: python_logging.LogRecord) -> bool:
    return (record.levelno >= python_logging.WARNING
            or os.path.abspath(record.pathname).startswith(self._prefixes))


def quiet_third_party_logs(verbosity: int) -> None:
  """At verbosity <= 0, third-party INFO is hidden (console and log file alike)."""
  if verbosity > 0:
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO lines
  root = os.path.dirname(os.path.abspath(__file__))
  logging.get_absl_handler().addFilter(_ThirdPartyInfoFilter(root))


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


# --mode -> the library function it runs: (module, function name), called with (config, workdir).
PHASE_RUNNERS = {
    "train": ("tribert_jax.train", "train_and_evaluate"),
    "retrieval": ("tribert_jax.embeddings.retrieval", "run"),
    "probe": ("tribert_jax.embeddings.probe", "run"),
    "ablations": ("tribert_jax.ablations", "run"),
}


def main(argv):
  """Hides GPUs from TensorFlow, initialises jax.distributed if asked, runs the mode."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  quiet_third_party_logs(FLAGS.verbosity)
  config = FLAGS.config
  if FLAGS.mode == "summary":
    from tribert_jax import summary  # pylint: disable=g-import-not-at-top
    summary.run(config, flops=FLAGS.flops)
    return
  # Heavy imports here, not at module level: evaluation's worker processes re-import nothing.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # tf.data only feeds the host; JAX owns the accelerators.
  tf.config.set_visible_devices([], "GPU")
  import jax  # pylint: disable=g-import-not-at-top

  arguments = _distributed_arguments(config)
  if arguments is not None:
    jax.distributed.initialize(**arguments)
  logging.info("JAX process %d/%d, local devices %s", jax.process_index(), jax.process_count(),
               jax.local_devices())
  if FLAGS.mode == "evaluate":
    from tribert_jax import train  # pylint: disable=g-import-not-at-top
    train.evaluate_checkpoint(config, FLAGS.workdir, FLAGS.checkpoint)
    return
  module, function = PHASE_RUNNERS[FLAGS.mode]
  getattr(importlib.import_module(module), function)(config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
