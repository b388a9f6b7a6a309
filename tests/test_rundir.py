"""The run directory's one owner (infra/rundir.py): one 'finished' rule, one 'same run' rule, member folders
written by their population only, and checkpoints that are not this run's refused everywhere.

The runs are real and tiny (conftest.tiny_config); the commands run as processes, as a user runs them.
"""
import json
import os
import re
import shutil

import pytest

from conftest import run_module, tiny_config
from jaxresnet.infra import rundir
from jaxresnet.infra.errors import CheckpointError, ConfigError, DataError
from jaxresnet.training import train


def tiny_flags(image_folder, workdir, steps=6, seed=0):
  """main's command line for conftest.tiny_config."""
  return ['--config=configs/default.py', f'--workdir={workdir}', '--config.model=resnet8',
          '--config.dataset=image_folder', f'--config.data_dir={image_folder}', '--config.batch_size=8',
          '--config.eval_batch_size=8', '--config.num_val_examples=8', f'--config.num_train_steps={steps}',
          '--config.log_every_steps=2', '--config.eval_every_steps=3', '--config.checkpoint_every_steps=3',
          '--config.lr_boundaries=(4,)', f'--config.seed={seed}']


def snapshot(directory):
  """Every file below `directory` with its bytes: what must not change."""
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        files[os.path.relpath(path, directory)] = f.read()
  return files


def last_line(result):
  return result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ''


# --------------------------------------------------------------------------
# The rules.


def test_same_run_counts_a_field_the_file_lacks_as_its_default_and_ignores_bookkeeping(image_folder, tmp_path):
  config = tiny_config(image_folder)
  directory = str(tmp_path / 'run')
  rundir.write_config(directory, config)
  saved = json.load(open(os.path.join(directory, 'config.json')))
  for field in ('tta', 'ema_decay'):  # A run started before these fields were added to configs/default.py.
    del saved[field]
  rundir.write_json(os.path.join(directory, 'config.json'), saved)
  rundir.check_same_run(directory, config)
  rundir.check_same_run(directory, tiny_config('/elsewhere', cache_dir='/tmp/c', eval_every_steps=5))
  with pytest.raises(ConfigError, match=r"tta: '' there, 'flip' now"):
    rundir.check_same_run(directory, tiny_config(image_folder, tta='flip'))
  peer = tiny_config(image_folder)
  peer.trainer = 'pytorch'
  with pytest.raises(ConfigError, match=r"trainer: 'jaxresnet' there, 'pytorch' now"):
    rundir.check_same_run(directory, peer)


def test_finished_is_results_at_the_last_step_of_every_member(tmp_path):
  config = tiny_config('unused', num_seeds=2, seed=3)
  workdir = str(tmp_path / 'population')
  assert rundir.member_dirs(config, workdir) == [os.path.join(workdir, 'seed3'), os.path.join(workdir, 'seed4')]
  rundir.write_results(os.path.join(workdir, 'seed3'), {'step': 6})
  assert not rundir.finished(config, workdir)
  rundir.write_results(os.path.join(workdir, 'seed4'), {'step': 5})
  assert not rundir.finished(config, workdir) and rundir.finished(config, workdir, total_steps=None) is False
  rundir.write_results(os.path.join(workdir, 'seed4'), {'step': 6})
  assert rundir.finished(config, workdir)
  with open(os.path.join(workdir, 'seed4', 'results.json'), 'w') as f:
    f.write('{"step": 6, "test_')  # Cut short by a crash: not finished.
  assert not rundir.finished(config, workdir)


# --------------------------------------------------------------------------
# A population's member folders.


@pytest.fixture(scope='module')
def population(tmp_path_factory):
  """A finished population of seeds 0-1 (members in WORKDIR/seed0, WORKDIR/seed1)."""
  from conftest import write_image_folder  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('population')
  folder = write_image_folder(root / 'images')
  workdir = str(root / 'population')
  train.train_and_evaluate(tiny_config(folder, num_seeds=2, num_train_steps=3, cache_dir=str(root / 'cache')),
                           workdir)
  return workdir, folder


