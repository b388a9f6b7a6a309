"""Orbax checkpoints in WORKDIR/checkpoints: the train state plus a little metadata.

The metadata (model, dataset, classes) lets `evaluate` and a resumed run check
that a checkpoint belongs to the model they are about to build.
"""
import os
import sys
from typing import Any, Dict, Optional

import flax.serialization
import jax
import orbax.checkpoint as ocp

from jaxresnet.errors import CheckpointError


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def create_manager(workdir: str, max_to_keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                         read_only=read_only)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, state, metadata: Dict[str, Any]) -> None:
  """Saves the state at its own step (asynchronously; `manager.wait_until_finished()` to block)."""
  step = int(jax.device_get(state.step))
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
      metadata=ocp.args.JsonSave(metadata)), force=True)


def read_metadata(manager: ocp.CheckpointManager, step: int) -> Dict[str, Any]:
  return manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))['metadata']


def restore(manager: ocp.CheckpointManager, state, step: Optional[int] = None):
  """Returns `state` with the values of checkpoint `step` (default: the newest), or None if none."""
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct,
                                  flax.serialization.to_state_dict(state))
  try:
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  except Exception as e:  # Orbax raises many kinds for a damaged or mismatched checkpoint.
    raise CheckpointError(f'cannot restore checkpoint {step} in {manager.directory}: {first_line(e)}') from None
  return flax.serialization.from_state_dict(state, restored['state'])


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
