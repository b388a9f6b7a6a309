"""infra/signals.py, the one signal mechanism: SIGTERM and Ctrl-C at any moment of a command are one line.

The hard moments are the imports: a C extension whose initialization runs
Python code (TensorStore's, pulled in by Orbax) turns the interrupt into
`ImportError: initialization failed`, and an optional import's `except
ImportError` may drop it altogether.
"""
import os
import signal
import subprocess
import sys

import pytest

from conftest import REPO

# Put first on PYTHONPATH, this sitecustomize sends the signal from inside TensorStore's C module
# initialization: that initialization asks numpy.lib.NumpyVersion for numpy's version (pybind11's
# numpy support), so the handler runs in Python code called from C, as a signal does that arrives then.
SIGNAL_INSIDE_TENSORSTORE_INIT = """
import os, signal, sys
import numpy.lib

_real = numpy.lib.NumpyVersion


class _SignalsInsideTensorStore(_real):
  fired = False

  def __init__(self, version):
    if 'tensorstore' in sys.modules and not self.fired:  # The first call once TensorStore's import began.
      type(self).fired = True
      open(os.environ['SIGNAL_SENT_MARK'], 'w').close()
      os.kill(os.getpid(), getattr(signal, os.environ['SIGNAL_TO_SEND']))
    super().__init__(version)


numpy.lib.NumpyVersion = _SignalsInsideTensorStore
"""


@pytest.mark.slow
@pytest.mark.parametrize('name', ['SIGTERM', 'SIGINT'])
def test_a_signal_while_tensorstore_initializes_is_one_line(tmp_path, name):
  site = tmp_path / 'site'
  site.mkdir()
  (site / 'sitecustomize.py').write_text(SIGNAL_INSIDE_TENSORSTORE_INIT)
  mark = tmp_path / 'sent'
  env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(site), REPO]), 'SIGNAL_TO_SEND': name,
         'SIGNAL_SENT_MARK': str(mark), 'PYTHONUNBUFFERED': '1', 'TF_CPP_MIN_LOG_LEVEL': '3'}
  result = subprocess.run([sys.executable, '-m', 'jaxresnet.main', '--config=configs/default.py',
                           f'--workdir={tmp_path / "run"}', '--config.dataset=image_folder',
                           f'--config.data_dir={tmp_path / "images"}'],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  if not mark.exists():
    pytest.skip('this TensorStore does not ask numpy.lib.NumpyVersion while it initializes: no signal was sent')
  output = (result.stdout + result.stderr).strip().splitlines()
  expected = 'stopped by SIGINT (Ctrl-C)' if name == 'SIGINT' else 'stopped by SIGTERM'
  assert result.returncode == 128 + getattr(signal, name), result.stderr[-3000:]
  assert output == [expected], result.stderr[-3000:]  # Not `ImportError: initialization failed` and 30 lines.
  assert not (tmp_path / 'run').exists()


# An interrupt turned into an ImportError by a C extension, and that ImportError caught by an
# optional import: the process runs on, and the command must still stop before its main.
SWALLOWED = """
import os, signal, sys, time
from jaxresnet.infra import cli, signals
signals.stop_on_signals()
try:
  try:
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    time.sleep(30)
  except BaseException as e:
    raise ImportError('initialization failed') from e
except ImportError:
  pass  # An optional dependency, it seems.
cli.run_cli(lambda argv: print('main ran'), stopped_hint='run the same command to continue')
"""


@pytest.mark.slow
@pytest.mark.parametrize('name', ['SIGTERM', 'SIGINT'])
def test_an_interrupt_that_an_optional_import_swallowed_still_stops_the_command(name):
  result = subprocess.run([sys.executable, '-c', SWALLOWED, name], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
  expected = 'stopped by SIGINT (Ctrl-C)' if name == 'SIGINT' else 'stopped by SIGTERM'
  assert result.returncode == 128 + getattr(signal, name), result.stderr
  assert 'main ran' not in result.stdout  # The command's main never ran.
  assert result.stderr.strip().splitlines() == [f'{expected}; run the same command to continue']


# jaxresnet.data called from plain Python: no command installed a handler, and SIGTERM must still
# let the temporary files go before the process dies of it.
UNWIND = """
import os, signal, sys, time
from jaxresnet.infra import signals
path = sys.argv[1]
with signals.unwind_on_sigterm():
  try:
    open(path, 'w').close()
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
  finally:
    os.remove(path)
print('not reached')
"""


@pytest.mark.slow
def test_unwind_on_sigterm_runs_finally_blocks_then_dies_of_sigterm(tmp_path):
  path = tmp_path / 'half_written.tmp'
  result = subprocess.run([sys.executable, '-c', UNWIND, str(path)], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
  assert result.returncode == -signal.SIGTERM, result.stderr  # As its sender expects.
  assert not path.exists() and 'not reached' not in result.stdout


def test_unwind_on_sigterm_leaves_an_installed_handler_alone():
  from jaxresnet.infra import signals  # pylint: disable=g-import-not-at-top
  calls = []
  previous = signal.signal(signal.SIGTERM, lambda *args: calls.append(args[0]))
  try:
    with signals.unwind_on_sigterm():
      os.kill(os.getpid(), signal.SIGTERM)
    assert calls == [signal.SIGTERM]
  finally:
    signal.signal(signal.SIGTERM, previous)


def test_interrupt_in_finds_the_interrupt_behind_an_error():
  from jaxresnet.infra import signals  # pylint: disable=g-import-not-at-top
  interrupt = signals.Interrupted(signal.SIGTERM)
  try:
    try:
      raise interrupt
    except BaseException as e:
      raise ImportError('initialization failed') from e
  except ImportError as e:
    assert signals.interrupt_in(e) is interrupt
  assert signals.interrupt_in(ValueError('plain')) is None
  assert signals.interrupt_in(None) is None
