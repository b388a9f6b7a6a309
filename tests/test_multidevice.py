"""Data parallelism on 4 fake CPU devices: the sharded step must equal the one-device step.

JAX fixes the device count at start-up, so when this process has one device the
test re-runs this file in a child process with
XLA_FLAGS=--xla_force_host_platform_device_count=4.
"""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxresnet import data, devices, train
from conftest import REPO, tiny_config

FOUR_DEVICES = '--xla_force_host_platform_device_count=4'


def test_runs_with_four_devices():
  if jax.device_count() == 4:
    pytest.skip('already inside the 4-device child')
  env = {**os.environ, 'XLA_FLAGS': f'{os.environ.get("XLA_FLAGS", "")} {FOUR_DEVICES}'.strip(),
         'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-p', 'no:xdist',
                           os.path.abspath(__file__), '-k', 'four_device'],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert '2 passed' in result.stdout, result.stdout[-2000:]


def mesh_of(n):
  return jax.make_mesh((n,), ('data',), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:n])


def run_steps(config, dataset, mesh, num_steps):
  _, state, _ = train.build(config, dataset, mesh)
  steps_per_epoch = len(dataset.train_labels) // config.batch_size
  train_fn = train.make_train_fn(mesh, config, steps_per_epoch)
  permutation = train.make_permutation_fn(mesh, len(dataset.train_labels))(jax.random.PRNGKey(0), 0)
  images, labels = devices.replicate(mesh, dataset.train_images), devices.replicate(mesh, dataset.train_labels)
  for _ in range(num_steps):
    state, metrics = train_fn(state, images, labels, permutation)
  return state, metrics


@pytest.mark.skipif(jax.device_count() != 4, reason='needs 4 devices (run by test_runs_with_four_devices)')
def test_four_device_step_equals_one_device_step(image_folder):
  config = tiny_config(image_folder, batch_size=16)
  dataset = data.load_dataset(config)
  # Two steps: the second starts from updated weights, momentum and running statistics. Not more:
  # at this learning rate (loss 1.3 -> 0.13 by the third step) the last-bit differences of float32
  # sums taken in another order grow too fast to compare closely.
  one, one_metrics = run_steps(config, dataset, mesh_of(1), 2)
  four, four_metrics = run_steps(config, dataset, mesh_of(4), 2)
  # The step really ran on four devices.
  leaf = jax.tree_util.tree_leaves(four.params)[0]
  assert len(leaf.sharding.device_set) == 4
  np.testing.assert_allclose(float(one_metrics['loss']), float(four_metrics['loss']), rtol=1e-5)
  # Parameters and BatchNorm statistics match: the statistics are taken over the global batch, not
  # per device (per-device statistics would give different running variances and gradients).
  for a, b in zip(jax.tree_util.tree_leaves(devices.to_host((one.params, one.batch_stats))),
                  jax.tree_util.tree_leaves(devices.to_host((four.params, four.batch_stats)))):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


@pytest.mark.skipif(jax.device_count() != 4, reason='needs 4 devices (run by test_runs_with_four_devices)')
def test_four_device_train_and_evaluate_and_bad_batch(image_folder, tmp_path):
  summary = train.train_and_evaluate(tiny_config(image_folder, batch_size=8, eval_batch_size=4),
                                     str(tmp_path / 'run'))
  assert summary['devices'].startswith('4 x') and summary['step'] == 6
  from jaxresnet.errors import ConfigError
  with pytest.raises(ConfigError, match='batch_size=6 is not divisible by the 4 devices'):
    train.train_and_evaluate(tiny_config(image_folder, batch_size=6), str(tmp_path / 'bad'))
