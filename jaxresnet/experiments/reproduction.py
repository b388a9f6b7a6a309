"""Reproducing a paper's CIFAR-10 table: every model and seed trained, resumable, then the report.

The library behind `python -m jaxresnet.reproduce` (its docstring says what a
reproduction does). Runs live in DIR/<model>/seed<k> (tables.run_dir); by
default the seeds of a model train together as one population in DIR/<model>/.
Whether a run is finished (skipped) and whether a directory holds the same run
as its config (else refused) are infra/rundir.py's rules, as for main and
sweep; so are the files written here: each run's timing.json and the plan,
DIR/reproduce.json. After every run the report is rewritten
(jaxresnet.experiments.tables).
"""
import contextlib
import datetime
import importlib
import importlib.metadata
import json
import os
import platform
import time
from typing import Any, Dict, List, Optional, Sequence

import jax
import ml_collections

from jaxresnet import data
from jaxresnet import models as models_lib
from jaxresnet.experiments import tables
from jaxresnet.infra import config as config_lib
from jaxresnet.infra import devices
from jaxresnet.infra import host_memory
from jaxresnet.infra import rundir
from jaxresnet.infra.errors import ConfigError
from jaxresnet.training import train

# The fields a reproduction lets its flags override; the schema says which of them change the results.
OVERRIDABLE_FIELDS = ('dataset', 'batch_size', 'num_val_examples', 'data_dir', 'cache_dir', 'eval_batch_size',
                      'eval_every_steps', 'log_every_steps', 'checkpoint_every_steps')
RECIPE_FIELDS = tuple(f for f in OVERRIDABLE_FIELDS if f not in config_lib.BOOKKEEPING_FIELDS)
BOOKKEEPING_FIELDS = tuple(f for f in OVERRIDABLE_FIELDS if f in config_lib.BOOKKEEPING_FIELDS)


def recipe_config(model: str) -> ml_collections.ConfigDict:
  """configs/<model>.py's config, or configs/default.py's with `model` set if there is no such file."""
  models_lib.check_known(model)
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
# A scaled-down (smoke) reproduction evaluates at most this many images of each split (config.max_eval_examples):
# 8 evaluations of 15,000 images took most of a 32-step smoke run's minutes on a CPU.
SMOKE_EVAL_EXAMPLES = 1000


