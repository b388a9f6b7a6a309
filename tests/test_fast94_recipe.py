"""configs/fast94.py through the normal loop: its config switches, the whitening init, the clock in results.json."""
import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_module, write_image_folder
from jaxresnet import data
from jaxresnet.infra import config as config_lib
from jaxresnet.infra import devices
from jaxresnet.infra.errors import ConfigError
from jaxresnet.models import whitened_vgg
from jaxresnet.training import jobs
from jaxresnet.training import optim
from jaxresnet.training import train
from test_reliability import assert_trees_equal, reference_and_resumed


def fast94_config(data_dir, **overrides):
  config = importlib.import_module('jaxresnet.configs.fast94').get_config()
  config.update(dataset='image_folder', data_dir=data_dir, batch_size=8, eval_batch_size=12,
                num_train_steps='2 epochs', checkpoint_every_steps='1 epochs', log_every_steps=3)
  config.update(**overrides)
  return config


def fake_state(step, seed=0):
  """Just what prepare_images reads: the step, the run's key and the normalization."""
  return train.TrainState(step=jnp.asarray(step), apply_fn=None, params={}, tx=None, opt_state=None, batch_stats={},
                          rng=jax.random.PRNGKey(seed), input_mean=jnp.zeros(3), input_std=jnp.ones(3))


def same(a, b):
  """Per image: equal up to float32 rounding (jit may compute x / 255 as x * (1 / 255))."""
  return np.all(np.isclose(a, b, rtol=1e-6, atol=1e-6), axis=(1, 2, 3))


def test_the_step_mirrors_each_image_the_other_way_every_epoch():
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8))
  indices = jnp.arange(100, 140)  # Dataset indices: the flip follows the image, not its place in the batch.
  recipe = train.Recipe(num_classes=10, crop_padding=0, flip='alternating')
  prepare = jax.jit(lambda state, epoch: train.prepare_images(state, images, True, recipe, indices, epoch))
  plain = np.asarray(data.normalize(images, 0.0, 1.0))
  mirrored = plain[:, :, ::-1]
  masks = []
  for step, epoch in ((0, 0), (7, 1), (13, 2)):  # Any step of an epoch: the mask depends on the epoch only.
    out = np.asarray(prepare(fake_state(step), epoch))
    is_mirrored = same(out, mirrored)
    assert np.all(is_mirrored ^ same(out, plain))
    masks.append(is_mirrored)
  assert 5 < masks[0].sum() < 35
  np.testing.assert_array_equal(masks[1], ~masks[0])
  np.testing.assert_array_equal(masks[2], masks[0])
  # Another seed, other coins; the random flip (the default) does not alternate.
  assert not np.array_equal(same(np.asarray(prepare(fake_state(0, seed=1), 0)), mirrored), masks[0])
  random_flip = train.Recipe(num_classes=10, crop_padding=0)
  flips = [same(np.asarray(train.prepare_images(fake_state(s), images, True, random_flip)), mirrored)
           for s in (0, 1)]
  assert not np.array_equal(flips[1], ~flips[0])


def test_reflect_padding_fills_the_border_with_the_image_not_zeros():
  images = jnp.full((64, 8, 8, 3), 200, jnp.uint8)  # Normalized: 200/255 everywhere, so zeros would show.
  recipe = train.Recipe(num_classes=10, crop_padding=2, crop_padding_mode='reflect')
  out = np.asarray(train.prepare_images(fake_state(0), images, True, recipe))
  np.testing.assert_allclose(out, 200 / 255, rtol=1e-6)
  zeros = np.asarray(train.prepare_images(fake_state(0), images, True, train.Recipe(num_classes=10, crop_padding=2)))
  assert (zeros == 0).any()


def test_linear_schedule_decays_to_zero_at_the_end():
  config = config_lib.default_config()
  config.update(schedule='linear', learning_rate=0.24, num_train_steps=200)
  schedule = optim.create_learning_rate_schedule(config, 25, 200)
  np.testing.assert_allclose([schedule(0), schedule(100), schedule(200)], [0.24, 0.12, 0.0], atol=1e-7)


def test_airbench_muon_is_refused_for_a_net_without_its_parameter_groups():
  config = importlib.import_module('jaxresnet.configs.fast94').get_config()
  config_lib.validate(config)
  config.model = 'resnet20'
  with pytest.raises(ConfigError, match="optimizer='airbench_muon' trains whitened_vgg's parameter groups"):
    config_lib.validate(config)


def test_run_clock_counts_nested_compile_spans_once_and_carries_over_a_resume():
  clock = jobs.RunClock({'train': 10.0, 'compile': 2.0})
  with clock:
    for event, start, end in ((jobs.COMPILE_EVENTS[0], 0.0, 3.0), (jobs.COMPILE_EVENTS[2], 1.0, 2.0),  # Nested.
                              (jobs.COMPILE_EVENTS[1], 2.5, 4.0), ('/jax/other', 0.0, 100.0), (jobs.COMPILE_EVENTS[2], 6.0, 7.0)):
      clock._listen(event, start, end)  # pylint: disable=protected-access
    assert clock.compile_seconds() == pytest.approx(5.0)  # [0, 4] and [6, 7].
    seconds = clock.seconds()
  assert seconds['compile'] == pytest.approx(7.0)
  assert seconds['train'] < 10.0  # This session's wall time (well under 5 s) less its 5 s of "compiling".
  with jobs.RunClock() as real:  # The listener hears a real compile.
    jax.jit(lambda x: x * 3 + 1)(jnp.arange(5.0)).block_until_ready()
  assert real.compile_seconds() > 0


