"""Orbax checkpoints in WORKDIR/checkpoints: the train state plus a little metadata, and the restore policy.

The metadata (model, dataset, classes) lets `evaluate` and a resumed run check
that a checkpoint belongs to the model they are about to build.
"""
import os
import sys
from typing import Any, Dict, Optional, Sequence

import flax.serialization
import jax
import orbax.checkpoint as ocp

from jaxresnet.errors import CheckpointError

# Metadata fields a resumed or evaluated run must share with the checkpoint.
IDENTITY_FIELDS = ('model', 'shortcut', 'class_names', 'image_shape')


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def create_manager(workdir: str, max_to_keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                         read_only=read_only)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def run_metadata(config, dataset) -> Dict[str, Any]:
  """What a checkpoint says about the run that wrote it."""
  return {'model': config.model, 'shortcut': config.shortcut, 'dataset': config.dataset,
          'class_names': dataset.class_names, 'image_shape': list(dataset.train_images.shape[1:])}


def save(manager: ocp.CheckpointManager, state, metadata: Dict[str, Any]) -> None:
  """Saves the state at its own step (asynchronously; `manager.wait_until_finished()` to block)."""
  step = int(jax.device_get(state.step))
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
      metadata=ocp.args.JsonSave(metadata)), force=True)


def read_metadata(manager: ocp.CheckpointManager, step: int) -> Dict[str, Any]:
  return manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))['metadata']


def restore(manager: ocp.CheckpointManager, state, step: int, fields: Optional[Sequence[str]] = None):
  """`state` with the values of checkpoint `step`.

  With `fields`, only those top-level fields of the state are read (evaluate and
  predict need no optimizer state); the rest of `state` is returned unchanged.
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
    restored = manager.restore(step, args=ocp.args.Composite(state=args))['state']
  except Exception as e:  # Orbax raises many kinds for a damaged or mismatched checkpoint.
    raise CheckpointError(f'cannot restore checkpoint {step} in {manager.directory}: {first_line(e)}') from None
  return flax.serialization.from_state_dict(state, {**flax.serialization.to_state_dict(state), **restored})


def restore_newest(manager: ocp.CheckpointManager, state, metadata: Dict[str, Any],
                   fields: Optional[Sequence[str]] = None):
  """(state, step) from the newest readable checkpoint of this run's model; (state, None) if there is none.

  A checkpoint that cannot be read (truncated, corrupt) is reported in one line
  and moved aside to WORKDIR/unreadable_checkpoints/, and the next older one is
  tried: a half-broken workdir never stops a resume, and nothing is deleted.
  A checkpoint of another model or dataset is an error, never a fallback.
  """
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      theirs = read_metadata(manager, step)
    except Exception as e:  # Orbax raises many kinds for a damaged checkpoint.
      move_aside(manager, step, f'its metadata is unreadable ({first_line(e)})')
      continue
    check_same_run(manager, theirs, metadata)
    try:
      return restore(manager, state, step, fields), step
    except CheckpointError as e:
      move_aside(manager, step, str(e))
  return state, None


def check_same_run(manager, theirs: Dict[str, Any], mine: Dict[str, Any]) -> None:
  for key in IDENTITY_FIELDS:
    if key in mine and theirs.get(key) != mine[key]:
      raise CheckpointError(
          f'{manager.directory} holds a checkpoint of a different run ({key}: {theirs.get(key)!r}, '
          f'this config: {mine[key]!r}); use another --workdir')


def first_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def move_aside(manager: ocp.CheckpointManager, step: int, reason: str) -> None:
  """Moves an unreadable checkpoint out of the manager's way (kept for inspection), with a warning."""
  source = os.path.join(str(manager.directory), str(step))
  target_dir = os.path.join(os.path.dirname(str(manager.directory)), 'unreadable_checkpoints')
  os.makedirs(target_dir, exist_ok=True)
  target = os.path.join(target_dir, str(step))
  suffix = 0
  while os.path.exists(target):
    suffix += 1
    target = os.path.join(target_dir, f'{step}.{suffix}')
  try:
    os.replace(source, target)
  except FileNotFoundError:  # Another process of a multi-process run moved it first.
    pass
  manager.reload()
  print(f'warning: checkpoint {step} is unreadable ({reason}); moved it to {target} and '
        'falling back to the previous one', file=sys.stderr, flush=True)
