"""Shared pieces of the training-loop tests (test_train*.py): the tiny config of a phase on the
session's tiny SynthMUSIC, and one training step in a subprocess with its own XLA flags
(several devices, several processes), bounded in time: a hang is a failure.
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap

import jax
import numpy as np
import pytest

from configs import pretrain

COMPILATION_CACHE = os.environ.setdefault(
    "TRIBERT_TEST_XLA_CACHE", tempfile.mkdtemp(prefix="tribert_test_xla_cache_"))
jax.config.update("jax_compilation_cache_dir", COMPILATION_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBPROCESS_TIMEOUT_S = 600


# The pretrain runs use the tiny config's global batch of 2, split one per device by the
# two-device run (test_train.py) and the two processes (test_train_hosts.py); the tiny trainings
# of other modules (retrieval, ablations) compile the same programs (session XLA cache).
BATCH = 2


def tiny(module, root, **overrides):
  """The tiny config of a phase on the session's tiny SynthMUSIC (pretrain: batch BATCH)."""
  config = module.get_config("tiny")
  if module is pretrain:
    config.data.batch_size = BATCH
  if config.class_subset.classes:
    config.class_subset.source_root = str(root)
    config.data.root = str(root) + "_music11"
  else:
    config.data.root = str(root)
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


RUN_ONE_STEP = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {repo!r})
    import jax
    if {coordinator!r}:
      jax.distributed.initialize({coordinator!r}, num_processes={num_processes},
                                 process_id={process_id})
    jax.config.update("jax_compilation_cache_dir", {cache!r})
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    import importlib
    from tribert_jax import train
    config = importlib.import_module("configs.{config_module}").get_config("tiny")
    config.data.root = {root!r}
    config.data.batch_size = {batch_size}
    config.data.eval_batch_size = {batch_size}
    config.eval.at_end = {evaluate}
    config.num_train_steps = 1
    result = train.train_and_evaluate(config, {workdir!r})
    print("RESULT " + json.dumps(dict(loss=result["train"]["train/loss"],
                                      devices=jax.device_count(), eval=result["eval"])))
""")


def launch_one_step(devices, root, workdir, batch_size, evaluate=False, coordinator="",
                    num_processes=1, process_id=0, config_module="pretrain"):
  """One training step of configs/<config_module>.py:tiny in a subprocess with DEVICES host
  devices (optionally one process of a jax.distributed group)."""
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
             "--xla_backend_optimization_level=0", CUDA_VISIBLE_DEVICES="",
             TF_CPP_MIN_LOG_LEVEL="2")
  code = RUN_ONE_STEP.format(repo=REPO, coordinator=coordinator, num_processes=num_processes,
                             process_id=process_id, config_module=config_module,
                             cache=COMPILATION_CACHE, root=str(root), batch_size=batch_size,
                             evaluate=evaluate, workdir=str(workdir))
  return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, cwd=REPO)


def one_step_result(process):
  try:
    output, _ = process.communicate(timeout=SUBPROCESS_TIMEOUT_S)
  except subprocess.TimeoutExpired:
    process.kill()
    output, _ = process.communicate()
    pytest.fail(f"subprocess hung (> {SUBPROCESS_TIMEOUT_S} s); output tail:\n{output[-3000:]}")
  assert process.returncode == 0, output[-5000:]
  line = [l for l in output.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])




def start_main(*arguments):
  """Starts `python main.py ARGUMENTS` in the repository as a user types it, with the tests'
  XLA flags and compilation cache (output to a file, so runs side by side never block)."""
  output = tempfile.TemporaryFile("w+")
  env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
             JAX_COMPILATION_CACHE_DIR=COMPILATION_CACHE,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  process = subprocess.Popen([sys.executable, "main.py", *arguments], cwd=REPO, stdout=output,
                             stderr=subprocess.STDOUT, text=True, env=env)
  return process, output


def finish_main(*started):
  """Waits for start_main runs (bounded: a hang is a failure); their logs, or a failure
  showing the tail of each run that did not exit 0."""
  logs, problems = [], []
  for process, output in started:
    try:
      process.wait(timeout=SUBPROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
    output.seek(0)
    logs.append(output.read())
    if process.returncode != 0:
      problems.append(f"{process.args[2:]} exited {process.returncode}:\n{logs[-1][-3000:]}")
  if problems:
    pytest.fail("\n\n".join(problems))
  return logs


def fresh_state(config, workdir):
  """(state, progress) of restore_or_initialize for config with an empty checkpoint folder
  `workdir`: the state a run starts from (pretrained parts of config.init applied)."""
  from tribert_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from tribert_jax import initialization  # pylint: disable=g-import-not-at-top
  from tribert_jax import optimizers  # pylint: disable=g-import-not-at-top
  from tribert_jax import sharding  # pylint: disable=g-import-not-at-top
  from tribert_jax import train  # pylint: disable=g-import-not-at-top
  task = train.make_task(config)
  tx, _ = optimizers.make_optimizer(config.optim, 1)
  mesh = sharding.make_mesh(config.mesh)
  state, _, progress = initialization.restore_or_initialize(
      task, tx, config, mesh, checkpointing.Checkpointer(str(workdir), read_only=False))
  return state, progress


def assert_part_copied(state, workdir, source_prefix, target_prefix):
  """The state's variables under target_prefix (params and batch statistics) equal those under
  source_prefix in the best checkpoint of the run in workdir."""
  from tribert_jax import checkpointing  # pylint: disable=g-import-not-at-top
  source, _, _ = checkpointing.load_state_tree(str(workdir), "best")
  for collection in ("params", "batch_stats"):
    loaded = getattr(state, collection)
    for key in target_prefix.split("/"):
      loaded = loaded[key]
    expected = source[collection]
    for key in source_prefix.split("/"):
      expected = expected[key]
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, loaded), expected)
