"""Orbax checkpoints in WORKDIR/checkpoints: the train state plus a little metadata, and the restore policy.

The metadata says which run wrote a checkpoint: model, dataset, classes, seed
and recipe (config.recipe), so that `evaluate` and a resumed run can check it
is theirs. It also carries a sha256 of each top-level field of the saved state
(params, batch_stats, opt_state, ...), verified on every restore: a checkpoint
whose bytes changed on disk (bit rot, a bad copy) is treated like an
unreadable one and never trained or evaluated on. Checkpoints written before
seeds, recipes and checksums were recorded still load, with one note line.
"""
import hashlib
import os
import re
import sys
from typing import Any, Dict, List, Optional, Sequence

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxresnet.infra import config as config_lib
from jaxresnet.infra import devices
from jaxresnet.infra import errors
from jaxresnet.infra.errors import DETAILS, CheckpointError

# Metadata fields a resumed or evaluated run must share with the checkpoint: the config's identity fields
# (the schema's), and the data's classes and image shape.
IDENTITY_FIELDS = config_lib.IDENTITY_FIELDS + ('class_names', 'image_shape')
UNREADABLE_DIR = 'unreadable_checkpoints'  # Beside checkpoints/: where unreadable ones are moved, never deleted.
# The metadata's (and config.json's) fingerprint of the data a run trains on: data.Dataset.fingerprint, a hash
# of each split's decoded images, labels and class names. Part of the run's identity (check_same_data).
DATA_FINGERPRINT = 'data_fingerprint'


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


class Manager(ocp.CheckpointManager):
  """Orbax's CheckpointManager, plus the step being written and, for a training run, the workdir's lock.

  An asynchronous save that fails is only reported at the next call, so the
  manager remembers which step it was writing; `close()` releases the lock.
  """

  def __init__(self, directory: str, options: ocp.CheckpointManagerOptions, lock=None):
    super().__init__(directory, options=options)
    self.lock = lock  # workdir.WorkdirLock, or None.
    self.writing: Optional[int] = None

  def close(self):
    try:
      super().close()
    finally:
      if self.lock is not None:
        self.lock.release()


def create_manager(workdir: str, max_to_keep: int = 3, read_only: bool = False, lock=None) -> Manager:
  """The manager of WORKDIR/checkpoints; one line if that folder cannot be read."""
  directory = checkpoint_dir(workdir)
  try:
    with errors.absl_warnings_off():  # Orbax's three warnings about every read-only manager.
      # A writer removes the temporary folders of checkpoints whose writing was cut short (kill -9).
      options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
                                             cleanup_tmp_directories=not read_only)
      manager = Manager(directory, options, lock)
  except OSError as e:
    raise CheckpointError(f'cannot read {directory}: {e.strerror or e}') from None
  return manager


def config_metadata(config) -> Dict[str, Any]:
  """What a checkpoint says about the config of the run that wrote it (known before any data is read)."""
  seeds = config_lib.seeds(config)
  return {'model': config.model, 'shortcut': config.shortcut, 'dataset': config.dataset,
          'num_seeds': seeds.count, 'seed': seeds.first, 'recipe': config_lib.recipe(config)}


def run_metadata(config, dataset) -> Dict[str, Any]:
  """What a checkpoint says about the run that wrote it."""
  metadata = {**config_metadata(config), 'class_names': dataset.class_names,
              'image_shape': list(dataset.train_images.shape[1:])}
  if getattr(dataset, 'fingerprint', None):
    metadata.update({DATA_FINGERPRINT: dataset.fingerprint, 'data_dir': config.data_dir})
  return metadata


