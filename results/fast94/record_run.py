"""Copies a finished fast94 run's files here and writes its run.json (command, time, commit, hardware, versions).

    python results/fast94/record_run.py WORKDIR SEED_FOLDER WALL_SECONDS STARTED_UTC alone|shared NOTE -- COMMAND...

Copies results.json, metrics.jsonl and config.json (never checkpoints) from WORKDIR into
results/fast94/SEED_FOLDER/. WALL_SECONDS is the `time` of the whole command; `alone` says nothing else
ran on the machine meanwhile (only then are its times comparable), NOTE says what else did.
"""
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_name():
  for line in subprocess.run(['lscpu'], capture_output=True, text=True).stdout.splitlines():
    if line.startswith('Model name:'):
      return line.split(':', 1)[1].strip()
  return platform.processor() or 'unknown CPU'


def main(workdir, folder, wall_seconds, started, load, note, *command):
  if load not in ('alone', 'shared'):
    raise SystemExit(f'error: the fifth argument is alone or shared, not {load!r}')
  target = os.path.join(HERE, folder)
  os.makedirs(target, exist_ok=True)
  for name in ('results.json', 'metrics.jsonl', 'config.json'):
    shutil.copy(os.path.join(workdir, name), os.path.join(target, name))
  # The commit the run started from: the newest one made before it started (the history here is linear).
  commit = subprocess.run(['git', 'rev-list', '-1', '--abbrev-commit', f'--before={started}', 'HEAD'],
                          capture_output=True, text=True, cwd=HERE).stdout.strip()
  run = {
      'command': ' '.join(command),
      'wall_clock_seconds': float(wall_seconds),
      'wall_clock_note': 'real time of `time` around the whole command: decoding the data (or reading its cache), '
                         'compiling, training, evaluating, checkpoints',
      'date': started,
      'finished': datetime.datetime.fromtimestamp(os.path.getmtime(os.path.join(workdir, 'results.json')),
                                                  datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
      'alone': load == 'alone',
      'note': note,
      'git_commit': commit,
      'hardware': f'{cpu_name()}, {os.cpu_count()} cores (nproc={len(os.sched_getaffinity(0))}), no GPU; JAX on CPU',
      'dataset': 'CIFAR-10-JPEG (/work/shared/data/cifar10_jpeg.tar.gz)',
      'versions': {'python': platform.python_version(),
                   **{name: metadata.version(name) for name in ('jax', 'jaxlib', 'flax', 'optax')}},
  }
  with open(os.path.join(target, 'run.json'), 'w') as f:
    json.dump(run, f, indent=2)
    f.write('\n')


if __name__ == '__main__':
  args = sys.argv[1:]
  split = args.index('--')
  main(*args[:split], *args[split + 1:])
