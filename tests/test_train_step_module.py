"""The train step compiles without TensorFlow in the process: tribert_jax.train_step and the
task, initialiser and optimiser modules import neither the tf.data pipeline nor TensorBoard's
writer (TensorFlow alone holds ~0.5 GiB resident; benchmarks measure the step's memory)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PROGRAM = """
import sys
from benchmarks import common, versus_release
from tribert_jax import initialization, optimizers, sharding, train_step
from tribert_jax.tasks import classification, registry, separation
print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorboard")))
"""


def test_the_train_step_and_its_benchmarks_do_not_import_tensorflow():
  environ = dict(os.environ, PYTHONPATH=REPO)
  out = subprocess.run([sys.executable, "-c", _PROGRAM], env=environ, cwd=REPO,
                       capture_output=True, text=True, timeout=300, check=True)
  assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_training_loop_still_reaches_the_step_and_the_pipeline():
  from tribert_jax import train  # pylint: disable=g-import-not-at-top
  from tribert_jax import train_step  # pylint: disable=g-import-not-at-top
  assert train.make_train_step is train_step.make_train_step
  from data_pipeline.loading import pipeline  # pylint: disable=g-import-not-at-top
  assert callable(pipeline.build_train_pipeline)
