"""Host memory settings for XLA:CPU (called by the command-line programs)."""
import ctypes
import os
import sys

_kept = False  # Whether keep_freed_memory() changed glibc's settings in this process.


def keep_freed_memory():
  """Lets glibc keep freed memory instead of returning it to the system after every step.

  XLA:CPU allocates each step's temporaries (hundreds of MB) afresh; by default glibc maps and
  unmaps blocks that large, so every step page-faults them in again. Measured on 2 CPU cores
  (benchmarks/README.md): ResNet-20 train step +21-27%. It must run before JAX starts its
  threads, so call it first thing in a program. JAXRESNET_KEEP_FREED_MEMORY=0 turns it off.
  """
  if not sys.platform.startswith('linux') or os.environ.get('JAXRESNET_KEEP_FREED_MEMORY') == '0':
    return
  try:
    libc = ctypes.CDLL('libc.so.6')
  except OSError:
    return
  m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8
  libc.mallopt(m_mmap_max, 0)
  libc.mallopt(m_trim_threshold, -1)
  libc.mallopt(m_arena_max, 1)
  global _kept
  _kept = True


def freed_memory_kept() -> bool:
  """Whether this process keeps freed memory (keep_freed_memory ran and applied): recorded with a run's timing."""
  return _kept
