"""Preemption, exact resume, corrupt checkpoints, divergence, bad input: never lose finished work."""
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from absl import flags
import hypothesis
from hypothesis import strategies as st
import flax
import jax
import numpy as np
import pytest

from jaxresnet import data
from jaxresnet.infra import checkpoints
from jaxresnet.infra import cli
from jaxresnet.infra import devices
from jaxresnet.infra import rundir
from jaxresnet.training import jobs
from jaxresnet.training import train
from jaxresnet.infra import config as config_lib
from jaxresnet.infra.errors import CheckpointError, ConfigError
from conftest import REPO, run_module, small_tmpfs, tiny_config, write_image_folder


def final_state(workdir):
  """Every array of the workdir's newest checkpoint: weights, optimizer (SAM's too), EMA, key, step."""
  config = rundir.load_config(workdir)
  dataset = data.load_dataset(config)
  _, state, _ = train.build(config, dataset, devices.make_mesh())
  manager = checkpoints.create_manager(workdir, read_only=True)
  state, _ = checkpoints.restore_newest(manager, state, checkpoints.run_metadata(config, dataset))
  manager.close()
  return devices.to_host(flax.serialization.to_state_dict(state))


def assert_trees_equal(a, b):
  leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)


def main_args(image_folder, workdir, steps, every=3, log_every=None):
  # ResNet-20 at batch 32: slow enough per step on CPU that a kill lands mid-run.
  return ['--config=configs/default.py', f'--workdir={workdir}', '--config.model=resnet20',
          '--config.dataset=image_folder', f'--config.data_dir={image_folder}', '--config.batch_size=32',
          '--config.num_val_examples=8', f'--config.num_train_steps={steps}', '--config.eval_every_steps=0',
          f'--config.checkpoint_every_steps={every}', f'--config.log_every_steps={log_every or every}',
          '--config.lr_boundaries=(12,)']


