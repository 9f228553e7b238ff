"""Failure behaviour of main.py (issue 18): bad configs, bad data in the stream, a locked
workdir, broken checkpoints, kill -9. Every case runs main.py as a subprocess under a timeout (a
hang is a failure) and checks the exit code, that stderr names the key or file, and that nothing
outside the workdir changed (the dataset's files are snapshotted before and after).

Config failures happen before TensorFlow / JAX are imported (about a second each). The
checkpoint cases share one trained tiny pose_pretrain workdir (the cheapest phase to compile),
copied per test.
"""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tribert_jax import workdir_lock  # noqa: E402  pylint: disable=g-import-not-at-top

FAST_S = 30  # config failures: no TensorFlow / JAX import
RUN_S = 240  # runs that compile


def main_command(*arguments, config="configs/pose_pretrain.py:tiny"):
  return [sys.executable, str(REPO / "main.py"), f"--config={config}", *arguments]


def env(**extra):
  environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                     XLA_FLAGS="--xla_backend_optimization_level=0")
  environment.update(extra)
  return environment


def run_main(*arguments, timeout=FAST_S, environment=None, **kwargs):
  """(exit code, stderr, seconds) of main.py; fails the test on a hang."""
  start = time.monotonic()
  try:
    result = subprocess.run(main_command(*arguments, **kwargs), cwd=REPO, env=environment or env(),
                            capture_output=True, text=True, timeout=timeout, check=False)
  except subprocess.TimeoutExpired as error:
    pytest.fail(f"main.py hung (> {timeout} s): {arguments}\n{(error.stderr or b'')[-3000:]}")
  return result.returncode, result.stderr, time.monotonic() - start


def snapshot(root):
  """{relative path: (size, mtime_ns)} of every file under root."""
  root = pathlib.Path(root)
  return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in root.rglob("*") if p.is_file()}


def error_lines(stderr):
  return [line for line in stderr.splitlines() if line.startswith("error: ")]


# ----------------------------------------------------------------------------------------------
# Config: one line naming the key, before any heavy import, nothing created.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, code, message", [
    ("--config.foo=1", 2, "error: --config.foo: no such config key"),
    ("--config.optim.lr=1", 2, "error: --config.optim.lr: no such config key"),
    ("--config.data.batch_size=0", 2, "config.data.batch_size=0: must be a positive multiple"),
    ("--config.optim.learning_rate=-0.001", 2, "config.optim.learning_rate=-0.001"),
    ("--config.optim.learning_rate=nan", 2, "config.optim.learning_rate=nan"),
    ("--config.data.num_mix=1", 2, "config.data.num_mix=1"),
    ("--config.eval_every_steps=0", 2, "config.eval_every_steps=0: must be > 0"),
    ("--config.optim.decay=linear", 2, "config.optim.decay='linear': expected one of"),
    ("--config.data.batch_size=abc", 2, "--config.data.batch_size=abc"),
])
def test_bad_config_fails_at_once_naming_the_key(override, code, message, synthmusic_tiny,
                                                 tmp_path):
  before = snapshot(synthmusic_tiny)
  rc, stderr, seconds = run_main(f"--workdir={tmp_path / 'w'}",
                                 f"--config.data.root={synthmusic_tiny}", override)
  assert rc == code, stderr
  assert message in stderr and len(error_lines(stderr)) == 1, stderr
  assert "Traceback" not in stderr
  assert seconds < FAST_S
  assert not (tmp_path / "w").exists()
  assert snapshot(synthmusic_tiny) == before


def test_missing_mixture_list_is_named_before_training(synthmusic_tiny, tmp_path):
  data = tmp_path / "data"
  shutil.copytree(synthmusic_tiny, data, copy_function=os.link)
  (data / "index" / "val_mixtures_n3.csv").unlink()
  before = snapshot(data)
  rc, stderr, _ = run_main(f"--workdir={tmp_path / 'w'}", f"--config.data.root={data}",
                           "--config.data.num_mix=3", config="configs/pretrain.py:tiny")
  assert rc == 2, stderr
  assert "val_mixtures_n3.csv does not exist" in stderr and "config.data.eval_split" in stderr
  assert snapshot(data) == before


