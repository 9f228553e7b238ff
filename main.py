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
Failures (README "Failure behaviour"): the config is checked before anything heavy is imported
(a bad value or an unknown --config.KEY fails in about two seconds, naming the key), then the
dataset files the mode reads, then the batch sizes against the devices; --mode=check does only
that and creates nothing. Training holds an exclusive lock on WORKDIR/.lock. Every failure ends
the process with a non-zero exit code and one `error: ...` line (a traceback above it only for
unexpected errors); the process never waits on TensorFlow's shutdown.

On Linux, main.py first re-executes itself with glibc's huge-page malloc where the machine offers
it (tribert_jax/huge_pages.py; TRIBERT_HUGE_PAGES=0 turns that off).

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
import sys
import traceback

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

import tribert_jax  # sets the XLA:CPU flags before JAX starts (tribert_jax/xla_cpu_flags.py)
from tribert_jax import huge_pages
from tribert_jax import validation
from tribert_jax import workdir_lock

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Phase config file, e.g. configs/pretrain.py:cpu.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard and reports "
                    "(every mode but summary).")
flags.DEFINE_enum("mode", "train", ["train", "evaluate", "retrieval", "probe", "ablations",
                                    "summary", "check"],
                  "train (resumes if WORKDIR has a checkpoint); evaluate a checkpoint; the "
                  "retrieval / probe / ablations phase of configs/{retrieval,probe,ablations}.py; "
                  "summary: parameters and FLOPs of the config's model; check: validate the "
                  "config and the dataset files the train mode reads, create nothing.")
flags.DEFINE_integer("checkpoint", None, "--mode=evaluate: step to score (default: latest).")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() with cluster auto-detection.")
flags.DEFINE_bool("flops", True, "--mode=summary: also count FLOPs (lowers the model).")
flags.mark_flag_as_required("config")
flags.register_validator("workdir",
                         lambda workdir: workdir or FLAGS.mode in ("summary", "check"),
                         "--workdir is required (except with --mode=summary or check)")

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


# Modes that write into the workdir hold its lock; evaluate / check / summary create nothing there
# (evaluate writes its report and scalars only once a checkpoint has been restored).
WRITING_MODES = ("train", "retrieval", "probe", "ablations")


def validation_cache_path(config, workdir: str | None, mode: str) -> str | None:
  """Where the data preflight caches clip validations: config.data.validation_cache, or
  WORKDIR/clip_validation.json; in check mode only an existing file (check creates nothing)."""
  path = config.data.get("validation_cache", "") or validation.default_validation_cache(workdir)
  if mode == "check" and not (path and os.path.isfile(path)):
    return None
  return path or None


def check_mode(config, workdir: str | None) -> None:
  """--mode=check: config, dataset files and devices, as a report; raises on the first failing
  group (after printing what passed). Creates nothing."""
  print(f"config {config.phase} ({config.get('size', '?')}): keys OK")
  data = config.data
  if data.source == "folder" and not os.path.isfile(os.path.join(data.root, "labels.json")):
    if config.get("dataset") == "synthmusic" and not os.path.exists(data.root):
      print(f"data: {data.root} does not exist; --mode=train generates SynthMUSIC there")
    else:
      raise FileNotFoundError(f"config.data.root={data.root}: no labels.json (not a dataset "
                              "root; preprocess it with `python -m data_pipeline.ingest`)")
  else:
    report = validation.preflight_data(config, "train", validation_cache_path(config, workdir,
                                                                              "check"))
    print(f"data: {report or 'index files and mixture lists OK'}")
  import jax  # pylint: disable=g-import-not-at-top
  validation.raise_if(validation.check_devices(config, jax.device_count(), jax.process_count()))
  print(f"devices: {jax.device_count()} ({jax.devices()[0].platform}): batch sizes OK")
  if workdir:
    steps = validation.checkpoint_steps_on_disk(workdir)
    print(f"workdir {workdir}: " + (f"checkpoints {steps} (train resumes from the newest intact "
                                    "one)" if steps else "no checkpoint (train starts fresh)"))
  print(huge_pages.state())
  print(tribert_jax.XLA_CPU_FLAGS_STATE)
  print("check passed")


