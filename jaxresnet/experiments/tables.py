"""The reproduction report of a `jaxresnet.reproduce` workdir: report.md, report.json, figure6.png.

The library behind `python -m jaxresnet.report` (and the report that
`reproduce` rewrites after every run). It reads what the runs wrote, through
infra/rundir.py, and DIR/reproduce.json (the commands and settings), and puts
our numbers beside the paper's: per model the final test error as mean ± sample
std over the finished seeds, validation error, parameters, multiply-adds,
wall-clock time and hardware. A run counts only when it is finished
(rundir.is_finished: results.json at the run's last step); unfinished and
missing runs are listed as such, never filled in.

Workdir layout:

    DIR/reproduce.json                 the commands and settings (jaxresnet.reproduce)
    DIR/<model>/seed<k>/               a jaxresnet run: config.json, metrics.jsonl,
                                       results.json, timing.json, checkpoints
    DIR/<model>/peer_seed<k>/          the PyTorch peer's run of the same config and seed
                                       (jaxresnet.peer; `reproduce --peer`): the
                                       same files, config.json and results.json marked
                                       "trainer": "pytorch", and peer_checkpoints/
    DIR/report.md, report.json, figure6.png, figure6_peer.png   written here

Where a model has peer runs, its row also gives the peer's mean ± std test and
validation error on the same data and jaxresnet's mean minus the peer's, and
the report says in words what that comparison shows; the peer's curves get a
figure of their own on the same axes.
"""
import dataclasses
import datetime
import os
import re
import shutil
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from jaxresnet.experiments import curves
from jaxresnet.experiments import depth
from jaxresnet.infra import config as config_lib
from jaxresnet.infra import rundir
from jaxresnet.infra.errors import DataError

REPORT_JSON = 'report.json'
REPORT_MD = 'report.md'
FIGURE_FILE = 'figure6.png'
PEER_FIGURE_FILE = 'figure6_peer.png'
PEER_RUN_PREFIX = 'peer_seed'  # DIR/<model>/peer_seed<k>/, beside DIR/<model>/seed<k>/.
# Issue 13's target: on the same data, jaxresnet's mean test error at most this many points above the peer's.
PEER_TARGET_POINTS = 0.3
PEER_PADDING_TEXT = {
    'symmetric': "pads its stride-2 convolutions (1, 1) like the paper's and akamaster's nets (PyTorch's "
                 "padding=1), where jaxresnet's Flax 'SAME' convolutions pad (0, 1)",
    'same': "pads its stride-2 convolutions (0, 1) like jaxresnet's Flax 'SAME' convolutions: an exact copy of "
            "jaxresnet's nets",
}

CIFAR10_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']


@dataclasses.dataclass(frozen=True)
class Table:
  title: str
  models: Tuple[str, ...]
  paper_error: Dict[str, float]  # test error, fraction
  approximate: Tuple[str, ...]  # models whose paper error is read off a figure
  paper_params: Dict[str, int]
  notes: Tuple[str, ...]


TABLES = {
    'he2016': Table(
        title='He et al. 2016, Deep Residual Learning for Image Recognition: CIFAR-10 (Section 4.2, '
              'Table 6 and Figure 6)',
        models=('plain20', 'plain32', 'plain44', 'plain56',
                'resnet20', 'resnet32', 'resnet44', 'resnet56', 'resnet110'),
        paper_error={'plain20': 0.095, 'plain32': 0.10, 'plain44': 0.12, 'plain56': 0.135,
                     'resnet20': 0.0875, 'resnet32': 0.0751, 'resnet44': 0.0717, 'resnet56': 0.0697,
                     'resnet110': 0.0643},
        approximate=('plain20', 'plain32', 'plain44', 'plain56'),
        # Table 6 rounds these; the exact counts are in tests/test_models.py.
        paper_params={'resnet20': 270_000, 'resnet32': 460_000, 'resnet44': 660_000, 'resnet56': 850_000,
                      'resnet110': 1_700_000},
        notes=('Plain-net errors (marked *) are read off Figure 6 (left) by eye; the paper gives no table '
               'for them.',
               'ResNet-110: the paper reports the best of 5 runs, 6.43%, and their mean and std, '
               '6.61 ± 0.16%.',
               'The paper trains on the original (lossless) CIFAR-10 and reports the test error of the '
               'final model; its validation split is used only to choose the recipe.')),
}


