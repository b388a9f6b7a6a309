"""A grid of configs, each trained in its own sub-workdir, and the table of their final accuracies.

The library behind `python -m jaxresnet.sweep` (see that command for the
grid's syntax). Each point trains with train.train_and_evaluate in
WORKDIR/<field>=<value>,<field>=<value>; a point is finished by rundir's one
rule (results.json at its last step) and skipped, the others resume.
WORKDIR/sweep.md and sweep.csv hold one row per point. One sweep at a time
works in a WORKDIR (it holds WORKDIR/.lock); a population member's folder is
refused as a WORKDIR.
"""
import ast
import contextlib
import csv
import itertools
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import ml_collections

from jaxresnet import data
from jaxresnet.infra import config as config_lib
from jaxresnet.infra import rundir
from jaxresnet.infra.errors import ConfigError
from jaxresnet.training import train

PREFIX = '--sweep.'

Grid = List[Tuple[str, List[Any]]]  # (field, values) in the order given.


def split_values(text: str) -> List[str]:
  """Splits 'a,b,(1,2)' at the commas outside parentheses and brackets."""
  parts, depth, current = [], 0, ''
  for char in text:
    depth += {'(': 1, '[': 1, ')': -1, ']': -1}.get(char, 0)
    if char == ',' and depth == 0:
      parts.append(current)
      current = ''
    else:
      current += char
  return parts + [current]


def parse_value(field: str, text: str, current: Any) -> Any:
  """`text` as a value of the type of the config field's current value."""
  text = text.strip()
  kind = type(current)
  try:
    if kind is bool:
      if text.lower() not in ('true', 'false', '1', '0'):
        raise ValueError
      return text.lower() in ('true', '1')
    if kind in (int, float):
      value = ast.literal_eval(text)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise ValueError
      return kind(value)
    if kind is str:
      if not text:
        raise ValueError
      return text
    if kind in (tuple, list):
      value = ast.literal_eval(text)
      return tuple(value) if isinstance(value, (tuple, list)) else (value,)
  except (ValueError, SyntaxError):
    raise ConfigError(f'{PREFIX}{field}: {text!r} is not a valid {kind.__name__}') from None
  raise ConfigError(f'{PREFIX}{field}: fields of type {kind.__name__} cannot be swept')


def parse_grid(args: Sequence[str], config: ml_collections.ConfigDict) -> Grid:
  grid = []
  for arg in args:
    field, sep, values = arg[len(PREFIX):].partition('=')
    if not sep or not values:
      raise ConfigError(f'{arg}: expected {PREFIX}<field>=value1,value2,...')
    if field not in config:
      raise ConfigError(f'unknown sweep field {field!r}; see configs/default.py for the fields')
    if field in dict(grid):
      raise ConfigError(f'{PREFIX}{field} is given twice')
    grid.append((field, [parse_value(field, v, config[field]) for v in split_values(values)]))
  if not grid:
    raise ConfigError(f'nothing to sweep: give at least one {PREFIX}<field>=value1,value2,...')
  return grid


