"""The reproduction report of a `jaxresnet.reproduce` workdir: report.md, report.json, figure6.png.

    python -m jaxresnet.report --workdir=DIR [--output=results/he2016_cifar10_jpeg.md]

Reads what the runs wrote (DIR/<model>/seed<k>/: config.json, metrics.jsonl,
results.json, timing.json) and DIR/reproduce.json (the commands and settings),
and puts our numbers beside the paper's: per model the final test error as mean
± sample std over the finished seeds, validation error, parameters,
multiply-adds, wall-clock time and hardware. A run counts only when it is
finished (results.json at the run's last step); unfinished and missing runs are
listed as such, never filled in. `--output=PATH.md` also writes the report there,
with its figure beside it as PATH.png.
"""
import dataclasses
import datetime
import json
import os
import re
import shutil
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
import numpy as np

from jaxresnet import plot
from jaxresnet.errors import DataError, exit_on_extra_arguments, exit_on_user_error

PLAN_FILE = 'reproduce.json'  # DIR/: the reproduce commands and their settings.
TIMING_FILE = 'timing.json'  # DIR/<model>/seed<k>/: wall-clock time of each training session.
FIGURE_FILE = 'figure6.png'

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


def read_json(path: str) -> Optional[Any]:
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (json.JSONDecodeError, OSError):
    return None  # A file cut short by a crash tells us nothing.


def read_plan(workdir: str) -> Dict[str, Any]:
  return read_json(os.path.join(workdir, PLAN_FILE)) or {}


def is_finished(directory: str, num_train_steps: int) -> bool:
  """True when the run in `directory` wrote its final results at its last step."""
  results = read_json(os.path.join(directory, 'results.json'))
  return bool(results) and results.get('step') == num_train_steps


def read_run(directory: str, seed: int) -> Dict[str, Any]:
  """Status and numbers of one run, from the files it wrote; None for what it did not write."""
  config = read_json(os.path.join(directory, 'config.json'))
  run = {'seed': seed, 'directory': directory, 'status': 'not started', 'step': None,
         'num_train_steps': None, 'test_error': None, 'val_error': None, 'num_params': None, 'macs': None,
         'devices': None, 'wall_clock_seconds': None, 'wall_clock_complete': None,
         'images_per_second': None, 'versions': None}
  if config is None:
    return run
  run['num_train_steps'] = config.get('num_train_steps')
  run['status'] = 'unfinished'
  if os.path.exists(os.path.join(directory, 'metrics.jsonl')):
    records = plot.read_metrics(directory)
    steps = [r['step'] for r in records]
    run['step'] = max(steps) if steps else 0
    speeds = [r['train_images_per_second'] for r in records if 'train_images_per_second' in r]
    run['images_per_second'] = float(np.median(speeds)) if speeds else None
  timing = read_json(os.path.join(directory, TIMING_FILE))
  if timing and timing.get('sessions'):
    sessions = timing['sessions']
    run['wall_clock_seconds'] = float(sum(s['seconds'] or 0.0 for s in sessions))
    # A session killed outright never recorded its time: the sum is then a lower bound.
    run['wall_clock_complete'] = all(s['seconds'] is not None for s in sessions)
    run['versions'] = sessions[-1].get('versions')
  if is_finished(directory, run['num_train_steps']):
    results = read_json(os.path.join(directory, 'results.json'))
    run.update(status='finished', step=results['step'], test_error=results['test_error'],
               val_error=results.get('val_error'), num_params=results['num_params'], macs=results['macs'],
               devices=results['devices'], class_names=results.get('class_names'))
  return run


def find_seeds(workdir: str, model: str) -> List[int]:
  model_dir = os.path.join(workdir, model)
  if not os.path.isdir(model_dir):
    return []
  return sorted(int(m.group(1)) for d in os.listdir(model_dir)
                for m in [re.fullmatch(r'seed(\d+)', d)] if m and os.path.isdir(os.path.join(model_dir, d)))


