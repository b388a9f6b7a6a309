"""Two processes on localhost joined by jax.distributed train as one run.

Each process holds its share of every global batch (its own device's slice);
they must end with identical parameters, equal to a one-process run on the
same global batch.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import HANG_TIMEOUT_S, REPO

pytestmark = pytest.mark.slow  # every test here spawns processes

WORKER = os.path.join(REPO, 'tests', 'distributed_worker.py')


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def launch(args, env):
  return subprocess.Popen([sys.executable, WORKER, *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def load(path):
  with np.load(path) as f:
    return [f[f'arr_{i}'] for i in range(len(f.files) - 3)], int(f['processes']), int(f['devices'])


def test_two_processes_match_one_process(image_folder, tmp_path):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': os.path.join(REPO, 'tests') + os.pathsep + REPO}
  env.pop('XLA_FLAGS', None)  # One CPU device per process.
  address = f'localhost:{free_port()}'
  workers = [launch([address, '2', str(i), image_folder, str(tmp_path / 'two'), str(tmp_path / f'p{i}.npz')], env)
             for i in range(2)]
  single = launch(['', '1', '0', image_folder, str(tmp_path / 'one'), str(tmp_path / 'single.npz')], env)
  outputs = [p.communicate(timeout=HANG_TIMEOUT_S)[0] for p in workers + [single]]
  for p, out in zip(workers + [single], outputs):
    assert p.returncode == 0, out[-4000:]

  p0, p1, one = (load(tmp_path / f) for f in ('p0.npz', 'p1.npz', 'single.npz'))
  assert (p0[1], p0[2]) == (2, 2) and (one[1], one[2]) == (1, 1)
  for a, b in zip(p0[0], p1[0]):
    np.testing.assert_array_equal(a, b)  # The two processes hold the very same model.
  for a, b in zip(p0[0], one[0]):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_sigterm_to_one_process_stops_every_process_at_the_same_step(image_folder, tmp_path):
  """Process 1 gets SIGTERM at step 3, not a log step: both stop together at step 10 (the next log step),
  with one checkpoint. Stopping alone, it would leave process 0 waiting for it in the next step."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': os.path.join(REPO, 'tests') + os.pathsep + REPO}
  env.pop('XLA_FLAGS', None)
  address = f'localhost:{free_port()}'
  workdir = str(tmp_path / 'two')
  workers = [launch([address, '2', str(i), image_folder, workdir, str(tmp_path / f'p{i}.json'), '3'], env)
             for i in range(2)]
  try:
    outputs = [p.communicate(timeout=HANG_TIMEOUT_S)[0] for p in workers]
  finally:
    for p in workers:
      if p.poll() is None:
        p.kill()
  for p, out in zip(workers, outputs):
    assert p.returncode == 0, out[-4000:]
  summaries = [json.load(open(tmp_path / f'p{i}.json')) for i in range(2)]
  assert summaries == [{'step': 10, 'stopped': 'a signal to another process'},
                       {'step': 10, 'stopped': 'SIGTERM'}]
  from jaxresnet.infra import checkpoints  # pylint: disable=g-import-not-at-top
  assert checkpoints.create_manager(workdir, read_only=True).all_steps() == [10]
