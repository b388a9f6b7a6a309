"""Where training metrics go: metrics.jsonl and TensorBoard event files in the workdir."""
import json
import os
import time
from typing import Any, Dict

import numpy as np


def _plain(value: Any) -> Any:
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


class MetricWriter:
  """Appends one JSON object per call to WORKDIR/metrics.jsonl and mirrors scalars to TensorBoard.

  Each line is written whole and flushed, so a crash leaves no half line; on
  resume `truncate_after(step)` drops the lines a restarted run will write again.
  Only process 0 writes; the others get a writer that does nothing.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._tensorboard = None
    if not enabled:
      return
    try:
      from tensorboard.summary.writer.event_file_writer import EventFileWriter  # pylint: disable=g-import-not-at-top
      self._tensorboard = EventFileWriter(os.path.join(workdir, 'tensorboard'))
    except ImportError:  # TensorBoard is optional: metrics.jsonl has everything.
      pass

  def truncate_after(self, step: int) -> None:
    """Keeps only complete lines with step <= `step` (a resumed run redoes the rest)."""
    if not self.enabled or not os.path.exists(self.path):
      return
    kept = []
    with open(self.path) as f:
      for line in f:
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          continue  # A line cut short by a crash.
        if line.endswith('\n') and record.get('step', 0) <= step:
          kept.append(line)
    tmp = self.path + '.tmp'
    with open(tmp, 'w') as f:
      f.writelines(kept)
    os.replace(tmp, self.path)

  def write(self, step: int, metrics: Dict[str, Any]) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), **{k: _plain(v) for k, v in metrics.items()}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    if self._tensorboard is not None:
      from tensorboard.compat.proto import event_pb2, summary_pb2  # pylint: disable=g-import-not-at-top
      values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v))
                for k, v in record.items() if k != 'step' and np.ndim(v) == 0]
      self._tensorboard.add_event(event_pb2.Event(
          wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)))
      self._tensorboard.flush()

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()