def check_same_data(where: str, step: int, theirs: Dict[str, Any], mine: Dict[str, Any],
                    allow_change: bool = False) -> bool:
  """Whether checkpoint `step` in `where` (metadata `theirs`) was trained on other data than the run's now
  (`mine`): True only with `allow_change`, after a warning line; else one line (DataError) naming both.

  A checkpoint written before fingerprints were recorded resumes as before.
  """
  if not theirs.get(DATA_FINGERPRINT) or not mine.get(DATA_FINGERPRINT):
    return False
  if theirs[DATA_FINGERPRINT] == mine[DATA_FINGERPRINT]:
    return False
  describe = lambda m: (f"data_dir {m.get('data_dir', '?')!r}: " +
                        ', '.join(f'{split} {m[DATA_FINGERPRINT].get(split)}' for split in ('train', 'test')))
  if not allow_change:
    raise errors.DataError(
        f'checkpoint {step} in {where} was trained on other data ({describe(theirs)}) than this run has now '
        f'({describe(mine)}); resume on the data the run started with, or rerun with '
        '--config.allow_data_change=True to go on with this data (recorded in config.json)')
  print(f'warning: checkpoint {step} in {where} was trained on other data ({describe(theirs)}); going on with '
        f'{describe(mine)} as --config.allow_data_change=True asks (recorded in config.json)',
        file=sys.stderr, flush=True)
  return True


# --------------------------------------------------------------------------
# Checksums.


def _host(leaf) -> np.ndarray:
  return devices.to_host(leaf) if isinstance(leaf, jax.Array) else np.asarray(leaf)


def checksums(state_dict: Dict[str, Any], fields: Optional[Sequence[str]] = None) -> Dict[str, str]:
  """sha256 of each top-level field of a state dict (all fields, or `fields`).

  Each hashes its arrays' paths, dtypes, shapes and bytes, as fetched to the
  host: what a restore gives back must hash the same, bit for bit.
  """
  result = {}
  for field in sorted(state_dict if fields is None else fields):
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(state_dict[field])[0]:
      array = np.ascontiguousarray(_host(leaf))
      digest.update(f'{jax.tree_util.keystr(path)} {array.dtype.str} {array.shape}\n'.encode())
      digest.update(array.view(np.uint8).reshape(-1) if array.size else b'')
    result[field] = digest.hexdigest()
  return result


def verify(step: int, restored: Dict[str, Any], metadata: Dict[str, Any]) -> None:
  """Raises UnreadableCheckpoint if a restored field's content differs from the checksum saved with it."""
  expected = metadata.get('checksums')
  if expected is None:
    note(f'checkpoint {step} was written before checkpoints carried checksums: its content is not verified')
    return
  actual = checksums(restored, [field for field in restored if field in expected])
  changed = [field for field, digest in actual.items() if digest != expected[field]]
  if changed:
    raise UnreadableCheckpoint(step, f'its content ({", ".join(changed)}) no longer matches the checksum saved with it')


# --------------------------------------------------------------------------
# Saving.


class SaveError(CheckpointError):
  """Checkpoint `step` could not be written, for `reason`: maybe an earlier save than the one asked for.

  Saves run in the background, so a failure shows at the next save; str()
  says so when `step` is not the step being saved now.
  """

  def __init__(self, step: int, reason: str, saving: Optional[int] = None):
    background = saving is not None and saving != step
    super().__init__(reason + (f' (while checkpoint {step} was written in the background)' if background else ''))
    self.step, self.reason = step, reason


def save(manager: ocp.CheckpointManager, state, metadata: Dict[str, Any], step: Optional[int] = None) -> None:
  """Saves the state as checkpoint `step` (default: its own), its fields' checksums in the metadata (asynchronously).

  The checksums are computed here, on a host copy of the state, before Orbax
  writes in the background; `manager.wait_until_finished()` blocks until it is
  written. The previous save's failure surfaces now, as a SaveError naming
  that save's step.
  """
  if step is None:
    step = int(jax.device_get(state.step))
  state_dict = flax.serialization.to_state_dict(state)
  metadata = {**metadata, 'checksums': checksums(state_dict)}
  in_flight = getattr(manager, 'writing', None)
  try:
    if in_flight is not None:
      manager.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    log_details(f'writing checkpoint {in_flight} failed', e)
    raise SaveError(in_flight if in_flight is not None else step, short_reason(e), saving=step) from None
  try:
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state_dict),
                                               metadata=ocp.args.JsonSave(metadata)), force=True)
  except Exception as e:  # pylint: disable=broad-except
    log_details(f'writing checkpoint {step} failed', e)
    raise SaveError(step, short_reason(e)) from None
  if isinstance(manager, Manager):
    manager.writing = step


