"""Reproduces a paper's CIFAR-10 table: every model and seed, resumable, then the report.

    python -m jaxresnet.reproduce --table=he2016 --workdir=DIR [--seeds=3] [--models=resnet20,resnet110]
        [--dataset=image_folder --data_dir=/data/cifar10_jpeg] [--steps_scale=1] [--output=FILE.md] [--peer]

Trains Plain-20/32/44/56 and ResNet-20/32/44/56/110, each with its config file
(configs/<model>.py: the paper's recipe, ResNet-110's warm-up included), one
run per model and seed in DIR/<model>/seed<k>. By default the seeds of a model
train together as one population (config.num_seeds; checkpoints in
DIR/<model>/checkpoints), model after model; with --nopopulation runs go seed by
seed, so a table with one seed of every model is complete first. Rerunning the command
skips finished runs and resumes unfinished ones from their newest checkpoint;
each run's wall-clock time, summed over the sessions it took, goes to its
timing.json. SIGTERM or Ctrl-C stops the current run at a checkpoint and ends
the command. After every run DIR/report.md, report.json and figure6.png are
rewritten (see jaxresnet/report.py), and FILE.md + FILE.png with --output.

--peer also trains the PyTorch peer (benchmarks/torch_peer.py; needs torch and
the repository root as the working directory) with the same config and seed
after each jaxresnet run, in DIR/<model>/peer_seed<k>, skipped when finished and
resumed when not, like the jaxresnet runs; --peer_padding picks its padding
(default: the paper's nets, see torch_peer.py). The report then puts the peer
beside every row. On a GPU both use it from one process: JAX takes 75% of its
memory when it starts (XLA_PYTHON_CLIENT_MEM_FRACTION sets less); the peer's
CIFAR nets should need much less than the rest.

--steps_scale multiplies the run length and every step count of the schedule
(lr boundaries, warm-up, eval/log/checkpoint intervals): 0.0005 makes 32-step
smoke runs, and the report then says in bold that it is not a reproduction.
--batch_size and --num_val_examples change the recipe (the report lists them);
--data_dir, --cache_dir, --eval_batch_size and --*_every_steps do not. A DIR
keeps the settings it was started with: other settings need another DIR.
"""
from jaxresnet.infra import signals

if __name__ == '__main__':  # First, before the slow imports: SIGTERM or Ctrl-C while starting up is one line.
  signals.stop_on_signals()

import contextlib
import datetime
import importlib
import importlib.metadata
import json
import os
import platform
import shlex
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from absl import flags
from absl import logging
import jax
import ml_collections

from jaxresnet.infra import config as config_lib
from jaxresnet import data
from jaxresnet import models as models_lib
from jaxresnet.experiments import curves as plot
from jaxresnet import report
from jaxresnet.training import train
from jaxresnet.infra import errors
from jaxresnet.infra import rundir
from jaxresnet.infra.errors import ConfigError, exit_on_extra_arguments, exit_on_user_error

RECIPE_FIELDS = ('dataset', 'batch_size', 'num_val_examples')  # Overriding these changes the results.
BOOKKEEPING_FIELDS = ('data_dir', 'cache_dir', 'eval_batch_size', 'eval_every_steps', 'log_every_steps',
                      'checkpoint_every_steps')  # These do not (config.BOOKKEEPING_FIELDS lists them all).
assert set(BOOKKEEPING_FIELDS) <= set(config_lib.BOOKKEEPING_FIELDS)
# Fields that may change between the sessions of one run: none changes what is trained.
NOT_COMPARED = frozenset(config_lib.BOOKKEEPING_FIELDS)


def recipe_config(model: str) -> ml_collections.ConfigDict:
  """configs/<model>.py's config, or configs/default.py's with `model` set if there is no such file."""
  if model not in models_lib.MODELS:
    raise ConfigError(f'unknown model {model!r}; known models: {", ".join(sorted(models_lib.MODELS))}')
  try:
    module = importlib.import_module(f'jaxresnet.configs.{model}')
  except ModuleNotFoundError as e:
    if e.name != f'jaxresnet.configs.{model}':
      raise
    config = importlib.import_module('jaxresnet.configs.default').get_config()
    config.model = model
    return config
  return module.get_config()


