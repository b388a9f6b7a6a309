"""The run's workdir: checked before any slow work, then written by one process at a time."""
import os

from jaxresnet.errors import CheckpointError


def check_writable(workdir: str) -> None:
  """Creates the workdir if needed; one line if it is a file or cannot be written."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise CheckpointError(f'--workdir {workdir} is a file, not a directory; choose another --workdir')
  probe = os.path.join(workdir, f'.write_test.{os.getpid()}')
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(probe, 'w') as f:
      f.write('ok')
  except OSError as e:
    raise CheckpointError(f'cannot write to workdir {workdir}: {e.strerror or e}') from None
  finally:
    try:
      os.remove(probe)
    except OSError:
      pass
