"""Checksummed checkpoints (issue 11): bit rot is caught by evaluate, predict and a resume, never trained on.

The corruption is real: bytes flipped in the Orbax (OCDBT) data file of a
checkpoint written by a real run.
"""
import json
import os
import shutil

import jax
import numpy as np
import pytest

from conftest import run_module, tiny_config
from jaxresnet import data
from jaxresnet.infra import rundir
from jaxresnet.training import inference
from jaxresnet.infra import checkpoints
from jaxresnet.infra import devices
from jaxresnet.training import evaluation
from jaxresnet.training import train
from jaxresnet.infra.errors import CheckpointError


def final_state(workdir):
  """The whole train state of the workdir's newest checkpoint, as numpy."""
  config = rundir.load_config(workdir)
  dataset = data.load_dataset(config)
  _, state, _ = train.build(config, dataset, devices.make_mesh())
  manager = checkpoints.create_manager(workdir, read_only=True)
  state, _ = checkpoints.restore_newest(manager, state, checkpoints.run_metadata(config, dataset), read_only=True)
  manager.close()
  return devices.to_host({'params': state.params, 'batch_stats': state.batch_stats, 'opt_state': state.opt_state,
                          'step': state.step, 'rng': state.rng})


def assert_trees_equal(a, b):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def data_file(workdir, step):
  """The biggest data file of a checkpoint: where its arrays are."""
  folder = os.path.join(workdir, 'checkpoints', str(step), 'state', 'ocdbt.process_0', 'd')
  return max((os.path.join(folder, name) for name in os.listdir(folder)), key=os.path.getsize)


def flip_bytes(path, offsets):
  with open(path, 'r+b') as f:
    for offset in offsets:
      f.seek(offset)
      byte = f.read(1)
      f.seek(offset)
      f.write(bytes([byte[0] ^ 0xFF]))


def every_4k(path):
  """One byte in every 4 KiB of a file: surely some of every array's bytes (Orbax lays them out in any order)."""
  return range(100, os.path.getsize(path), 4096)


def metadata_path(workdir, step):
  return os.path.join(workdir, 'checkpoints', str(step), 'metadata', 'metadata')


@pytest.fixture
def trained(image_folder, tmp_path):
  """A finished 6-step run (checkpoints 3 and 6), its config and its final state."""
  workdir = str(tmp_path / 'pristine')
  config = tiny_config(image_folder, eval_every_steps=0)
  train.train_and_evaluate(config, workdir)
  return workdir, config, final_state(workdir)


def copy_of(workdir, name):
  """A copy of the finished run, less its results.json: a run to resume (a finished one is not resumed)."""
  target = os.path.join(os.path.dirname(workdir), name)
  shutil.copytree(workdir, target, ignore=shutil.ignore_patterns('results.json'))
  return target


@pytest.mark.slow
def test_every_checkpoint_carries_a_checksum_of_each_field_and_its_seed_and_recipe(trained):
  workdir, config, _ = trained
  manager = checkpoints.create_manager(workdir, read_only=True)
  for step in (3, 6):
    metadata = checkpoints.read_metadata(manager, step)
    assert set(metadata['checksums']) == {'params', 'batch_stats', 'opt_state', 'step', 'rng', 'input_mean',
                                          'input_std'}
    assert metadata['seed'] == 0 and metadata['recipe']['learning_rate'] == config.learning_rate
    assert 'data_dir' not in metadata['recipe']  # Bookkeeping, not recipe.
  manager.close()


@pytest.mark.slow
def test_flipped_bytes_in_a_real_checkpoint_are_caught_by_evaluate_and_resume(trained, capfd):
  workdir, config, reference = trained
  _, _, _, pristine = inference.restore_model(workdir)
  pristine = devices.to_host(pristine)
  size = os.path.getsize(data_file(workdir, 6))
  caught_by_evaluate = 0
  # Single bytes here and there (which array each hits depends on the order Orbax wrote them in),
  # then one in every 4 KiB.
  for i, offsets in enumerate([[int(size * 0.01)], [int(size * 0.25)], [int(size * 0.6)], [int(size * 0.9)],
                               every_4k(data_file(workdir, 6))]):
    damaged = copy_of(workdir, f'flip{i}')
    flip_bytes(data_file(damaged, 6), offsets)
    capfd.readouterr()
    _, _, _, state = inference.restore_model(damaged)
    err = capfd.readouterr().err
    state = devices.to_host(state)
    if int(state.step) == 3:  # The flip hit what evaluate reads: it fell back, saying so once.
      caught_by_evaluate += 1
      # Mostly a value changed ('its content (params) no longer matches the checksum saved with it'); a flip
      # in a chunk's encoding makes TensorStore fail to read it instead.
      assert err.strip().startswith('warning: checkpoint 6 is unreadable (') and len(err.strip().splitlines()) == 1
      assert err.strip().endswith('); using the previous one'), err
    else:  # It hit only the optimizer state, which evaluate does not read: what it read is intact.
      assert int(state.step) == 6 and err == ''
      assert_trees_equal([getattr(state, f) for f in evaluation.INFERENCE_FIELDS],
                         [getattr(pristine, f) for f in evaluation.INFERENCE_FIELDS])
    # A resume reads everything: every flip is caught, checkpoint 6 is set aside and redone from 3.
    summary = train.train_and_evaluate(config, damaged)
    warnings = [l for l in capfd.readouterr().err.splitlines() if l.startswith('warning:')]
    assert len(warnings) == 1 and warnings[0].startswith('warning: checkpoint 6 is unreadable ('), warnings
    assert summary['step'] == 6 and os.path.isdir(os.path.join(damaged, 'unreadable_checkpoints', '6'))
    assert_trees_equal(reference, final_state(damaged))
  assert caught_by_evaluate >= 1  # At least the last: it hits the weights too.