def remove_unfinished(manager: ocp.CheckpointManager, step: int) -> None:
  """Removes what a failed save of checkpoint `step` left: Orbax's temporary folder of it (a full disk's
  last few KB, and empty files)."""
  import glob  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  for path in glob.glob(os.path.join(str(manager.directory), f'{step}.orbax-checkpoint-tmp*')):
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------
# Restoring.


class UnreadableCheckpoint(CheckpointError):
  """A checkpoint that cannot be used: unreadable, truncated, or not matching its checksums."""

  def __init__(self, step: int, reason: str, directory: str = ''):
    super().__init__(f'cannot restore checkpoint {step}' + (f' in {directory}' if directory else '') + f': {reason}')
    self.step, self.reason = step, reason


def read_metadata(manager: ocp.CheckpointManager, step: int) -> Dict[str, Any]:
  return manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))['metadata']


def restore(manager: ocp.CheckpointManager, state, step: int, fields: Optional[Sequence[str]] = None,
            metadata: Optional[Dict[str, Any]] = None):
  """`state` with the values of checkpoint `step`, verified against its checksums.

  With `fields`, only those top-level fields of the state are read (evaluate and
  predict need no optimizer state); the rest of `state` is returned unchanged.
  `metadata` is the checkpoint's (read here if not given). UnreadableCheckpoint
  if it cannot be read or its content changed since it was saved.
  """
  state_dict = flax.serialization.to_state_dict(state)
  if fields is not None:
    state_dict = {k: v for k, v in state_dict.items() if k in fields}
  target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state_dict)
  if fields is None:
    args = ocp.args.StandardRestore(target)
  else:  # Only some fields: Orbax's partial restore reads just those arrays.
    args = ocp.args.PyTreeRestore(item=target, partial_restore=True, restore_args=jax.tree_util.tree_map(
        lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), state_dict))
  try:
    if metadata is None:
      metadata = read_metadata(manager, step)
    restored = manager.restore(step, args=ocp.args.Composite(state=args))['state']
  except Exception as e:  # Orbax raises many kinds for a damaged or mismatched checkpoint.
    log_details(f'restoring checkpoint {step} in {manager.directory} failed', e)
    raise UnreadableCheckpoint(step, short_reason(e), str(manager.directory)) from None
  try:
    verify(step, restored, metadata)
  except UnreadableCheckpoint as e:
    raise UnreadableCheckpoint(step, e.reason, str(manager.directory)) from None
  if 'step' in restored:  # A checkpoint copied under another step number (cp -a 40 60): intact, but not step 60.
    inside = sorted({int(s) for s in np.ravel(_host(restored['step']))})  # One per member of a population.
    if inside != [step]:
      raise CheckpointError(f'checkpoint {step} in {manager.directory} holds the state of step '
                            f'{", ".join(map(str, inside))} (copied or renamed under another step number?); '
                            f'move it out of {manager.directory}')
  return flax.serialization.from_state_dict(state, {**flax.serialization.to_state_dict(state), **restored})


