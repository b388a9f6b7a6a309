"""The training loop's records and files: honest after a resume, a kill -9, a divergence or a full disk."""
import json
import os
import signal
import subprocess
import sys

import pytest

from jaxresnet import data
from jaxresnet.infra import checkpoints
from jaxresnet.infra import rundir
from jaxresnet.infra.errors import CheckpointError
from jaxresnet.infra.tensorboard import MetricWriter
from jaxresnet.training import jobs
from jaxresnet.training import train
from conftest import REPO, run_module, small_tmpfs, tiny_config
from test_reliability import wait_for


def metrics_of(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


# TensorBoard's own reader (its EventAccumulator) on TensorBoard's TensorFlow stub: reading with
# TensorFlow takes it 20 s to import. Orphaned data is not purged: every point written is shown.
READ_EVENTS = """
import json, sys, types
sys.modules['tensorboard.compat.notf'] = types.ModuleType('tensorboard.compat.notf')
from tensorboard.backend.event_processing import event_accumulator
accumulator = event_accumulator.EventAccumulator(sys.argv[1], size_guidance={event_accumulator.SCALARS: 0},
                                                 purge_orphaned_data=False)
accumulator.Reload()
print(json.dumps({tag: [[e.step, e.value] for e in accumulator.Scalars(tag)]
                  for tag in accumulator.Tags()['scalars']}))
"""


def tensorboard_scalars(logdir):
  """{tag: [[step, value], ...]} as TensorBoard reads the event files of `logdir`."""
  result = subprocess.run([sys.executable, '-c', READ_EVENTS, str(logdir)], capture_output=True, text=True,
                          timeout=120, check=True)
  return json.loads(result.stdout)


# --------------------------------------------------------------------------
# Throughput (item 3).


class FakeClock:
  """Time that passes only when a test says so."""

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_checkpoints_and_evaluations_are_not_counted_as_training_time(image_folder, tmp_path, monkeypatch):
  clock = FakeClock()
  chrono = jobs.Chrono
  monkeypatch.setattr(jobs, 'Chrono', lambda images_per_step: chrono(images_per_step, clock=clock))
  add, save, evaluate = jobs.MetricWindow.add, checkpoints.save, jobs.Evaluator.__call__

  def one_second_steps(self, step, metrics):  # Called once after every step.
    clock.now += 1.0
    add(self, step, metrics)

  def slow_save(*args, **kwargs):
    clock.now += 1000.0
    save(*args, **kwargs)

  def slow_evaluation(self, state):
    clock.now += 1000.0
    return evaluate(self, state)

  monkeypatch.setattr(jobs.MetricWindow, 'add', one_second_steps)
  monkeypatch.setattr(checkpoints, 'save', slow_save)
  monkeypatch.setattr(jobs.Evaluator, '__call__', slow_evaluation)
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(image_folder, num_train_steps=8, log_every_steps=2), workdir)
  rates = [r['train_images_per_second'] for r in metrics_of(workdir) if 'train_images_per_second' in r]
  assert len(rates) == 4 and rates == pytest.approx([8.0] * 4)  # Batch 8 at one step a second, saves or not.


# --------------------------------------------------------------------------
# A population whose every member diverged (item 4).


@pytest.mark.slow
def test_a_population_whose_every_seed_diverged_stops_in_one_line(image_folder, tmp_path):
  workdir = str(tmp_path / 'population')
  config = tiny_config(image_folder, num_seeds=2, learning_rate=1e30, lr_boundaries=(100,), num_train_steps=30,
                       checkpoint_every_steps=1, log_every_steps=1)
  with pytest.raises(jobs.NonFiniteLossError) as error:
    train.train_and_evaluate(config, workdir)
  message = str(error.value)
  assert '\n' not in message and message.startswith('every seed of the population diverged (seed 0 at step ')
  assert 'seed 1 at step ' in message
  saved = checkpoints.create_manager(workdir, read_only=True).all_steps()
  assert not saved or max(saved) < 30  # Not trained (frozen) to the end.
  assert not os.path.exists(os.path.join(workdir, 'seed0', 'results.json'))


# --------------------------------------------------------------------------
# kill -9 while evaluating, and the window of a resumed run (items 5 and 6).

# `python -m jaxresnet.main` whose first evaluation waits to be killed: the checkpoint of that step is
# written (in the background) while it waits, and its record is not.
FIRST_EVALUATION_HANGS = """
import runpy, sys, time
from jaxresnet.training import jobs
evaluate = jobs.Evaluator.__call__
def hang_the_first_time(self, state):
  if not getattr(jobs, 'evaluated_once', False):
    jobs.evaluated_once = True
    time.sleep(600)
  return evaluate(self, state)
jobs.Evaluator.__call__ = hang_the_first_time
sys.argv = ['jaxresnet.main'] + sys.argv[1:]
runpy.run_module('jaxresnet.main', run_name='__main__')
"""