MAX_EVALS_PER_RUN = 10


def _scaled(steps: int, scale: float) -> int:
  return max(1, int(round(steps * scale)))


def scale_schedule(config: ml_collections.ConfigDict, scale: float) -> None:
  """Multiplies the run length and every step count in the schedule by `scale`, in place."""
  if not scale > 0:
    raise ConfigError(f'--steps_scale={scale} must be positive')
  if config.num_train_steps <= 0:
    raise ConfigError(f'{config.model}: --steps_scale needs num_train_steps, not num_epochs')
  config.num_train_steps = _scaled(config.num_train_steps, scale)
  if config.lr_boundaries_unit == 'steps':
    config.lr_boundaries = tuple(_scaled(b, scale) for b in config.lr_boundaries)
  elif config.lr_boundaries_unit == 'epochs':
    config.lr_boundaries = tuple(b * scale for b in config.lr_boundaries)
  # 'fraction' boundaries scale with the run by themselves.
  for field in ('warmup_steps', 'eval_every_steps', 'checkpoint_every_steps', 'log_every_steps'):
    if config[field] > 0:
      config[field] = _scaled(config[field], scale)
  # A short (smoke) run still evaluates and checkpoints at most about MAX_EVALS_PER_RUN times:
  # both cost far more than a step.
  for field in ('eval_every_steps', 'checkpoint_every_steps'):
    if config[field] > 0:
      config[field] = max(config[field], -(-config.num_train_steps // MAX_EVALS_PER_RUN))


def run_config(model: str, seed: int = 0, steps_scale: float = 1.0, **overrides) -> ml_collections.ConfigDict:
  """The config of one run: the model's recipe, scaled, with `seed` and the non-None overrides."""
  config = recipe_config(model)
  scale_schedule(config, steps_scale)
  config.seed = seed
  for field, value in overrides.items():
    if value is None:
      continue
    if field not in config:
      raise ConfigError(f'unknown config field {field!r}')
    config[field] = value
  return config


def _as_json(config) -> Dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def check_same_run(directory: str, config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError if `directory` holds a run trained with a different config."""
  saved = plot.read_config(directory)
  if not saved:
    return
  mine = _as_json(config)
  differences = [f'{k}: {saved.get(k)!r} there, {mine.get(k)!r} now'
                 for k in sorted(set(saved) | set(mine)) if k not in NOT_COMPARED and saved.get(k) != mine.get(k)]
  if differences:
    raise ConfigError(f'{directory} holds a run with a different config ({"; ".join(differences[:3])}); '
                      'use another --workdir, or the settings it was started with')


def software_versions() -> Dict[str, str]:
  versions = {'python': platform.python_version()}
  for package in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy', 'jax-cuda12-plugin',
                  'jax-cuda13-plugin', 'libtpu'):
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      pass
  versions['platform'] = jax.devices()[0].platform
  try:  # The runtime under JAX, e.g. the CUDA or TPU runtime version.
    runtime = ' '.join(str(jax.devices()[0].client.platform_version).split())
    if runtime and runtime != versions['platform']:
      versions['runtime'] = runtime
  except AttributeError:  # Not every backend exposes it; the versions above still identify the run.
    pass
  return versions


def _write_json(path: str, value: Any) -> None:
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(value, f, indent=2)
  os.replace(tmp, path)  # Atomic: a crash leaves the old file or the new one, never half of one.


def load_peer():
  """jaxresnet.peer.trainer, the PyTorch peer trainer; a ConfigError when it cannot run here."""
  try:
    from jaxresnet.peer import trainer as torch_peer  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConfigError(f'--peer needs benchmarks/torch_peer.py (run from the repository root): {e}') from None
  torch_peer.require_torch()
  return torch_peer


def train_run(config: ml_collections.ConfigDict, directory: str, peer=None) -> Dict[str, Any]:
  """Trains or resumes one run in `directory`, adding this session's wall-clock time to timing.json.

  With `peer` (load_peer()'s module) the run is the PyTorch peer's, `config` its peer_config(). A
  population (config.num_seeds > 1) trains in `directory` with its members in directory/seed<k>/;
  each member's timing.json gets its share of the time (the session's seconds / num_seeds) and
  the whole in `population_seconds`.
  """
  check_same_run(directory, config)
  os.makedirs(directory, exist_ok=True)
  is_main = jax.process_index() == 0
  timing_dirs = train.member_dirs(config, directory)
  timings = [report.read_json(os.path.join(d, report.TIMING_FILE)) or {'sessions': []} for d in timing_dirs]
  # Written before training with seconds=None: a session killed outright stays visible as unrecorded.
  session = {'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
             'seconds': None, 'devices': f'{jax.device_count()} x {jax.devices()[0].device_kind}',
             'versions': software_versions()}
  if peer:
    session['versions'].update(peer.software_versions())
  if config.num_seeds > 1:
    session['num_seeds'] = config.num_seeds
  for timing in timings:
    timing['sessions'].append(session)

  def write_timings():
    if is_main:
      for d, timing in zip(timing_dirs, timings):
        os.makedirs(d, exist_ok=True)
        _write_json(os.path.join(d, report.TIMING_FILE), timing)

  write_timings()
  start = time.perf_counter()
  try:
    if peer:
      return peer.train_and_evaluate(config, directory)
    return train.train_and_evaluate(config, directory)
  finally:  # Also when interrupted: the time spent counts.
    seconds = time.perf_counter() - start
    session['seconds'] = seconds / config.num_seeds
    if config.num_seeds > 1:
      session['population_seconds'] = seconds
    write_timings()


def finished(directory: str, config) -> bool:
  """Whether a run (every member of a population) wrote its final results."""
  return all(report.is_finished(d, config.num_train_steps) for d in train.member_dirs(config, directory))


def population_jobs(workdir: str, model: str, seeds: Sequence[int], configs) -> List[tuple]:
  """How the unfinished seeds of a model train: (name, directory, config) per job.

  Seeds never started alone are trained together as one population in DIR/<model>/ (members
  in DIR/<model>/seed<k>/, where the report reads them). Seeds already started alone (a
  seed<k>/checkpoints/ from a seed-by-seed reproduction) or outside an existing population
  go on alone: a finished or half-trained run is never trained over.
  """
  model_dir = os.path.join(workdir, model)
  started = plot.read_config(model_dir)  # An existing population's config, if any.
  if started:
    members = list(range(started['seed'], started['seed'] + started['num_seeds']))
  else:
    alone = lambda s: os.path.isdir(os.path.join(report.run_dir(workdir, model, s), 'checkpoints'))
    members = [s for s in seeds if not alone(s)]
    if len(members) < 2 or members != list(range(members[0], members[0] + len(members))):
      members = []  # One seed, or a gap left by runs started alone: seed by seed.
  jobs = []
  if members and any(not report.is_finished(report.run_dir(workdir, model, s), configs[s].num_train_steps)
                     for s in members):
    population = configs[members[0]].copy_and_resolve_references()
    population.num_seeds = len(members)
    jobs.append((f'{model} seeds {members[0]}-{members[-1]} (one population)', model_dir, population))
  jobs += [(f'{model} seed {s}', report.run_dir(workdir, model, s), configs[s]) for s in seeds if s not in members]
  return jobs


def reproduce(workdir: str, table: str = 'he2016', models: Optional[Sequence[str]] = None, seeds: int = 3,
              steps_scale: float = 1.0, overrides: Optional[Dict[str, Any]] = None,
              output: Optional[str] = None, command: str = '', peer: bool = False,
              peer_padding: Optional[str] = None, population: bool = True) -> Dict[str, Any]:
  """Trains every (model, seed) run not finished yet in `workdir`, then writes the report.

  With `population`, the seeds of a model train together in one program (population_jobs);
  otherwise seed by seed. With `peer`, each jaxresnet run is followed by the PyTorch peer's
  run of the same config.
  """
  if table not in report.TABLES:
    raise ConfigError(f'unknown table {table!r}; known: {", ".join(report.TABLES)}')
  if seeds < 1:
    raise ConfigError(f'--seeds={seeds} must be at least 1')
  if output and not output.endswith('.md'):
    raise ConfigError(f'--output={output} must name a .md file (its figure goes beside it as .png)')
  models = list(dict.fromkeys(models or report.TABLES[table].models))
  overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
  unknown = set(overrides) - set(RECIPE_FIELDS + BOOKKEEPING_FIELDS)
  if unknown:
    raise ConfigError(f'cannot override {", ".join(sorted(unknown))} in a reproduction')

  # Check everything before training anything.
  jobs = [(model, seed) for seed in range(seeds) for model in models]
  configs = {job: run_config(*job, steps_scale=steps_scale, **overrides) for job in jobs}
  for (model, seed), config in configs.items():
    config_lib.validate(config, jax.device_count())
    check_same_run(report.run_dir(workdir, model, seed), config)
  # The runs in order, as (name, directory, config, trainer): each jaxresnet run (trainer None), then
  # with --peer the peer's run of the same config (trainer: the torch_peer module).
  runs = [(f'{model} seed {seed}', report.run_dir(workdir, model, seed), configs[(model, seed)], None)
          for model, seed in jobs]
  if peer_padding and not peer:
    raise ConfigError('--peer_padding applies to the peer runs: add --peer')
  if peer:
    peer_lib = load_peer()
    padding = peer_padding or peer_lib.DEFAULT_PADDING
    peer_runs = [(f'{model} seed {seed} peer', report.peer_run_dir(workdir, model, seed),
                  peer_lib.peer_config(configs[(model, seed)], padding), peer_lib) for model, seed in jobs]
    for _, directory, config, _ in peer_runs:
      peer_lib.check_config(config)
      check_same_run(directory, config)
    runs = [run for pair in zip(runs, peer_runs) for run in pair]
  if population:  # Model by model: the seeds of each as one population, then its peer runs.
    runs = [run for model in models
            for run in [(name, directory, config, None) for name, directory, config in population_jobs(
                workdir, model, range(seeds), {s: configs[(model, s)] for s in range(seeds)})]
            + [r for r in runs if r[3] is not None and r[1].startswith(os.path.join(workdir, model, ''))]]
    for _, directory, config, trainer in runs:
      if trainer is None:
        config_lib.validate(config, jax.device_count())
        check_same_run(directory, config)
  settings = {'table': table, 'steps_scale': steps_scale, 'dataset': configs[jobs[0]].dataset,
              'recipe_overrides': {k: v for k, v in overrides.items() if k in RECIPE_FIELDS and k != 'dataset'}}
  plan = report.read_plan(workdir)
  if plan and plan.get('settings') != settings:
    raise ConfigError(f'{workdir} was started with settings {json.dumps(plan.get("settings"))}, not '
                      f'{json.dumps(settings)}; use another --workdir')
  plan = {'table': table, 'settings': settings,
          'models': list(dict.fromkeys(plan.get('models', []) + models)),
          'seeds': max(plan.get('seeds', 0), seeds),
          'peer_seeds': max(plan.get('peer_seeds', 0), seeds if peer else 0),
          'commands': plan.get('commands', []) + ([command] if command else [])}
  rundir.check_writable(workdir)
  with rundir.lock_workdir(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
    return _train_runs(workdir, runs, plan, output)


def _train_runs(workdir: str, runs, plan: Dict[str, Any], output: Optional[str]) -> Dict[str, Any]:
  """Writes the plan, then trains the unfinished runs in order, the report rewritten after each (workdir locked)."""
  todo = [config for _, directory, config, _ in runs if not finished(directory, config)]
  if todo:  # Fails on missing or unreadable data now, not at the first run (and caches the arrays).
    data.load_dataset(todo[0])
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    _write_json(os.path.join(workdir, report.PLAN_FILE), plan)

  for i, (name, directory, config, trainer) in enumerate(runs, 1):
    prefix = f'[{i}/{len(runs)}] {name}'
    if finished(directory, config):
      print(f'{prefix}: finished, skipped', flush=True)
      continue
    started = os.path.exists(os.path.join(directory, 'config.json'))
    print(f'{prefix}: {"resuming" if started else "training"} in {directory}', flush=True)
    summary = train_run(config, directory, trainer)
    if summary.get('stopped'):  # SIGTERM/SIGINT: the run saved a checkpoint; stop the table too.
      print(f'{prefix}: stopped by {summary["stopped"]}; run the same command to resume', flush=True)
      break
    if jax.process_index() == 0:
      report.write_report(workdir, output)  # A partial table after every run.
  result = report.write_report(workdir, output) if jax.process_index() == 0 else {}
  print(f'report: {os.path.join(workdir, "report.md")}' + (f' and {output}' if output else ''), flush=True)
  return result


FLAGS = flags.FLAGS


def define_flags():
  """Only when run as a program, so modules that import this one can define their own."""
  flags.DEFINE_enum('table', 'he2016', list(report.TABLES), 'The paper table to reproduce.')
  flags.DEFINE_string('workdir', None, 'Where the runs (DIR/<model>/seed<k>) and the report go.')
  flags.DEFINE_integer('seeds', 3, 'Runs per model, with seeds 0, 1, ...')
  flags.DEFINE_list('models', None, 'Models to run (default: all of the table\'s), e.g. resnet20,resnet110.')
  flags.DEFINE_float('steps_scale', 1.0, 'Multiplies the run length and the schedule\'s step counts; '
                     'below 1 for smoke tests only.')
  flags.DEFINE_string('output', None, 'Also write the report to this .md file (figure beside it as .png).')
  flags.DEFINE_string('dataset', None, 'TFDS name or image_folder (default: the configs\' cifar10).')
  flags.DEFINE_string('data_dir', None, 'TFDS data dir, or the image folder (train/, test/).')
  flags.DEFINE_string('cache_dir', None, 'Where decoded arrays are cached.')
  flags.DEFINE_integer('batch_size', None, 'Changes the recipe\'s batch size of 128.')
  flags.DEFINE_integer('num_val_examples', None, 'Changes the recipe\'s 5,000 validation images.')
  flags.DEFINE_integer('eval_batch_size', None, 'Evaluation batch size.')
  flags.DEFINE_integer('eval_every_steps', None, 'Default: the recipe\'s 2,000, times --steps_scale.')
  flags.DEFINE_integer('log_every_steps', None, 'Default: the recipe\'s 100, times --steps_scale.')
  flags.DEFINE_integer('checkpoint_every_steps', None, 'Default: the recipe\'s 2,000, times --steps_scale.')
  flags.DEFINE_bool('population', True, 'Train the seeds of each model together, as one population in one '
                    'program (config.num_seeds); --nopopulation trains them one by one.')
  flags.DEFINE_bool('peer', False, 'Also train the PyTorch peer (benchmarks/torch_peer.py, needs torch) after '
                    'each run, in DIR/<model>/peer_seed<k>.')
  flags.DEFINE_string('peer_padding', None, 'The peer\'s stride-2 conv padding: symmetric (default, the paper\'s '
                      'nets) or same (jaxresnet\'s).')
  flags.mark_flag_as_required('workdir')


def main(argv):
  exit_on_extra_arguments(argv)
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Keep JAX's and Orbax's INFO lines out of the output.
  overrides = {field: FLAGS[field].value for field in RECIPE_FIELDS + BOOKKEEPING_FIELDS}
  # Training itself stops cleanly on SIGTERM; outside it (loading data, compiling) SIGTERM unwinds
  # like Ctrl-C (signals.stop_on_signals), so the session's time is recorded either way.
  command = ' '.join(['python -m jaxresnet.reproduce'] + [shlex.quote(a) for a in sys.argv[1:]])
  with exit_on_user_error():
    reproduce(FLAGS.workdir, FLAGS.table, FLAGS.models, FLAGS.seeds, FLAGS.steps_scale, overrides,
              FLAGS.output, command, FLAGS.peer, FLAGS.peer_padding, FLAGS.population)


if __name__ == '__main__':
  define_flags()
  errors.run_cli(main, stopped_hint='run the same command to continue')
