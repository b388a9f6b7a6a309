"""The run's workdir: checked before any slow work, then written by one process at a time.

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
import os
import socket
import tempfile
import time
import weakref
from typing import Dict, Optional

from jaxresnet.infra import checkpoints
from jaxresnet.infra.errors import CheckpointError, WorkdirBusyError

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


def check_before_run(workdir: str, config) -> Optional[WorkdirLock]:
  """The cheap checks of a run's workdir, before its data is loaded: each failure is one line at once.

  A file, an unwritable or uncreatable path, another process at work in it, an
  unreadable checkpoints/ folder, or the checkpoints of another model, seed or
  recipe (checkpoints.check_newest_matches). An existing workdir is locked here
  already (returned; `open_run` takes it over). A new one is only created by
  `open_run`, once the data has loaded, so bad input leaves nothing behind.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise CheckpointError(f'--workdir {workdir} is a file, not a directory; choose another --workdir')
  if not os.path.exists(workdir):
    check_creatable(workdir)
    return None
  check_writable(workdir)
  lock = lock_workdir(workdir) if _is_main_process() else None
  try:
    checkpoints.check_newest_matches(workdir, config)
  except BaseException:
    if lock is not None:
      lock.release()
    raise
  return lock


def open_run(workdir: str, config, state, metadata, lock: Optional[WorkdirLock] = None):
  """(manager, state, start_step): the workdir created and locked, and the newest intact checkpoint restored.

  `lock` is check_before_run's. The manager holds the lock from here on:
  closing it (jobs.Checkpointer.finish) releases the workdir. start_step is
  0 for a new run; when no checkpoint is readable the run stops, unless
  config.allow_fresh_start (checkpoints.restore_newest).
  """
  check_writable(workdir)
  if lock is None and _is_main_process():
    lock = lock_workdir(workdir)
  try:
    manager = checkpoints.create_manager(workdir, config.checkpoints_to_keep, lock=lock)
  except BaseException:
    if lock is not None:
      lock.release()
    raise
  try:
    state, step = checkpoints.restore_newest(manager, state, metadata,
                                             allow_fresh_start=config.get('allow_fresh_start', False))
  except BaseException:
    manager.close()
    raise
  return manager, state, step or 0


def log_path(workdir: str) -> str:
  """Where a process's library noise goes (errors.send_library_noise_to): WORKDIR/log.txt, one per process."""
  import jax  # pylint: disable=g-import-not-at-top
  index = jax.process_index()
  return os.path.join(workdir, 'log.txt' if index == 0 else f'log.process{index}.txt')
