"""One process per workdir (issue 11): a second run on a busy workdir stops at once, naming the first.

The races here are real: two `python -m jaxresnet.main` processes, or a
process that holds the lock and is killed with SIGKILL.
"""
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import jax
import pytest

from conftest import REPO, run_module, tiny_config
from jaxresnet.infra import checkpoints
from jaxresnet.training import train
from jaxresnet.infra import rundir
from jaxresnet.infra.errors import WorkdirBusyError


def main_args(image_folder, workdir, steps, seed=0, every=1000):
  return ['--config=configs/default.py', f'--workdir={workdir}', '--config.model=resnet8',
          '--config.dataset=image_folder', f'--config.data_dir={image_folder}', '--config.batch_size=8',
          '--config.eval_batch_size=8', '--config.num_val_examples=8', f'--config.num_train_steps={steps}',
          '--config.eval_every_steps=0', f'--config.checkpoint_every_steps={every}', '--config.log_every_steps=10',
          '--config.lr_boundaries=(4,)', f'--config.seed={seed}']


def start(module, *args):
  env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'TF_CPP_MIN_LOG_LEVEL': '3'}
  return subprocess.Popen([sys.executable, '-m', module, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def pid_in_lock_file(workdir):
  """The PID written in WORKDIR/.lock: its holder writes it only once it holds the lock."""
  try:
    with open(os.path.join(workdir, rundir.LOCK_FILE)) as f:
      text = f.read().split()
  except FileNotFoundError:
    return None
  return int(text[0]) if text else None


def wait_until(predicate, process, timeout=120):
  deadline = time.time() + timeout
  while not predicate():
    assert process.poll() is None, process.communicate()
    assert time.time() < deadline, 'timed out'
    time.sleep(0.02)


HOLD = """
import sys, time
from jaxresnet.infra import rundir
lock = rundir.lock_workdir(sys.argv[1])
print('holding', flush=True)
time.sleep(120)
"""


def hold_lock(workdir):
  """A separate process that takes the workdir's lock and keeps it (until killed)."""
  holder = subprocess.Popen([sys.executable, '-c', HOLD, workdir], cwd=REPO, stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == 'holding'
  return holder


@pytest.mark.slow
def test_second_main_on_a_busy_workdir_stops_at_once_naming_the_first(image_folder, tmp_path):
  workdir = str(tmp_path / 'run')
  first = start('jaxresnet.main', *main_args(image_folder, workdir, steps=5000, seed=0))
  try:
    wait_until(lambda: pid_in_lock_file(workdir) == first.pid, first)
    started = time.monotonic()
    second = run_module('jaxresnet.main', *main_args(image_folder, workdir, steps=5000, seed=1))
    took = time.monotonic() - started
    assert first.poll() is None, 'the first run ended before the second one was refused'
  finally:
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=120)
  print(f'second run refused after {took:.1f} s')
  assert second.returncode == 1 and second.stdout == ''
  assert second.stderr.strip().splitlines() == [
      f'error: {workdir} is in use by process {first.pid} (it holds {workdir}/.lock); wait for it to finish, '
      'or use another --workdir']
  assert took < 30  # Python and JAX start-up only: no data loaded, nothing compiled.

  # The first run went on alone and stopped cleanly; everything in the workdir is its own.
  assert first.returncode == 0, err
  stopped_at = int(out.split('stopped by SIGTERM at step ')[1].split(':')[0])
  manager = checkpoints.create_manager(workdir, read_only=True)
  assert manager.all_steps() == [stopped_at]
  metadata = checkpoints.read_metadata(manager, stopped_at)
  assert metadata['seed'] == 0 and metadata['recipe']['seed'] == 0
  assert json.load(open(os.path.join(workdir, 'config.json')))['seed'] == 0
  steps = [json.loads(line)['step'] for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert steps == sorted(set(steps)) and steps[-1] == stopped_at  # One writer: every step once.
  assert pid_in_lock_file(workdir) == first.pid  # The second never took the lock.
  rundir.lock_workdir(workdir).release()  # Released when the first process ended.


@pytest.mark.slow
def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
  workdir = str(tmp_path / 'run')
  os.makedirs(workdir)
  holder = hold_lock(workdir)
  with pytest.raises(WorkdirBusyError, match=f'in use by process {holder.pid} '):
    rundir.lock_workdir(workdir)
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  lock = rundir.lock_workdir(workdir)  # At once: the kernel released the dead process's lock.
  assert lock.held and pid_in_lock_file(workdir) == os.getpid()
  lock.release()
  fd = os.open(os.path.join(workdir, '.lock'), os.O_RDWR)  # Free again for anyone.
  fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  os.close(fd)


@pytest.mark.slow
def test_sweep_and_main_refuse_a_workdir_another_process_holds(image_folder, tmp_path):
  workdir = str(tmp_path / 'sweep')
  os.makedirs(workdir)
  holder = hold_lock(workdir)
  try:
    expected = [f'error: {workdir} is in use by process {holder.pid} (it holds {workdir}/.lock); '
                'wait for it to finish, or use another --workdir']
    swept = run_module('jaxresnet.sweep', *main_args(image_folder, workdir, steps=2), '--sweep.seed=0,1')
    assert swept.returncode == 1 and swept.stderr.strip().splitlines() == expected, swept.stderr
    trained = run_module('jaxresnet.main', *main_args(image_folder, workdir, steps=2))
    assert trained.returncode == 1 and trained.stderr.strip().splitlines() == expected, trained.stderr
  finally:
    holder.kill()
    holder.wait()
  assert sorted(os.listdir(workdir)) == ['.lock']  # Neither wrote anything.


@pytest.mark.slow
def test_the_run_releases_its_workdir_when_it_returns(image_folder, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(image_folder, num_train_steps=3), workdir)
  fd = os.open(os.path.join(workdir, '.lock'), os.O_RDWR)  # Another open file: conflicts with any holder.
  fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  fcntl.flock(fd, fcntl.LOCK_UN)
  os.close(fd)
  summary = train.train_and_evaluate(tiny_config(image_folder, num_train_steps=4), workdir)  # Resumes.
  assert summary['step'] == 4


@pytest.mark.slow
def test_only_process_0_of_a_multi_process_run_takes_the_lock(image_folder, tmp_path, monkeypatch):
  workdir = str(tmp_path / 'run')
  os.makedirs(workdir)
  holder = hold_lock(workdir)  # Process 0, as far as this test is concerned.
  try:
    monkeypatch.setattr(jax, 'process_index', lambda: 1)
    assert rundir.check_before_run(workdir, tiny_config(image_folder)) is None
    monkeypatch.setattr(jax, 'process_index', lambda: 0)
    with pytest.raises(WorkdirBusyError, match=f'process {holder.pid}'):
      rundir.check_before_run(workdir, tiny_config(image_folder))
  finally:
    holder.kill()
    holder.wait()
