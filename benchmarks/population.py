"""Aggregate images/second of a population (config.num_seeds = K) against K, and what the He et al. table costs.

    python -m benchmarks.population --models=resnet20,resnet56 --num_seeds=1,2,4,8,16 [--precision=fp32,bf16]

For each model, precision and K, the product's own train function
(`train.make_train_fn` on the state of `train.build`, the on-device input
pipeline included) runs K members of batch `--batch_size` each in one jit call;
the aggregate rate is K x batch x steps / seconds (compile and warm-up
excluded; the median of `--repeats` windows). The K = 1 row is the product's
single run, unchanged.

It then estimates the GPU-minutes (device-minutes) of the whole He et al. 2016
table with 3 seeds per row (Plain and ResNet 20/32/44/56, ResNet-110; 64k steps
each) trained as one population of 3 per model. The step time of 3 members is
bounded by the measured K = 4 step (a population of 3 does less work), and for
depths not measured it is interpolated linearly in multiply-adds between the
measured models. Both are estimates and are labelled so.

Results go to benchmarks/results/population_<device>.json and a markdown table
on stdout; --update_readme (or `python -m benchmarks.report`) renders it into benchmarks/README.md.
"""
import json
import os
import statistics
import time
from typing import Any, Dict, List

from absl import flags

from jaxresnet.infra import host_memory  # pylint: disable=g-import-not-at-top
host_memory.keep_freed_memory()

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import host  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import report  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks.synthetic import benchmark_config, synthetic_dataset  # pylint: disable=g-import-not-at-top
from jaxresnet import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxresnet.infra import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxresnet.infra import devices  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxresnet.training import train  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_list('models', ['resnet20', 'resnet56'], 'Models to time.')
flags.DEFINE_list('num_seeds', ['1', '2', '4', '8', '16'], 'Population sizes K to time.')
flags.DEFINE_list('precision', ['fp32'], 'fp32 and/or bf16 (jaxresnet half_precision).')
flags.DEFINE_integer('batch_size', 128, 'Batch of each member.')
flags.DEFINE_integer('steps', 0, 'Timed steps per window (0: 5 on CPU, 50 on GPU).')
flags.DEFINE_integer('warmup', 0, 'Untimed steps after compiling (0: 1 on CPU, 10 on GPU).')
flags.DEFINE_integer('repeats', 3, 'Timed windows per K; the median counts.')
flags.DEFINE_string('out_dir', os.path.join(os.path.dirname(__file__), 'results'), 'Where the JSON goes.')
flags.DEFINE_bool('update_readme', False, 'Also re-render --readme from --out_dir (python -m benchmarks.report).')
flags.DEFINE_string('readme', os.path.join(os.path.dirname(__file__), 'README.md'), 'The README --update_readme '
                    're-renders.')

HE2016_TABLE = ['plain20', 'plain32', 'plain44', 'plain56', 'resnet20', 'resnet32', 'resnet44', 'resnet56',
                'resnet110']
TABLE_STEPS, TABLE_SEEDS = 64000, 3


def time_population(name: str, num_seeds: int, batch_size: int, precision: str, steps: int, warmup: int,
                    repeats: int) -> Dict[str, Any]:
  """Median aggregate images/s of K members training together, and the seconds per step."""
  config = benchmark_config(name, batch_size, precision)
  config.num_seeds = num_seeds
  steps_per_epoch = 8
  dataset = synthetic_dataset(batch_size * steps_per_epoch)
  mesh = devices.make_mesh(num_seeds)
  _, state, _ = train.build(config, dataset, mesh)
  images, labels = devices.replicate(mesh, dataset.train_images), devices.replicate(mesh, dataset.train_labels)
  permutation = train.make_permutation_fn(mesh, config, len(dataset.train_labels))(train.data_key(config), 0)
  train_fn = train.make_train_fn(mesh, config, steps_per_epoch, dataset.num_classes)
  start = time.perf_counter()
  state, metrics = train_fn(state, images, labels, permutation)
  jax.block_until_ready(metrics)
  compile_seconds = time.perf_counter() - start
  for _ in range(warmup):
    state, metrics = train_fn(state, images, labels, permutation)
  jax.block_until_ready(metrics)
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = train_fn(state, images, labels, permutation)
    jax.block_until_ready((state, metrics))
    seconds.append((time.perf_counter() - start) / steps)
  step_seconds = statistics.median(seconds)
  return {'num_seeds': num_seeds, 'seconds_per_step': step_seconds,
          'images_per_second': num_seeds * batch_size / step_seconds,
          'windows_images_per_second': [round(num_seeds * batch_size / s, 1) for s in seconds],
          'compile_seconds': compile_seconds}


