"""Prints the table of results/fast94/README.md from the run folders committed beside it.

    python results/fast94/table.py

Each seed<k>/ holds what `python -m jaxresnet.main --config=configs/fast94.py` wrote
(results.json, metrics.jsonl, config.json) and run.json (the command, wall-clock time,
date, git commit, hardware and versions, written by record_run.py when the run ended).
Only the Python standard library is used, so it runs without the project installed.
"""
import glob
import json
import os
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))


def read_json(path):
  with open(path) as f:
    return json.load(f)


def runs():
  """(folder name, results, config, run) of every finished run (seed<k>/, or batch<B>_seed<k>/), by batch and seed."""
  found = []
  for folder in sorted(glob.glob(os.path.join(HERE, '*seed*'))):
    results = read_json(os.path.join(folder, 'results.json'))
    found.append((os.path.basename(folder), results, read_json(os.path.join(folder, 'config.json')),
                  read_json(os.path.join(folder, 'run.json'))))
  return sorted(found, key=lambda r: (r[2]['batch_size'], r[1]['seed']))


def mean_std(values):
  """'m ± s' in percent (sample std), or just 'm' for one value."""
  values = [100 * v for v in values]
  if len(values) == 1:
    return f'{values[0]:.2f}%'
  return f'{statistics.mean(values):.2f}% ± {statistics.stdev(values):.2f}'


def machine(run) -> str:
  """The CPU and whether the run had it to itself: times are comparable only between runs alone on one CPU."""
  cpu = run['hardware'].split(',')[0].replace('(R)', '').replace(' Processor', '')
  return f'{cpu}, {"alone" if run["alone"] else "shared"}'


def table() -> str:
  found = runs()
  lines = ['| Seed | Batch | Epochs (steps) | Test acc. (TTA) | Test acc. (plain) | Train + eval | Compile | '
           'Wall clock (whole command) | CPU (2 cores) | Date (UTC) | Commit |',
           '|---:|---:|---|---:|---:|---:|---:|---:|---|---|---|']
  for batch in sorted({config['batch_size'] for _, _, config, _ in found}):
    group = [run for run in found if run[2]['batch_size'] == batch]
    lines += [row(*run[1:]) for run in group]
    if len(group) > 1:
      lines.append(mean_row(batch, group))
  return '\n'.join(lines)


def row(results, config, run) -> str:
  return (f'| {results["seed"]} | {config["batch_size"]} | {config["num_train_steps"]} ({results["step"]}) | '
          f'{100 * results["tta_test_accuracy"]:.2f}% | {100 * results["test_accuracy"]:.2f}% | '
          f'{results["train_seconds"] / 60:.1f} min | {results["compile_seconds"]:.0f} s | '
          f'{run["wall_clock_seconds"] / 60:.1f} min | {machine(run)} | {run["date"]} | {run["git_commit"]} |')


def mean_row(batch, group) -> str:
  # A mean time only over runs that each had one and the same CPU to themselves ('<CPU>, alone').
  machines = {machine(run) for _, _, _, run in group}
  same = len(machines) == 1 and machines.pop().endswith(', alone')
  mean_time = (f'{statistics.mean(r["train_seconds"] for _, r, _, _ in group) / 60:.1f} min' if same else
               'not averaged: other CPUs or load')
  return (f'| mean ± std ({len(group)} seeds) | {batch} | | '
          f'**{mean_std([r["tta_test_accuracy"] for _, r, _, _ in group])}** | '
          f'{mean_std([r["test_accuracy"] for _, r, _, _ in group])} | {mean_time} | | | | | |')


if __name__ == '__main__':
  print(table())