def test_batch_that_does_not_split_over_the_devices_names_the_key(synthmusic_tiny, tmp_path):
  rc, stderr, _ = run_main(
      f"--workdir={tmp_path / 'w'}", f"--config.data.root={synthmusic_tiny}",
      "--config.data.batch_size=3", timeout=RUN_S,
      environment=env(XLA_FLAGS="--xla_force_host_platform_device_count=2"))
  assert rc == 2, stderr
  assert "config.data.batch_size=3: must be a positive multiple of 2 devices" in stderr
  assert not list((tmp_path / "w").glob("checkpoints*"))


def test_evaluate_on_an_empty_workdir_creates_nothing(synthmusic_tiny, tmp_path):
  for workdir in (tmp_path / "absent", tmp_path / "empty"):
    if workdir.name == "empty":
      workdir.mkdir()
    rc, stderr, _ = run_main(f"--workdir={workdir}", f"--config.data.root={synthmusic_tiny}",
                             "--mode=evaluate")
    assert rc == 1 and "no checkpoint in" in stderr, stderr
  assert not (tmp_path / "absent").exists() and not list((tmp_path / "empty").iterdir())


def test_check_mode_reports_and_creates_nothing(synthmusic_tiny, tmp_path):
  before = snapshot(synthmusic_tiny)
  result = subprocess.run(main_command(f"--config.data.root={synthmusic_tiny}", "--mode=check",
                                       f"--workdir={tmp_path / 'w'}"),
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=RUN_S)
  assert result.returncode == 0, result.stderr
  assert "check passed" in result.stdout and "train:" in result.stdout
  assert not (tmp_path / "w").exists()
  assert snapshot(synthmusic_tiny) == before


# ----------------------------------------------------------------------------------------------
# The workdir lock.
# ----------------------------------------------------------------------------------------------


