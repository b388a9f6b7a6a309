"""What every command shares (issue 15): --help exits 0, a missing flag is one line with exit 1, Ctrl-C
before training is one line, and main checks the cheap things before the slow ones."""
import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_module, tiny_config
from jaxresnet.training import train

COMMANDS = ['main', 'evaluate', 'predict', 'sweep', 'plot', 'report', 'reproduce']


@pytest.mark.slow
@pytest.mark.parametrize('command', COMMANDS)
def test_help_exits_zero(command):
  result = run_module(f'jaxresnet.{command}', '--help')
  assert result.returncode == 0, result.stderr[-2000:]
  assert '--workdir' in result.stdout and result.stderr == ''


# Each command's own flags, as --help lists them ('  --<flag>: <help>'), not only under --helpfull.
OWN_FLAGS = {'main': ['config', 'workdir', 'distributed'], 'sweep': ['config', 'workdir'],
             'peer.trainer': ['config', 'workdir', 'padding'], 'evaluate': ['workdir', 'data_dir', 'step'],
             'predict': ['workdir', 'top_k'], 'plot': ['workdir', 'output'], 'report': ['workdir', 'table'],
             'reproduce': ['workdir', 'table', 'seeds', 'peer']}


@pytest.mark.slow
@pytest.mark.parametrize('command', sorted(OWN_FLAGS))
def test_help_lists_the_commands_own_flags(command):
  result = run_module(f'jaxresnet.{command}', '--help')
  assert result.returncode == 0, result.stderr[-2000:]
  for flag in OWN_FLAGS[command]:
    listed = f'\n  --{flag}:' in result.stdout or f'\n  --[no]{flag}:' in result.stdout  # A bool: --[no]peer.
    assert listed, f'--{flag} is not listed by {command} --help'


@pytest.mark.slow
def test_main_help_points_at_the_field_reference_and_the_zoo():
  help_text = run_module('jaxresnet.main', '--help').stdout
  assert 'jaxresnet/infra/config.py' in help_text and 'python -m jaxresnet.infra.config' in help_text
  assert 'python -m jaxresnet.models' in help_text


@pytest.mark.slow
def test_the_field_reference_lists_every_field():
  from jaxresnet.infra import config as config_lib  # pylint: disable=g-import-not-at-top
  lines = run_module('jaxresnet.infra.config', check=True).stdout.splitlines()
  assert [line.split(' ', 1)[0] for line in lines] == [field.name for field in config_lib.FIELDS]
  assert "num_train_steps (recipe, default 64000): The run's length" in lines[[f.name for f in config_lib.FIELDS]
                                                                             .index('num_train_steps')]


REQUIRED = {'main': '--config, --workdir', 'sweep': '--config, --workdir', 'evaluate': '--workdir',
            'predict': '--workdir', 'plot': '--workdir', 'report': '--workdir', 'reproduce': '--workdir'}


@pytest.mark.slow
@pytest.mark.parametrize('command', COMMANDS)
def test_missing_required_flags_are_one_line_and_exit_1(command):
  result = run_module(f'jaxresnet.{command}')
  names = REQUIRED[command]
  assert result.returncode == 1, result.stderr[-2000:]
  assert result.stderr.strip().splitlines() == [
      f'error: missing required flag{"s" if "," in names else ""} {names} (see --help)']


# One user mistake per command, as a newcomer makes them: each is one `error:` line and exit status 1
# (README, "Exit status"). {tmp} is the test's folder.
MISTAKES = [
    ('main', ['--config=configs/resnet20.py', '--workdir={tmp}/run', '--config.num_train_step=5'],
     "error: unknown config field 'num_train_step'; did you mean 'num_train_steps'?"),
    ('main', ['--config=configs/resnet99.py', '--workdir={tmp}/run'], 'error: cannot load the config file'),
    ('main', ['--config=configs/resnet20.py', '--workdir={tmp}/run', '--config.model=resnet21'],
     "error: unknown model 'resnet21'; did you mean 'resnet18' or 'resnet20' or 'resnet32'? (known models: "),
    ('main', ['--config=configs/resnet20.py', '--workdir={tmp}/run', '--config.dataset=image_folder',
              '--config.data_dir={tmp}/no_such_folder'], 'error: '),
    ('main', ['--config=configs/resnet20.py', '--workdir={tmp}/run', 'stray'], 'error: unexpected arguments: stray'),
    ('sweep', ['--config=configs/resnet20.py', '--workdir={tmp}/sweep', '--no_such_flag'], 'error: '),
    ('reproduce', ['--workdir={tmp}/table', '--models=resnet21'], "error: unknown model 'resnet21'; did you mean"),
    ('evaluate', ['--workdir={tmp}/no_such_run'], 'error: '),
    ('predict', ['--workdir={tmp}/no_such_run'], 'error: name at least one image file or folder to classify'),
    ('report', ['--workdir={tmp}/no_such_table'], 'error: '),
    ('plot', ['--workdir={tmp}/no_such_run'], 'error: '),
    ('models', ['resnet21'], "error: unknown model 'resnet21'; did you mean"),
    ('models', ['--no_such_flag'], 'error: unrecognized arguments: --no_such_flag (see --help)'),
    ('peer.trainer', ['--config=configs/resnet20.py', '--workdir={tmp}/peer', '--distributed'],
     'error: the PyTorch peer trains on one device'),
]