def table_estimate(rows: Dict[str, List[Dict[str, Any]]], batch_size: int) -> Dict[str, Any]:
  """Device-minutes of the He et al. table, 3 seeds per model in one population each (an estimate)."""
  bound = {}  # model -> seconds per step of a population of >= 3 (the smallest measured K >= 3).
  for name, measured in rows.items():
    big_enough = [r for r in measured if r['num_seeds'] >= TABLE_SEEDS]
    if big_enough:
      bound[name] = min(big_enough, key=lambda r: r['num_seeds'])
  if not bound:
    return {'skipped': f'no K >= {TABLE_SEEDS} was measured'}
  macs = {name: models.count_macs(models.get_model(name, num_classes=10)) for name in set(HE2016_TABLE) | set(bound)}
  xs = np.array([macs[n] for n in bound], float)
  ys = np.array([bound[n]['seconds_per_step'] for n in bound], float)
  if len(bound) >= 2:
    slope, intercept = np.polyfit(xs, ys, 1)
    per_step = lambda m: float(intercept + slope * m)
    how = f'interpolated linearly in multiply-adds between {", ".join(sorted(bound))}'
  else:
    per_step = lambda m: float(ys[0] * m / xs[0])
    how = f'scaled by multiply-adds from {next(iter(bound))}'
  rows_out = []
  for name in HE2016_TABLE:
    seconds = bound[name]['seconds_per_step'] if name in bound else per_step(macs[name])
    rows_out.append({'model': name, 'seconds_per_step': seconds, 'minutes': TABLE_STEPS * seconds / 60,
                     'measured_k': bound[name]['num_seeds'] if name in bound else None})
  single = {n: next((r for r in rows[n] if r['num_seeds'] == 1), None) for n in rows}
  return {'rows': rows_out, 'total_minutes': sum(r['minutes'] for r in rows_out), 'batch_size': batch_size,
          'seeds': TABLE_SEEDS, 'steps': TABLE_STEPS, 'method': how,
          'measured_k_per_model': {n: r['num_seeds'] for n, r in bound.items()},
          'single_run_images_per_second': {n: r['images_per_second'] for n, r in single.items() if r}}


def main(argv):
  cli.exit_on_extra_arguments(argv)
  on_gpu = jax.default_backend() != 'cpu'
  steps = FLAGS.steps or (50 if on_gpu else 5)
  warmup = FLAGS.warmup or (10 if on_gpu else 1)
  num_seeds = sorted({int(k) for k in FLAGS.num_seeds})
  populations, estimates = {}, {}
  for precision in FLAGS.precision:
    per_model = {}
    for name in FLAGS.models:
      rows = []
      for k in num_seeds:
        row = time_population(name, k, FLAGS.batch_size, precision, steps, warmup, FLAGS.repeats)
        print(f'{name} {precision} K={k}: {row["images_per_second"]:,.0f} img/s '
              f'({row["seconds_per_step"] * 1e3:.1f} ms per step, compile {row["compile_seconds"]:.1f} s)', flush=True)
        rows.append(row)
      populations[f'{name}/{precision}'] = per_model[name] = rows
    estimates[precision] = table_estimate(per_model, FLAGS.batch_size)
  device = host.device_info()
  result = {'device': device, 'versions': host.versions(None), 'batch_size': FLAGS.batch_size,
            'steps_per_window': steps, 'repeats': FLAGS.repeats, 'num_seeds': num_seeds,
            'populations': populations, 'table_estimates': estimates,
            'command': 'python -m benchmarks.population ' + ' '.join(
                f'--{f}={",".join(map(str, FLAGS[f].value)) if isinstance(FLAGS[f].value, list) else FLAGS[f].value}'
                for f in ('models', 'num_seeds', 'precision', 'batch_size', 'steps', 'repeats'))}
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  path = os.path.join(FLAGS.out_dir, f'population_{device["name"]}.json')
  with open(path, 'w') as f:
    json.dump(result, f, indent=2)
  print(report.population_section(os.path.basename(path), result))
  print(f'wrote {path}')
  if FLAGS.update_readme:
    report.update_readme(FLAGS.readme, FLAGS.out_dir)
    print(f'updated {FLAGS.readme}')


if __name__ == '__main__':
  cli.run_cli(main)
