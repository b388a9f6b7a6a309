"""He et al. 2016's central result, checked on finished runs: depth against training and test error.

Figure 6 of the paper: a deeper *plain* net has higher training error than a shallower one (the
degradation problem: not overfitting, since the training error itself is worse), while with shortcuts
the deeper net trains and tests better. `depth_section` takes the report's rows (tables.collect) and
states each claim with its numbers and whether these runs support it; it never tunes anything.

Training error is what the runs logged: 1 - train_accuracy over the steps between two log lines, on
augmented batches with train-mode BatchNorm, as the paper's thin curves were measured during training.
A run's training curve is cut into WINDOWS equal spans of its schedule, each span's error the mean over
the steps logged in it (weighted by the steps each log line covers); "final training error" is the
last span's (the last 500 of 8,000 steps at 1/8 of the schedule). Test error is results.json's, the
final model on the whole test set.
"""
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from jaxresnet.infra import rundir

WINDOWS = 16  # Spans of a run's schedule: 500 steps each at 1/8 of the paper's 64k.
SHALLOW, DEEP = 20, 56  # The depths Figure 6's claims compare.
FAMILY_NAMES = {'plain': 'Plain', 'resnet': 'ResNet'}


def train_error_windows(directory: str, num_train_steps: int, windows: int = WINDOWS) -> np.ndarray:
  """Mean training error in each of `windows` equal spans of the run's steps (NaN where none was logged)."""
  sums, weights = np.zeros(windows), np.zeros(windows)
  for record in rundir.read_metrics(directory):
    if 'train_accuracy' not in record:
      continue
    span = min(windows - 1, max(0, int(np.ceil(record['step'] * windows / num_train_steps)) - 1))
    weight = record.get('train_window_steps', 1)
    sums[span] += weight * (1.0 - record['train_accuracy'])
    weights[span] += weight
  with np.errstate(invalid='ignore'):
    return np.where(weights > 0, sums / np.maximum(weights, 1), np.nan)


def _mean_std(values: Sequence[float]) -> Dict[str, Optional[float]]:
  values = [float(v) for v in values]
  return {'mean': float(np.mean(values)) if values else None,
          'std': float(np.std(values, ddof=1)) if len(values) > 1 else None, 'n': len(values)}


