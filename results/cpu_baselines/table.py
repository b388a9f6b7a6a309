"""Prints the table of results/cpu_baselines/README.md from the files committed beside it.

    python results/cpu_baselines/table.py

Each run folder <name>/ holds what `python -m jaxresnet.main` wrote (results.json,
metrics.jsonl, config.json) and run.json (the command, wall-clock time, date,
git commit, hardware and versions, recorded when the run was made). Only the
Python standard library is used, so it runs without the project installed.
"""
import json
import os
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = ('cnn_small', 'cnn_deep', 'resnet18_1111')  # Table order; folders that are missing are skipped.
# The source project's reported CIFAR-10 test accuracy and the length it was reported at (epochs; None: not given).
SOURCE = {
    'cnn_small': (0.54, None),
    'cnn_deep': (0.69, None),
    'resnet18_1111': (0.71, 8),
}
TRAIN_EXAMPLES = 50000  # CIFAR-10's training split; config.num_val_examples of it are held out.


def read_json(path):
  with open(path) as f:
    return json.load(f)


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def row(name):
  folder = os.path.join(HERE, name)
  results = read_json(os.path.join(folder, 'results.json'))
  config = read_json(os.path.join(folder, 'config.json'))
  run = read_json(os.path.join(folder, 'run.json'))
  records = read_jsonl(os.path.join(folder, 'metrics.jsonl'))
  steps_per_epoch = (TRAIN_EXAMPLES - config['num_val_examples']) // config['batch_size']
  epochs = results['step'] / steps_per_epoch
  speeds = [r['train_images_per_second'] for r in records if 'train_images_per_second' in r]
  source_accuracy, source_epochs = SOURCE[name]
  minutes = run['wall_clock_seconds'] / 60
  return (f"| {name} | {results['num_params']:,} | {epochs:g} ({results['step']:,} steps of {config['batch_size']}) | "
          f"{100 * source_accuracy:.0f}% ({f'{source_epochs} epochs' if source_epochs else 'length not given'}) | "
          f"**{100 * results['test_accuracy']:.2f}%** / {100 * results['test_error']:.2f}% | "
          f"{100 * results['val_accuracy']:.2f}% | "
          f"{100 * (results['test_accuracy'] - source_accuracy):+.1f} | "
          f"{minutes:.1f} min | {statistics.median(speeds):.0f} | {run['date']} | {run['git_commit']} |")


def main():
  print('| Model | Parameters | Epochs trained | Source project | Our final test acc. / error '
        '| Val. acc. | Ours - source (points) | Wall clock | Train img/s (median) | Date (UTC) | Commit |')
  print('|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|')
  names = [n for n in RUNS if os.path.isdir(os.path.join(HERE, n))]
  for name in names:
    print(row(name))
  print()
  for name in names:
    run = read_json(os.path.join(HERE, name, 'run.json'))
    print(f"- **{name}**: `{run['command']}`")
  print()
  first = read_json(os.path.join(HERE, names[0], 'run.json'))
  versions = ', '.join(f'{k} {v}' for k, v in first['versions'].items())
  print(f"Hardware: {first['hardware']}. Software: {versions}.")


if __name__ == '__main__':
  main()