def format_value(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return '(' + ','.join(format_value(v) for v in value) + ')'
  return str(value).replace(os.sep, '_')


def point_name(fields: Sequence[str], values: Sequence[Any]) -> str:
  return ','.join(f'{f}={format_value(v)}' for f, v in zip(fields, values))


def grid_points(config: ml_collections.ConfigDict, grid: Grid) -> List[Tuple[str, tuple, ml_collections.ConfigDict]]:
  """(name, values, config) of every point, each config validated before anything runs."""
  fields = [f for f, _ in grid]
  points = []
  for values in itertools.product(*[v for _, v in grid]):
    point = ml_collections.ConfigDict(config.to_dict())
    for field, value in zip(fields, values):
      point[field] = value
    name = point_name(fields, values)
    try:
      config_lib.validate(point, jax.device_count())
    except ConfigError as e:
      raise ConfigError(f'sweep point {name}: {e}') from None
    points.append((name, values, point))
  return points


class TotalSteps:
  """A point's run length; runs set in epochs need the training set's size (read once per dataset)."""

  def __init__(self):
    self._sizes = {}

  def __call__(self, config) -> int:
    known = config_lib.known_num_train_steps(config)
    if known:
      return known
    key = (config.dataset, config.data_dir, config.cache_dir, config.num_val_examples)
    if key not in self._sizes:
      self._sizes[key] = len(data.load_dataset(config).train_labels)
    return config_lib.num_train_steps(config, self._sizes[key])


def _percent(value) -> str:
  return '' if value is None else f'{100 * value:.2f}'


def write_tables(workdir: str, grid: Grid, points, results: Dict[str, Optional[dict]]) -> Tuple[str, str]:
  """WORKDIR/sweep.csv and sweep.md from each point's results (None: not finished)."""
  fields = [f for f, _ in grid]
  columns = ['step', 'val_accuracy', 'test_accuracy', 'test_error', 'num_params']
  csv_path = os.path.join(workdir, 'sweep.csv')
  with open(csv_path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['point', *fields, *columns, 'status'])
    for name, values, _ in points:
      r = results.get(name)
      writer.writerow([name, *[format_value(v) for v in values],
                       *[('' if r is None else r.get(c, '')) for c in columns],
                       'done' if r else 'not finished'])

  lines = ['| ' + ' | '.join(fields) + ' | steps | val accuracy (%) | test accuracy (%) |',
           '|' + '---|' * (len(fields) + 3)]
  for name, values, _ in points:
    r = results.get(name) or {}
    lines.append('| ' + ' | '.join(format_value(v) for v in values) +
                 f' | {r.get("step", "not finished")} | {_percent(r.get("val_accuracy"))} | '
                 f'{_percent(r.get("test_accuracy"))} |')
  with_val = [(r['val_accuracy'], name, r) for name, r in results.items() if r and 'val_accuracy' in r]
  if with_val:
    _, name, r = max(with_val, key=lambda t: t[0])
    lines += ['', f'Best by validation accuracy: `{name}` (validation {_percent(r["val_accuracy"])}%, '
                  f'test {_percent(r["test_accuracy"])}%).']
  if len(grid) == 2:  # One field down, the other across: the layout people make by hand.
    (row_field, row_values), (col_field, col_values) = grid
    lines += ['', f'Test accuracy (%), {row_field} down, {col_field} across:', '',
              f'| {row_field} \\ {col_field} | ' + ' | '.join(format_value(v) for v in col_values) + ' |',
              '|' + '---|' * (len(col_values) + 1)]
    for rv in row_values:
      cells = [_percent((results.get(point_name(fields, (rv, cv))) or {}).get('test_accuracy'))
               for cv in col_values]
      lines.append(f'| {format_value(rv)} | ' + ' | '.join(cells) + ' |')
  md_path = os.path.join(workdir, 'sweep.md')
  with open(md_path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return md_path, csv_path


def run_sweep(config: ml_collections.ConfigDict, workdir: str, grid: Grid) -> Dict[str, Optional[dict]]:
  """Trains every unfinished point of the grid; returns each point's results (None if not finished)."""
  rundir.check_not_member(workdir, 'resume the population')
  points = grid_points(config, grid)
  total_steps = TotalSteps()
  is_main = jax.process_index() == 0
  rundir.check_writable(workdir)
  with (rundir.lock_workdir(workdir) if is_main else contextlib.nullcontext()):
    return _run_points(workdir, grid, points, total_steps, is_main)


def _run_points(workdir, grid, points, total_steps, is_main) -> Dict[str, Optional[dict]]:
  results = {}
  for name, _, point in points:
    point_dir = os.path.join(workdir, name)
    results[name] = rundir.read_results(point_dir) if rundir.finished(point, point_dir, total_steps(point)) else None
  for i, (name, _, point) in enumerate(points):
    if is_main:
      print(f'== sweep point {i + 1}/{len(points)}: {name}' +
            (': finished earlier, skipped' if results[name] else ''), flush=True)
    if results[name]:
      continue
    summary = train.train_and_evaluate(point, os.path.join(workdir, name))
    if summary.get('stopped'):  # A signal: stop the whole sweep; a rerun resumes this point.
      break
    results[name] = summary
    if is_main:
      write_tables(workdir, grid, points, results)
  if is_main:
    os.makedirs(workdir, exist_ok=True)
    for path in write_tables(workdir, grid, points, results):
      print(f'wrote {path}')
    with open(os.path.join(workdir, 'sweep.md')) as f:
      print(f.read(), end='', flush=True)
  return results