def _mean_std(values: Sequence[float]) -> Tuple[Optional[float], Optional[float]]:
  if not values:
    return None, None
  return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


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
  plan = read_plan(workdir)
  table_name = table_name or plan.get('table', 'he2016')
  if table_name not in TABLES:
    raise DataError(f'unknown table {table_name!r}; known: {", ".join(TABLES)}')
  table = TABLES[table_name]
  planned_seeds = list(range(plan.get('seeds', 0)))
  on_disk = sorted(d for d in os.listdir(workdir) if find_seeds(workdir, d))
  models = list(table.models) + [m for m in plan.get('models', []) + on_disk if m not in table.models]
  models = list(dict.fromkeys(models))

  rows, configs, class_names = [], [], None
  for model in models:
    seeds = sorted(set(planned_seeds if model in plan.get('models', []) else []) |
                   set(find_seeds(workdir, model)))
    runs = [read_run(run_dir(workdir, model, seed), seed) for seed in seeds]
    finished = [r for r in runs if r['status'] == 'finished']
    for r in runs:
      config = read_json(os.path.join(r['directory'], 'config.json'))
      if config:
        configs.append(config)
      class_names = class_names or r.get('class_names')
    test_mean, test_std = _mean_std([r['test_error'] for r in finished])
    val_mean, val_std = _mean_std([r['val_error'] for r in finished if r['val_error'] is not None])
    wall = [r['wall_clock_seconds'] for r in finished if r['wall_clock_seconds'] is not None]
    rows.append({
        'model': model, 'name': plot.pretty_name(model),
        'paper_test_error': table.paper_error.get(model),
        'paper_error_approximate': model in table.approximate,
        'paper_params': table.paper_params.get(model),
        'num_params': finished[0]['num_params'] if finished else None,
        'macs': finished[0]['macs'] if finished else None,
        'num_seeds': len(seeds), 'num_finished': len(finished),
        'test_error_mean': test_mean, 'test_error_std': test_std,
        'val_error_mean': val_mean, 'val_error_std': val_std,
        'wall_clock_seconds_mean': float(np.mean(wall)) if wall else None,
        'wall_clock_complete': all(r['wall_clock_complete'] for r in finished) if finished else None,
        'images_per_second_median': (float(np.median([r['images_per_second'] for r in finished
                                                       if r['images_per_second']]))
                                     if any(r['images_per_second'] for r in finished) else None),
        'devices': sorted({r['devices'] for r in finished}),
        'runs': runs})

  versions = []
  for row in rows:
    for r in row['runs']:
      if r['versions'] and r['versions'] not in versions:
        versions.append(r['versions'])
  reference = configs[0] if configs else {}
  return {
      'table': table_name, 'title': table.title,
      'generated': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'workdir': os.path.abspath(workdir),
      'commands': plan.get('commands', []),
      'settings': plan.get('settings', {}),
      'dataset': dataset_name(reference, class_names) if reference else None,
      'recipe': {k: reference.get(k) for k in (
          'batch_size', 'learning_rate', 'momentum', 'weight_decay', 'schedule', 'lr_boundaries',
          'lr_boundaries_unit', 'lr_decay_factor', 'num_train_steps', 'num_val_examples', 'augment',
          'normalization', 'shortcut', 'half_precision')} if reference else {},
      'warmup': {c['model']: {k: c[k] for k in ('warmup_steps', 'warmup', 'warmup_lr')}
                 for c in configs if c.get('warmup_steps')},
      'versions': versions,
      'paper_notes': list(table.notes),
      'figure': None,
      'models': rows,
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


def figure_curves(report: Dict[str, Any]) -> List[plot.Curve]:
  """Per model, the mean curves of its finished seeds."""
  curves = []
  for row in report['models']:
    finished = [r['directory'] for r in row['runs'] if r['status'] == 'finished']
    if finished:
      label = row['name'] + (f' ({len(finished)} seeds)' if len(finished) > 1 else '')
      curves.append(plot.mean_curve([plot.load_curve(d) for d in finished], label))
  return curves


def render_markdown(report: Dict[str, Any], figure: Optional[str]) -> str:
  settings = report['settings']
  scale = settings.get('steps_scale', 1.0)
  lines = [f'# {report["title"]}', '']
  if scale != 1.0:
    lines += [f'> **Shortened schedule** (`--steps_scale={scale:g}`): not the paper\'s 64k iterations. '
              'These numbers check the pipeline; they are not a reproduction and are not comparable with '
              'the paper.', '']
  overrides = settings.get('recipe_overrides') or {}
  if overrides:
    lines += ['> **Recipe changed** on the command line: ' +
              ', '.join(f'`{k}={v}`' for k, v in sorted(overrides.items())) + '.', '']
  lines += [f'Dataset: **{report["dataset"] or "—"}**. Test error in % at the end of training; '
            'ours is the mean ± sample std over the finished seeds (n = finished/planned).', '',
            '| Model | Params | Paper params | MACs | Paper error | Our test error | n | Val error | '
            'Wall-clock / run | Train img/s | Hardware |',
            '|---|---:|---:|---:|---:|---:|:-:|---:|---:|---:|---|']
  for row in report['models']:
    paper = '—' if row['paper_test_error'] is None else (
        f'{100 * row["paper_test_error"]:g}' + ('*' if row['paper_error_approximate'] else ''))
    speed = row['images_per_second_median']
    lines.append(' | '.join([
        f'| {row["name"]}', _millions(row['num_params']), _millions(row['paper_params']),
        _millions(row['macs']), paper,
        _pct(row['test_error_mean'], row['test_error_std']) if row['num_finished'] else 'not run',
        f'{row["num_finished"]}/{row["num_seeds"]}' if row['num_seeds'] else '—',
        _pct(row['val_error_mean'], row['val_error_std']),
        _duration(row['wall_clock_seconds_mean'], row['wall_clock_complete']),
        '—' if speed is None else f'{speed:,.0f}',
        ', '.join(row['devices']) or '—']) + ' |')
  lines += ['', 'Paper: ' + ' '.join(report['paper_notes']), '']
  if figure:
    lines += ['## Training curves (cf. Figure 6)', '',
              f'![train and test error vs iterations]({figure})', '',
              'Thin dashed: training error (augmented batches); bold: test error. Plain nets left, ResNets '
              'right; each line the mean over a model\'s finished seeds.', '']

  lines += ['## Runs', '', '| Model | Seed | Status | Step | Test error | Val error | Wall-clock | Hardware |',
            '|---|---:|---|---:|---:|---:|---:|---|']
  any_runs = False
  for row in report['models']:
    for r in row['runs']:
      any_runs = True
      step = '—' if r['step'] is None else f'{r["step"]}/{r["num_train_steps"]}'
      lines.append(f'| {row["name"]} | {r["seed"]} | {r["status"]} | {step} | {_pct(r["test_error"])} | '
                   f'{_pct(r["val_error"])} | {_duration(r["wall_clock_seconds"], r["wall_clock_complete"])} '
                   f'| {r["devices"] or "—"} |')
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
        f'divided by {1 / recipe["lr_decay_factor"]:g} at {recipe["lr_boundaries_unit"]} '
        f'{", ".join(str(b) for b in recipe["lr_boundaries"])}), {recipe["num_train_steps"]:,} iterations.',
        f'- Augmentation: {"4-pixel padding, random 32x32 crops, horizontal flips" if recipe["augment"] else "none"}'
        f'; normalization: {recipe["normalization"]}; shortcuts: option {recipe["shortcut"]}; '
        f'{"bf16" if recipe["half_precision"] else "fp32"} compute.']
    for model, w in sorted(report['warmup'].items()):
      lines.append(f'- {plot.pretty_name(model)} warm-up: learning rate {w["warmup_lr"]:g} ({w["warmup"]}) '
                   f'for the first {w["warmup_steps"]} iterations.')
    if report['dataset'] == 'CIFAR-10-JPEG':
      lines.append('- CIFAR-10-JPEG is CIFAR-10 stored as JPEG files: compression changes the images, so '
                   'errors are expected to be somewhat higher than on the original CIFAR-10 the paper used.')
  else:
    lines.append('- No run has started yet.')
  lines.append('')
  if report['commands']:
    lines += ['Commands (in order):', '', '```'] + report['commands'] + ['```', '']
  if report['versions']:
    lines += ['Software:', '']
    for v in report['versions']:
      lines.append('- ' + ', '.join(f'{k} {v[k]}' for k in sorted(v)))
    lines.append('')
  lines += [f'Generated {report["generated"]} by `python -m jaxresnet.report --workdir={report["workdir"]}`.',
            '']
  return '\n'.join(lines)


