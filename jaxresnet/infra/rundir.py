"""The run's workdir: its files, checked before any slow work, then written by one process at a time.

This module is the one owner of a run's files (config.json, results.json,
timing.json, the metrics.jsonl it reads, reproduce's plan file): every command
and library reads and writes them here, and asks it the two questions about
them, with one rule each: is a run finished (`finished`: results.json at its
last step), and does a directory hold the same run as a config
(`check_same_run`: config.recipe_differences, defaults filled in). A
population member's folder, WORKDIR/seed<k>, is written by its population only
(`check_not_member`).

`check_before_run` is what `train.train_and_evaluate` does first, in a
second: a workdir that is a file, unwritable, in use by another process, or
holding another run's checkpoints is one line before the data is loaded.
`open_run` then takes the workdir for the run: it creates and locks it and
restores the newest intact checkpoint.

The lock is an exclusive `flock` on WORKDIR/.lock, which holds the PID of its
holder. The kernel releases it when the process ends, however it ends (kill
-9 included), so it never has to be cleaned up; the file itself stays. Of a
multi-process run (jax.distributed) only process 0 takes it.
"""
import fcntl
import json
import math
import os
import re
import socket
import tempfile
import time
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

from jaxresnet.infra import checkpoints
from jaxresnet.infra import config as config_lib
from jaxresnet.infra import tensorboard
from jaxresnet.infra.errors import CheckpointError, ConfigError, DataError, WorkdirBusyError

LOCK_FILE = '.lock'


def check_writable(workdir: str) -> None:
  """Creates the workdir if needed; one line if it is a file or cannot be written.

  The probe is an unnamed temporary file (O_TMPFILE on Linux): a process killed
  while probing leaves nothing behind in the workdir.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise CheckpointError(f'--workdir {workdir} is a file, not a directory; choose another --workdir')
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise CheckpointError(f'cannot write to workdir {workdir}: {e.strerror or e}') from None


def check_creatable(workdir: str) -> None:
  """For a workdir that does not exist yet: one line if it could not be created. Creates nothing."""
  parent = os.path.dirname(os.path.abspath(workdir))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise CheckpointError(f'cannot write to workdir {workdir}: {parent} is a file, not a directory')
  if not os.access(parent, os.W_OK | os.X_OK):
    raise CheckpointError(f'cannot write to workdir {workdir}: no permission to create it in {parent}')


class WorkdirLock:
  """This process's exclusive hold on a workdir, until `release()` (or garbage collection, or the process's end)."""

  def __init__(self, workdir: str, fd: int):
    self.workdir, self._fd = workdir, fd

  @property
  def held(self) -> bool:
    return self._fd is not None

  def release(self) -> None:
    if self._fd is not None:
      fd, self._fd = self._fd, None
      os.close(fd)  # Closing the only descriptor of the open file releases the flock.
      _HELD.pop(_key(self.workdir), None)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.release()

  def __del__(self):
    try:
      self.release()
    except Exception:  # pylint: disable=broad-except
      pass  # At interpreter shutdown: the process's end releases it anyway.


# The locks this process holds, by real path: taking a workdir twice returns the same lock (a
# second open file would conflict with the first). Weak: a dropped lock is released.
_HELD: Dict[str, 'weakref.ReferenceType[WorkdirLock]'] = {}


def _key(workdir: str) -> str:
  return os.path.realpath(workdir)


def lock_workdir(workdir: str) -> WorkdirLock:
  """Takes the existing workdir for this process; WorkdirBusyError, naming the holder's PID, if another has it."""
  held = _HELD.get(_key(workdir))
  if held is not None and held() is not None and held().held:
    return held()
  path = os.path.join(workdir, LOCK_FILE)
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise CheckpointError(f'cannot write to workdir {workdir}: {e.strerror or e}') from None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = _read_holder(fd)
    os.close(fd)
    raise WorkdirBusyError(f'{workdir} is in use by {holder} (it holds {path}); wait for it to finish, '
                           'or use another --workdir') from None
  except OSError as e:  # A file system without flock: better to say so than to run unprotected.
    os.close(fd)
    raise CheckpointError(f'cannot lock workdir {workdir} ({path}): {e.strerror or e}') from None
  os.ftruncate(fd, 0)
  os.pwrite(fd, f'{os.getpid()} {socket.gethostname()}\n'.encode(), 0)
  lock = WorkdirLock(workdir, fd)
  _HELD[_key(workdir)] = weakref.ref(lock)
  return lock