def depth_rows(models: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """Per plain or ResNet model with finished runs: final training and test error over its seeds."""
  rows = []
  for row in models:
    family = next((f for f in FAMILY_NAMES if row['model'].startswith(f)), None)
    depth = row['model'][len(family):] if family else ''
    finished = [r for r in row['runs'] if r['status'] == 'finished']
    if not (family and depth.isdigit() and finished):
      continue
    windows = np.array([train_error_windows(r['directory'], r['num_train_steps']) for r in finished])
    rows.append({'model': row['model'], 'name': row['name'], 'family': family, 'depth': int(depth),
                 'seeds': [r['seed'] for r in finished],
                 'train_error': _mean_std(windows[:, -1]), 'test_error': _mean_std([r['test_error'] for r in finished]),
                 'train_error_windows': np.mean(windows, axis=0).tolist()})
  return sorted(rows, key=lambda r: (r['family'], r['depth']))


def _difference(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Optional[float]]:
  """a's mean minus b's (fractions) and the standard error of that difference, where both have a spread."""
  standard_error = (float(np.sqrt(a['std'] ** 2 / a['n'] + b['std'] ** 2 / b['n']))
                    if a['std'] is not None and b['std'] is not None else None)
  return {'difference': a['mean'] - b['mean'], 'standard_error': standard_error}


def _pct(stats: Dict[str, Any]) -> str:
  text = f'{100 * stats["mean"]:.2f}' + (f' ± {100 * stats["std"]:.2f}' if stats['std'] is not None else '')
  return f'{text}% (n = {stats["n"]})'


def _points(d: Dict[str, Optional[float]]) -> str:
  """'+2.31 points (standard error 0.40)'."""
  se = '' if d['standard_error'] is None else f' (standard error {100 * d["standard_error"]:.2f})'
  return f'{100 * d["difference"]:+.2f} points{se}'


def claims(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """The paper's four claims about depth 20 against 56, each with its numbers and a verdict.

  verdict: 'supported' / 'not supported' by these runs, or 'not yet' while a model has no finished run.
  """
  by = {(r['family'], r['depth']): r for r in rows}
  plain20, plain56 = by.get(('plain', SHALLOW)), by.get(('plain', DEEP))
  resnet20, resnet56 = by.get(('resnet', SHALLOW)), by.get(('resnet', DEEP))
  found = []

  def claim(key, text, needs, judge):
    missing = [f'{FAMILY_NAMES[family]}-{depth}' for family, depth in needs if (family, depth) not in by]
    if missing:
      found.append({'claim': key, 'text': text, 'verdict': 'not yet',
                    'evidence': f'no finished run of {" or ".join(missing)} yet.'})
      return
    holds, evidence = judge()
    found.append({'claim': key, 'text': text, 'verdict': 'supported' if holds else 'not supported',
                  'evidence': evidence})

  def a():
    deep, shallow = np.array(plain56['train_error_windows']), np.array(plain20['train_error_windows'])
    above = deep > shallow
    final = _difference(plain56['train_error'], plain20['train_error'])
    spans = ', '.join(str(i + 1) for i in np.flatnonzero(~above))
    return bool(above.all()), (
        f'Plain-{DEEP}\'s mean training error is above Plain-{SHALLOW}\'s in {int(above.sum())} of the '
        f'{len(above)} spans of the schedule' + (f' (not in span {spans})' if spans else '') +
        f'; in the last span {_pct(plain56["train_error"])} against {_pct(plain20["train_error"])}: '
        f'{_points(final)}.')

  def b():
    d = _difference(plain56['test_error'], plain20['test_error'])
    return d['difference'] > 0, (f'Plain-{DEEP} {_pct(plain56["test_error"])} against Plain-{SHALLOW} '
                                 f'{_pct(plain20["test_error"])}: {_points(d)}.')

  def c():
    train = _difference(resnet56['train_error'], resnet20['train_error'])
    test = _difference(resnet56['test_error'], resnet20['test_error'])
    return train['difference'] < 0 and test['difference'] < 0, (
        f'training error: ResNet-{DEEP} {_pct(resnet56["train_error"])} against ResNet-{SHALLOW} '
        f'{_pct(resnet20["train_error"])}: {_points(train)}; test error: {_pct(resnet56["test_error"])} against '
        f'{_pct(resnet20["test_error"])}: {_points(test)}.')

  def d():
    test = _difference(plain56['test_error'], resnet56['test_error'])
    train = _difference(plain56['train_error'], resnet56['train_error'])
    return test['difference'] > 0 and train['difference'] > 0, (
        f'Plain-{DEEP} minus ResNet-{DEEP}: test error {_points(test)}, final training error {_points(train)}.')

  claim('a', f'Plain-{DEEP}\'s training error is above Plain-{SHALLOW}\'s through training (the degradation '
        'problem).', [('plain', SHALLOW), ('plain', DEEP)], a)
  claim('b', f'Plain-{DEEP}\'s test error is above Plain-{SHALLOW}\'s.', [('plain', SHALLOW), ('plain', DEEP)], b)
  claim('c', f'ResNet-{DEEP}\'s training and test error are below ResNet-{SHALLOW}\'s: with shortcuts, depth '
        'helps.', [('resnet', SHALLOW), ('resnet', DEEP)], c)
  claim('d', f'At depth {DEEP} the shortcuts lower the error: Plain-{DEEP} minus ResNet-{DEEP} is positive in '
        'training and test error.', [('plain', DEEP), ('resnet', DEEP)], d)
  return found


def depth_section(models: List[Dict[str, Any]]) -> Dict[str, Any]:
  """report.json's 'depth': the per-model rows and the claims."""
  rows = depth_rows(models)
  return {'windows': WINDOWS, 'rows': rows, 'claims': claims(rows)}


def render(section: Dict[str, Any]) -> List[str]:
  """report.md's lines on depth: the table of final errors, then each claim in words."""
  if not section['rows']:
    return []
  lines = ['## Depth: deeper plain nets train worse, deeper ResNets better (Figure 6)', '',
           f'Final training error: the mean of the training errors logged in the last 1/{section["windows"]} of '
           'each run (augmented batches, train-mode BatchNorm, as the curves below), over its finished seeds. '
           'Test error: the final model on the whole test set. Mean ± sample std over seeds.', '',
           '| Net | Depth | Seeds | Final training error | Test error |', '|---|---:|---|---:|---:|']
  for row in section['rows']:
    std = lambda s: f'{100 * s["mean"]:.2f}' + (f' ± {100 * s["std"]:.2f}' if s['std'] is not None else '')
    lines.append(f'| {FAMILY_NAMES[row["family"]]} | {row["depth"]} | {", ".join(map(str, row["seeds"]))} | '
                 f'{std(row["train_error"])} | {std(row["test_error"])} |')
  lines += ['', 'The paper\'s claims, against these runs:', '']
  for c in section['claims']:
    lines.append(f'- ({c["claim"]}) {c["text"]} **{c["verdict"].capitalize()}**: {c["evidence"]}')
  lines.append('')
  return lines
