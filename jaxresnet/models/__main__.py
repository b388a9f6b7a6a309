"""Lists the model zoo: each model's name, parameters, multiply-adds and config file.

    python -m jaxresnet.models [NAME ...]

Parameters are trainable ones (BatchNorm scale and bias included); multiply-adds
are those of one forward pass on one 32x32 image, over convs and denses. Both
come from an abstract trace (no compute), for 10 classes. The config column is
the model's recipe where there is one, else '-' (train such a model with
default.py and --config.model=NAME): configs/<name>.py where that path exists
from the current directory (a checkout), else the installed jaxresnet.configs file.
"""
import argparse
import importlib.util
import os
import sys
from typing import List, Optional

from jaxresnet import models
from jaxresnet.infra import cli


def configs_dir() -> Optional[str]:
  """The repository's configs/, wherever this copy of jaxresnet finds it.

  Installed, it is the package jaxresnet.configs (or `configs` in older
  installs); in a clone used from another directory, the folder beside the
  jaxresnet package.
  """
  locations = []
  for name in ('jaxresnet.configs', 'configs'):
    try:
      spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
      spec = None
    locations += list(spec.submodule_search_locations or []) if spec else []
  package = os.path.dirname(os.path.dirname(os.path.abspath(models.__file__)))
  locations.append(os.path.join(os.path.dirname(package), 'configs'))
  return next((d for d in locations if os.path.isfile(os.path.join(d, 'default.py'))), None)


def config_file(name: str, directory: Optional[str]) -> str:
  """A --config path that works from here: configs/<name>.py in a checkout, else the installed file; or '-'."""
  if not directory or not os.path.isfile(os.path.join(directory, f'{name}.py')):
    return '-'
  checkout = os.path.join('configs', f'{name}.py')
  if os.path.isfile(checkout):  # Short, and what the docs write, where it names a real file.
    return checkout
  return os.path.join(directory, f'{name}.py')  # A wheel user's cwd has no configs/.


def human(count: int) -> str:
  """2829238912 -> '2.83G', 40551040 -> '40.6M'."""
  for unit, size in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
    if count >= size:
      return f'{count / size:.3g}{unit}'
  return str(count)


def zoo_table(names: List[str]) -> List[str]:
  """The table's lines: a header, then one line per model."""
  directory = configs_dir()
  rows = [('model', 'parameters', 'multiply-adds', 'config')]
  for name in names:
    params, macs = models.count_params_and_macs(models.get_model(name))
    rows.append((name, f'{params:,}', human(macs), config_file(models.RECIPE_NAMES.get(name, name), directory)))
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  return ['  '.join([row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2]), row[3]])
          for row in rows]


class _Parser(argparse.ArgumentParser):
  """argparse, but a bad argument is one `error:` line and the exit status of every command (cli.ERROR_STATUS)."""

  def error(self, message):
    cli.exit_with_error(f'{message} (see --help)')


def main(argv=None) -> int:
  parser = _Parser(
      prog='python -m jaxresnet.models', description=__doc__.split('\n\n', 1)[0],
      epilog='Parameters include BatchNorm scale and bias; multiply-adds are per 32x32 image. Train a model '
             'with --config=CONFIG (its config column), or with default.py and --config.model=NAME.')
  parser.add_argument('names', nargs='*', metavar='NAME', help='models to list (default: all of them)')
  args = parser.parse_args(argv)
  unknown = [n for n in args.names if n not in models.MODELS]
  if unknown:
    print(f'error: {models.unknown_model_message(unknown[0])}', file=sys.stderr)
    return cli.ERROR_STATUS
  lines = zoo_table(args.names or list(models.MODELS))
  for line in lines:
    print(line, flush=True)
  if any(line.endswith('  -') for line in lines):
    print(f"-: no recipe of its own; train it with --config={config_file('default', configs_dir())} "
          "--config.model=NAME")
  return 0


if __name__ == '__main__':
  sys.exit(main())
