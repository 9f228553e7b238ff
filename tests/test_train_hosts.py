"""Two processes (jax.distributed on 127.0.0.1) train one step together and agree on the loss
and on the gathered evaluation; subprocesses with a timeout, so a hang is a failure. The model is
tiny Sound-of-Pixels: the multi-host path (sharded batches, gathered scores) is the trainer's and
the same for every model, and it compiles in a fraction of TriBERT's time."""

import os
import socket

import numpy as np

from train_helpers import launch_one_step, one_step_result


def test_two_processes_train_one_step_together(synthmusic_tiny, tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  processes = [launch_one_step(1, synthmusic_tiny, tmp_path / "run", batch_size=2,
                               evaluate=True, coordinator=f"127.0.0.1:{port}", num_processes=2,
                               process_id=i, config_module="sound_of_pixels")
               for i in range(2)]
  results = [one_step_result(p) for p in processes]
  assert [r["devices"] for r in results] == [2, 2]
  assert results[0]["loss"] == results[1]["loss"] and np.isfinite(results[0]["loss"])
  # Both hosts gathered every host's scores and agree on the metrics.
  assert results[0]["eval"] == results[1]["eval"]
  assert results[0]["eval"]["num_mixtures"] >= 2
  assert os.path.isdir(tmp_path / "run" / "checkpoints" / "1")