def restore_newest(manager: ocp.CheckpointManager, state, metadata: Dict[str, Any],
                   fields: Optional[Sequence[str]] = None, read_only: bool = False,
                   allow_fresh_start: bool = False, allow_data_change: bool = False):
  """(state, step) from the newest intact checkpoint of this run; (state, None) if the workdir has none.

  A checkpoint that cannot be used (truncated, corrupt, its content not
  matching its checksums) is reported in one line and moved aside to
  WORKDIR/unreadable_checkpoints/ (with `read_only`, only skipped), and the
  next older one is tried: nothing is deleted. When there are checkpoints but
  none is intact, that is an error, not a silent start from step 0, unless
  `allow_fresh_start`. A checkpoint of another run (model, seed, recipe) is an
  error, never a fallback; so is one trained on other data than `metadata`'s (check_same_data), unless
  `allow_data_change`.
  """
  unusable = []
  for step in newest_first(manager):
    try:
      theirs = read_metadata(manager, step)
    except Exception as e:  # Orbax raises many kinds for a damaged checkpoint.
      if vanished(manager, step):
        continue
      log_details(f'reading the metadata of checkpoint {step} in {manager.directory} failed', e)
      set_aside(manager, step, f'its metadata is unreadable: {short_reason(e)}', read_only)
      unusable.append(step)
      continue
    check_same_run(manager, theirs, metadata, step)
    check_same_data(str(manager.directory), step, theirs, metadata, allow_data_change)
    try:
      return restore(manager, state, step, fields, theirs), step
    except UnreadableCheckpoint as e:
      if vanished(manager, step):
        continue
      set_aside(manager, step, e.reason, read_only)
      unusable.append(step)
  moved = [] if read_only else set_aside_earlier(manager)
  if (unusable or moved) and not allow_fresh_start:
    if read_only:
      raise CheckpointError(f'no checkpoint in {manager.directory} is intact '
                            f'(tried {", ".join(map(str, unusable))})')
    raise CheckpointError(f'no checkpoint in {manager.directory} is intact (the unreadable ones are in '
                          f'{unreadable_dir(manager)}); rerun with --config.allow_fresh_start=True to start '
                          'over from step 0')
  return state, None


def check_same_run(manager, theirs: Dict[str, Any], mine: Dict[str, Any], step: Optional[int] = None) -> None:
  """One line if checkpoint `step` (metadata `theirs`) belongs to another run than `mine` describes."""
  for key in IDENTITY_FIELDS:
    default = config_lib.SCHEMA[key].default if key in config_lib.SCHEMA else None  # Older: e.g. one seed.
    if key in mine and theirs.get(key, default) != mine[key]:
      raise CheckpointError(
          f'{manager.directory} holds a checkpoint of a different run ({key}: {theirs.get(key)!r}, '
          f'this config: {mine[key]!r}); use another --workdir')
  if 'recipe' not in mine:
    return
  if 'recipe' not in theirs:
    note(f'checkpoint {step} was written before checkpoints recorded their seed and recipe: '
         'they are not compared with this config')
    return
  differences = config_lib.recipe_differences(theirs['recipe'], mine['recipe'])
  if differences:
    there = ' and '.join(f'{field}={a!r}' for field, a, _ in differences[:3])
    here = ' and '.join(f'{field}={b!r}' for field, _, b in differences[:3])
    more = f' (and {len(differences) - 3} more)' if len(differences) > 3 else ''
    raise CheckpointError(f'checkpoint {step} in {manager.directory} was trained with {there}, but this config '
                          f'has {here}{more}; resume with the config the run started with, or use another --workdir')


def check_newest_matches(workdir: str, config) -> None:
  """Before any data is read: one line if WORKDIR/checkpoints cannot be used or holds another run's.

  Compares the config with the newest checkpoint whose metadata is readable
  (model, shortcut, seed, recipe); unreadable ones are left to restore_newest.
  """
  directory = checkpoint_dir(workdir)
  if not os.path.exists(directory):
    return
  if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
    raise CheckpointError(f'cannot use {directory}: this user cannot read and write it (permission denied)')
  manager = create_manager(workdir, read_only=True)
  try:
    for step in sorted(manager.all_steps(), reverse=True):
      try:
        theirs = read_metadata(manager, step)
      except Exception:  # pylint: disable=broad-except
        continue
      check_same_run(manager, theirs, config_metadata(config), step)
      return
  finally:
    manager.close()


# --------------------------------------------------------------------------
# Unreadable checkpoints and messages.


def unreadable_dir(manager: ocp.CheckpointManager) -> str:
  return os.path.join(os.path.dirname(str(manager.directory)), UNREADABLE_DIR)


def set_aside_earlier(manager: ocp.CheckpointManager) -> List[str]:
  """The checkpoints an earlier session moved aside (a rerun must not take their absence for a new run)."""
  try:
    return sorted(os.listdir(unreadable_dir(manager)))
  except OSError:
    return []


