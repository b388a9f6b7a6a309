"""Host memory settings for XLA:CPU (called by the command-line programs).

A program keeps freed memory in glibc's heap from its start (keep_freed_memory),
which makes steps with temporaries of hundreds of MB faster; once a run has
compiled its train step, fit_to_step() gives that up for a step whose
temporaries are gigabytes, where the kept heap grows far past what the step
needs (fast94 at batch 2,000: past 24 GB, against 9.3 GB without it).
"""
import ctypes
import os
import sys

_opted_in = False  # Whether the program called keep_freed_memory() and it applied (glibc, Linux).
_kept = False  # Whether glibc keeps freed memory now: as _opted_in until fit_to_step() decides otherwise.

# A train step with more temporaries than this (XLA's memory_analysis() of the compiled step) returns freed
# memory to the system. The kept heap has held 6-8 times a step's temporaries (fast94 at batch 500, 2.07 GB of
# them: 13-17 GB), so up to 1.5 GB a run stays well inside 16 GB. temp_size_in_bytes on CPU, jax 0.10.2, batch 128:
# ResNet-20 0.39 GB and ResNet-56 1.10 GB (kept: their speed-up), ResNet-110 2.16 GB; fast94 2.07 GB at
# batch 500 and 8.21 GB at its 2,000 (returned).
RETURN_FREED_ABOVE_BYTES = 1_500_000_000

# glibc's mallopt parameters and the defaults return_freed_memory() puts back.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536


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
  libc.mallopt(_M_ARENA_MAX, 1)
  global _opted_in
  _opted_in = True
  _keep(libc)


def _keep(libc) -> None:
  global _kept
  libc.mallopt(_M_MMAP_MAX, 0)
  libc.mallopt(_M_TRIM_THRESHOLD, -1)
  _kept = True


def return_freed_memory() -> None:
  """Undoes keep_freed_memory (if it applied): large blocks are mapped and unmapped again, the heap is trimmed.

  It may run at any time, unlike the arena setting of keep_freed_memory, which stays (it only saves memory).
  """
  global _kept
  if not _kept:
    return
  libc = ctypes.CDLL('libc.so.6')
  libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
  libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
  libc.malloc_trim(0)
  _kept = False


def keeps_freed_memory_for(temp_bytes: int) -> bool:
  """Whether a step with `temp_bytes` of temporaries is better off with freed memory kept in the heap."""
  return temp_bytes <= RETURN_FREED_ABOVE_BYTES


def fit_to_step(compiled) -> None:
  """Decides the setting for a run from its compiled train step (a jax.stages.Compiled): see the module's doc.

  Only in a program that called keep_freed_memory; each run of it (a sweep's, reproduce's) decides for itself.
  """
  if not _opted_in:
    return
  temp_bytes = getattr(compiled.memory_analysis(), 'temp_size_in_bytes', None)
  if temp_bytes is None:  # A backend that does not say: the program's choice stands.
    return
  if keeps_freed_memory_for(temp_bytes):
    if not _kept:
      _keep(ctypes.CDLL('libc.so.6'))
  else:
    return_freed_memory()


def freed_memory_kept() -> bool:
  """Whether this process keeps freed memory (keep_freed_memory ran and applied): recorded with a run's timing."""
  return _kept
