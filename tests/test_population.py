"""Populations (config.num_seeds > 1): many seeds in one compiled step, each member equal to its seed alone."""
import json
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxresnet.training import inference
from jaxresnet.infra import checkpoints
from jaxresnet.infra import devices
from jaxresnet.training import jobs
from jaxresnet.training import train
from jaxresnet.infra.errors import CheckpointError, ConfigError
from conftest import run_module, tiny_config, write_image_folder
from test_reliability import assert_trees_equal, final_state, reference_and_resumed, start


def visible(directory):
  """The folder's entries, less dotfiles (the workdir's lock)."""
  return sorted(n for n in os.listdir(directory) if not n.startswith('.'))


def first_logged(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(l) for l in f]


def params_of(workdir, seed=None):
  _, _, _, state = inference.restore_model(workdir, seed=seed)
  return devices.to_host(state.params)


@pytest.mark.slow
def test_member_k_computes_what_seed_k_computes_alone_and_another_seed_does_not(image_folder, tmp_path):
  population = str(tmp_path / 'population')
  summary = train.train_and_evaluate(tiny_config(image_folder, seed=3, num_seeds=3), population)
  assert [m['seed'] for m in summary['members']] == [3, 4, 5]
  alone = str(tmp_path / 'seed4')
  single = train.train_and_evaluate(tiny_config(image_folder, seed=4), alone)
  member = os.path.join(population, 'seed4')
  ours, theirs = first_logged(member), first_logged(alone)
  assert [r['step'] for r in ours] == [r['step'] for r in theirs]
  np.testing.assert_allclose(ours[0]['train_loss'], theirs[0]['train_loss'], rtol=1e-5)
  np.testing.assert_allclose(ours[-1]['test_loss'], theirs[-1]['test_loss'], rtol=1e-3)
  assert summary['members'][1]['test_accuracy'] == pytest.approx(single['test_accuracy'], abs=1 / 12 + 1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(params_of(population, 4)), jax.tree_util.tree_leaves(params_of(alone))):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
  # Another member is another run: its first loss is not seed 4's.
  other = first_logged(os.path.join(population, 'seed3'))
  assert abs(other[0]['train_loss'] - theirs[0]['train_loss']) > 1e-3


@pytest.mark.slow
def test_population_outputs_one_folder_per_seed_and_single_runs_keep_the_old_layout(image_folder, tmp_path):
  population = str(tmp_path / 'population')
  train.train_and_evaluate(tiny_config(image_folder, num_seeds=2), population)
  assert visible(population) == ['checkpoints', 'config.json', 'seed0', 'seed1']
  for seed in (0, 1):
    member = os.path.join(population, f'seed{seed}')
    assert visible(member) == ['config.json', 'metrics.jsonl', 'results.json', 'tensorboard']
    config = json.load(open(os.path.join(member, 'config.json')))
    assert config['seed'] == seed and config['num_seeds'] == 1  # The single run this member equals.
    results = json.load(open(os.path.join(member, 'results.json')))
    assert results['seed'] == seed and results['step'] == 6 and 'diverged_at_step' not in results
    assert [r['step'] for r in first_logged(member)] == [2, 3, 4, 6]
  # Checkpoints hold every member: one leading axis of 2.
  manager = checkpoints.create_manager(population, read_only=True)
  assert checkpoints.read_metadata(manager, 6)['num_seeds'] == 2
  assert json.load(open(os.path.join(population, 'config.json')))['num_seeds'] == 2


@pytest.mark.slow
def test_evaluate_and_predict_take_the_seed(image_folder, tmp_path):
  population = str(tmp_path / 'population')
  summary = train.train_and_evaluate(tiny_config(image_folder, num_seeds=2, seed=7), population)
  result = run_module('jaxresnet.evaluate', f'--workdir={population}', '--seed=8', check=True)
  assert f'loss {summary["members"][1]["test_loss"]:.4f}' in result.stdout
  missing = run_module('jaxresnet.evaluate', f'--workdir={population}')
  assert missing.returncode == 1
  assert missing.stderr.strip().splitlines()[-1] == (
      'error: this workdir holds a population of seeds 7-8; pass --seed=<one of them>')
  image = os.path.join(image_folder, 'test', 'cat', '0000.jpg')
  predicted = run_module('jaxresnet.predict', f'--workdir={population}', '--seed=7', image, check=True)
  assert predicted.stdout.startswith(f'{image}: ')
  with pytest.raises(CheckpointError, match=r'seeds 7-8; pass --seed=<one of them> \(not 3\)'):
    inference.restore_model(population, seed=3)


def test_a_frozen_member_drops_every_update_and_the_window_reports_each_diverged_member_once():
  window = jobs.MetricWindow(skip_nonfinite=False, num_members=3)
  window.add(1, {'loss': jnp.array([1.0, jnp.nan, 2.0]), 'accuracy': jnp.zeros(3),
                 'finite': jnp.array([True, False, True]), 'skipped': jnp.array([0, 1, 0])})
  window.add(2, {'loss': jnp.array([1.0, jnp.nan, jnp.inf]), 'accuracy': jnp.zeros(3),
                 'finite': jnp.array([True, False, False]), 'skipped': jnp.array([0, 1, 1])})
  assert window.check(last_good_step=0) == {1: 1, 2: 2}
  assert window.diverged == {1: 1, 2: 2}
  summary = window.summary()
  assert len(summary) == 3 and summary[0]['train_loss'] == 1.0