# --------------------------------------------------------------------------
# Reading runs.


def run_dir(workdir: str, model: str, seed: int) -> str:
  """Where one run of a reproduction lives."""
  return os.path.join(workdir, model, f'seed{seed}')


def peer_run_dir(workdir: str, model: str, seed: int) -> str:
  """Where the PyTorch peer's run of the same model and seed lives."""
  return os.path.join(workdir, model, f'{PEER_RUN_PREFIX}{seed}')


def read_run(directory: str, seed: int) -> Dict[str, Any]:
  """Status and numbers of one run, from the files it wrote; None for what it did not write."""
  config = rundir.read_config(directory) or None
  run = {'seed': seed, 'directory': directory, 'status': 'not started', 'step': None,
         'num_train_steps': None, 'test_error': None, 'val_error': None, 'num_params': None, 'macs': None,
         'devices': None, 'wall_clock_seconds': None, 'wall_clock_complete': None,
         'images_per_second': None, 'versions': None, 'peer_padding': None, 'hosts': []}
  if config is None:
    return run
  run['num_train_steps'] = config.get('num_train_steps')
  run['status'] = 'unfinished'
  if os.path.exists(os.path.join(directory, rundir.METRICS_FILE)):
    records = rundir.read_metrics(directory)
    steps = [r['step'] for r in records]
    run['step'] = max(steps) if steps else 0
    speeds = [r['train_images_per_second'] for r in records if 'train_images_per_second' in r]
    run['images_per_second'] = float(np.median(speeds)) if speeds else None
  timing = rundir.read_timing(directory)
  if timing['sessions']:
    sessions = timing['sessions']
    run['wall_clock_seconds'] = float(sum(s['seconds'] or 0.0 for s in sessions))
    # A session killed outright never recorded its time: the sum is then a lower bound.
    run['wall_clock_complete'] = all(s['seconds'] is not None for s in sessions)
    run['versions'] = sessions[-1].get('versions')
    # The CPUs its sessions ran on (older timing files lack them): a CPU run's wall-clock depends on them.
    run['hosts'] = list(dict.fromkeys(s['host'] for s in sessions if s.get('host')))
  run['peer_padding'] = config.get('peer_padding')
  if rundir.is_finished(directory, run['num_train_steps']):
    results = rundir.read_results(directory)
    run.update(status='finished', step=results['step'], test_error=results['test_error'],
               val_error=results.get('val_error'), num_params=results['num_params'], macs=results['macs'],
               devices=results['devices'], class_names=results.get('class_names'))
  return run


def find_seeds(workdir: str, model: str, prefix: str = 'seed') -> List[int]:
  """Seeds of the model's runs on disk: DIR/<model>/seed<k>, or with prefix=PEER_RUN_PREFIX the peer's."""
  model_dir = os.path.join(workdir, model)
  if not os.path.isdir(model_dir):
    return []
  return sorted(int(m.group(1)) for d in os.listdir(model_dir)
                for m in [re.fullmatch(prefix + r'(\d+)', d)] if m and os.path.isdir(os.path.join(model_dir, d)))


