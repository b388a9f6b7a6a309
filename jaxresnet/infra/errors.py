"""User-facing errors: each becomes one line on stderr and a non-zero exit.

Also what every command shares around absl: `--help` exits 0, a bad or missing
flag is one `error:` line with exit status 2, an interrupt (Ctrl-C, or SIGTERM
before training) is one line with exit status 128 + the signal, and library
noise (Orbax's logged tracebacks, asyncio's "Exception ignored in <coroutine>")
goes to a log file instead of the terminal.
"""
import contextlib
import logging
import os
import re
import sys
import threading
import traceback
from typing import Callable, List, Optional

from jaxresnet.infra import signals


# Whole texts of the failures that get a short line on the terminal: only ever to the log file.
DETAILS = logging.getLogger('jaxresnet.details')
DETAILS.propagate = False
DETAILS.addHandler(logging.NullHandler())


class JaxresnetError(Exception):
  """Bad input from the user (config, data, workdir): reported in one line."""


class ConfigError(JaxresnetError):
  pass


class DataError(JaxresnetError):
  pass


class CheckpointError(JaxresnetError):
  pass


class WorkdirBusyError(CheckpointError):
  """Another process holds the workdir's lock."""


@contextlib.contextmanager
def exit_on_user_error():
  """Turns a JaxresnetError into `error: <message>` and exit status 1."""
  try:
    yield
  except JaxresnetError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(1)


def exit_on_extra_arguments(argv) -> None:
  """For commands that take only flags: stray words are one line and exit status 2."""
  if len(argv) > 1:
    print(f'error: unexpected arguments: {" ".join(argv[1:])}', file=sys.stderr)
    sys.exit(2)


# --------------------------------------------------------------------------
# Flags: the same behaviour in every command.

_HELP_FLAGS = ('help', 'helpshort', 'helpfull', 'helpxml', '?')


def asks_for_help(argv: List[str]) -> bool:
  """Whether the command line holds one of absl's help flags (before any `--`)."""
  for arg in argv[1:]:
    if arg == '--':
      return False
    if arg.startswith('-') and arg.lstrip('-').split('=')[0] in _HELP_FLAGS:
      return True
  return False


def flag_error_message(error: Exception) -> str:
  """One line for absl's flag errors; missing required flags are named together."""
  text = str(error)
  missing = re.findall(r'Flag --(\w+) must have a value other than None', text)
  if missing:
    names = ', '.join(f'--{name}' for name in missing)
    return f'missing required flag{"s" if len(missing) > 1 else ""} {names} (see --help)'
  lines = text.strip().splitlines()
  return lines[0] if lines else type(error).__name__


def parse_flags_or_exit(argv: List[str], parse: Optional[Callable] = None):
  """absl's flag parsing (or `parse`), but `--help` exits 0 and bad input is one line with exit status 2.

  absl itself exits 1 after printing the help, and prints a bad flag as a
  `FATAL Flags parsing error` with exit status 1. `parse` may raise ConfigError
  for what it checks on top (main's config file).
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  parse = parse or flags.FLAGS
  try:
    return parse(argv)
  except SystemExit as e:
    if e.code == 1 and asks_for_help(argv):
      sys.exit(0)  # The help was printed: that is success.
    raise
  except flags.Error as e:
    message = flag_error_message(e)
  except ConfigError as e:
    message = str(e)
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(2)


def run_cli(main: Callable, flags_parser: Optional[Callable] = None, stopped_hint: str = '') -> None:
  """app.run(main) for a jaxresnet command: the flag behaviour above, and an interrupt in one line.

  Call `signals.stop_on_signals()` first, before the slow imports, so that
  SIGTERM is an interrupt too. `stopped_hint` follows the interrupt line, e.g.
  'run the same command to continue'.
  """
  from absl import app  # pylint: disable=g-import-not-at-top
  try:
    app.run(main, flags_parser=flags_parser or parse_flags_or_exit)
  except (KeyboardInterrupt, signals.Interrupted) as e:
    sys.stdout.flush()
    print(signals.stopped_line(e) + (f'; {stopped_hint}' if stopped_hint else ''), file=sys.stderr, flush=True)
    # The `finally` blocks have run (temporary files are gone). Skip the interpreter's shutdown: an
    # interrupt inside JAX's start-up or a compile can leave native threads that crash it (exit 139).
    os._exit(128 + signals.signal_of(e))  # pylint: disable=protected-access


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
      except OSError:
        pass  # An unwritable workdir is reported where it matters; the details are lost.

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