def _read_holder(fd: int) -> str:
  """'process <pid>' (and its host if not this one) from the lock file; its holder writes it just after locking."""
  for _ in range(20):
    text = os.pread(fd, 200, 0).decode(errors='replace').split()
    if text:
      pid = text[0]
      host = text[1] if len(text) > 1 else ''
      return f'process {pid}' + (f' on {host}' if host and host != socket.gethostname() else '')
    time.sleep(0.01)
  return 'another process'


def _is_main_process() -> bool:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index() == 0


def check_before_run(workdir: str, config, one_process: bool = False) -> Optional[WorkdirLock]:
  """The cheap checks of a run's workdir, before its data is loaded: each failure is one line at once.

  A file, an unwritable or uncreatable path, another process at work in it, an
  unreadable checkpoints/ folder, or the checkpoints of another model, seed or
  recipe (checkpoints.check_newest_matches). An existing workdir is locked here
  already (returned; `open_run` takes it over). A new one is only created by
  `open_run`, once the data has loaded, so bad input leaves nothing behind.
  A population member's folder (WORKDIR/seed<k>) is refused: its population writes it.
  `one_process`: the caller is never one of several processes (the PyTorch peer), so JAX is not asked.
  """
  check_not_member(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise CheckpointError(f'--workdir {workdir} is a file, not a directory; choose another --workdir')
  if not os.path.exists(workdir):
    check_creatable(workdir)
    return None
  check_writable(workdir)
  lock = lock_workdir(workdir) if one_process or _is_main_process() else None
  try:
    checkpoints.check_newest_matches(workdir, config)
    check_same_run(workdir, config)  # Also where its checkpoints are gone (a finished run's results alone).
    known_length = config_lib.known_num_train_steps(config)
    if known_length is not None:
      check_not_beyond(workdir, config, known_length)
  except BaseException:
    if lock is not None:
      lock.release()
    raise
  return lock


def take_workdir(workdir: str, lock: Optional[WorkdirLock] = None, one_process: bool = False
                 ) -> Optional[WorkdirLock]:
  """Creates the workdir (one line if it cannot be written) and locks it, unless `lock` (check_before_run's)
  already holds it; the lock, None on the processes other than 0 of a multi-process run."""
  check_writable(workdir)
  if lock is None and (one_process or _is_main_process()):
    lock = lock_workdir(workdir)
  return lock


def open_run(workdir: str, config, state, metadata, lock: Optional[WorkdirLock] = None,
             total_steps: Optional[int] = None):
  """(manager, state, start_step): the workdir created and locked, and the newest intact checkpoint restored.

  `lock` is check_before_run's. The manager holds the lock from here on:
  closing it (jobs.Checkpointer.finish) releases the workdir. start_step is
  0 for a new run; when no checkpoint is readable the run stops, unless
  config.allow_fresh_start (checkpoints.restore_newest). A checkpoint beyond
  the run's length (`total_steps`, by default config.num_train_steps) or one
  trained on other data (checkpoints.check_same_data) stops it too.
  """
  lock = take_workdir(workdir, lock)
  try:
    manager = checkpoints.create_manager(workdir, config.checkpoints_to_keep, lock=lock)
  except BaseException:
    if lock is not None:
      lock.release()
    raise
  try:
    state, step = checkpoints.restore_newest(manager, state, metadata,
                                             allow_fresh_start=config.get('allow_fresh_start', False),
                                             allow_data_change=config.get('allow_data_change', False))
    total_steps = config_lib.known_num_train_steps(config) if total_steps is None else total_steps
    check_not_beyond(workdir, config, total_steps, step)
    if step and _is_main_process():
      record_data_change(workdir, step, checkpoints.read_metadata(manager, step), metadata)
  except BaseException:
    manager.close()
    raise
  return manager, state, step or 0


def log_path(workdir: str) -> str:
  """Where a process's library noise goes (errors.send_library_noise_to): WORKDIR/log.txt, one per process."""
  import jax  # pylint: disable=g-import-not-at-top
  index = jax.process_index()
  return os.path.join(workdir, 'log.txt' if index == 0 else f'log.process{index}.txt')


# --------------------------------------------------------------------------
# The run's files. This module alone writes and reads them (metrics.jsonl is appended by
# tensorboard.MetricWriter and read here), and says whether a run is finished and whether a
# directory holds the same run as a config: one rule each, for main, evaluate, predict, sweep,
# reproduce and the PyTorch peer.

CONFIG_FILE = 'config.json'  # The run's config (resolved), rewritten by every session.
RESULTS_FILE = 'results.json'  # The final model's numbers: written once the run reached its last step.
METRICS_FILE = 'metrics.jsonl'  # One JSON object per logged step (tensorboard.MetricWriter).
TIMING_FILE = 'timing.json'  # reproduce: the wall-clock time of each training session.
PLAN_FILE = 'reproduce.json'  # reproduce's workdir: its commands and settings.
# The trainer of a run whose config.json does not say (jaxresnet's own); the PyTorch peer's says 'pytorch'.
DEFAULT_TRAINER = 'jaxresnet'


def read_json(path: str) -> Optional[Any]:
  """The JSON value in `path`; None if there is none, or only a part of one (a crash while writing)."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError, NotADirectoryError):
    return None


def strict_json(value: Any) -> Tuple[Any, Any]:
  """(value with each NaN and infinity made null, what each was: None if none was found).

  JSON has no NaN or infinity (Python writes them as bare NaN/Infinity, which
  strict readers refuse). Where a dict's value holds some, `<key>_not_finite`
  beside it says what they were: 'nan', 'inf' or '-inf', or for a list
  {index: ...}.
  """
  if isinstance(value, float) and not math.isfinite(value):
    return None, 'nan' if math.isnan(value) else ('inf' if value > 0 else '-inf')
  if isinstance(value, dict):
    clean = {}
    for key, item in value.items():
      clean[key], what = strict_json(item)
      if what is not None:
        clean[f'{key}_not_finite'] = what
    return clean, None
  if isinstance(value, (list, tuple)):
    pairs = [strict_json(item) for item in value]
    found = {str(i): what for i, (_, what) in enumerate(pairs) if what is not None}
    return [item for item, _ in pairs], found or None
  return value, None


def write_json(path: str, value: Any) -> None:
  """Writes `value` to `path` as strict JSON (strict_json), atomically: a crash or a full disk leaves the old
  file or the new one, never a half or empty one. CheckpointError, naming the file, if it cannot be written."""
  tmp = f'{path}.tmp{os.getpid()}'
  try:
    with open(tmp, 'w') as f:
      json.dump(strict_json(value)[0], f, indent=2, allow_nan=False)
      f.flush()
      os.fsync(f.fileno())  # On disk before the rename: else a power cut can leave an empty file.
    os.replace(tmp, path)
  except OSError as e:
    raise CheckpointError(f'cannot write {path}: {e.strerror or e}') from None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_files(writers: Dict[str, Callable[[str], None]]) -> None:
  """Writes each file `path` of `writers` by calling its writer on a temporary name beside it, then renames them
  all: a full disk, a folder that cannot be written or a path under a file leaves none of them half written
  (CheckpointError, naming the file). The writers may raise ValueError (e.g. an unknown image format) too."""
  written = {}
  try:
    for path, write in writers.items():
      folder = os.path.dirname(os.path.abspath(path))
      above = folder
      while not os.path.exists(above):
        above = os.path.dirname(above)
      if not os.path.isdir(above):
        raise CheckpointError(f'cannot write {path}: {above} is a file, not a folder')
      os.makedirs(folder, exist_ok=True)
      tmp = written[path] = f'{path}.tmp{os.getpid()}'
      write(tmp)
    for path, tmp in written.items():
      os.replace(tmp, path)
  except (OSError, ValueError) as e:
    raise CheckpointError(f'cannot write {path}: {getattr(e, "strerror", None) or e}') from None
  finally:
    for tmp in written.values():
      if os.path.exists(tmp):
        os.remove(tmp)


def read_config(directory: str) -> Dict[str, Any]:
  """DIRECTORY/config.json as written ({} if it has none)."""
  return read_json(os.path.join(directory, CONFIG_FILE)) or {}


def load_config(directory: str):
  """DIRECTORY/config.json as a ConfigDict; fields added to configs/default.py since it was written get their
  defaults. One line if the directory holds no run."""
  check_not_member(directory, 'evaluate it')
  saved = read_json(os.path.join(directory, CONFIG_FILE))
  if not isinstance(saved, dict):
    raise CheckpointError(f'{directory} is not a training workdir: it has no readable {CONFIG_FILE}')
  return config_lib.from_saved(saved)  # Older files' fields in today's names, too.


# config.json's record of the data: the fingerprint of the data the run trains on now, and each change of data a
# user allowed (--config.allow_data_change), kept by every later session.
DATA_FINGERPRINT = checkpoints.DATA_FINGERPRINT
DATA_CHANGES = 'data_changes'


def write_config(directory: str, config, data_fingerprint: Optional[Dict[str, str]] = None) -> None:
  """DIRECTORY/config.json: the resolved config (a ConfigDict), its keys sorted, with the fingerprint of the
  data it trains on (data.Dataset.fingerprint) and the data changes recorded before."""
  os.makedirs(directory, exist_ok=True)
  values = json.loads(config.to_json_best_effort(sort_keys=True))
  changes = read_config(directory).get(DATA_CHANGES)
  if changes:
    values[DATA_CHANGES] = changes
  if data_fingerprint is not None:
    values[DATA_FINGERPRINT] = data_fingerprint
  write_json(os.path.join(directory, CONFIG_FILE), values)


def record_data_change(directory: str, step: int, theirs: Dict[str, Any], mine: Dict[str, Any]) -> None:
  """Adds to config.json's data_changes that the run goes on from checkpoint `step` (metadata `theirs`) on
  other data than it was trained on (`mine`: this session's); nothing if the data is the same or either is
  unknown (older files). check_same_data allowed the change first."""
  before, after = theirs.get(DATA_FINGERPRINT), mine.get(DATA_FINGERPRINT)
  if not before or not after or before == after:
    return
  saved = read_config(directory)
  saved[DATA_CHANGES] = list(saved.get(DATA_CHANGES) or []) + [
      {'step': step, 'from': before, 'from_data_dir': theirs.get('data_dir'), 'to': after,
       'to_data_dir': mine.get('data_dir')}]
  write_json(os.path.join(directory, CONFIG_FILE), saved)


def read_results(directory: str) -> Optional[Dict[str, Any]]:
  return read_json(os.path.join(directory, RESULTS_FILE))


def write_results(directory: str, summary: Dict[str, Any]) -> None:
  os.makedirs(directory, exist_ok=True)
  write_json(os.path.join(directory, RESULTS_FILE), summary)


def read_metrics(directory: str) -> List[Dict[str, Any]]:
  """The records of DIRECTORY/metrics.jsonl (tensorboard.read_metric_lines: lines that are none are skipped, with
  one warning); DataError if it has none."""
  path = os.path.join(directory, METRICS_FILE)
  if not os.path.exists(path):
    raise DataError(f'{directory} has no {METRICS_FILE} (not a training workdir)')
  try:
    return [record for record, _ in tensorboard.read_metric_lines(path)]
  except OSError as e:
    raise DataError(f'cannot read {path}: {e.strerror or e}') from None


def read_timing(directory: str) -> Dict[str, Any]:
  """DIRECTORY/timing.json: {'sessions': [...]}, empty for a run that has none yet."""
  timing = read_json(os.path.join(directory, TIMING_FILE))
  return timing if isinstance(timing, dict) and 'sessions' in timing else {'sessions': []}


def write_timing(directory: str, timing: Dict[str, Any]) -> None:
  os.makedirs(directory, exist_ok=True)
  write_json(os.path.join(directory, TIMING_FILE), timing)


def read_plan(workdir: str) -> Dict[str, Any]:
  """A reproduce workdir's plan: its table, settings, models, seeds and commands ({} if none)."""
  return read_json(os.path.join(workdir, PLAN_FILE)) or {}


def write_plan(workdir: str, plan: Dict[str, Any]) -> None:
  os.makedirs(workdir, exist_ok=True)
  write_json(os.path.join(workdir, PLAN_FILE), plan)


def member_dirs(config, workdir: str) -> List[str]:
  """Where each member of a run writes its config, metrics and results: the workdir itself for a single run,
  WORKDIR/seed<k> for each seed k of a population (num_seeds > 1)."""
  seeds = config_lib.seeds(config)
  if not seeds.is_population:
    return [workdir]
  return [os.path.join(workdir, f'seed{seed}') for seed in seeds.all]


def population_of(directory: str) -> Optional[Tuple[str, int]]:
  """(the population's workdir, the seed) if `directory` is a population member's folder, WORKDIR/seed<k>.

  A member is known by its place: a folder named seed<k> in a workdir whose
  config.json is that of a population (num_seeds > 1) with seed k among its seeds.
  """
  path = os.path.abspath(directory)
  match = re.fullmatch(r'seed(\d+)', os.path.basename(path))
  if not match:
    return None
  parent = os.path.dirname(path)
  config = read_config(parent)
  num_seeds, first = config.get('num_seeds', 1), config.get('seed')
  if not (isinstance(num_seeds, int) and num_seeds > 1 and isinstance(first, int)):
    return None
  seed = int(match.group(1))
  return (parent, seed) if first <= seed < first + num_seeds else None


def check_not_member(directory: str, instead: str = 'resume it') -> None:
  """One line if `directory` is a population member's folder: only its population writes there."""
  member = population_of(directory)
  if member is not None:
    parent, seed = member
    raise CheckpointError(f'{directory} is seed {seed} of the population in {parent} (its config.json has '
                          f'num_seeds > 1): only that population writes there; to {instead}, use '
                          f'--workdir={parent} (with --seed={seed} for evaluate and predict)')


def is_finished(directory: str, total_steps: int) -> bool:
  """Whether the run in `directory` is finished: its results.json was written at its last step, `total_steps`."""
  results = read_results(directory)
  return isinstance(results, dict) and results.get('step') == total_steps


def finished(config, workdir: str, total_steps: Optional[int] = None) -> bool:
  """Whether the run `config` describes is finished in `workdir` (every member, for a population).

  `total_steps` is the run's length; by default config.num_train_steps (pass it
  for a run set in epochs, whose length depends on the data).
  """
  total_steps = config_lib.known_num_train_steps(config) if total_steps is None else total_steps
  return all(is_finished(d, total_steps) for d in member_dirs(config, workdir))


def check_not_beyond(workdir: str, config, total_steps: int, checkpoint_step: Optional[int] = None) -> None:
  """One line (ConfigError) if the run in `workdir` went further than `total_steps`, the length asked for now:
  finished at a later step (results.json), or holding a later checkpoint (`checkpoint_step`, its newest). Such a
  rerun would rewrite a finished run's records as a shorter one; it is refused before any file changes.
  Extending a run (a longer length) stays allowed."""
  for directory in member_dirs(config, workdir):
    results = read_results(directory)
    step = results.get('step') if isinstance(results, dict) else None
    if isinstance(step, int) and step > total_steps:
      raise ConfigError(f'{directory} holds a run finished at step {step}; num_train_steps={total_steps} would '
                        f'end it earlier and rewrite its records: rerun with num_train_steps={step} (or more, to '
                        'extend it), or use another --workdir')
  if checkpoint_step is not None and checkpoint_step > total_steps:
    raise ConfigError(f'{workdir} holds a checkpoint at step {checkpoint_step}, beyond num_train_steps='
                      f'{total_steps}: rerun with num_train_steps={checkpoint_step} (or more), or use another '
                      '--workdir')


def same_run_differences(saved: Dict[str, Any], config) -> List[Tuple[str, Any, Any]]:
  """(field, saved value, config's value) for each difference between the run a config.json describes and
  `config`: infra/config.py's recipe_differences (bookkeeping ignored, a field the file lacks counts as its
  default), plus the trainer (jaxresnet's, or the PyTorch peer's)."""
  mine = json.loads(config.to_json_best_effort()) if hasattr(config, 'to_json_best_effort') else dict(config)
  differences = []
  trainers = (saved.get('trainer', DEFAULT_TRAINER), mine.get('trainer', DEFAULT_TRAINER))
  if trainers[0] != trainers[1]:
    differences.append(('trainer', *trainers))
  return differences + [d for d in config_lib.recipe_differences(saved, mine) if d[0] != 'trainer']


def check_same_run(directory: str, config) -> None:
  """One line (ConfigError) if `directory` holds a run of another config than `config`; nothing if it holds none."""
  saved = read_config(directory)
  if not saved:
    return
  differences = same_run_differences(saved, config)
  if differences:
    listed = '; '.join(f'{field}: {there!r} there, {here!r} now' for field, there, here in differences[:3])
    more = f' (and {len(differences) - 3} more)' if len(differences) > 3 else ''
    raise ConfigError(f'{directory} holds a run with a different config ({listed}{more}); use another '
                      '--workdir, or the settings it was started with')