def _mean_std(values: Sequence[float]) -> Tuple[Optional[float], Optional[float]]:
  if not values:
    return None, None
  return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def summarize(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
  """What a table row says about a set of runs of one model: the finished ones' errors, time and speed."""
  finished = [r for r in runs if r['status'] == 'finished']
  test_mean, test_std = _mean_std([r['test_error'] for r in finished])
  val_mean, val_std = _mean_std([r['val_error'] for r in finished if r['val_error'] is not None])
  wall = [r['wall_clock_seconds'] for r in finished if r['wall_clock_seconds'] is not None]
  speeds = [r['images_per_second'] for r in finished if r['images_per_second']]
  return {
      'num_seeds': len(runs), 'num_finished': len(finished),
      'test_error_mean': test_mean, 'test_error_std': test_std,
      'val_error_mean': val_mean, 'val_error_std': val_std,
      'wall_clock_seconds_mean': float(np.mean(wall)) if wall else None,
      'wall_clock_complete': all(r['wall_clock_complete'] for r in finished) if finished else None,
      'images_per_second_median': float(np.median(speeds)) if speeds else None,
      'devices': sorted({r['devices'] for r in finished}),
  }


def compare_with_peer(ours: Dict[str, Any], peer: Dict[str, Any]) -> Optional[Dict[str, Any]]:
  """jaxresnet's mean test error minus the peer's (fractions), with its standard error; None unless both ran."""
  if not (ours['num_finished'] and peer['num_finished']):
    return None
  difference = ours['test_error_mean'] - peer['test_error_mean']
  spreads = [(s['test_error_std'], s['num_finished']) for s in (ours, peer)]
  standard_error = (float(np.sqrt(sum(std ** 2 / n for std, n in spreads)))
                    if all(std is not None for std, _ in spreads) else None)
  return {'difference': difference, 'standard_error': standard_error,
          'within_target': round(100 * difference, 2) <= PEER_TARGET_POINTS}


def dataset_name(config: Dict[str, Any], class_names: Optional[List[str]]) -> str:
  if config.get('dataset') == 'image_folder' and class_names == CIFAR10_CLASSES:
    return 'CIFAR-10-JPEG'
  if config.get('dataset') == 'cifar10':
    return 'CIFAR-10 (TFDS)'
  return f'{config.get("dataset")} ({config.get("data_dir") or "default location"})'


def collect(workdir: str, table_name: Optional[str] = None) -> Dict[str, Any]:
  """Everything the report says, as plain data (this is report.json)."""
  if not os.path.isdir(workdir):
    raise DataError(f'{workdir} does not exist')
  plan = rundir.read_plan(workdir)
  table_name = table_name or plan.get('table', 'he2016')
  if table_name not in TABLES:
    raise DataError(f'unknown table {table_name!r}; known: {", ".join(TABLES)}')
  table = TABLES[table_name]
  planned_seeds = list(range(plan.get('seeds', 0)))
  planned_peer_seeds = list(range(plan.get('peer_seeds', 0)))
  on_disk = sorted(d for d in os.listdir(workdir)
                   if find_seeds(workdir, d) or find_seeds(workdir, d, PEER_RUN_PREFIX))
  models = list(table.models) + [m for m in plan.get('models', []) + on_disk if m not in table.models]
  models = list(dict.fromkeys(models))

  rows, configs, class_names = [], [], None
  for model in models:
    seeds = sorted(set(planned_seeds if model in plan.get('models', []) else []) |
                   set(find_seeds(workdir, model)))
    runs = [read_run(run_dir(workdir, model, seed), seed) for seed in seeds]
    peer_seeds = sorted(set(planned_peer_seeds if model in plan.get('models', []) else []) |
                        set(find_seeds(workdir, model, PEER_RUN_PREFIX)))
    peer_runs = [read_run(peer_run_dir(workdir, model, seed), seed) for seed in peer_seeds]
    finished = [r for r in runs if r['status'] == 'finished']
    for r in runs:
      config = rundir.read_config(r['directory'])
      if config:
        configs.append(config)
      class_names = class_names or r.get('class_names')
    ours = summarize(runs)
    peer = {**summarize(peer_runs), 'runs': peer_runs,
            'padding': sorted({r['peer_padding'] for r in peer_runs if r['peer_padding']})}
    class_names = class_names or next((r.get('class_names') for r in peer_runs if r.get('class_names')), None)
    rows.append({
        'model': model, 'name': curves.pretty_name(model),
        'paper_test_error': table.paper_error.get(model),
        'paper_error_approximate': model in table.approximate,
        'paper_params': table.paper_params.get(model),
        'num_params': finished[0]['num_params'] if finished else None,
        'macs': finished[0]['macs'] if finished else None,
        **ours,
        'runs': runs,
        'peer': peer,
        'minus_peer': compare_with_peer(ours, peer)})

  versions = []
  for row in rows:
    for r in row['runs'] + row['peer']['runs']:
      if r['versions'] and r['versions'] not in versions:
        versions.append(r['versions'])
  reference = configs[0] if configs else {}
  if not reference:  # Only peer runs so far: their configs hold the same recipe.
    reference = next((rundir.read_config(r['directory']) for row in rows
                      for r in row['peer']['runs'] if r['status'] != 'not started'), None) or {}
  return {
      'table': table_name, 'title': table.title,
      'generated': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      # As given, relative where it lies below the current folder: no one machine's path in a committed report.
      'workdir': (os.path.relpath(workdir) if not os.path.relpath(workdir).startswith(os.pardir)
                  else os.path.abspath(workdir)),
      'commands': plan.get('commands', []),
      'settings': plan.get('settings', {}),
      'dataset': dataset_name(reference, class_names) if reference else None,
      'recipe': {k: config_lib.upgrade(reference).get(k) for k in (
          'batch_size', 'learning_rate', 'momentum', 'weight_decay', 'schedule', 'lr_boundaries',
          'lr_decay_factor', 'num_train_steps', 'num_val_examples', 'augment',
          'normalization', 'shortcut', 'half_precision')} if reference else {},
      'warmup': {c['model']: {k: c[k] for k in ('warmup_steps', 'warmup', 'warmup_lr')}
                 for c in configs if c.get('warmup_steps')},
      'versions': versions,
      'paper_notes': list(table.notes),
      'figure': None,
      'peer_figure': None,
      'has_peer': any(row['peer']['num_seeds'] for row in rows),
      'peer_padding': sorted({p for row in rows for p in row['peer']['padding']}),
      'models': rows,
      'depth': depth.depth_section(rows),
  }


# --------------------------------------------------------------------------
# Writing the report.


def _pct(value: Optional[float], std: Optional[float] = None) -> str:
  if value is None:
    return '—'
  return f'{100 * value:.2f}' + (f' ± {100 * std:.2f}' if std is not None else '')


def _duration(seconds: Optional[float], complete: Optional[bool] = True) -> str:
  if seconds is None:
    return '—'
  text = f'{seconds / 3600:.2f} h' if seconds >= 3600 else f'{seconds / 60:.1f} min' if seconds >= 60 \
      else f'{seconds:.0f} s'
  return text if complete else f'≥ {text}'


def _millions(value: Optional[int]) -> str:
  return '—' if value is None else f'{value / 1e6:.2f}M'


# The figure's training error: the mean over this many equal spans of a run (100 steps each at 8,000).
FIGURE_TRAIN_SPANS = 80


def figure_curves(report: Dict[str, Any], peer: bool = False) -> List[curves.Curve]:
  """Per model, the mean curves of its finished seeds (jaxresnet's, or with `peer` the peer's), training
  error smoothed over FIGURE_TRAIN_SPANS spans."""
  means = []
  for row in report['models']:
    runs = row['peer']['runs'] if peer else row['runs']
    finished = [r['directory'] for r in runs if r['status'] == 'finished']
    if finished:
      label = row['name'] + (f' ({len(finished)} seeds)' if len(finished) > 1 else '')
      means.append(curves.smoothed(curves.mean_curve([curves.load_curve(d) for d in finished], label),
                                   FIGURE_TRAIN_SPANS))
  return means


def depth_colors(these: Sequence[curves.Curve]) -> Dict[str, str]:
  """One color per depth, the same in the plain and the ResNet panel: Plain-20 and ResNet-20 alike."""
  depth_of = {c.label: int(re.sub(r'\D', '', c.model) or 0) for c in these}
  depths = sorted(set(depth_of.values()))
  return {label: f'C{depths.index(d) % 10}' for label, d in depth_of.items()}


def _points(difference: float) -> str:
  """A difference of errors (fractions) in words: 'X points above' / 'below' / 'equal to'."""
  points = round(100 * difference, 2)
  if points == 0:
    return 'equal to'
  return f'{abs(points):.2f} points {"above" if points > 0 else "below"}'


def peer_comparison(report: Dict[str, Any]) -> List[str]:
  """The report's paragraph on jaxresnet against the PyTorch peer: what the numbers show, in words."""
  rows = [row for row in report['models'] if row['peer']['num_seeds']]
  paddings = report['peer_padding']
  padding_text = ('. '.join(f'With `--peer_padding={p}` it {PEER_PADDING_TEXT.get(p, p)}' for p in paddings)
                  if paddings else 'Its stride-2 padding is not recorded yet (no peer run has started)')
  lines = ['## jaxresnet against the PyTorch peer', '',
           'The peer (`jaxresnet.peer`) is an independent PyTorch implementation of the same nets, '
           'trained with the same config (recipe, schedule, seeds) on the same decoded images, train/validation '
           f'split and test set. {padding_text}. Where both miss the paper by the same amount, the data '
           'explains the gap; where jaxresnet is worse than the peer, jaxresnet\'s code does.', '']
  compared = [row for row in rows if row['minus_peer']]
  for row in rows:
    ours, peer, comparison = row, row['peer'], row['minus_peer']
    if comparison is None:
      missing = [name for name, s in (('jaxresnet', ours), ('the peer', peer)) if not s['num_finished']]
      missing = f'{missing[0]} has no' if len(missing) == 1 else 'neither jaxresnet nor the peer has a'
      lines.append(f'- {row["name"]}: no comparison yet ({missing} finished run).')
      continue
    spread = ('' if comparison['standard_error'] is None else
              f'; the standard error of that difference is {100 * comparison["standard_error"]:.2f} points')
    target = 'within' if comparison['within_target'] else 'outside'
    lines.append(
        f'- {row["name"]}: jaxresnet {_pct(ours["test_error_mean"], ours["test_error_std"])}% '
        f'(n = {ours["num_finished"]}), peer {_pct(peer["test_error_mean"], peer["test_error_std"])}% '
        f'(n = {peer["num_finished"]}): jaxresnet\'s mean test error is {_points(comparison["difference"])} '
        f'the peer\'s{spread}; {target} the target of at most the peer\'s + {PEER_TARGET_POINTS:g} points.')
  if compared:
    differences = [row['minus_peer']['difference'] for row in compared]
    above = sum(round(100 * d, 2) > 0 for d in differences)
    below = sum(round(100 * d, 2) < 0 for d in differences)
    missed = [row['name'] for row in compared if not row['minus_peer']['within_target']]
    lines += ['', f'Over the {len(compared)} model{"s" if len(compared) > 1 else ""} with finished runs of both, '
              f'jaxresnet\'s mean test error is above the peer\'s in {above} and below it in {below}; on average '
              f'it is {_points(float(np.mean(differences)))} the peer\'s. '
              + (f'Outside the +{PEER_TARGET_POINTS:g}-point target: {", ".join(missed)}.' if missed else
                 f'Every compared model is within the +{PEER_TARGET_POINTS:g}-point target.')]
  lines.append('')
  return lines


def _hardware(run: Dict[str, Any]) -> str:
  """A run's devices and the hosts its sessions ran on: '1 x cpu on AMD EPYC, 2 cores'."""
  hosts = ' and '.join(run.get('hosts') or [])
  return ' on '.join(part for part in (run['devices'], hosts) if part) or '—'


def render_markdown(report: Dict[str, Any], figure: Optional[str], peer_figure: Optional[str] = None) -> str:
  settings = report['settings']
  scale = settings.get('steps_scale', 1.0)
  lines = [f'# {report["title"]}', '']
  if scale != 1.0:
    lines += [f'> **Shortened schedule** (`--steps_scale={scale:g}`): not the paper\'s 64k iterations. '
              'These numbers check the pipeline; they are not a reproduction and are not comparable with '
              'the paper.', '']
  if settings.get('max_eval_examples'):
    lines += [f'> **Evaluated on a subset**: at most {settings["max_eval_examples"]:,} images of each split '
              '(validation and test, evenly spaced; `--max_eval_examples`), not the whole test set.', '']
  overrides = settings.get('recipe_overrides') or {}
  if overrides:
    lines += ['> **Recipe changed** on the command line: ' +
              ', '.join(f'`{k}={v}`' for k, v in sorted(overrides.items())) + '.', '']
  peer = report.get('has_peer')
  lines += [f'Dataset: **{report["dataset"] or "—"}**. Test error in % at the end of training; '
            'ours is the mean ± sample std over the finished seeds (n = finished/planned).' +
            (' Peer: the PyTorch peer on the same data, the same way; ours − peer in points.' if peer else ''), '',
            '| Model | Params | Paper params | MACs | Paper error | Our test error | n | Val error | ' +
            ('Peer test error | n | Peer val error | Ours − peer | ' if peer else '') +
            'Wall-clock / run | Train img/s | Hardware |',
            '|---|---:|---:|---:|---:|---:|:-:|---:|' + ('---:|:-:|---:|---:|' if peer else '') + '---:|---:|---|']
  for row in report['models']:
    paper = '—' if row['paper_test_error'] is None else (
        f'{100 * row["paper_test_error"]:g}' + ('*' if row['paper_error_approximate'] else ''))
    speed = row['images_per_second_median']
    peer_cells = []
    if peer:
      p = row['peer']
      peer_cells = [_pct(p['test_error_mean'], p['test_error_std']) if p['num_finished'] else 'not run',
                    f'{p["num_finished"]}/{p["num_seeds"]}' if p['num_seeds'] else '—',
                    _pct(p['val_error_mean'], p['val_error_std']),
                    '—' if row['minus_peer'] is None else f'{100 * row["minus_peer"]["difference"]:+.2f}']
    lines.append(' | '.join([
        f'| {row["name"]}', _millions(row['num_params']), _millions(row['paper_params']),
        _millions(row['macs']), paper,
        _pct(row['test_error_mean'], row['test_error_std']) if row['num_finished'] else 'not run',
        f'{row["num_finished"]}/{row["num_seeds"]}' if row['num_seeds'] else '—',
        _pct(row['val_error_mean'], row['val_error_std']),
        *peer_cells,
        _duration(row['wall_clock_seconds_mean'], row['wall_clock_complete']),
        '—' if speed is None else f'{speed:,.0f}',
        ', '.join(row['devices']) or '—']) + ' |')
  lines += ['', 'Paper: ' + ' '.join(report['paper_notes']), '']
  if peer:
    lines += peer_comparison(report)
  lines += depth.render(report['depth'])
  if figure:
    lines += ['## Training curves (cf. Figure 6)', '',
              f'![train and test error vs iterations]({figure})', '',
              'Thin dashed: training error (augmented batches, averaged over spans of '
              f'1/{FIGURE_TRAIN_SPANS} of the run); bold: test error. Plain nets left, ResNets right, one color '
              'per depth; each line the mean over a model\'s finished seeds.', '']
  if peer_figure:
    lines += [f'![the PyTorch peer: train and test error vs iterations]({peer_figure})', '',
              'The same for the PyTorch peer\'s runs, on the same axes.', '']

  lines += ['## Runs', '', '| Model | Seed | Status | Step | Test error | Val error | Wall-clock | Hardware |',
            '|---|---:|---|---:|---:|---:|---:|---|']
  any_runs = False
  for row in report['models']:
    for name, r in [(row['name'], r) for r in row['runs']] + [(f'{row["name"]} (peer)', r)
                                                              for r in row['peer']['runs']]:
      any_runs = True
      step = '—' if r['step'] is None else f'{r["step"]}/{r["num_train_steps"]}'
      lines.append(f'| {name} | {r["seed"]} | {r["status"]} | {step} | {_pct(r["test_error"])} | '
                   f'{_pct(r["val_error"])} | {_duration(r["wall_clock_seconds"], r["wall_clock_complete"])} '
                   f'| {_hardware(r)} |')
  if not any_runs:
    lines.append('| — | | no runs yet | | | | | |')
  lines += ['', 'Wall-clock is the sum over a run\'s training sessions (data loading, compilation and '
            'evaluation included); "≥" marks a run with a session killed before it could record its time.',
            '']

  recipe = report['recipe']
  lines += ['## Protocol', '']
  if recipe:
    lines += [
        f'- Data: {report["dataset"]}; {recipe["num_val_examples"]:,} training images held out for '
        'validation (a fixed split, the same for every seed), the rest trained on; the test set is used '
        'only for the reported error.',
        f'- SGD, momentum {recipe["momentum"]}, weight decay {recipe["weight_decay"]:g} (L2), batch '
        f'{recipe["batch_size"]}, learning rate {recipe["learning_rate"]:g} ({recipe["schedule"]} schedule, '
        f'divided by {1 / recipe["lr_decay_factor"]:g} at {config_lib.durations_text(recipe["lr_boundaries"])}), '
        f'{recipe["num_train_steps"]:,} iterations.',
        f'- Augmentation: {"4-pixel padding, random 32x32 crops, horizontal flips" if recipe["augment"] else "none"}'
        f'; normalization: {recipe["normalization"]}; shortcuts: option {recipe["shortcut"]}; '
        f'{"bf16" if recipe["half_precision"] else "fp32"} compute.']
    for model, w in sorted(report['warmup'].items()):
      lines.append(f'- {curves.pretty_name(model)} warm-up: learning rate {w["warmup_lr"]:g} ({w["warmup"]}) '
                   f'for the first {w["warmup_steps"]} iterations.')
    if report['dataset'] == 'CIFAR-10-JPEG':
      lines.append('- CIFAR-10-JPEG is CIFAR-10 stored as JPEG files: compression changes the images, so '
                   'errors are expected to be somewhat higher than on the original CIFAR-10 the paper used.')
  else:
    lines.append('- No run has started yet.')
  lines.append('')
  if report['commands']:
    runs_of = [[command, 1] for command in report['commands'][:1]]  # A command run again to resume: listed once.
    for command in report['commands'][1:]:
      if command == runs_of[-1][0]:
        runs_of[-1][1] += 1
      else:
        runs_of.append([command, 1])
    lines += (['Commands (in order):', '', '```'] +
              [command + (f'  # {times} times' if times > 1 else '') for command, times in runs_of] + ['```', ''])
  if report['versions']:
    lines += ['Software:', '']
    for v in report['versions']:
      lines.append('- ' + ', '.join(f'{k} {v[k]}' for k in sorted(v)))
    lines.append('')
  lines += [f'Generated {report["generated"]} by `python -m jaxresnet.report --workdir={report["workdir"]}`.',
            '']
  return '\n'.join(lines)


# What a finished run keeps when exported (export_records): enough for the report, never a checkpoint.
RECORD_FILES = (rundir.CONFIG_FILE, rundir.RESULTS_FILE, rundir.METRICS_FILE, rundir.TIMING_FILE)


def export_records(workdir: str, target: str) -> List[str]:
  """Copies DIR's plan and each finished run's RECORD_FILES to `target`, in the same layout; the runs copied.

  `target` is then a folder small enough to commit from which write_report(target) makes the same
  table. Nothing in `target` is deleted: runs recorded there earlier stay, and a finished run whose
  results.json there differs from DIR's (the same run trained again elsewhere) is refused, not replaced.
  """
  if os.path.abspath(target) == os.path.abspath(workdir):
    raise DataError(f'cannot export {workdir} into itself')
  report = collect(workdir)
  finished = [r['directory'] for row in report['models'] for r in row['runs'] + row['peer']['runs']
              if r['status'] == 'finished']
  copies = [(source, os.path.join(target, os.path.relpath(source, workdir))) for source in finished]
  for source, copy in copies:  # Check all before copying any.
    kept = os.path.join(copy, rundir.RESULTS_FILE)
    if os.path.exists(kept):
      with open(kept, 'rb') as old, open(os.path.join(source, rundir.RESULTS_FILE), 'rb') as new:
        if old.read() != new.read():
          raise DataError(f'{kept} already records another finished run of it; move it away to replace it')
  # Built in a temporary folder beside `target` (a copy of it, plus the runs) and renamed into place when
  # complete: a full disk or a kill leaves `target` as it was, never half a run's records.
  parent = os.path.dirname(os.path.abspath(target))
  partial, previous = f'{os.path.abspath(target)}.partial{os.getpid()}', f'{os.path.abspath(target)}.old{os.getpid()}'
  try:
    if os.path.isdir(target):
      shutil.copytree(target, partial)
    else:
      os.makedirs(partial)
    if os.path.exists(os.path.join(workdir, rundir.PLAN_FILE)):
      shutil.copyfile(os.path.join(workdir, rundir.PLAN_FILE), os.path.join(partial, rundir.PLAN_FILE))
    for source, _ in copies:
      copy = os.path.join(partial, os.path.relpath(source, workdir))
      os.makedirs(copy, exist_ok=True)
      for name in RECORD_FILES:
        if os.path.exists(os.path.join(source, name)):
          shutil.copyfile(os.path.join(source, name), os.path.join(copy, name))
    replaced = os.path.isdir(target)
    if replaced:
      os.rename(target, previous)
    try:
      os.rename(partial, target)
    except OSError:
      if replaced:
        os.rename(previous, target)
      raise
  except OSError as e:
    raise DataError(f'cannot export to {target}: {e.strerror or e} (in {parent}); {target} was left as it '
                    'was') from None
  finally:
    shutil.rmtree(partial, ignore_errors=True)
    if os.path.isdir(target):  # Never the only copy of what was there.
      shutil.rmtree(previous, ignore_errors=True)
  return [copy for _, copy in copies]


def write_report(workdir: str, output: Optional[str] = None, table_name: Optional[str] = None,
                 dpi: int = curves.DEFAULT_DPI) -> Dict[str, Any]:
  """Writes DIR/report.md, DIR/report.json and DIR/figure6.png (and OUTPUT.md + OUTPUT.png).

  With peer runs also DIR/figure6_peer.png (and OUTPUT_peer.png), on the same error axis as figure6.png.
  """
  report = collect(workdir, table_name)
  ours, peers = figure_curves(report), figure_curves(report, peer=True)
  ymax = curves.default_ymax(ours + peers)  # One axis for both.
  for file, key, these, whose in ((FIGURE_FILE, 'figure', ours, ''),
                                  (PEER_FIGURE_FILE, 'peer_figure', peers, 'PyTorch peer, ')):
    if these:
      curves.draw(these, os.path.join(workdir, file), dpi=dpi, ymax=ymax, colors=depth_colors(these),
                  title=f'{whose}{report["dataset"]}: training (dashed) and test (bold) error')
      report[key] = file
  rundir.write_json(os.path.join(workdir, REPORT_JSON), report)
  write_text(os.path.join(workdir, REPORT_MD), render_markdown(report, report['figure'], report['peer_figure']))
  if output:
    if not output.endswith('.md'):
      raise DataError(f'--output={output} must name a .md file (its figure goes beside it as .png)')
    copies, beside = {}, {}
    for key, suffix in (('figure', '.png'), ('peer_figure', '_peer.png')):
      if report[key]:
        path = output[:-len('.md')] + suffix
        copies[path] = lambda tmp, source=os.path.join(workdir, report[key]): shutil.copyfile(source, tmp)
        beside[key] = os.path.basename(path)
    rundir.write_files({**copies, output: lambda tmp: _write_text_to(
        tmp, render_markdown(report, beside.get('figure'), beside.get('peer_figure')))})
  return report


def write_text(path: str, text: str) -> None:
  """`path` holds `text`, or (one line) is left as it was (rundir.write_files)."""
  rundir.write_files({path: lambda tmp: _write_text_to(tmp, text)})


def _write_text_to(path: str, text: str) -> None:
  with open(path, 'w') as f:
    f.write(text)