def start(args):
  env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'TF_CPP_MIN_LOG_LEVEL': '3'}
  return subprocess.Popen([sys.executable, '-m', 'jaxresnet.main', *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def reference_and_resumed(args_of, tmp_path, steps=12, kill_at=6):
  """Final states of one run uninterrupted and of the same run kill -9'd as checkpoint `kill_at` appears and resumed.

  `args_of(image_folder, workdir, steps)` gives main's arguments.
  """
  image_folder = write_image_folder(tmp_path / 'images', train_per_class=24)
  reference, killed = str(tmp_path / 'reference'), str(tmp_path / 'killed')
  run_module('jaxresnet.main', *args_of(image_folder, reference, steps), check=True)
  kill_as_checkpoint_appears(args_of(image_folder, killed, steps), killed, kill_at)
  resumed = run_module('jaxresnet.main', *args_of(image_folder, killed, steps), check=True)
  assert 'resumed from checkpoint at step' in resumed.stdout  # At kill_at, or a later save that landed.
  return final_state(reference), final_state(killed), killed


def kill_as_checkpoint_appears(args, workdir, step):
  """Starts `main args` and kill -9s it the moment WORKDIR/checkpoints/<step> appears (the next save may be in flight)."""
  child = start(args)
  wait_for(lambda: os.path.isdir(os.path.join(workdir, 'checkpoints', str(step))), child)
  assert child.poll() is None, 'the run ended before the kill'
  child.send_signal(signal.SIGKILL)
  child.communicate()


def wait_for(predicate, child, timeout=300):
  deadline = time.time() + timeout
  while not predicate() and child.poll() is None and time.time() < deadline:
    time.sleep(0.01)


STEPS = 24
# Where each kill -9 lands: before any checkpoint (start-up and compile), just as checkpoint 6
# is committed (the next save may be in flight), and late in the run.
KILL_POINTS = [('after 1.5 s', None, 1.5), ('checkpoint 6 appears', '6', 0), ('checkpoint 18 appears', '18', 0.05)]


@pytest.mark.slow
def test_killed_any_number_of_times_resumes_bit_identically(tmp_path):
  image_folder = write_image_folder(tmp_path / 'images', train_per_class=24)
  reference = str(tmp_path / 'reference')
  run_module('jaxresnet.main', *main_args(image_folder, reference, STEPS), check=True)

  killed = str(tmp_path / 'killed')
  kills = 0
  for name, checkpoint, delay in KILL_POINTS:
    child = start(main_args(image_folder, killed, STEPS))
    if checkpoint:
      wait_for(lambda: os.path.isdir(os.path.join(killed, 'checkpoints', checkpoint)), child)
    time.sleep(delay)
    if child.poll() is None:
      child.send_signal(signal.SIGKILL)
      kills += 1
    child.communicate()
    done = checkpoints.create_manager(killed, read_only=True).all_steps() if os.path.isdir(
        os.path.join(killed, 'checkpoints')) else []
    assert not done or max(done) < STEPS, f'run finished before the kill at {name}'
  assert kills == len(KILL_POINTS)

  resumed = run_module('jaxresnet.main', *main_args(image_folder, killed, STEPS), check=True)
  assert 'resumed from checkpoint at step 18' in resumed.stdout
  assert_trees_equal(final_state(reference), final_state(killed))
  # metrics.jsonl: whole lines only, every logged step once.
  with open(os.path.join(killed, 'metrics.jsonl')) as f:
    text = f.read()
  assert text.endswith('\n')
  assert [json.loads(l)['step'] for l in text.splitlines()] == list(range(3, STEPS + 1, 3))


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_zero_quickly(tmp_path):
  image_folder = write_image_folder(tmp_path / 'images', train_per_class=24)
  workdir = str(tmp_path / 'run')
  child = start(main_args(image_folder, workdir, 2000, every=1000, log_every=5))
  # Wait until training is under way (the first metrics line), then ask it to stop.
  metrics = os.path.join(workdir, 'metrics.jsonl')
  child.stdout.readline()  # the start-up line
  first = child.stdout.readline()
  assert first.startswith('step'), first
  sent = time.time()
  child.send_signal(signal.SIGTERM)
  out, _ = child.communicate(timeout=60)
  took = time.time() - sent
  print(f'SIGTERM to exit: {took:.2f} s')
  assert child.returncode == 0, out
  assert took < 30
  stopped_at = int(out.split('stopped by SIGTERM at step ')[1].split(':')[0])
  assert checkpoints.create_manager(workdir, read_only=True).all_steps() == [stopped_at]
  with open(metrics) as f:
    assert json.loads(f.read().splitlines()[-1])['step'] == stopped_at
  assert final_state(workdir)['step'] == stopped_at


def corrupt(workdir, step):
  """Truncates every data file of a checkpoint's state to half its size."""
  root = os.path.join(workdir, 'checkpoints', str(step), 'state')
  for dirpath, _, files in os.walk(root):
    for name in files:
      path = os.path.join(dirpath, name)
      size = os.path.getsize(path)
      with open(path, 'r+b') as f:
        f.truncate(size // 2)


@pytest.mark.slow
def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(image_folder, tmp_path, capfd):
  workdir = str(tmp_path / 'run')
  config = tiny_config(image_folder)
  train.train_and_evaluate(config, workdir)
  reference = final_state(workdir)
  corrupt(workdir, 6)
  os.remove(os.path.join(workdir, 'results.json'))  # Not finished: as if killed after its last checkpoint.
  capfd.readouterr()
  summary = train.train_and_evaluate(config, workdir)  # Resumes from 3 and redoes 4..6.
  err = capfd.readouterr().err
  warnings = [l for l in err.splitlines() if l.startswith('warning: checkpoint 6 is unreadable')]
  assert len(warnings) == 1, err
  assert summary['step'] == 6
  assert os.path.isdir(os.path.join(workdir, 'unreadable_checkpoints', '6'))  # Kept, not deleted.
  assert_trees_equal(reference, final_state(workdir))


@pytest.mark.slow
def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(image_folder, tmp_path):
  workdir = str(tmp_path / 'run')
  config = tiny_config(image_folder, learning_rate=1e30, checkpoint_every_steps=1, log_every_steps=1)
  with pytest.raises(jobs.NonFiniteLossError, match=r'training diverged at step (\d+)') as info:
    train.train_and_evaluate(config, workdir)
  bad_step = int(info.value.args[0].split('at step ')[1].split(' ')[0])
  saved = checkpoints.create_manager(workdir, read_only=True).all_steps()
  assert saved and max(saved) == bad_step - 1 and f'last good checkpoint is step {bad_step - 1}' in str(info.value)
  state = final_state(workdir)
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(state['params']))


def test_nan_updates_can_be_skipped_instead(image_folder, tmp_path):
  workdir = str(tmp_path / 'run')
  config = tiny_config(image_folder, learning_rate=1e30, log_every_steps=1, skip_nonfinite_updates=True)
  summary = train.train_and_evaluate(config, workdir)
  assert summary['step'] == 6
  records = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert sum(r.get('skipped_updates', 0) for r in records) > 0
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(final_state(workdir)['params']))


def test_failed_checkpoint_write_is_a_clear_error_and_keeps_the_previous(image_folder, tmp_path, monkeypatch):
  workdir = str(tmp_path / 'run')
  real_save = checkpoints.save

  def save_until_disk_full(manager, state, metadata, step):
    if step >= 6:
      raise OSError(28, 'No space left on device')
    real_save(manager, state, metadata, step)

  monkeypatch.setattr(checkpoints, 'save', save_until_disk_full)
  with pytest.raises(CheckpointError, match=r'cannot write checkpoint 6 .* No space left on device; '
                                            r'the previous checkpoint \(3\) is intact'):
    train.train_and_evaluate(tiny_config(image_folder), workdir)
  monkeypatch.undo()
  assert checkpoints.create_manager(workdir, read_only=True).all_steps() == [3]
  assert final_state(workdir)['step'] == 3


def test_unwritable_workdir(image_folder, tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  with pytest.raises(CheckpointError, match='cannot write to workdir'):
    train.train_and_evaluate(tiny_config(image_folder), str(blocker / 'run'))


def broken_image(root):
  with open(os.path.join(root, 'train', 'cat', '0003.jpg'), 'wb') as f:
    f.write(b'\xff\xd8 truncated')


def unequal_classes(root):
  os.rename(os.path.join(root, 'test', 'dog'), os.path.join(root, 'test', 'wolf'))


def no_classes(root):
  for split in ('train', 'test'):
    for name in os.listdir(os.path.join(root, split)):
      for f in os.listdir(os.path.join(root, split, name)):
        os.remove(os.path.join(root, split, name, f))
      os.rmdir(os.path.join(root, split, name))


BAD_INPUT = [
    # (name, extra args, damage to the image folder, exit status, start of the one stderr line)
    ('config file', ['--config=configs/nope.py'], None, 1, 'error: cannot load the config file'),
    ('config field', ['--config.learning_rat=0.1'], None, 1, "error: unknown config field 'learning_rat'"),
    ('wrong type', ['--config.batch_size=big'], None, 1, 'error: flag --config.batch_size=big'),
    ('model', ['--config.model=resnet19'], None, 1, "error: unknown model 'resnet19'"),
    ('optimizer', ['--config.optimizer=sgdd'], None, 1, "error: config.optimizer='sgdd' is not one of"),
    ('schedule', ['--config.schedule=exp'], None, 1, "error: config.schedule='exp' is not one of"),
    ('TFDS dataset', ['--config.dataset=no_such_dataset'], None, 1,
     "error: cannot load TFDS dataset 'no_such_dataset'"),
    ('missing data dir', ['--config.data_dir=/nonexistent/images'], None, 1,
     "error: image folder '/nonexistent/images' does not exist"),
    ('no classes', [], no_classes, 1, 'error: '),
    ('unequal classes', [], unequal_classes, 1, 'error: classes of train/ missing from test/'),
    ('broken image', [], broken_image, 1, 'error: cannot read image'),
    ('learning rate nan', ['--config.learning_rate=nan'], None, 1,
     'error: config.learning_rate=nan must be a finite number'),  # Not "must not be negative".
    ('share boundaries', ["--config.lr_boundaries=('40%','140%')"], None, 1,
     "error: config.lr_boundaries='140%' is a share of the run, which must be below 100%"),
    ('batch larger than the training split', ['--config.batch_size=64'], None, 1,
     'error: config.batch_size=64 exceeds the 40 training examples'),
]


@pytest.mark.slow
@pytest.mark.parametrize('name,args,damage,status,message', BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, name, args, damage, status, message):
  image_folder = write_image_folder(tmp_path / 'images')
  if damage:
    damage(image_folder)
  workdir = tmp_path / 'run'
  base = ['--config=configs/default.py', f'--workdir={workdir}',
          '--config.model=resnet8', '--config.dataset=image_folder', f'--config.data_dir={image_folder}',
          '--config.batch_size=8', '--config.num_val_examples=8', '--config.num_train_steps=2']
  result = run_module('jaxresnet.main', *base, *args)
  errors = [l for l in result.stderr.splitlines() if 'error' in l.lower()]
  assert result.returncode == status, result.stderr[-2000:]
  assert len(errors) == 1 and errors[0].startswith(message), result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1] == errors[0]
  assert 'Traceback' not in result.stderr
  assert not workdir.exists()


@pytest.mark.slow
def test_workdir_of_another_model_is_refused_and_left_intact(image_folder, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(image_folder, num_train_steps=3), workdir)
  before = sorted(os.listdir(workdir))
  result = run_module('jaxresnet.main', '--config=configs/default.py', f'--workdir={workdir}',
                      '--config.model=plain8', '--config.dataset=image_folder',
                      f'--config.data_dir={image_folder}', '--config.batch_size=8', '--config.num_val_examples=8')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      "error: " + workdir + "/checkpoints holds a checkpoint of a different run (model: 'resnet8'")
  assert sorted(os.listdir(workdir)) == before and final_state(workdir)['step'] == 3


