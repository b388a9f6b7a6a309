"""Stopping cleanly on SIGTERM/SIGINT, before training and during it: the one signal mechanism of jaxresnet.

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

Library code that must clean up on SIGTERM also when no command installed
anything (a user calling jaxresnet.data from Python) wraps its work in
`unwind_on_sigterm()`.

A C extension's module initialization may run Python code (TensorStore's,
pulled in by Orbax, asks numpy for its version; jaxlib's imports numpy), and
an interrupt raised there does not end cleanly: TensorStore's turns it into
`ImportError: initialization failed` (a 30-line traceback), jaxlib's crashes
the process (SIGSEGV or SIGABRT), also when it is raised just after, as the
failed import drops the new module. So while an extension module imports, the
handlers only note a signal, and send it again once the import is done
(`_hold_signals_inside_extension_imports`). Should another C layer still wrap an
interrupt in an error of its own, `interrupt_in` finds it in the error's
chain of causes; should some `except ImportError` drop it, or should the
command reach its main before the signal came again, it is raised there
(`raise_if_swallowed`).

No JAX here at import time: the commands import this module before anything slow.
"""
import contextlib
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


def interrupt_in(error: Optional[BaseException]) -> Optional[BaseException]:
  """The Interrupted or KeyboardInterrupt that `error` is, or that caused it (None if neither).

  A C extension's failed initialization wraps the interrupt that stopped it in
  an ImportError (raised `from` it); code that cleans up after an interrupt
  may fail in turn (its exception's context is the interrupt).
  """
  seen = set()
  while error is not None and id(error) not in seen:
    if isinstance(error, (Interrupted, KeyboardInterrupt)):
      return error
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  return None


# The signal whose exception a handler of stop_on_signals raised last. Such an exception ends the
# process (one line, 128 + the signal); while the process runs on, someone swallowed it.
_raised: Optional[int] = None


# How deep the main thread is in extension-module initializations, a signal that came meanwhile,
# and whether it is being sent again.
_extension_imports = 0
_held: Optional[int] = None
_sending_again = False


def _raise_interrupted(signum, frame):
  del frame
  global _raised, _held, _sending_again
  _sending_again = False
  if _extension_imports:
    _held = signum  # Sent again once the module is imported.
    return
  _raised, _held = signum, None
  if signum == signal.SIGINT:
    raise KeyboardInterrupt
  raise Interrupted(signum)


def _holding_signals(method):
  """An ExtensionFileLoader method, with SIGINT and SIGTERM held back until the module is imported."""

  def holding(self, *args):
    global _extension_imports, _sending_again
    if threading.current_thread() is not threading.main_thread():
      return method(self, *args)
    _extension_imports += 1
    try:
      return method(self, *args)
    finally:
      _extension_imports -= 1
      if not _extension_imports and _held is not None and not _sending_again:
        _sending_again = True
        _send_again(_held)

  holding.__wrapped__ = method
  return holding


def _hold_signals_inside_extension_imports() -> None:
  """While a C extension module initializes, SIGINT and SIGTERM wait (see above)."""
  import importlib.machinery  # pylint: disable=g-import-not-at-top
  loader = importlib.machinery.ExtensionFileLoader
  for name in ('create_module', 'exec_module'):  # Single-phase init runs in the first, multi-phase in both.
    method = getattr(loader, name)
    if not hasattr(method, '__wrapped__'):
      setattr(loader, name, _holding_signals(method))


def raise_if_swallowed() -> None:
  """Raises again an interrupt that was raised but caught and dropped (e.g. by an optional import).

  Call it where the process may only go on if it was never interrupted: the
  commands do before their main (errors.run_cli), the training loop as it starts.
  """
  signum = _raised or _held  # Raised but dropped, or held back and not sent again yet.
  if signum is not None:
    raise KeyboardInterrupt if signum == signal.SIGINT else Interrupted(signum)


def _send_again(signum: int) -> None:
  """Sends the signal to this process again a moment from now, from another thread.

  By then the main thread is past the point where it could not take it (a
  garbage-collection callback, an extension module's import).
  """
  again = threading.Timer(0.05, os.kill, (os.getpid(), signum))
  again.daemon = True
  again.start()


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
  _send_again(signal_of(info.exc_value) if info.exc_value is not None else signal.SIGINT)
  return True


def exit_interrupted(error: BaseException, hint: str = '') -> None:
  """Prints the interrupt's one line (and `hint` after it) and ends the process with 128 + the signal.

  The `finally` blocks have run by then. The interpreter's shutdown is skipped:
  an interrupt inside JAX's start-up or a compile can leave native threads that
  crash it (exit 139).
  """
  sys.stdout.flush()
  print(stopped_line(error) + (f'; {hint}' if hint else ''), file=sys.stderr, flush=True)
  os._exit(128 + signal_of(error))  # pylint: disable=protected-access


def stop_on_signals() -> None:
  """From now on SIGTERM raises Interrupted and SIGINT KeyboardInterrupt, and both are remembered.

  Also covers the imports that follow the call: one that arrives while a C
  extension initializes waits for it to return; an interrupt that escapes to
  the top level (also one another error wraps) is printed as one line (not a
  traceback) and the process exits with 128 + the signal, as a shell reports it.
  """
  if threading.current_thread() is not threading.main_thread():
    return
  _hold_signals_inside_extension_imports()
  signal.signal(signal.SIGTERM, _raise_interrupted)
  signal.signal(signal.SIGINT, _raise_interrupted)
  previous = sys.excepthook

  def one_line(kind, value, traceback):
    interrupt = interrupt_in(value)
    if interrupt is None:
      return previous(kind, value, traceback)
    exit_interrupted(interrupt)

  sys.excepthook = one_line
  previous_unraisable = sys.unraisablehook

  def unraisable(info):
    if not redeliver(info):
      previous_unraisable(info)

  sys.unraisablehook = unraisable


@contextlib.contextmanager
def unwind_on_sigterm():
  """Within the block, a SIGTERM that would end the process outright unwinds it first (`finally` blocks run).

  For library code that leaves temporary files while it works (jaxresnet.data's
  cache and unpacked archives), called from Python without a command around
  it: SIGTERM's default action ends the process at once, skipping every
  `finally`. Here it raises Interrupted instead, and once the block has
  unwound the process still dies of SIGTERM, as its sender expects. Where a
  handler is installed already (stop_on_signals raises Interrupted itself;
  StopRequest only records the signal), it is left alone. Ctrl-C needs
  nothing: KeyboardInterrupt runs the same `finally` blocks.
  """
  if (threading.current_thread() is not threading.main_thread()
      or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
    yield
    return

  def handler(signum, frame):
    del frame
    raise Interrupted(signum)

  signal.signal(signal.SIGTERM, handler)
  try:
    yield
  except Interrupted:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    raise
  finally:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


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
    raise_if_swallowed()  # A signal lost before training stops the run before its first step.
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def requested(self, collective: bool = False) -> bool:
    """Whether to stop now; every process of a multi-process run gets the same answer at the same step.

    One process answers from its own signal. Of several, a process that stopped
    alone would leave the others waiting for it in their next step's
    collectives: they only decide together, at the steps where `collective` is
    true (the loop passes the same steps on every process), where any one
    process's signal stops them all; at the other steps the answer is no.
    """
    import jax  # pylint: disable=g-import-not-at-top
    local = self.signal_name is not None
    if jax.process_count() == 1:
      return local
    if not collective:
      return False
    import numpy as np  # pylint: disable=g-import-not-at-top
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return bool(np.any(multihost_utils.process_allgather(np.array(local))))