@pytest.mark.slow
@pytest.mark.parametrize('command,args,expected', MISTAKES, ids=[f'{m[0]}-{i}' for i, m in enumerate(MISTAKES)])
def test_every_user_mistake_is_one_error_line_and_exit_status_1(command, args, expected, tmp_path):
  result = run_module(f'jaxresnet.{command}', *[a.format(tmp=tmp_path) for a in args])
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 1, result.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith(expected), result.stderr[-2000:]
  assert not os.path.exists(tmp_path / 'run')


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


def _loading_numpy(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/maps') as f:
      return '_multiarray_umath' in f.read()
  except FileNotFoundError:
    return False


def interrupt_while_starting(module, *args, timeout=60.0):
  """Ctrl-C while the command imports JAX and the rest.

  Sent once numpy's extension is mapped into the child: the commands install their
  signal handling before any heavy import, so from then on Ctrl-C must be one line.
  A fixed delay instead raced Python's own start-up on a loaded machine (the signal
  came before Python had installed any handler).
  """
  child = start(module, *args)
  deadline = time.monotonic() + timeout
  while not _loading_numpy(child.pid):
    assert child.poll() is None, child.communicate()
    assert time.monotonic() < deadline, 'the command never imported numpy'
    time.sleep(0.005)
  child.send_signal(signal.SIGINT)
  out, err = child.communicate(timeout=60)
  return child.returncode, out, err


@pytest.mark.slow
@pytest.mark.parametrize('command', ['main', 'evaluate', 'predict'])
def test_ctrl_c_while_starting_is_one_line(command, trained_workdir, image_folder, tmp_path):
  args = {'main': main_args(tmp_path / 'new', image_folder),
          'evaluate': [f'--workdir={trained_workdir}'],
          'predict': [f'--workdir={trained_workdir}', image_folder]}[command]
  status, out, err = interrupt_while_starting(f'jaxresnet.{command}', *args)
  assert status == 128 + signal.SIGINT, err
  assert err.strip().splitlines() == ['stopped by SIGINT (Ctrl-C)'] and out == ''


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_workdir_that_is_a_file_is_reported_before_the_data_is_read(tmp_path):
  workdir = tmp_path / 'a_file'
  workdir.write_text('not a directory')
  result = run_module('jaxresnet.main', *main_args(workdir, tmp_path / 'no_such_images'))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      f'error: --workdir {workdir} is a file, not a directory; choose another --workdir']  # Not the data's error.


@pytest.mark.slow
def test_another_models_checkpoints_are_reported_before_the_data_is_read(trained_workdir, tmp_path):
  result = run_module('jaxresnet.main', *main_args(trained_workdir, tmp_path / 'no_such_images', model='plain8'))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      f"error: {trained_workdir}/checkpoints holds a checkpoint of a different run (model: 'resnet8', this config: "
      "'plain8'); use another --workdir"]


@pytest.mark.slow
def test_an_uncreatable_workdir_is_reported_before_the_data_is_read(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('x')
  result = run_module('jaxresnet.main', *main_args(blocker / 'run', tmp_path / 'no_such_images'))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      f'error: cannot write to workdir {blocker}/run: {blocker} is a file, not a directory']


def parsed_config(*overrides, config_file=os.path.join(REPO, 'configs', 'default.py')):
  """The config main's flag parsing gives for `overrides` (in this process, on fresh flags)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from jaxresnet.infra import cli  # pylint: disable=g-import-not-at-top
  argv = ['main', f'--config={config_file}', '--workdir=unused', *overrides]
  flag_values = flags.FlagValues()
  cli.define_run_flags(flag_values, sys_argv=argv)  # ml_collections finds the overrides in sys.argv otherwise.
  cli.parse_flags(argv, flag_values)
  return flag_values.config


def test_a_repeated_override_replaces_the_value():
  # ml_collections joins a tuple field's repeated overrides: this trained with (100, 200, 300, 400).
  config = parsed_config('--config.lr_boundaries=(100,200)', '--config.lr_boundaries=(300,400)')
  assert tuple(config.lr_boundaries) == (300, 400)
  assert tuple(parsed_config('--config.lr_boundaries', '(1,2)', '--config.lr_boundaries=(5,)').lr_boundaries) == (5,)
  assert parsed_config('--config.seed=1', '--config.seed=2').seed == 2  # As scalars always did.
  assert tuple(parsed_config('--config.lr_boundaries=(7,8)').lr_boundaries) == (7, 8)


def run_outside_the_checkout(cwd, *args):
  env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'TF_CPP_MIN_LOG_LEVEL': '3'}
  return subprocess.run([sys.executable, '-m', 'jaxresnet.main', *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=600)


@pytest.mark.slow
def test_outside_the_checkout_a_configs_path_or_a_name_means_the_installed_config(tmp_path):
  installed = importlib.util.find_spec('jaxresnet.configs.resnet32').origin
  workdir = tmp_path / 'run'
  # A bad model override stops right after the config is read: the error shows which config was loaded.
  for config_arg, note in (('configs/resnet32.py', [f'note: no configs/resnet32.py here; using the installed '
                                                    f'jaxresnet.configs.resnet32 ({installed})']),
                           ('resnet32', [])):
    result = run_outside_the_checkout(tmp_path, f'--config={config_arg}', f'--workdir={workdir}',
                                      '--config.model=resnet21')
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[:-1] == note and lines[-1].startswith("error: unknown model 'resnet21'"), result.stderr
  missing = run_outside_the_checkout(tmp_path, '--config=configs/resnet99.py', f'--workdir={workdir}')
  assert missing.returncode == 1
  assert missing.stderr.strip().splitlines() == [
      'error: cannot load the config file configs/resnet99.py: there is no such file (give a config file, or an '
      "installed config's name such as resnet32; python -m jaxresnet.models lists them)"]
  assert not workdir.exists()