@pytest.mark.slow
def test_a_member_folder_is_refused_as_a_workdir_and_left_unchanged(population):
  workdir, folder = population
  member = os.path.join(workdir, 'seed0')
  before = snapshot(member)
  assert {'config.json', 'metrics.jsonl', 'results.json'} <= set(before)
  expected = f'error: {member} is seed 0 of the population in {workdir}'
  trained = run_module('jaxresnet.main', *tiny_flags(folder, member, steps=3))
  assert trained.returncode == 1 and last_line(trained).startswith(expected), trained.stderr
  assert len(trained.stderr.strip().splitlines()) == 1
  swept = run_module('jaxresnet.sweep', *tiny_flags(folder, member, steps=3), '--sweep.learning_rate=0.05')
  assert swept.returncode == 1 and last_line(swept).startswith(expected), swept.stderr
  reproduced = run_module('jaxresnet.reproduce', f'--workdir={member}', '--models=resnet8', '--seeds=1',
                          '--dataset=image_folder', f'--data_dir={folder}', '--steps_scale=0.0001')
  assert reproduced.returncode == 1 and last_line(reproduced).startswith(expected), reproduced.stderr
  evaluated = run_module('jaxresnet.evaluate', f'--workdir={member}')
  assert evaluated.returncode == 1 and last_line(evaluated).startswith(expected), evaluated.stderr
  assert f'--workdir={workdir} (with --seed=0' in last_line(evaluated)
  assert snapshot(member) == before  # Byte for byte.
  # The population itself still resumes (and finds itself finished) in its own workdir.
  with pytest.raises(CheckpointError, match='is seed 1 of the population'):
    train.train_and_evaluate(tiny_config(folder, num_train_steps=3, seed=1), os.path.join(workdir, 'seed1'))


# --------------------------------------------------------------------------
# Checkpoints that are not this run's.


@pytest.fixture(scope='module')
def two_runs(tmp_path_factory):
  """Two finished 6-step runs of seeds 0 and 1 (checkpoints 3 and 6 each), and their image folder."""
  from conftest import write_image_folder  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('two_runs')
  folder = write_image_folder(root / 'images')
  runs = []
  for seed in (0, 1):
    workdir = str(root / f'seed{seed}_run')
    train.train_and_evaluate(tiny_config(folder, seed=seed, cache_dir=str(root / 'cache')), workdir)
    runs.append(workdir)
  return runs, folder, root


@pytest.mark.slow
def test_a_checkpoint_copied_under_another_step_number_is_refused_everywhere(two_runs):
  (run, _), folder, root = two_runs
  copied = str(root / 'copied')
  shutil.copytree(run, copied)
  shutil.copytree(os.path.join(copied, 'checkpoints', '3'), os.path.join(copied, 'checkpoints', '9'))  # cp -a 3 9
  expected = f'error: checkpoint 9 in {copied}/checkpoints holds the state of step 3'
  evaluated = run_module('jaxresnet.evaluate', f'--workdir={copied}')
  assert evaluated.returncode == 1 and last_line(evaluated).startswith(expected), evaluated.stdout + evaluated.stderr
  assert len(evaluated.stderr.strip().splitlines()) == 1
  predicted = run_module('jaxresnet.predict', f'--workdir={copied}', os.path.join(folder, 'test', 'cat'))
  assert predicted.returncode == 1 and last_line(predicted).startswith(expected), predicted.stderr
  resumed = run_module('jaxresnet.main', *tiny_flags(folder, copied, steps=12))
  assert resumed.returncode == 1 and last_line(resumed).startswith(expected), resumed.stdout + resumed.stderr
  assert 'resumed from' not in resumed.stdout
  assert sorted(os.listdir(os.path.join(copied, 'checkpoints'))) == ['3', '6', '9']  # Nothing moved or deleted.
  named = run_module('jaxresnet.evaluate', f'--workdir={copied}', '--step=6', check=True)  # The others still serve.
  assert named.stdout.startswith('resnet8 at step 6 on test:')