def scale_schedule(config: ml_collections.ConfigDict, scale: float) -> None:
  """Multiplies the run length and every duration of the config by `scale`, in place (config.scale_durations:
  steps or epochs, whichever the config counts in)."""
  if not scale > 0:
    raise ConfigError(f'--steps_scale={scale} must be positive')
  config_lib.scale_durations(config, scale)
  # A short (smoke) run still evaluates and checkpoints at most about MAX_EVALS_PER_RUN times:
  # both cost far more than a step. A run counted in epochs has no length in steps yet: a share of it.
  run = config_lib.known_num_train_steps(config)
  for field in ('eval_every_steps', 'checkpoint_every_steps'):
    every = config_lib.parse_duration(config[field])
    if every.amount > 0 and every.unit == config_lib.STEPS:
      config[field] = (max(config[field], -(-run // MAX_EVALS_PER_RUN)) if run else
                       config_lib.Duration(100 / MAX_EVALS_PER_RUN, config_lib.SHARE).value())


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


def load_peer():
  """jaxresnet.peer.trainer, the PyTorch peer trainer; without torch a ConfigError saying what to install."""
  from jaxresnet.peer import trainer as torch_peer  # pylint: disable=g-import-not-at-top
  torch_peer.require_torch()
  return torch_peer


def train_run(config: ml_collections.ConfigDict, directory: str, peer=None) -> Dict[str, Any]:
  """Trains or resumes one run in `directory`, adding this session's wall-clock time to timing.json.

  With `peer` (load_peer()'s module) the run is the PyTorch peer's, `config` its peer_config(). A
  population (config.num_seeds > 1) trains in `directory` with its members in directory/seed<k>/;
  each member's timing.json gets its share of the time (the session's seconds / num_seeds) and
  the whole in `population_seconds`.
  """
  rundir.check_same_run(directory, config)
  os.makedirs(directory, exist_ok=True)
  is_main = jax.process_index() == 0
  timing_dirs = rundir.member_dirs(config, directory)
  timings = [rundir.read_timing(d) for d in timing_dirs]
  # Written before training with seconds=None: a session killed outright stays visible as unrecorded.
  session = {'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
             'seconds': None, 'devices': f'{jax.device_count()} x {jax.devices()[0].device_kind}',
             'host': devices.host_cpu(), 'versions': software_versions(),
             'freed_memory_kept': host_memory.freed_memory_kept()}  # Its speed depends on it (host_memory).
  if peer:
    session['versions'].update(peer.software_versions())
  if config.num_seeds > 1:
    session['num_seeds'] = config.num_seeds
  for timing in timings:
    timing['sessions'].append(session)

  def write_timings():
    if is_main:
      for d, timing in zip(timing_dirs, timings):
        rundir.write_timing(d, timing)

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


def population_jobs(workdir: str, model: str, seeds: Sequence[int], configs) -> List[tuple]:
  """How the unfinished seeds of a model train: (name, directory, config) per job.

  Seeds never started alone are trained together as one population in DIR/<model>/ (members
  in DIR/<model>/seed<k>/, where the report reads them). Seeds already started alone (a
  seed<k>/checkpoints/ from a seed-by-seed reproduction) or outside an existing population
  go on alone: a finished or half-trained run is never trained over.
  """
  model_dir = os.path.join(workdir, model)
  started = rundir.read_config(model_dir)  # An existing population's config, if any.
  if started:
    members = list(range(started['seed'], started['seed'] + started['num_seeds']))
  else:
    alone = lambda s: os.path.isdir(os.path.join(tables.run_dir(workdir, model, s), 'checkpoints'))
    members = [s for s in seeds if not alone(s)]
    if len(members) < 2 or members != list(range(members[0], members[0] + len(members))):
      members = []  # One seed, or a gap left by runs started alone: seed by seed.
  jobs = []
  if members and any(not rundir.finished(configs[s], tables.run_dir(workdir, model, s)) for s in members):
    population = configs[members[0]].copy_and_resolve_references()
    population.num_seeds = len(members)
    jobs.append((f'{model} seeds {members[0]}-{members[-1]} (one population)', model_dir, population))
  jobs += [(f'{model} seed {s}', tables.run_dir(workdir, model, s), configs[s]) for s in seeds if s not in members]
  return jobs


def reproduce(workdir: str, table: str = 'he2016', models: Optional[Sequence[str]] = None, seeds: int = 3,
              steps_scale: float = 1.0, overrides: Optional[Dict[str, Any]] = None,
              output: Optional[str] = None, command: str = '', peer: bool = False,
              peer_padding: Optional[str] = None, population: bool = True,
              max_eval_examples: Optional[int] = None) -> Dict[str, Any]:
  """Trains every (model, seed) run not finished yet in `workdir`, then writes the report.

  With `population`, the seeds of a model train together in one program (population_jobs);
  otherwise seed by seed. With `peer`, each jaxresnet run is followed by the PyTorch peer's
  run of the same config. `max_eval_examples` (config.max_eval_examples) is by default what
  the workdir was started with, and for a new one SMOKE_EVAL_EXAMPLES when steps_scale < 1
  (a smoke run), else 0 (every image).
  """
  if table not in tables.TABLES:
    raise ConfigError(f'unknown table {table!r}; known: {", ".join(tables.TABLES)}')
  if seeds < 1:
    raise ConfigError(f'--seeds={seeds} must be at least 1')
  if output and not output.endswith('.md'):
    raise ConfigError(f'--output={output} must name a .md file (its figure goes beside it as .png)')
  models = list(dict.fromkeys(models or tables.TABLES[table].models))
  overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
  unknown = set(overrides) - set(RECIPE_FIELDS + BOOKKEEPING_FIELDS)
  if unknown:
    raise ConfigError(f'cannot override {", ".join(sorted(unknown))} in a reproduction')

  # Check everything before training anything.
  rundir.check_not_member(workdir, 'resume the population')
  plan = rundir.read_plan(workdir)
  if max_eval_examples is None:  # The workdir's own setting (older plans lack it: every image), else by the scale.
    max_eval_examples = (plan['settings'].get('max_eval_examples', 0) if plan.get('settings') else
                         SMOKE_EVAL_EXAMPLES if steps_scale < 1 else 0)
  jobs = [(model, seed) for seed in range(seeds) for model in models]
  configs = {job: run_config(*job, steps_scale=steps_scale, max_eval_examples=max_eval_examples, **overrides)
             for job in jobs}
  for (model, seed), config in configs.items():
    config_lib.validate(config, jax.device_count())
    rundir.check_same_run(tables.run_dir(workdir, model, seed), config)
  # The runs in order, as (name, directory, config, trainer): each jaxresnet run (trainer None), then
  # with --peer the peer's run of the same config (trainer: the torch_peer module).
  runs = [(f'{model} seed {seed}', tables.run_dir(workdir, model, seed), configs[(model, seed)], None)
          for model, seed in jobs]
  if peer_padding and not peer:
    raise ConfigError('--peer_padding applies to the peer runs: add --peer')
  if peer:
    peer_lib = load_peer()
    padding = peer_padding or peer_lib.DEFAULT_PADDING
    peer_runs = [(f'{model} seed {seed} peer', tables.peer_run_dir(workdir, model, seed),
                  peer_lib.peer_config(configs[(model, seed)], padding), peer_lib) for model, seed in jobs]
    for _, directory, config, _ in peer_runs:
      peer_lib.check_config(config)
      rundir.check_same_run(directory, config)
    runs = [run for pair in zip(runs, peer_runs) for run in pair]
  if population:  # Model by model: the seeds of each as one population, then its peer runs.
    runs = [run for model in models
            for run in [(name, directory, config, None) for name, directory, config in population_jobs(
                workdir, model, range(seeds), {s: configs[(model, s)] for s in range(seeds)})]
            + [r for r in runs if r[3] is not None and r[1].startswith(os.path.join(workdir, model, ''))]]
    for _, directory, config, trainer in runs:
      if trainer is None:
        config_lib.validate(config, jax.device_count())
        rundir.check_same_run(directory, config)
  for _, directory, config, trainer in runs:  # A seed alone in a population's member folder: never trained over.
    if trainer is None and config.num_seeds == 1 and not rundir.finished(config, directory):
      rundir.check_not_member(directory, 'train it with its population (without --nopopulation)')
  settings = {'table': table, 'steps_scale': steps_scale, 'dataset': configs[jobs[0]].dataset,
              'recipe_overrides': {k: v for k, v in overrides.items() if k in RECIPE_FIELDS and k != 'dataset'}}
  if max_eval_examples:  # Only where set: the plans written before it existed still compare equal.
    settings['max_eval_examples'] = max_eval_examples
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
  todo = [config for _, directory, config, _ in runs if not rundir.finished(config, directory)]
  if todo:  # Fails on missing or unreadable data now, not at the first run (and caches the arrays).
    data.load_dataset(todo[0])
  if jax.process_index() == 0:
    rundir.write_plan(workdir, plan)

  for i, (name, directory, config, trainer) in enumerate(runs, 1):
    prefix = f'[{i}/{len(runs)}] {name}'
    if rundir.finished(config, directory):
      print(f'{prefix}: finished, skipped', flush=True)
      continue
    started = bool(rundir.read_config(directory))
    print(f'{prefix}: {"resuming" if started else "training"} in {directory}', flush=True)
    summary = train_run(config, directory, trainer)
    if summary.get('stopped'):  # SIGTERM/SIGINT: the run saved a checkpoint; stop the table too.
      print(f'{prefix}: stopped by {summary["stopped"]}; run the same command to resume', flush=True)
      break
    if jax.process_index() == 0:
      tables.write_report(workdir, output)  # A partial table after every run.
  result = tables.write_report(workdir, output) if jax.process_index() == 0 else {}
  print(f'report: {os.path.join(workdir, tables.REPORT_MD)}' + (f' and {output}' if output else ''), flush=True)
  return result


def peer_unavailable() -> str:
  """'' where the PyTorch peer can run; otherwise, in one line, what to install."""
  from jaxresnet.peer import trainer as torch_peer  # pylint: disable=g-import-not-at-top
  return '' if torch_peer.torch is not None else torch_peer.MISSING_TORCH
