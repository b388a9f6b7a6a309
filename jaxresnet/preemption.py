"""Stopping cleanly on SIGTERM/SIGINT: finish the step, checkpoint, flush metrics, exit 0.

Colab and TPU VMs send SIGTERM before they take a machine away; Ctrl-C sends
SIGINT. The handler only records the signal; the training loop checks it after
each step. A second signal falls through to Python's default behaviour, so a
user can still force an exit.
"""
import signal
import threading
from typing import Optional

import jax
import numpy as np


class StopRequest:
  """Context manager: `.requested()` turns true once SIGTERM or SIGINT arrived."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signal_name: Optional[str] = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name
    for sig, handler in self._previous.items():  # A second signal is not caught again.
      signal.signal(sig, handler)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def requested(self, collective: bool = False) -> bool:
    """Whether to stop now. With `collective`, all processes agree (any one signalled -> all stop)."""
    local = self.signal_name is not None
    if not collective or jax.process_count() == 1:
      return local
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return bool(np.any(multihost_utils.process_allgather(np.array(local))))