def main(argv):
  """Validates, locks the workdir, hides GPUs from TensorFlow, initialises jax.distributed if
  asked, runs the mode. Raises on failure (run() turns that into an exit code)."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  quiet_third_party_logs(FLAGS.verbosity)
  config, mode, workdir = FLAGS.config, FLAGS.mode, FLAGS.workdir
  # 1. The config alone (pure Python, before TensorFlow / JAX are imported).
  validation.raise_if(validation.check_config(config))
  if mode == "summary":
    from tribert_jax import summary  # pylint: disable=g-import-not-at-top
    summary.run(config, flops=FLAGS.flops)
    return
  if mode == "check":
    check_mode(config, workdir)
    return
  if mode == "evaluate" and not validation.checkpoint_steps_on_disk(workdir):
    raise FileNotFoundError(f"--mode=evaluate: no checkpoint in {workdir}/checkpoints "
                            "(train first, or pass the training run's --workdir)")
  arguments = _distributed_arguments(config)
  lock = None
  if mode in WRITING_MODES and arguments is None:
    lock = workdir_lock.WorkdirLock(workdir).acquire()
  # 2. The dataset files the mode reads, when the dataset is there (SynthMUSIC is generated on
  # first use by the run itself, and is valid by construction).
  validation.preflight_data(config, mode, validation_cache_path(config, workdir, mode))
  # Heavy imports here, not at module level: evaluation's worker processes re-import nothing.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # tf.data only feeds the host; JAX owns the accelerators.
  tf.config.set_visible_devices([], "GPU")
  import jax  # pylint: disable=g-import-not-at-top

  if arguments is not None:
    jax.distributed.initialize(**arguments)
    if mode in WRITING_MODES and jax.process_index() == 0:
      lock = workdir_lock.WorkdirLock(workdir).acquire()
  # 3. Batch sizes against the devices, before anything is compiled.
  validation.raise_if(validation.check_devices(config, jax.device_count(), jax.process_count()))
  logging.info("JAX process %d/%d, local devices %s", jax.process_index(), jax.process_count(),
               jax.local_devices())
  logging.info(huge_pages.state())
  logging.info(tribert_jax.XLA_CPU_FLAGS_STATE)
  if mode == "evaluate":
    from tribert_jax import train  # pylint: disable=g-import-not-at-top
    train.evaluate_checkpoint(config, workdir, FLAGS.checkpoint)
  else:
    module, function = PHASE_RUNNERS[mode]
    getattr(importlib.import_module(module), function)(config, workdir)
  if lock is not None:
    lock.release()


# Errors whose message says everything: one line, no traceback (matched by class name, so that
# main.py need not import the modules that define them).
EXPECTED_ERRORS = ("ConfigError", "WorkdirLockedError", "CheckpointSaveError", "BadClipError",
                   "DatasetRootError", "PreflightError", "NonFiniteError", "NonFiniteStateError",
                   "FileNotFoundError", "UsageError")


def report_failure(error: BaseException) -> int:
  """One block on stderr: the traceback for unexpected errors, then `error: <message>`.
  Returns the exit code: 2 for a config error, else 1."""
  names = {cls.__name__ for cls in type(error).__mro__}
  message = str(error).strip() or type(error).__name__
  if not names & set(EXPECTED_ERRORS):
    traceback.print_exception(error, file=sys.stderr)
    message = f"{type(error).__name__}: {message}"
  print("\n".join(f"error: {line}" for line in message.splitlines()), file=sys.stderr)
  return 2 if "ConfigError" in names else 1


def _flush() -> None:
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except Exception:  # pylint: disable=broad-except
      pass
  logging.flush()


def run(argv) -> None:
  """main(), then os._exit with its exit code: 0, 1 on an error, 130 on Ctrl-C, never a hang
  (TensorFlow's iterator destructors can wait forever at interpreter shutdown after an error in
  the tf.data stream). Open files are flushed first; checkpoints are finished by train.py."""
  code = 0
  try:
    main(argv)
  except SystemExit as exit_request:
    code = exit_request.code if isinstance(exit_request.code, int) else (
        0 if exit_request.code is None else 1)
    if isinstance(exit_request.code, str):
      print(exit_request.code, file=sys.stderr)
  except KeyboardInterrupt:
    print("error: interrupted", file=sys.stderr)
    code = 130
  except BaseException as error:  # pylint: disable=broad-except
    code = report_failure(error)
  _flush()
  os._exit(code)  # pylint: disable=protected-access


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with one line for a bad flag or an unknown --config.KEY, exit code 2."""
  try:
    return FLAGS(argv)
  except (AttributeError, KeyError) as error:
    # config_flags' override of a key the config does not have (three chained errors).
    missing = str(error).strip("'\"").strip("'\"")
    overrides = [a[2:].partition("=")[0] for a in argv[1:] if a.startswith("--config.")]
    culprit = next((o for o in overrides if missing in o.split(".")[1:]),
                   overrides[0] if overrides else f"config.{missing}")
    config_file = next((a.partition("=")[2] for a in argv[1:] if a.startswith("--config=")), "")
    print(f"error: --{culprit}: no such config key (see {config_file.partition(':')[0] or 'the'}"
          " config file and configs/parts/)", file=sys.stderr)
  except flags.Error as error:
    print(f"error: {error}", file=sys.stderr)
  except Exception as error:  # pylint: disable=broad-except
    # The config file itself failed (a bad size token, a typo in the file).
    print(f"error: --config: {type(error).__name__}: {error}", file=sys.stderr)
  sys.stderr.flush()
  sys.exit(2)


if __name__ == "__main__":
  huge_pages.reexec_if_useful()  # glibc reads its tunables at start-up (tribert_jax/huge_pages.py)
  app.run(run, flags_parser=parse_flags)