def test_a_second_run_on_a_locked_workdir_fails_at_once(synthmusic_tiny, tmp_path):
  workdir = tmp_path / "w"
  first = subprocess.Popen(main_command(f"--workdir={workdir}",
                                        f"--config.data.root={synthmusic_tiny}"),
                           cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
  try:
    lock_file = workdir / workdir_lock.LOCK_FILE
    deadline = time.monotonic() + FAST_S
    while not (lock_file.is_file() and f"pid={first.pid}" in lock_file.read_text()):
      assert time.monotonic() < deadline and first.poll() is None, "first run never locked"
      time.sleep(0.1)
    rc, stderr, seconds = run_main(f"--workdir={workdir}",
                                   f"--config.data.root={synthmusic_tiny}")
    assert rc == 1 and seconds < FAST_S
    assert f"pid {first.pid} on host {socket.gethostname()}" in stderr, stderr
  finally:
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
  # The dead holder's lock file does not block the next run.
  lock = workdir_lock.WorkdirLock(str(workdir)).acquire()
  assert f"pid={os.getpid()}" in lock_file.read_text()
  lock.release()


# ----------------------------------------------------------------------------------------------
# Checkpoints: one trained workdir, copied per case.
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(synthmusic_tiny, tmp_path_factory):
  """A pose_pretrain tiny workdir with checkpoints of steps 1 and 2 (and its dataset path)."""
  workdir = tmp_path_factory.mktemp("trained") / "w"
  rc, stderr, _ = run_main(f"--workdir={workdir}", f"--config.data.root={synthmusic_tiny}",
                           "--config.num_train_steps=2", "--config.eval.at_end=False",
                           timeout=RUN_S)
  assert rc == 0, stderr[-3000:]
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["1", "2"]
  assert not workdir_lock_is_held(workdir)
  return workdir


def workdir_lock_is_held(workdir):
  try:
    workdir_lock.WorkdirLock(str(workdir)).acquire().release()
    return False
  except workdir_lock.WorkdirLockedError:
    return True


def test_a_truncated_latest_checkpoint_resumes_from_the_older_one(trained, synthmusic_tiny,
                                                                  tmp_path):
  workdir = tmp_path / "w"
  shutil.copytree(trained, workdir)
  for path in (workdir / "checkpoints" / "2" / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(path.read_bytes()[:10])
  rc, stderr, _ = run_main(f"--workdir={workdir}", f"--config.data.root={synthmusic_tiny}",
                           "--config.num_train_steps=2", "--config.eval.at_end=False",
                           timeout=RUN_S)
  assert rc == 0, stderr[-3000:]
  assert f"checkpoint {workdir / 'checkpoints' / '2'} is broken" in stderr
  assert "resumed from" in stderr and "at step 1" in stderr
  assert (workdir / "checkpoints" / "2" / "commit_success.txt").is_file()  # saved again
  assert len(list((workdir / "checkpoints_broken").iterdir())) == 1  # kept for inspection


KILLED_SAVER = """
import sys, time
import jax.numpy as jnp
from tribert_jax import checkpointing
checkpointer = checkpointing.Checkpointer(sys.argv[1], keep=5)
checkpointer.save(1, {"w": jnp.full((2048, 2048), 1.0)}, {"step": 1})
checkpointer.wait_until_finished()
print("saved 1", flush=True)
for step in range(2, 100):
  checkpointer.save(step, {"w": jnp.full((2048, 2048), float(step))}, {"step": step})
"""


def test_kill_9_during_a_save_then_resume(tmp_path):
  workdir = tmp_path / "w"
  saver = subprocess.Popen([sys.executable, "-c", KILLED_SAVER, str(workdir)], cwd=REPO,
                           env=env(), stdout=subprocess.PIPE, text=True)
  try:
    assert saver.stdout.readline().strip() == "saved 1"
    deadline = time.monotonic() + FAST_S
    while not any("tmp" in p.name for p in (workdir / "checkpoints").iterdir()):
      assert time.monotonic() < deadline and saver.poll() is None
      time.sleep(0.005)
  finally:
    saver.kill()
    saver.wait()
  import jax  # pylint: disable=g-import-not-at-top
  from tribert_jax import checkpointing  # pylint: disable=g-import-not-at-top
  abstract = {"w": jax.ShapeDtypeStruct((2048, 2048), jax.numpy.float32,
                                        sharding=jax.sharding.SingleDeviceSharding(
                                            jax.devices()[0]))}
  checkpointer = checkpointing.Checkpointer(str(workdir), keep=5)
  state, progress = checkpointer.restore_latest(abstract)
  step = progress["step"]
  assert float(state["w"][0, 0]) == float(step)
  checkpointer.save(step + 1, state, {"step": step + 1})  # the interrupted step saves again
  checkpointer.close()
  assert step + 1 in checkpointing.Checkpointer(str(workdir), read_only=True).latest.all_steps()


# ----------------------------------------------------------------------------------------------
# An error inside the tf.data stream ends the process (no hang in TensorFlow's shutdown).
# ----------------------------------------------------------------------------------------------


def test_a_jpeg_broken_after_validation_exits_naming_it(synthmusic_tiny, tmp_path):
  from configs import pose_pretrain  # pylint: disable=g-import-not-at-top
  from data_pipeline.loading import preflight  # pylint: disable=g-import-not-at-top
  data = tmp_path / "data"
  shutil.copytree(synthmusic_tiny, data, copy_function=os.link)  # hard links: no copying
  workdir = tmp_path / "w"
  workdir.mkdir()
  config = pose_pretrain.get_config("tiny")
  config.data.root = str(data)
  cache = workdir / "clip_validation.json"
  preflight.check(config.data, ["train"], 2, str(cache))  # validated (and cached) now
  # Broken afterwards, with size and mtime kept: the cache still says "valid".
  for frame in (data / "frames").rglob("*.jpg"):
    if frame.name == "000001.jpg":
      continue  # the case: frames after the first of a clip
    stat = frame.stat()
    frame.unlink()  # a new file: the fixture's hard-linked original stays intact
    frame.write_bytes(b"\0" * stat.st_size)
    os.utime(frame, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  rc, stderr, _ = run_main(f"--workdir={workdir}", f"--config.data.root={data}",
                           f"--config.data.validation_cache={cache}",
                           "--config.eval.at_end=False", timeout=RUN_S)
  assert rc == 1, stderr[-3000:]
  assert any(str(data / "frames") in line for line in error_lines(stderr)), stderr[-3000:]