FIELD_NAMES = sorted(__import__('jaxresnet.configs.default', fromlist=['get_config']).get_config().keys())
VALUES = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True).map(repr),
                   st.booleans().map(str), st.text(max_size=12),
                   st.sampled_from(['resnet20', 'plain56', 'A', 'B', 'sgd', 'cosine', '(1,2)', '()', '-1', '0']))


@hypothesis.settings(max_examples=150, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(overrides=st.lists(st.tuples(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8)), VALUES),
                                     max_size=3))
def test_fuzzed_overrides_give_a_valid_config_or_a_clear_error(overrides):
  try:
    config_lib.validate(parse_overrides([f'--config.{k}={v}' for k, v in overrides]))
  except ConfigError as e:
    assert str(e) and '\n' not in str(e)


def parse_overrides(overrides):
  """The config main would run with `--config=configs/default.py` and these override arguments."""
  flag_values = flags.FlagValues()
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  argv = ['main', '--config=configs/default.py', *overrides]
  # sys_argv: ml_collections defines the override flags it finds there (by default in pytest's own argv).
  config_flags.DEFINE_config_file('config', None, flag_values=flag_values, lock_config=True, sys_argv=argv)
  cli.parse_flags(argv, flag_values)
  return flag_values.config


# --------------------------------------------------------------------------
# Issue 11's probes, one test each.

