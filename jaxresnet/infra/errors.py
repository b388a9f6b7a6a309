"""User-facing errors, each reported in one line (jaxresnet.infra.cli prints them), and library noise.

The noise (Orbax's logged tracebacks, asyncio's "Exception ignored in
<coroutine>") goes to a log file instead of the terminal.
"""
import contextlib
import difflib
import logging
import os
import sys
import threading
import traceback
from typing import Iterable, List

from jaxresnet.infra import signals


# Whole texts of the failures that get a short line on the terminal: only ever to the log file.
DETAILS = logging.getLogger('jaxresnet.details')
DETAILS.propagate = False
DETAILS.addHandler(logging.NullHandler())


def printable(text: str) -> str:
  """`text` with the bytes of a file name that is not UTF-8 (lone surrogates in a str) written as \\xNN: a
  terminal whose encoding is strict UTF-8 would refuse to print them (UnicodeEncodeError, a traceback)."""
  return text.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')


class JaxresnetError(Exception):
  """Bad input from the user (config, data, workdir): reported in one line, printable whatever it names."""

  def __init__(self, *args):
    super().__init__(*(printable(a) if isinstance(a, str) else a for a in args))


class ConfigError(JaxresnetError):
  pass


class DataError(JaxresnetError):
  pass


class CheckpointError(JaxresnetError):
  pass


class WorkdirBusyError(CheckpointError):
  """Another process holds the workdir's lock."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
  """"; did you mean 'x'?" for the known names closest to a mistyped `name` (difflib's ratio, 0.6 at
  least), or '' if none is close. Ties are all named: 'resnet21' is as close to 'resnet20' as to 'resnet32'."""
  scores = {k: difflib.SequenceMatcher(None, name, k).ratio() for k in known}
  best = max((s for s in scores.values() if s >= 0.6), default=None)
  if best is None:
    return ''
  return '; did you mean ' + ' or '.join(f"'{k}'" for k in sorted(k for k, s in scores.items() if s == best)) + '?'


# --------------------------------------------------------------------------
# Library noise: to a log file, off the terminal.


@contextlib.contextmanager
def absl_warnings_off():
  """Only errors pass absl's logger inside the block (Orbax and ml_collections log through it)."""
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    absl_logger.setLevel(level)


class _LogFile(logging.Handler):
  """Appends records to a file, opened at the first record; until its folder exists, keeps them in memory.

  The workdir of a new run is created only once its data has loaded, so the
  first records may come before there is anywhere to put them.
  """

  def __init__(self, path: str, keep: int = 1000):
    super().__init__(level=logging.DEBUG)
    self.path, self.keep = path, keep
    self._waiting: List[str] = []
    self.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d] %(message)s'))

  def write(self, text: str) -> None:
    if not text.endswith('\n'):
      text += '\n'
    with self.lock:
      if not os.path.isdir(os.path.dirname(self.path) or '.'):
        self._waiting = (self._waiting + [text])[-self.keep:]
        return
      try:
        with open(self.path, 'a') as f:
          f.write(''.join(self._waiting) + text)
        self._waiting = []
      except OSError:  # An unwritable workdir is reported where it matters; the details are lost.
        with contextlib.suppress(OSError):
          if not os.path.getsize(self.path):
            os.remove(self.path)  # A full disk: no empty log file left behind.

  def emit(self, record: logging.LogRecord) -> None:
    try:
      self.write(self.format(record))
    except Exception:  # pylint: disable=broad-except
      self.handleError(record)


def _is_jax(record: logging.LogRecord) -> bool:
  return record.name == 'jax' or record.name.startswith('jax.')


def send_library_noise_to(path: str) -> None:
  """From now on library logging, Python warnings and exceptions nobody can catch go to `path`.

  The terminal keeps JAX's own warnings (e.g. no GPU found) and everything
  jaxresnet prints. What goes to the file: records of every other logger
  (Orbax logs each failed write with its traceback, hundreds of lines for a
  full disk), `warnings`, exceptions in library threads and "Exception ignored
  in <coroutine ...>" reports of asyncio. Call it after absl has set up logging
  (inside main), and only when the user did not ask for --verbosity.
  """
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  log_file = _LogFile(path)
  root = logging.getLogger()
  for handler in root.handlers:
    if handler is absl_logging.get_absl_handler() or isinstance(handler, logging.StreamHandler):
      handler.addFilter(_is_jax)
  root.addHandler(log_file)
  DETAILS.addHandler(log_file)
  logging.captureWarnings(True)

  def unraisable(info):
    if signals.redeliver(info):  # Ctrl-C inside a garbage-collection callback: not to be lost.
      return
    text = ''.join(traceback.format_exception(info.exc_type, info.exc_value, info.exc_traceback))
    log_file.write(f'{info.err_msg or "Exception ignored in"}: {info.object!r}\n{text}')

  def thread_exception(args):
    if args.exc_type is SystemExit:
      return
    text = ''.join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    log_file.write(f'exception in thread {getattr(args.thread, "name", "?")}:\n{text}')

  sys.unraisablehook = unraisable
  threading.excepthook = thread_exception
