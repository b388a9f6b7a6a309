"""Data parallelism on 4 fake CPU devices: the sharded step must equal the one-device step.

JAX fixes the device count at start-up, so when this process has one device the
test re-runs this file in a child process with
XLA_FLAGS=--xla_force_host_platform_device_count=4.
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxresnet import data
from jaxresnet.infra import devices
from jaxresnet.training import train
from conftest import HANG_TIMEOUT_S, REPO, tiny_config

FOUR_DEVICES = '--xla_force_host_platform_device_count=4'


@pytest.mark.slow
def test_runs_with_four_devices():
  if jax.device_count() == 4:
    pytest.skip('already inside the 4-device child')
  env = {**os.environ, 'XLA_FLAGS': f'{os.environ.get("XLA_FLAGS", "")} {FOUR_DEVICES}'.strip(),
         'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-p', 'no:xdist',
                           os.path.abspath(__file__), '-k', 'four_device'],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=HANG_TIMEOUT_S)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert '3 passed' in result.stdout, result.stdout[-2000:]


def mesh_of(n):
  return jax.make_mesh((n,), ('data',), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:n])


def run_steps(config, dataset, mesh, num_steps):
  _, state, _ = train.build(config, dataset, mesh)
  steps_per_epoch = len(dataset.train_labels) // config.batch_size
  train_fn = train.make_train_fn(mesh, config, steps_per_epoch, dataset.num_classes)
  permutation = train.make_permutation_fn(mesh, config, len(dataset.train_labels))(jax.random.PRNGKey(0), 0)
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
  from jaxresnet.infra.errors import ConfigError
  with pytest.raises(ConfigError, match='batch_size=6 is not divisible by the 4 devices'):
    train.train_and_evaluate(tiny_config(image_folder, batch_size=6), str(tmp_path / 'bad'))


@pytest.mark.skipif(jax.device_count() != 4, reason='needs 4 devices (run by test_runs_with_four_devices)')
def test_four_device_population_splits_members_and_batch(image_folder, tmp_path):
  from jaxresnet.training import inference  # pylint: disable=g-import-not-at-top
  assert dict(devices.make_mesh(2).shape) == {'members': 2, 'data': 2}
  assert dict(devices.make_mesh(3).shape) == {'members': 1, 'data': 4}
  assert dict(devices.make_mesh(8).shape) == {'members': 4, 'data': 1}
  config = tiny_config(image_folder, batch_size=8, eval_batch_size=4, num_seeds=2, seed=1)
  dataset = data.load_dataset(config)
  mesh = devices.make_mesh(2)
  _, state, _ = train.build(config, dataset, mesh)
  leaf = jax.tree_util.tree_leaves(state.params)[0]
  assert leaf.shape[0] == 2 and len(leaf.sharding.device_set) == 4
  assert leaf.sharding.spec[0] == 'members'  # Each member lives on its own half of the devices.
  # Two steps, as in the test above: float32 sums taken in another order part ways fast at this learning rate.
  config.num_train_steps = 2
  summary = train.train_and_evaluate(config, str(tmp_path / 'population'))
  assert [m['seed'] for m in summary['members']] == [1, 2]
  single = train.train_and_evaluate(tiny_config(image_folder, batch_size=8, eval_batch_size=4, seed=2,
                                                num_train_steps=2), str(tmp_path / 'seed2'))
  first = lambda workdir: json.loads(open(os.path.join(workdir, 'metrics.jsonl')).readline())['train_loss']
  assert first(str(tmp_path / 'population' / 'seed2')) == pytest.approx(first(str(tmp_path / 'seed2')), rel=1e-5)
  assert summary['members'][1]['test_loss'] == pytest.approx(single['test_loss'], rel=1e-3)
  _, _, _, member = inference.restore_model(str(tmp_path / 'population'), seed=2)
  _, _, _, alone = inference.restore_model(str(tmp_path / 'seed2'))
  for a, b in zip(jax.tree_util.tree_leaves(devices.to_host(member.params)),
                  jax.tree_util.tree_leaves(devices.to_host(alone.params))):
    # Grouped (members') convolutions sum in another order than one net's: last bits, amplified by BatchNorm.
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
  # Three seeds on four devices: members cannot be split, so each batch is (8 = 4 x 2 per device).
  three = train.train_and_evaluate(tiny_config(image_folder, batch_size=8, eval_batch_size=4, num_seeds=3,
                                               num_train_steps=2), str(tmp_path / 'three'))
  assert len(three['members']) == 3