@pytest.mark.slow
def test_evaluate_and_predict_commands_fall_back_from_a_flipped_checkpoint_in_one_line(trained, image_folder):
  workdir, _, _ = trained
  damaged = copy_of(workdir, 'flipped')
  flip_bytes(data_file(damaged, 6), every_4k(data_file(damaged, 6)))
  result = run_module('jaxresnet.evaluate', f'--workdir={damaged}', check=True)
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('warning: checkpoint 6 is unreadable (') and \
      lines[0].endswith('); using the previous one') and len(lines[0]) < 300, lines
  assert result.stdout.startswith('resnet8 at step 3 on test:')
  assert os.path.isdir(os.path.join(damaged, 'checkpoints', '6'))  # A reader moves nothing.
  named = run_module('jaxresnet.evaluate', f'--workdir={damaged}', '--step=6')
  lines = named.stderr.strip().splitlines()
  assert named.returncode == 1 and len(lines) == 1
  assert lines[0].startswith(f'error: cannot restore checkpoint 6 in {damaged}/checkpoints: ')
  predicted = run_module('jaxresnet.predict', f'--workdir={damaged}', os.path.join(image_folder, 'test', 'cat'),
                         check=True)
  assert predicted.stderr.strip().splitlines()[0].startswith('warning: checkpoint 6 is unreadable (')


def test_changed_values_that_still_decode_are_caught_by_the_checksum_alone(trained, capfd):
  """Checkpoint 6's arrays under checkpoint 3's checksums: every byte reads back fine, only the values differ."""
  workdir, config, reference = trained
  changed = copy_of(workdir, 'changed')
  shutil.copyfile(metadata_path(changed, 3), metadata_path(changed, 6))
  capfd.readouterr()
  _, _, _, state = inference.restore_model(changed)
  assert int(devices.to_host(state.step)) == 3
  assert capfd.readouterr().err.splitlines() == [
      'warning: checkpoint 6 is unreadable (its content (batch_stats, params, step) no longer matches the checksum '
      'saved with it); using the previous one']  # Evaluate reads no optimizer state.
  summary = train.train_and_evaluate(config, changed)
  warnings = [l for l in capfd.readouterr().err.splitlines() if l.startswith('warning:')]
  assert warnings == [
      'warning: checkpoint 6 is unreadable (its content (batch_stats, opt_state, params, step) no longer matches the '
      f'checksum saved with it); moved it to {changed}/unreadable_checkpoints/6 and falling back to the previous one']
  assert summary['step'] == 6
  assert_trees_equal(reference, final_state(changed))


def test_checkpoints_written_before_checksums_and_recipes_still_load_with_a_note(trained, capfd):
  workdir, config, reference = trained
  old = copy_of(workdir, 'old')
  for step in (3, 6):
    with open(metadata_path(old, step)) as f:
      metadata = json.load(f)
    for key in ('checksums', 'seed', 'recipe'):
      del metadata[key]
    with open(metadata_path(old, step), 'w') as f:
      json.dump(metadata, f)
  capfd.readouterr()
  _, _, _, state = inference.restore_model(old)
  assert int(devices.to_host(state.step)) == 6
  recipe_note = ('note: checkpoint 6 was written before checkpoints recorded their seed and recipe: they are not '
                 'compared with this config')
  checksum_note = 'note: checkpoint 6 was written before checkpoints carried checksums: its content is not verified'
  assert capfd.readouterr().err.splitlines() == [recipe_note, checksum_note]  # Evaluate compares them too.
  checkpoints._NOTED.clear()  # pylint: disable=protected-access  # Notes are once per process: as a new one.
  summary = train.train_and_evaluate(tiny_config(config.data_dir, eval_every_steps=0, num_train_steps=8), old)
  assert summary['step'] == 8
  notes = [l for l in capfd.readouterr().err.splitlines() if l.startswith('note:')]
  assert notes == [recipe_note, checksum_note]


def truncate_state(workdir, step):
  for folder, _, files in os.walk(os.path.join(workdir, 'checkpoints', str(step), 'state')):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)


@pytest.mark.slow
def test_when_no_checkpoint_is_intact_the_run_stops_unless_allow_fresh_start(trained, capfd):
  workdir, config, reference = trained
  broken = copy_of(workdir, 'broken')
  truncate_state(broken, 3)
  truncate_state(broken, 6)
  message = (f'no checkpoint in {broken}/checkpoints is intact (the unreadable ones are in '
             f'{broken}/unreadable_checkpoints); rerun with --config.allow_fresh_start=True to start over from step 0')
  with pytest.raises(CheckpointError) as error:
    train.train_and_evaluate(config, broken)
  assert str(error.value) == message
  assert len([l for l in capfd.readouterr().err.splitlines() if l.startswith('warning:')]) == 2
  with pytest.raises(CheckpointError) as error:  # Again: the checkpoints moved aside are not forgotten.
    train.train_and_evaluate(config, broken)
  assert str(error.value) == message
  config.allow_fresh_start = True
  summary = train.train_and_evaluate(config, broken)
  assert summary['step'] == 6
  assert_trees_equal(reference, final_state(broken))  # From step 0: the same run again.
  assert sorted(os.listdir(os.path.join(broken, 'unreadable_checkpoints'))) == ['3', '6']  # Kept.