CONFIG_FILES = [
    ('returns None', 'def get_config():\n  config = 1\n',
     'error: get_config() in {path} returned None (a missing `return config`?); it must return an '
     'ml_collections.ConfigDict'),
    ('has no get_config', 'CONFIG = {}\n',
     'error: config file {path} has no get_config() function (see configs/default.py for one)'),
    ('returns a dict', 'def get_config():\n  return {"model": "resnet8"}\n',
     'error: get_config() in {path} returned a dict; it must return an ml_collections.ConfigDict'),
]


@pytest.mark.slow
@pytest.mark.parametrize('name,text,message', CONFIG_FILES, ids=[c[0] for c in CONFIG_FILES])
def test_a_config_file_that_gives_no_config_has_its_own_message(tmp_path, name, text, message):
  path = tmp_path / 'my_config.py'
  path.write_text(text)
  for override in ([], ['--config.seed=1']):  # Not "unknown config field", with or without overrides.
    result = run_module('jaxresnet.main', f'--config={path}', f'--workdir={tmp_path / "run"}', *override)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [message.format(path=path)]


@pytest.mark.slow
def test_resume_with_another_seed_or_recipe_is_refused_naming_the_field(image_folder, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(image_folder, num_train_steps=3), workdir)
  for overrides, named in (({'seed': 1}, 'seed=0, but this config has seed=1'),
                           ({'learning_rate': 0.2}, 'learning_rate=0.1, but this config has learning_rate=0.2'),
                           ({'batch_size': 4, 'augment': False},
                            'augment=True and batch_size=8, but this config has augment=False and batch_size=4')):
    with pytest.raises(CheckpointError) as error:
      train.train_and_evaluate(tiny_config(image_folder, num_train_steps=3, **overrides), workdir)
    assert str(error.value) == (f'checkpoint 3 in {workdir}/checkpoints was trained with {named}; resume with the '
                                'config the run started with, or use another --workdir')
  # Bookkeeping may change, and a step schedule's run may be extended: it continues exactly.
  summary = train.train_and_evaluate(tiny_config(image_folder + '/', num_train_steps=4, eval_batch_size=4,
                                                 checkpoint_every_steps=2), workdir)
  assert summary['step'] == 4
  # A cosine schedule depends on the run's length: extending it would change the steps already taken.
  cosine = str(tmp_path / 'cosine')
  train.train_and_evaluate(tiny_config(image_folder, num_train_steps=3, schedule='cosine'), cosine)
  with pytest.raises(CheckpointError, match='was trained with num_train_steps=3, but this config has '
                                            'num_train_steps=4'):
    train.train_and_evaluate(tiny_config(image_folder, num_train_steps=4, schedule='cosine'), cosine)