def write_report(workdir: str, output: Optional[str] = None, table_name: Optional[str] = None,
                 dpi: int = plot.DEFAULT_DPI) -> Dict[str, Any]:
  """Writes DIR/report.md, DIR/report.json and DIR/figure6.png (and OUTPUT.md + OUTPUT.png)."""
  report = collect(workdir, table_name)
  curves = figure_curves(report)
  if curves:
    plot.draw(curves, os.path.join(workdir, FIGURE_FILE), dpi=dpi,
              title=f'{report["dataset"]}: training (dashed) and test (bold) error')
    report['figure'] = FIGURE_FILE
  with open(os.path.join(workdir, 'report.json'), 'w') as f:
    json.dump(report, f, indent=2)
  with open(os.path.join(workdir, 'report.md'), 'w') as f:
    f.write(render_markdown(report, report['figure']))
  if output:
    if not output.endswith('.md'):
      raise DataError(f'--output={output} must name a .md file (its figure goes beside it as .png)')
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    figure = None
    if report['figure']:
      figure_path = output[:-len('.md')] + '.png'
      shutil.copyfile(os.path.join(workdir, FIGURE_FILE), figure_path)
      figure = os.path.basename(figure_path)
    with open(output, 'w') as f:
      f.write(render_markdown(report, figure))
  return report


FLAGS = flags.FLAGS


def define_flags():
  """Only when run as a program, so modules that import this one can define their own."""
  flags.DEFINE_string('workdir', None, 'A jaxresnet.reproduce workdir.')
  flags.DEFINE_string('output', None, 'Also write the report to this .md file (figure beside it as .png).')
  flags.DEFINE_string('table', None, 'The paper table to compare with (default: the one DIR was run for).')
  flags.mark_flag_as_required('workdir')


def main(argv):
  exit_on_extra_arguments(argv)
  with exit_on_user_error():
    write_report(FLAGS.workdir, FLAGS.output, FLAGS.table)
  print(f'wrote {os.path.join(FLAGS.workdir, "report.md")}' + (f' and {FLAGS.output}' if FLAGS.output else ''))
  sys.stdout.flush()


if __name__ == '__main__':
  define_flags()
  app.run(main)