def loop_args(image_folder, workdir):
  # Log every 2 steps, evaluate and save every 3: checkpoint 3 holds a step the log has not averaged yet.
  return ['--config=configs/default.py', f'--workdir={workdir}', '--config.model=resnet8',
          '--config.dataset=image_folder', f'--config.data_dir={image_folder}', '--config.batch_size=8',
          '--config.eval_batch_size=8', '--config.num_val_examples=8', '--config.num_train_steps=6',
          '--config.log_every_steps=2', '--config.eval_every_steps=3', '--config.checkpoint_every_steps=3',
          '--config.lr_boundaries=(4,)']


def without_timing(records):
  return [{k: v for k, v in r.items() if k != 'train_images_per_second'} for r in records]


@pytest.mark.slow
def test_kill_9_during_an_evaluation_loses_no_record_and_the_resumed_log_equals_an_uninterrupted_one(
    image_folder, tmp_path):
  reference, killed = str(tmp_path / 'reference'), str(tmp_path / 'killed')
  run_module('jaxresnet.main', *loop_args(image_folder, reference), check=True)
  env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'TF_CPP_MIN_LOG_LEVEL': '3'}
  child = subprocess.Popen([sys.executable, '-c', FIRST_EVALUATION_HANGS, *loop_args(image_folder, killed)],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  wait_for(lambda: os.path.isdir(os.path.join(killed, 'checkpoints', '3')), child)
  assert child.poll() is None, child.communicate()[0]
  child.send_signal(signal.SIGKILL)
  child.communicate()
  assert [r['step'] for r in metrics_of(killed)] == [2]  # Killed while evaluating step 3: its record unwritten.

  resumed = run_module('jaxresnet.main', *loop_args(image_folder, killed), check=True)
  assert 'resumed from checkpoint at step 3' in resumed.stdout
  records, expected = metrics_of(killed), metrics_of(reference)
  assert [r['step'] for r in records] == [2, 3, 4, 6]
  # Step 3's evaluation is redone, and step 4's train loss averages steps 3 and 4 as it did without the kill.
  for record, reference_record in zip(without_timing(records), without_timing(expected)):
    assert record == pytest.approx(reference_record, rel=1e-6)
  assert records[2]['train_window_steps'] == 2
  scalars = tensorboard_scalars(os.path.join(killed, 'tensorboard'))
  assert [step for step, _ in scalars['test_accuracy']] == [3, 6]
  assert [step for step, _ in scalars['train_loss']] == [2, 4, 6]


@pytest.mark.slow
def test_a_resumed_writer_drops_the_tensorboard_points_it_will_write_again(tmp_path):
  writer = MetricWriter(str(tmp_path))
  for step in (2, 4, 6):
    writer.write(step, {'train_loss': float(step)})
  writer.close()
  resumed = MetricWriter(str(tmp_path))  # A new session of the run, resumed from checkpoint 4.
  assert resumed.truncate_after(4) == 4
  for step in (6, 8):
    resumed.write(step, {'train_loss': step + 0.5})
  resumed.close()
  assert tensorboard_scalars(tmp_path / 'tensorboard')['train_loss'] == [[2, 2.0], [4, 4.0], [6, 6.5], [8, 8.5]]
  assert [r['step'] for r in metrics_of(str(tmp_path))] == [2, 4, 6, 8]


# --------------------------------------------------------------------------
# Strict JSON (item 7).


def refuse(constant):
  raise ValueError(f'not JSON: {constant}')


@pytest.mark.slow
def test_results_of_a_run_whose_updates_were_all_skipped_are_strict_json(image_folder, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(image_folder, learning_rate=1e30, skip_nonfinite_updates=True,
                                       num_train_steps=3), workdir)
  for name in ('results.json', 'config.json'):
    with open(os.path.join(workdir, name)) as f:
      json.loads(f.read(), parse_constant=refuse)


def test_write_json_turns_nan_and_infinity_into_null_and_says_what_they_were(tmp_path):
  path = str(tmp_path / 'results.json')
  rundir.write_json(path, {'test_loss': float('nan'), 'val_loss': float('-inf'), 'step': 3,
                           'per_class': [0.5, float('inf')]})
  with open(path) as f:
    value = json.loads(f.read(), parse_constant=refuse)
  assert value == {'test_loss': None, 'test_loss_not_finite': 'nan', 'val_loss': None,
                   'val_loss_not_finite': '-inf', 'step': 3, 'per_class': [0.5, None],
                   'per_class_not_finite': {'1': 'inf'}}
  assert os.listdir(tmp_path) == ['results.json']


# --------------------------------------------------------------------------
# A full disk (item 8).


@pytest.fixture
def tiny_disk(tmp_path):
  """A 256 KB file system, to be filled up to the last few KB by the test."""
  yield from small_tmpfs(tmp_path, 'tiny_disk', '256k')


def leave_free(mount, kilobytes):
  """Fills `mount` with one file until `kilobytes` KB are left."""
  stat = os.statvfs(mount)
  with open(os.path.join(mount, 'filler'), 'wb') as f:
    f.write(b'\0' * (stat.f_bavail * stat.f_frsize - kilobytes * 1024))


def empty_files(directory):
  return [os.path.join(d, name) for d, _, names in os.walk(directory) for name in names
          if os.path.getsize(os.path.join(d, name)) == 0 and name != '.lock']


# With 4 KB free config.json cannot be written, with 8 KB the TensorBoard file, with 12 KB
# metrics.jsonl, with 16 KB the first checkpoint (as measured on tmpfs; each file takes a 4 KB page).
@pytest.mark.parametrize('free_kb', [4, 8, 12, 16])
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_empty_file(image_folder, tiny_disk, free_kb):
  leave_free(tiny_disk, free_kb)
  workdir = os.path.join(tiny_disk, 'run')
  with pytest.raises(CheckpointError) as error:
    train.train_and_evaluate(tiny_config(image_folder, eval_every_steps=0), workdir)
  message = str(error.value)
  assert message.startswith('cannot write ') and f'{workdir}/' in message and '\n' not in message
  assert 'No space left on device' in message
  assert empty_files(workdir) == []


@pytest.mark.slow
def test_a_full_disk_at_the_first_checkpoint_is_one_line_on_the_terminal(image_folder, tiny_disk):
  leave_free(tiny_disk, 16)
  workdir = os.path.join(tiny_disk, 'run')
  result = run_module('jaxresnet.main', *loop_args(image_folder, workdir))
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: cannot write '), result.stderr[-3000:]
  assert 'No space left on device' in lines[0] and 'Traceback' not in result.stdout
  assert empty_files(workdir) == []


# --------------------------------------------------------------------------
# The start line (item 10) and a finished run run again (item 11).


@pytest.mark.slow
def test_the_start_line_names_the_switches_that_are_on(image_folder, tmp_path, capsys):
  train.train_and_evaluate(tiny_config(image_folder, num_train_steps=1, cutout=4, label_smoothing=0.1),
                           str(tmp_path / 'run'))
  first = capsys.readouterr().out.splitlines()[0]
  assert first.endswith('; switches: cutout 4, label_smoothing 0.1'), first
  config = tiny_config(image_folder, randaugment='autoaugment', mixup_alpha=0.2, cutmix_alpha=1.0, ema_decay=0.999,
                       tta='flip', sam_rho=0.05)
  assert train.switches_line(config) == 'autoaugment, mixup 0.2, cutmix 1.0, ema 0.999, tta flip, sam 0.05'
  assert train.switches_line(tiny_config(image_folder, randaugment='2,9')) == 'randaugment 2,9'
  assert train.switches_line(tiny_config(image_folder)) == ''
  from jaxresnet.configs import fast94  # pylint: disable=g-import-not-at-top
  # A recipe's own optimizer is named after the input pipeline's switches.
  assert train.switches_line(fast94.get_config()) == ('flip alternating, airbench_muon, label_smoothing 0.2, '
                                                      'tta flip_translate')


@pytest.mark.parametrize('length', ['steps', 'epochs'])
def test_a_finished_run_run_again_says_so_and_neither_trains_nor_evaluates(image_folder, tmp_path, capsys,
                                                                          monkeypatch, length):
  workdir = str(tmp_path / 'run')
  overrides = {'num_train_steps': '1 epochs'} if length == 'epochs' else {}
  summary = train.train_and_evaluate(tiny_config(image_folder, **overrides), workdir)
  capsys.readouterr()
  before = {name: os.path.getmtime(os.path.join(workdir, name)) for name in ('metrics.jsonl', 'results.json')}

  def never(*args, **kwargs):
    raise AssertionError('a finished run evaluated or restored again')

  monkeypatch.setattr(jobs.Evaluator, '__call__', never)
  monkeypatch.setattr(checkpoints, 'restore', never)
  if length == 'steps':  # Its length is known without the data: not even read.
    monkeypatch.setattr(data, 'load_dataset', never)
  again = train.train_and_evaluate(tiny_config(image_folder, **overrides), workdir)
  assert again == json.load(open(os.path.join(workdir, 'results.json'))) and again['step'] == summary['step']
  out = capsys.readouterr().out.splitlines()
  assert out[0] == f'{workdir}: already finished at step {summary["step"]} (results.json); nothing to train or evaluate'
  assert out[1] == (f'final test error {100 * summary["test_error"]:.2f}% (accuracy '
                    f'{100 * summary["test_accuracy"]:.2f}%) at step {summary["step"]}')
  assert {name: os.path.getmtime(os.path.join(workdir, name)) for name in before} == before
  monkeypatch.undo()
  train.train_and_evaluate(tiny_config(image_folder, **overrides), workdir)  # The workdir's lock was released.