def test_eval_batch_size_larger_than_every_split_is_capped(image_folder, tmp_path):
  workdir = str(tmp_path / 'run')
  summary = train.train_and_evaluate(tiny_config(image_folder, num_train_steps=3, eval_batch_size=100000), workdir)
  assert summary['step'] == 3 and 0 <= summary['test_error'] <= 1
  assert json.load(open(os.path.join(workdir, 'config.json')))['eval_batch_size'] == 12  # The test split's size.
  config = tiny_config(image_folder, eval_batch_size=1000)
  assert config_lib.fitted_eval_batch_size(config, [8, 12], 1) == 12
  assert config_lib.fitted_eval_batch_size(config, [10, 0], 4) == 12  # Whole devices.
  assert config_lib.fitted_eval_batch_size(tiny_config(image_folder, eval_batch_size=8), [8, 12], 1) == 8


def as_plain_user():
  """A command prefix under which file permissions bind this process, as they would a non-root user."""
  if os.geteuid() != 0:
    return []
  if not shutil.which('setpriv'):
    pytest.skip('as root, chmod 000 stops nothing, and setpriv (to drop that power) is missing')
  return ['setpriv', '--bounding-set=-dac_override,-dac_read_search']


def run_as_plain_user(module, *args):
  env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'TF_CPP_MIN_LOG_LEVEL': '3'}
  return subprocess.run([*as_plain_user(), sys.executable, '-m', module, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def tiny_main_args(image_folder, workdir, steps=6, every=3):
  return ['--config=configs/default.py', f'--workdir={workdir}', '--config.model=resnet8',
          '--config.dataset=image_folder', f'--config.data_dir={image_folder}', '--config.batch_size=8',
          '--config.eval_batch_size=8', '--config.num_val_examples=8', f'--config.num_train_steps={steps}',
          '--config.eval_every_steps=0', f'--config.checkpoint_every_steps={every}', '--config.log_every_steps=2',
          '--config.lr_boundaries=(4,)']


@pytest.mark.slow
def test_checkpoints_folder_without_permissions_is_one_line_for_evaluate_and_resume(image_folder, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(image_folder), workdir)
  folder = os.path.join(workdir, 'checkpoints')
  os.chmod(folder, 0)
  try:
    evaluated = run_as_plain_user('jaxresnet.evaluate', f'--workdir={workdir}')
    resumed = run_as_plain_user('jaxresnet.main', *tiny_main_args(image_folder, workdir))
  finally:
    os.chmod(folder, 0o755)
  assert evaluated.returncode == 1
  assert evaluated.stderr.strip().splitlines() == [f'error: cannot read {folder}: Permission denied']
  assert resumed.returncode == 1
  assert resumed.stderr.strip().splitlines() == [
      f'error: cannot use {folder}: this user cannot read and write it (permission denied)']


@pytest.mark.slow
def test_an_unreadable_checkpoint_folder_stops_the_resume_in_one_line(image_folder, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(image_folder), workdir)
  os.remove(os.path.join(workdir, 'results.json'))  # Not finished: as if killed after its last checkpoint.
  step6 = os.path.join(workdir, 'checkpoints', '6')
  os.chmod(step6, 0)
  try:
    resumed = run_as_plain_user('jaxresnet.main', *tiny_main_args(image_folder, workdir))
    evaluated = run_as_plain_user('jaxresnet.evaluate', f'--workdir={workdir}')
  finally:
    os.chmod(step6, 0o755)
  assert resumed.returncode == 1, resumed.stderr
  assert resumed.stderr.strip().splitlines() == [
      f'error: checkpoint 6 in {workdir}/checkpoints is unreadable (its metadata is unreadable: Permission denied) '
      f'and cannot be moved aside to {workdir}/unreadable_checkpoints (Permission denied); fix its permissions or '
      'move it away, then rerun']
  assert evaluated.returncode == 0, evaluated.stderr  # A reader only needs one readable checkpoint.
  assert evaluated.stderr.strip().splitlines() == [
      'warning: checkpoint 6 is unreadable (its metadata is unreadable: Permission denied); using the previous one']
  assert evaluated.stdout.startswith('resnet8 at step 3 on test:')
  assert final_state(workdir)['step'] == 6  # Nothing was lost.


@pytest.fixture
def small_disk(tmp_path):
  """A 1.2 MB file system: room for one checkpoint of ResNet-8 with its optimizer, not two."""
  yield from small_tmpfs(tmp_path, 'small_disk', '1200k')


@pytest.mark.slow
def test_a_full_disk_is_one_line_naming_the_checkpoint_that_failed(image_folder, small_disk):
  workdir = os.path.join(small_disk, 'run')
  result = run_module('jaxresnet.main', *tiny_main_args(image_folder, workdir, steps=20, every=5))
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr[-3000:]  # Not Orbax's logged tracebacks: those are in log.txt.
  assert re.fullmatch(
      rf'error: cannot write checkpoint (10|15) to {workdir}/checkpoints: No space left on device'
      r'( \(while checkpoint 10 was written in the background\))?; the previous checkpoint \(5\) is intact', lines[0])
  assert 'checkpoint 10' in lines[0]  # The one that failed, also when it failed in the background.
  assert 'Traceback' in open(os.path.join(workdir, 'log.txt')).read()  # The details, for whoever wants them.
  assert checkpoints.create_manager(workdir, read_only=True).all_steps() == [5]


@pytest.mark.slow
def test_a_truncated_checkpoint_is_one_short_warning_without_asyncio_noise(image_folder, tmp_path):
  workdir = str(tmp_path / 'run')
  run_module('jaxresnet.main', *tiny_main_args(image_folder, workdir), check=True)
  os.remove(os.path.join(workdir, 'results.json'))  # Not finished: as if killed after its last checkpoint.
  for path in glob.glob(os.path.join(workdir, 'checkpoints', '6', 'state', 'ocdbt.process_0', 'd', '*')):
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)
  for module, args in (('jaxresnet.evaluate', [f'--workdir={workdir}']),
                       ('jaxresnet.main', tiny_main_args(image_folder, workdir))):
    result = run_module(module, *args, check=True)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('warning: checkpoint 6 is unreadable ('), result.stderr[-3000:]
    # TensorStore's message is thousands of characters long; the workdir's own path does not count.
    assert len(lines[0].replace(workdir, 'W')) < 300, lines[0]
  assert os.path.isdir(os.path.join(workdir, 'unreadable_checkpoints', '6'))


@pytest.mark.slow
def test_sigterm_while_starting_up_is_one_line(image_folder, tmp_path):
  cache = str(tmp_path / 'cache')
  for i, delay in enumerate((0.5, 1.6, 2.0)):
    workdir = str(tmp_path / f'run{i}')
    child = start(tiny_main_args(image_folder, workdir, steps=2000, every=1000) + [f'--config.cache_dir={cache}'])
    time.sleep(delay)
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=60)
    if child.returncode == 0:  # Training had begun: the loop's clean stop, a checkpoint saved.
      assert 'stopped by SIGTERM at step' in out, out
      continue
    assert child.returncode == 128 + signal.SIGTERM, out
    assert out.strip().splitlines()[-1] in ('stopped by SIGTERM', 'stopped by SIGTERM; run the same command to continue')
    assert 'Traceback' not in out and len([l for l in out.splitlines() if 'SIGTERM' in l]) == 1
    assert not glob.glob(os.path.join(cache, '*tmp*')) and not glob.glob(os.path.join(workdir, '.write_test*'))


PROBE_THEN_DIE = """
import os, signal, sys
from jaxresnet.infra import rundir
def die(*args, **kwargs):  # The process is killed between writing its probe and removing it.
  os.kill(os.getpid(), signal.SIGKILL)
os.remove = os.unlink = die
rundir.check_writable(sys.argv[1])
"""


@pytest.mark.slow
def test_the_write_probe_never_leaves_a_file_in_the_workdir(tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  result = subprocess.run([sys.executable, '-c', PROBE_THEN_DIE, str(workdir)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr  # It never needed to remove anything: the probe has no name.
  assert os.listdir(workdir) == []


def test_an_unknown_field_with_a_newline_in_its_name_is_still_one_line():
  # Found by the fuzzed-overrides test above: the name was echoed raw, so its newline split the error line.
  with pytest.raises(ConfigError) as raised:
    parse_overrides(['--config.A\n=1'])
  assert str(raised.value).startswith("unknown config field 'A\\n'") and '\n' not in str(raised.value)