def newest_first(manager: ocp.CheckpointManager):
  """The checkpoint steps, newest first, listed again before each: after a step that `vanished`, the
  newer ones that replaced it come next."""
  tried = set()
  while True:
    untried = [s for s in sorted(manager.all_steps(), reverse=True) if s not in tried]
    if not untried:
      return
    tried.add(untried[0])
    yield untried[0]


def vanished(manager: ocp.CheckpointManager, step: int) -> bool:
  """Whether checkpoint `step` was deleted after it was listed, and then lists the steps again if so.

  A reader (evaluate, predict) beside a run still training sees its oldest checkpoint rotated away
  (checkpoints_to_keep) between listing and reading it: that is a race, not damage, and the newer
  checkpoint that took its place is the one to read.
  """
  if os.path.exists(os.path.join(str(manager.directory), str(step))):
    return False
  manager.reload()
  return True


def set_aside(manager: ocp.CheckpointManager, step: int, reason: str, read_only: bool) -> None:
  if read_only:
    print(f'warning: checkpoint {step} is unreadable ({reason}); using the previous one', file=sys.stderr,
          flush=True)
  else:
    move_aside(manager, step, reason)


def move_aside(manager: ocp.CheckpointManager, step: int, reason: str) -> None:
  """Moves an unreadable checkpoint out of the manager's way (kept for inspection), with a warning.

  One line if it cannot be moved (e.g. its folder is not writable: a directory
  needs that to change its parent): training on beside it would fail later.
  """
  move_path_aside(os.path.join(str(manager.directory), str(step)), unreadable_dir(manager), str(step), step,
                  reason, manager.reload)


def move_path_aside(source: str, target_dir: str, name: str, step: int, reason: str, moved=None) -> None:
  """Moves unreadable checkpoint `step` (a folder or a file, `source`) to TARGET_DIR/NAME (NAME.1, ... if
  taken), with a warning line; `moved()` is called once it is gone. One line if it cannot be moved."""
  where = os.path.dirname(source)
  target = os.path.join(target_dir, name)
  suffix = 0
  while os.path.exists(target):
    suffix += 1
    target = os.path.join(target_dir, f'{name}.{suffix}')
  try:
    os.makedirs(target_dir, exist_ok=True)
    os.replace(source, target)
  except FileNotFoundError:  # Another process of a multi-process run moved it first.
    pass
  except OSError as e:
    raise CheckpointError(f'checkpoint {step} in {where} is unreadable ({reason}) and cannot be '
                          f'moved aside to {target_dir} ({e.strerror or e}); fix its permissions or move it '
                          'away, then rerun') from None
  if moved is not None:
    moved()
  print(f'warning: checkpoint {step} is unreadable ({reason}); moved it to {target} and '
        'falling back to the previous one', file=sys.stderr, flush=True)


_NOTED = set()


def note(message: str) -> None:
  """A `note:` line on stderr, once per process."""
  if message not in _NOTED:
    _NOTED.add(message)
    print(f'note: {message}', file=sys.stderr, flush=True)


def first_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def short_reason(error: BaseException, limit: int = 160) -> str:
  """A failure in a few words: Orbax's and TensorStore's messages run to thousands of characters.

  An operating-system error inside them becomes its own text ('No space left
  on device'); anything else is cut to `limit` characters. The whole message
  goes to the log file (log_details).
  """
  text = str(error)
  code = re.search(r"os_error_code='?(\d+)", text)
  if code:
    return os.strerror(int(code.group(1)))
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  line = re.sub(r'\.?\s*See full TensorStore details:.*$', '', first_line(error))
  return line if len(line) <= limit else line[:limit - 3].rstrip() + '...'


def log_details(what: str, error: BaseException) -> None:
  """The whole error text, for WORKDIR/log.txt (errors.DETAILS): the terminal gets short_reason()."""
  DETAILS.warning('%s: %s: %s', what, type(error).__name__, error)
