"""User-facing errors: each becomes one line on stderr and a non-zero exit."""
import contextlib
import sys


class JaxresnetError(Exception):
  """Bad input from the user (config, data, workdir): reported in one line."""


class ConfigError(JaxresnetError):
  pass


class DataError(JaxresnetError):
  pass


class CheckpointError(JaxresnetError):
  pass


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