@pytest.mark.slow
def test_another_runs_checkpoint_copied_into_the_workdir_is_refused_by_evaluate_and_predict(two_runs):
  (run, other), folder, root = two_runs
  mixed = str(root / 'mixed')
  shutil.copytree(run, mixed)
  shutil.rmtree(os.path.join(mixed, 'checkpoints', '6'))
  shutil.copytree(os.path.join(other, 'checkpoints', '6'), os.path.join(mixed, 'checkpoints', '6'))
  # checkpoints.check_same_run's line, which names the checkpoints' folder and the seeds (as a recipe or an
  # identity field).
  expected = re.compile(rf'error: (checkpoint 6 in )?{re.escape(mixed)}/checkpoints .*'
                        r'(seed=1, but this config has seed=0|seed: 1, this config: 0)')
  evaluated = run_module('jaxresnet.evaluate', f'--workdir={mixed}')
  assert evaluated.returncode == 1 and expected.match(last_line(evaluated)), evaluated.stdout + evaluated.stderr
  assert len(evaluated.stderr.strip().splitlines()) == 1 and evaluated.stdout == ''
  named = run_module('jaxresnet.evaluate', f'--workdir={mixed}', '--step=6')
  assert named.returncode == 1 and expected.match(last_line(named)), named.stderr
  predicted = run_module('jaxresnet.predict', f'--workdir={mixed}', os.path.join(folder, 'test', 'cat'))
  assert predicted.returncode == 1 and expected.match(last_line(predicted)), predicted.stderr
  resumed = run_module('jaxresnet.main', *tiny_flags(folder, mixed, steps=12))  # As main always refused it.
  assert resumed.returncode == 1 and expected.match(last_line(resumed)), resumed.stderr


# --------------------------------------------------------------------------
# A finished run's length, and the data a run trained on.


def test_a_finished_run_rerun_shorter_or_with_another_recipe_is_refused_and_left_byte_identical(image_folder,
                                                                                               tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(image_folder), workdir)
  before = snapshot(workdir)
  with pytest.raises(ConfigError, match=r'finished at step 6; num_train_steps=3 would end it earlier'):
    train.train_and_evaluate(tiny_config(image_folder, num_train_steps=3), workdir)
  assert snapshot(workdir) == before
  shutil.rmtree(os.path.join(workdir, 'checkpoints'))  # Its records alone: still that run's.
  before = snapshot(workdir)
  with pytest.raises(ConfigError, match=r'different config \(learning_rate: 0.1 there, 0.05 now\)'):
    train.train_and_evaluate(tiny_config(image_folder, learning_rate=0.05), workdir)
  assert snapshot(workdir) == before


def partial_run(image_folder, workdir):
  """A run killed after its checkpoint at step 3: trained to 6, then its checkpoint 6 and results removed."""
  train.train_and_evaluate(tiny_config(image_folder), workdir)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '6'))
  os.remove(os.path.join(workdir, 'results.json'))


def test_resuming_on_other_images_is_refused_naming_both_unless_allowed_and_then_recorded(image_folder, tmp_path):
  from conftest import write_image_folder  # pylint: disable=g-import-not-at-top
  other = write_image_folder(tmp_path / 'other', seed=1)  # The same file names and classes, other pixels.
  workdir = str(tmp_path / 'run')
  partial_run(image_folder, workdir)
  fingerprint = json.load(open(os.path.join(workdir, 'config.json')))['data_fingerprint']
  assert set(fingerprint) == {'train', 'test'}
  before = snapshot(workdir)
  with pytest.raises(DataError) as refused:
    train.train_and_evaluate(tiny_config(other), workdir)
  message = str(refused.value)
  assert 'checkpoint 3' in message and fingerprint['train'] in message and image_folder in message
  assert other in message and 'allow_data_change' in message and '\n' not in message
  assert snapshot(workdir) == before

  summary = train.train_and_evaluate(tiny_config(other, allow_data_change=True), workdir)
  assert summary['step'] == 6
  saved = json.load(open(os.path.join(workdir, 'config.json')))
  assert saved['allow_data_change'] is True
  [change] = saved['data_changes']
  assert (change['step'], change['from'], change['from_data_dir'], change['to_data_dir']) == (
      3, fingerprint, image_folder, other)
  assert saved['data_fingerprint'] == change['to'] != fingerprint


def test_a_checkpoint_and_config_json_without_a_data_fingerprint_resume_as_before(image_folder, tmp_path):
  from conftest import write_image_folder  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'run')
  partial_run(image_folder, workdir)
  metadata_path = os.path.join(workdir, 'checkpoints', '3', 'metadata', 'metadata')
  metadata = json.load(open(metadata_path))
  for key in ('data_fingerprint', 'data_dir'):  # As written before runs recorded their data.
    del metadata[key]
  json.dump(metadata, open(metadata_path, 'w'))
  saved = json.load(open(os.path.join(workdir, 'config.json')))
  del saved['data_fingerprint']
  json.dump(saved, open(os.path.join(workdir, 'config.json'), 'w'))
  other = write_image_folder(tmp_path / 'other', seed=1)
  assert train.train_and_evaluate(tiny_config(other), workdir)['step'] == 6
