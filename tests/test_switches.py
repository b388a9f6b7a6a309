"""The recipe switches (configs/default.py) wired into the train step: off changes nothing, each trains
on real data, EMA/TTA are evaluated and reported, and kill -9 + resume stays bit-identical with all on."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxresnet import data
from jaxresnet.infra import devices
from jaxresnet.training import train
from jaxresnet.infra.errors import ConfigError
from conftest import tiny_config
from float32_tolerance import sum_atol
from test_reliability import assert_trees_equal, reference_and_resumed

SWITCHES = {
    'cutout': {'cutout': 8},
    'label_smoothing': {'label_smoothing': 0.1},
    'mixup': {'mixup_alpha': 0.2},
    'cutmix': {'cutmix_alpha': 1.0},
    'randaugment': {'randaugment': '2,9'},
    'autoaugment': {'randaugment': 'autoaugment'},
    'ema': {'ema_decay': 0.9},
    'tta_flip': {'tta': 'flip'},
    'tta_flip_translate': {'tta': 'flip_translate'},
    'sam': {'sam_rho': 0.05},
}
ALL_ON = {'cutout': 8, 'label_smoothing': 0.1, 'mixup_alpha': 0.2, 'cutmix_alpha': 1.0, 'randaugment': '2,9',
          'ema_decay': 0.9, 'tta': 'flip', 'sam_rho': 0.05}


def batch_of(config, n=8):
  dataset = data.load_dataset(config)
  _, state, _ = train.build(config, dataset, devices.make_mesh())
  return state, jnp.asarray(dataset.train_images[:n]), jnp.asarray(dataset.train_labels[:n]), dataset


@pytest.mark.slow
def test_all_switches_off_compute_exactly_what_the_step_computed_without_them(image_folder):
  config = tiny_config(image_folder)
  state, images, labels, dataset = batch_of(config)
  off = train.Recipe.from_config(config, dataset.num_classes)
  assert off == train.Recipe(num_classes=dataset.num_classes)
  plain = train.prepare_images(state, images, augment=True)
  np.testing.assert_array_equal(plain, train.prepare_images(state, images, True, off))
  a, _ = jax.jit(train.train_step)(state, plain, labels)
  b, _ = jax.jit(lambda s, x, y: train.train_step(s, x, y, recipe=off))(state, plain, labels)
  assert_trees_equal(devices.to_host(a.params), devices.to_host(b.params))


@pytest.mark.slow
def test_cutout_and_randaugment_change_the_batch_and_keep_the_crop_and_flip_stream(image_folder):
  config = tiny_config(image_folder, cutout=8)
  state, images, _, dataset = batch_of(config)
  recipe = train.Recipe.from_config(config, dataset.num_classes)
  plain = np.asarray(train.prepare_images(state, images, True))
  cut = np.asarray(train.prepare_images(state, images, True, recipe))
  changed = np.any(cut != plain, axis=-1)  # (n, h, w): pixels the square covered
  assert np.all(cut[changed] == 0)  # Set to the mean, which is 0 after normalization.
  assert 0 < changed.sum(axis=(1, 2)).min() and changed.sum(axis=(1, 2)).max() <= 64
  np.testing.assert_array_equal(cut[~changed], plain[~changed])  # Same crop and flip elsewhere.
  policy = train.Recipe.from_config(tiny_config(image_folder, randaugment='2,9'), dataset.num_classes)
  assert not np.array_equal(np.asarray(train.prepare_images(state, images, True, policy)), plain)


@pytest.mark.slow
def test_ema_weights_follow_their_recurrence_in_the_step(image_folder):
  config = tiny_config(image_folder, ema_decay=0.75)
  state, images, labels, dataset = batch_of(config)
  assert isinstance(state, train.EmaTrainState)
  recipe = train.Recipe.from_config(config, dataset.num_classes)
  new, _ = jax.jit(lambda s: train.train_step(s, train.prepare_images(s, images, False), labels, recipe=recipe))(state)
  for ema, before, after in zip(*(jax.tree_util.tree_leaves(devices.to_host(t)) for t in
                                  (new.ema_params, state.params, new.params))):
    # Two products and a sum (maybe one FMA) on either side: a few ulps of the terms' magnitudes.
    np.testing.assert_allclose(ema, 0.75 * before + 0.25 * after, rtol=0,
                               atol=sum_atol(3, 0.75 * np.abs(before) + 0.25 * np.abs(after)))


@pytest.mark.parametrize('overrides, message', [
    ({'cutout': -1}, 'config.cutout=-1 must be a finite number >= 0'),
    ({'label_smoothing': 1.0}, r'config.label_smoothing=1.0 must be in \[0, 1\)'),
    ({'ema_decay': float('nan')}, r'config.ema_decay=nan must be in \[0, 1\)'),
    ({'mixup_alpha': float('inf')}, 'config.mixup_alpha=inf must be a finite number'),
    ({'randaugment': '2'}, "randaugment='2': expected"),
    ({'tta': 'mirror'}, "config.tta='mirror' is not one of"),
])
def test_bad_switch_values_are_config_errors(image_folder, overrides, message):
  from jaxresnet.infra import config as config_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match=message):
    config_lib.validate(tiny_config(image_folder, **overrides))


@pytest.mark.parametrize('name', sorted(SWITCHES))
def test_each_switch_trains_on_cifar10_jpeg(cifar10_subset, tmp_path, name):
  config = tiny_config(cifar10_subset, **SWITCHES[name], batch_size=32, eval_batch_size=50, num_val_examples=50,
                       num_train_steps=60, log_every_steps=10, eval_every_steps=60, checkpoint_every_steps=60,
                       lr_boundaries=(45,))
  workdir = str(tmp_path / name)
  summary = train.train_and_evaluate(config, workdir)
  records = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  losses = [r['train_loss'] for r in records if 'train_loss' in r]
  print(f'{name}: train loss {losses[0]:.3f} -> {losses[-1]:.3f}, test accuracy {summary["test_accuracy"]:.3f}')
  assert losses[-1] < losses[0]
  assert summary['test_accuracy'] > 0.15  # 10 classes: chance is 0.10, on 100 test images.
  if 'ema_decay' in SWITCHES[name]:
    assert 0 <= summary['ema_test_error'] <= 1 and 'ema_test_accuracy' in records[-1]
  if 'tta' in SWITCHES[name]:
    assert 0 <= summary['tta_test_error'] <= 1 and 'tta_test_accuracy' in records[-1]


def switch_args(image_folder, workdir, steps):
  return (['--config=configs/default.py', f'--workdir={workdir}', '--config.model=resnet8',
           '--config.dataset=image_folder', f'--config.data_dir={image_folder}', '--config.batch_size=16',
           '--config.num_val_examples=8', f'--config.num_train_steps={steps}', '--config.eval_every_steps=0',
           '--config.checkpoint_every_steps=3', '--config.log_every_steps=3', '--config.lr_boundaries=(9,)'] +
          [f'--config.{k}={v}' for k, v in ALL_ON.items()])


@pytest.mark.slow
def test_killed_and_resumed_with_every_switch_on_ends_bit_identical(tmp_path):
  reference_state, killed_state, killed = reference_and_resumed(switch_args, tmp_path)
  assert {'ema_params', 'ema_batch_stats'} <= set(reference_state)
  assert_trees_equal(reference_state, killed_state)
  results = json.load(open(os.path.join(killed, 'results.json')))
  assert {'ema_test_error', 'tta_test_error', 'ema_tta_test_error'} <= set(results)
