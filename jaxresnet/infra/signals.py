"""Stopping cleanly on SIGTERM/SIGINT, before training and during it.

Colab and TPU VMs send SIGTERM before they take a machine away; Ctrl-C sends
SIGINT. Two regimes:

  * Before training (imports, flag parsing, loading data, compiling) there is
    nothing to save. `stop_on_signals()`, called first thing by the commands,
    makes SIGTERM raise `Interrupted` as Ctrl-C raises KeyboardInterrupt: the
    process unwinds (so `finally` blocks remove temporary files) and the
    command prints one line (errors.run_cli) and exits with 128 + the signal.
  * During training, `StopRequest` only records the signal; the loop checks it
    after each step, saves a checkpoint and exits 0. A second signal falls
    through to the handler before it, so a user can still force an exit.

No JAX here at import time: the commands import this module before anything slow.
"""
import os
import signal
import sys
import threading
from typing import Optional


class Interrupted(BaseException):
  """SIGTERM outside the training loop, raised like KeyboardInterrupt (not an Exception: nothing catches it by accident)."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum


def signal_of(error: BaseException) -> signal.Signals:
  """The signal behind an Interrupted or a KeyboardInterrupt."""
  return signal.Signals(error.signum) if isinstance(error, Interrupted) else signal.SIGINT


def stopped_line(error: BaseException) -> str:
  name = signal_of(error).name
  return f'stopped by {name}' + (' (Ctrl-C)' if name == 'SIGINT' else '')


def _raise_interrupted(signum, frame):
  del frame
  raise Interrupted(signum)


def redeliver(info) -> bool:
  """For sys.unraisablehook: an interrupt raised where Python can only ignore it is sent again; True if it was one.

  A signal's exception is raised wherever the main thread happens to be: inside
  a garbage-collection callback (JAX has one) Python prints it as "Exception
  ignored in ..." and carries on, as if Ctrl-C had never been pressed. So the
  signal is sent again, from another thread a moment later: the main thread
  has left the callback (and this hook) by then, and raises it there.
  """
  if info.exc_type is None or not issubclass(info.exc_type, (Interrupted, KeyboardInterrupt)):
    return False
  signum = signal_of(info.exc_value) if info.exc_value is not None else signal.SIGINT
  again = threading.Timer(0.05, os.kill, (os.getpid(), signum))
  again.daemon = True
  again.start()
  return True


def stop_on_signals() -> None:
  """From now on SIGTERM raises Interrupted (SIGINT raises KeyboardInterrupt, as always).

  Also covers the imports that follow the call: an interrupt that escapes to the
  top level is printed as one line (not a traceback) and the process exits
  with 128 + the signal, as a shell reports it.
  """
  if threading.current_thread() is not threading.main_thread():
    return
  signal.signal(signal.SIGTERM, _raise_interrupted)
  previous = sys.excepthook

  def one_line(kind, value, traceback):
    if not issubclass(kind, (Interrupted, KeyboardInterrupt)):
      return previous(kind, value, traceback)
    print(stopped_line(value), file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(128 + signal_of(value))  # pylint: disable=protected-access

  sys.excepthook = one_line
  previous_unraisable = sys.unraisablehook

  def unraisable(info):
    if not redeliver(info):
      previous_unraisable(info)

  sys.unraisablehook = unraisable


class StopRequest:
  """Context manager: `.requested()` turns true once SIGTERM or SIGINT arrived."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signal_name: Optional[str] = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name
    for sig, handler in self._previous.items():  # A second signal is not caught again.
      signal.signal(sig, handler)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def requested(self, collective: bool = False) -> bool:
    """Whether to stop now. With `collective`, all processes agree (any one signalled -> all stop)."""
    import jax  # pylint: disable=g-import-not-at-top
    local = self.signal_name is not None
    if not collective or jax.process_count() == 1:
      return local
    import numpy as np  # pylint: disable=g-import-not-at-top
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return bool(np.any(multihost_utils.process_allgather(np.array(local))))