def test_train_step_of_a_frozen_member_changes_nothing_but_the_step(image_folder):
  config = tiny_config(image_folder)
  dataset = train.data.load_dataset(config)
  _, state, _ = train.build(config, dataset, devices.make_mesh())
  images = train.prepare_images(state, jnp.asarray(dataset.train_images[:8]), augment=False)
  labels = jnp.asarray(dataset.train_labels[:8])
  step = jax.jit(train.train_step, static_argnums=(3,))
  frozen, _ = step(state, images, labels, True, jnp.bool_(True))
  moved, _ = step(state, images, labels, True, jnp.bool_(False))
  assert int(frozen.step) == int(moved.step) == 1
  assert_trees_equal(devices.to_host((frozen.params, frozen.opt_state, frozen.batch_stats)),
                     devices.to_host((state.params, state.opt_state, state.batch_stats)))
  assert not np.array_equal(jax.tree_util.tree_leaves(moved.params)[0], jax.tree_util.tree_leaves(state.params)[0])


@pytest.mark.slow
@pytest.mark.parametrize('value, message', [
    ('0', 'config.num_seeds=0 must be a whole number of at least 1'),
    ('-2', 'config.num_seeds=-2 must be a whole number of at least 1'),
])
def test_bad_num_seeds_is_one_line(image_folder, tmp_path, value, message):
  result = run_module('jaxresnet.main', '--config=configs/default.py', f'--workdir={tmp_path / "run"}',
                      '--config.dataset=image_folder', f'--config.data_dir={image_folder}',
                      f'--config.num_seeds={value}')
  assert result.returncode != 0
  assert result.stderr.strip().splitlines() == [f'error: {message}']
  assert not os.path.exists(tmp_path / 'run')


@pytest.mark.slow
def test_num_seeds_that_is_not_an_integer_is_one_line(image_folder, tmp_path):
  result = run_module('jaxresnet.main', '--config=configs/default.py', f'--workdir={tmp_path / "run"}',
                      '--config.num_seeds=1.5')
  assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
  assert result.stderr.startswith('error: ') and 'num_seeds' in result.stderr
  with pytest.raises(ConfigError, match='whole number'):
    from jaxresnet.infra import config as config_lib  # pylint: disable=g-import-not-at-top
    config_lib.validate(tiny_config(image_folder, num_seeds=True))


def population_args(image_folder, workdir, steps, every=3):
  return ['--config=configs/default.py', f'--workdir={workdir}', '--config.model=resnet8',
          '--config.dataset=image_folder', f'--config.data_dir={image_folder}', '--config.batch_size=16',
          '--config.num_val_examples=8', f'--config.num_train_steps={steps}', '--config.eval_every_steps=0',
          f'--config.checkpoint_every_steps={every}', f'--config.log_every_steps={every}',
          '--config.lr_boundaries=(9,)', '--config.num_seeds=2']


@pytest.mark.slow
def test_population_killed_and_resumed_ends_bit_identical(tmp_path):
  reference, resumed, killed = reference_and_resumed(population_args, tmp_path)
  assert_trees_equal(reference, resumed)
  for seed in (0, 1):
    steps = [r['step'] for r in first_logged(os.path.join(killed, f'seed{seed}'))]
    assert steps == [3, 6, 9, 12]


@pytest.mark.slow
def test_population_sigterm_saves_all_members_and_exits_zero(tmp_path):
  image_folder = write_image_folder(tmp_path / 'images', train_per_class=24)
  workdir = str(tmp_path / 'run')
  child = start(population_args(image_folder, workdir, 5000, every=1000)[:-3] + [
      '--config.log_every_steps=5', '--config.lr_boundaries=(4000,)', '--config.num_seeds=2'])
  while True:
    line = child.stdout.readline()
    assert line, 'the run ended before training'
    if line.startswith('step'):
      break
  child.send_signal(signal.SIGTERM)
  out, _ = child.communicate(timeout=120)
  assert child.returncode == 0, out
  stopped_at = int(out.split('stopped by SIGTERM at step ')[1].split(':')[0])
  assert checkpoints.create_manager(workdir, read_only=True).all_steps() == [stopped_at]
  assert list(final_state(workdir)['step']) == [stopped_at, stopped_at]
  for seed in (0, 1):
    assert first_logged(os.path.join(workdir, f'seed{seed}'))[-1]['step'] == stopped_at


@pytest.mark.slow
def test_reproduce_trains_the_seeds_of_a_model_as_one_population(image_folder, tmp_path):
  from jaxresnet.experiments import reproduction, tables  # pylint: disable=g-import-not-at-top
  from test_reproduce import SCALE, TINY  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'he2016')
  settings = dict(workdir=workdir, models=['resnet8'], seeds=2, steps_scale=SCALE,
                  overrides={**TINY, 'data_dir': image_folder})
  reproduction.reproduce(**settings)
  model_dir = os.path.join(workdir, 'resnet8')
  assert visible(model_dir) == ['checkpoints', 'config.json', 'seed0', 'seed1']
  for seed in (0, 1):
    timing = json.load(open(os.path.join(model_dir, f'seed{seed}', 'timing.json')))['sessions'][0]
    assert timing['num_seeds'] == 2 and timing['seconds'] == pytest.approx(timing['population_seconds'] / 2)
  row = tables.collect(workdir)['models'][-1]
  assert row['model'] == 'resnet8' and row['num_finished'] == 2 and row['test_error_std'] is not None
  before = os.path.getmtime(os.path.join(model_dir, 'seed1', 'results.json'))
  reproduction.reproduce(**settings)  # Finished: nothing is trained again.
  assert os.path.getmtime(os.path.join(model_dir, 'seed1', 'results.json')) == before
