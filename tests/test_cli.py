"""What every command shares (issue 15): --help exits 0, a missing flag is one line with exit 2, Ctrl-C
before training is one line, and main checks the cheap things before the slow ones."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_module, tiny_config
from jaxresnet.training import train

COMMANDS = ['main', 'evaluate', 'predict', 'sweep', 'plot', 'report', 'reproduce']


@pytest.mark.parametrize('command', COMMANDS)
def test_help_exits_zero(command):
  result = run_module(f'jaxresnet.{command}', '--help')
  assert result.returncode == 0, result.stderr[-2000:]
  assert '--workdir' in result.stdout and result.stderr == ''


def test_main_help_points_at_the_field_reference_and_the_zoo():
  help_text = run_module('jaxresnet.main', '--help').stdout
  assert 'configs/default.py' in help_text and 'python -m jaxresnet.models' in help_text


REQUIRED = {'main': '--config, --workdir', 'sweep': '--config, --workdir', 'evaluate': '--workdir',
            'predict': '--workdir', 'plot': '--workdir', 'report': '--workdir', 'reproduce': '--workdir'}


@pytest.mark.parametrize('command', COMMANDS)
def test_missing_required_flags_are_one_line_and_exit_2(command):
  result = run_module(f'jaxresnet.{command}')
  names = REQUIRED[command]
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().splitlines() == [
      f'error: missing required flag{"s" if "," in names else ""} {names} (see --help)']


def start(module, *args):
  """The command as a terminal starts it: Ctrl-C's SIGINT not ignored (a background job ignores it)."""
  env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'TF_CPP_MIN_LOG_LEVEL': '3', 'JAXRESNET_PROGRESS_EVERY_S': '0'}
  command = [sys.executable, '-m', module, *args]
  as_in_a_terminal = ('import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); '
                      'os.execv(sys.argv[1], sys.argv[1:])')
  return subprocess.Popen([sys.executable, '-c', as_in_a_terminal, *command], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def trained_workdir(image_folder, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(image_folder, num_train_steps=3), workdir)
  return workdir


def interrupt_while_starting(module, *args, after=0.4):
  """Ctrl-C `after` seconds into the command: while Python imports JAX and the rest."""
  child = start(module, *args)
  time.sleep(after)
  assert child.poll() is None, child.communicate()
  child.send_signal(signal.SIGINT)
  out, err = child.communicate(timeout=60)
  return child.returncode, out, err


@pytest.mark.parametrize('command', ['main', 'evaluate', 'predict'])
def test_ctrl_c_while_starting_is_one_line(command, trained_workdir, image_folder, tmp_path):
  args = {'main': main_args(tmp_path / 'new', image_folder),
          'evaluate': [f'--workdir={trained_workdir}'],
          'predict': [f'--workdir={trained_workdir}', image_folder]}[command]
  status, out, err = interrupt_while_starting(f'jaxresnet.{command}', *args)
  assert status == 128 + signal.SIGINT, err
  assert err.strip().splitlines() == ['stopped by SIGINT (Ctrl-C)'] and out == ''


def test_ctrl_c_while_the_data_is_decoded_is_one_line_and_leaves_no_files(image_folder, tmp_path):
  cache = tmp_path / 'cache'
  child = start('jaxresnet.main', *main_args(tmp_path / 'new', image_folder), f'--config.cache_dir={cache}')
  progress = []
  for line in child.stderr:  # JAXRESNET_PROGRESS_EVERY_S=0 (below): a line per decoded image.
    progress.append(line)
    if line.startswith('decoding train: 5/'):
      child.send_signal(signal.SIGINT)
      break
  out, err = child.communicate(timeout=60)
  assert child.returncode == 128 + signal.SIGINT, err
  lines = [l for l in err.splitlines() if not l.startswith('decoding ')]
  assert lines == ['stopped by SIGINT (Ctrl-C); run the same command to continue'] and out == ''
  assert not os.path.exists(tmp_path / 'new')  # Nothing written: the workdir comes after the data.
  assert not cache.exists() or not os.listdir(cache)  # No half-written cache.


def main_args(workdir, data_dir, model='resnet8'):
  return ['--config=configs/default.py', f'--workdir={workdir}', f'--config.model={model}',
          '--config.dataset=image_folder', f'--config.data_dir={data_dir}', '--config.batch_size=8',
          '--config.num_val_examples=8']


def test_a_workdir_that_is_a_file_is_reported_before_the_data_is_read(tmp_path):
  workdir = tmp_path / 'a_file'
  workdir.write_text('not a directory')
  result = run_module('jaxresnet.main', *main_args(workdir, tmp_path / 'no_such_images'))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      f'error: --workdir {workdir} is a file, not a directory; choose another --workdir']  # Not the data's error.


def test_another_models_checkpoints_are_reported_before_the_data_is_read(trained_workdir, tmp_path):
  result = run_module('jaxresnet.main', *main_args(trained_workdir, tmp_path / 'no_such_images', model='plain8'))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      f"error: {trained_workdir}/checkpoints holds a checkpoint of a different run (model: 'resnet8', this config: "
      "'plain8'); use another --workdir"]


def test_an_uncreatable_workdir_is_reported_before_the_data_is_read(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('x')
  result = run_module('jaxresnet.main', *main_args(blocker / 'run', tmp_path / 'no_such_images'))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      f'error: cannot write to workdir {blocker}/run: {blocker} is a file, not a directory']