@pytest.mark.slow
def test_build_sets_the_whitening_conv_from_the_normalized_training_images(tmp_path):
  config = fast94_config(write_image_folder(tmp_path / 'images'))
  dataset = data.load_dataset(config)
  _, state, _ = train.build(config, dataset, devices.make_mesh())
  mean, std = data.input_statistics(dataset.train_images, 'channel_mean_std')
  expected = whitened_vgg.whitening_kernel(np.asarray(data.normalize(dataset.train_images, mean, std)))
  np.testing.assert_allclose(state.params['whiten']['kernel'], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_fast94_trains_through_main_and_records_its_seconds(tmp_path):
  folder = write_image_folder(tmp_path / 'images')
  workdir = tmp_path / 'run'
  overrides = ['--config.dataset=image_folder', f'--config.data_dir={folder}', '--config.batch_size=8',
               '--config.eval_batch_size=12', "--config.num_train_steps=2 epochs",
               "--config.checkpoint_every_steps=1 epochs", '--config.log_every_steps=3']
  run_module('jaxresnet.main', '--config=configs/fast94.py', f'--workdir={workdir}', *overrides, check=True)
  results = json.loads((workdir / 'results.json').read_text())
  assert results['model'] == 'whitened_vgg' and results['step'] == 12  # 48 images, batch 8: 6 steps an epoch.
  assert 'tta_test_accuracy' in results and 'val_accuracy' not in results
  assert results['compile_seconds'] > 0 and results['train_seconds'] > 0
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [r['learning_rate'] for r in records if 'learning_rate' in r][-1] == pytest.approx(0.24 / 12, rel=1e-5)
  # evaluate rebuilds the net from the checkpoint alone (the whitening kernel is in it) and gets the same numbers.
  printed = run_module('jaxresnet.evaluate', f'--workdir={workdir}', check=True).stdout.splitlines()
  for prefix, name in (('', ''), ('tta_', ', tta (flip_translate)')):
    line = next((l for l in printed if l.startswith(f'whitened_vgg at step 12 on test{name}: ')), None)
    assert line is not None, (name, printed)
    assert f'accuracy {100 * results[prefix + "test_accuracy"]:.2f}%' in line, (line, results)


def test_the_committed_fast94_table_is_what_table_py_prints_from_the_committed_runs():
  import os  # pylint: disable=g-import-not-at-top
  import runpy  # pylint: disable=g-import-not-at-top
  from conftest import REPO  # pylint: disable=g-import-not-at-top
  here = os.path.join(REPO, 'results', 'fast94')
  table = runpy.run_path(os.path.join(here, 'table.py'))['table']()
  assert table in open(os.path.join(here, 'README.md')).read()
  for line in table.splitlines()[2:]:
    # The runs are the documented command: the config's 8 epochs at batch 500 or at the config's own 2,000.
    assert ('| 500 | 8 epochs (800) |' in line or '| 2000 | 8 epochs (200) |' in line or
            line.startswith('| mean')), line


def fast94_population_args(image_folder, workdir, steps):
  # 72 training images of batch 8: 9 steps an epoch, so a kill at step 6 resumes in epoch 0 and the resumed run
  # must mirror each image the other way from step 9 on, from the checkpointed state alone.
  return ['--config=configs/fast94.py', f'--workdir={workdir}', '--config.dataset=image_folder',
          f'--config.data_dir={image_folder}', '--config.batch_size=8', '--config.eval_batch_size=12',
          f'--config.num_train_steps={steps}', '--config.checkpoint_every_steps=3', '--config.log_every_steps=3',
          '--config.num_seeds=2']


@pytest.mark.slow
def test_a_fast94_population_killed_and_resumed_ends_bit_identical_and_predicts_per_seed(tmp_path):
  reference, resumed, killed = reference_and_resumed(fast94_population_args, tmp_path)
  assert_trees_equal(reference, resumed)
  kernels = np.asarray(resumed['params']['whiten']['kernel'])
  assert kernels.shape[0] == 2 and np.array_equal(kernels[0], kernels[1])  # Both seeds: one whitening of one data.
  assert not np.array_equal(np.asarray(resumed['params']['head']['kernel'])[0],
                            np.asarray(resumed['params']['head']['kernel'])[1])
  image = str(next((tmp_path / 'images' / 'test' / 'cat').iterdir()))
  for seed in (0, 1):
    results = json.loads((tmp_path / 'killed' / f'seed{seed}' / 'results.json').read_text())
    assert results['model'] == 'whitened_vgg' and results['step'] == 12 and 'tta_test_accuracy' in results
  predicted = run_module('jaxresnet.predict', f'--workdir={killed}', '--seed=1', image, check=True)
  assert predicted.stdout.startswith(f'{image}: '), predicted.stdout
