"""Where training metrics go: metrics.jsonl and TensorBoard event files in the workdir."""
import json
import os
import socket
import struct
import time
from typing import Any, Dict

import numpy as np


def _crc32c_table():
  table = []
  for i in range(256):
    crc = i
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return table


_CRC32C = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  crc ^= 0xFFFFFFFF
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class EventFileWriter:
  """Writes TensorBoard scalars as a TFRecord file of Event protos.

  TensorBoard's own writer imports TensorFlow whenever it is installed (slow,
  and it may claim accelerator memory); only the protos are needed.
  """

  def __init__(self, logdir: str):
    from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
    self._event_pb2 = event_pb2
    os.makedirs(logdir, exist_ok=True)
    name = f'events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}'
    self._file = open(os.path.join(logdir, name), 'ab')
    self._write(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))

  def _write(self, event) -> None:
    data = event.SerializeToString()
    header = struct.pack('<Q', len(data))
    self._file.write(header + struct.pack('<I', _masked_crc32c(header)) + data +
                     struct.pack('<I', _masked_crc32c(data)))
    self._file.flush()

  def scalars(self, step: int, values: Dict[str, float]) -> None:
    from tensorboard.compat.proto import summary_pb2  # pylint: disable=g-import-not-at-top
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=k, simple_value=v)
                                         for k, v in values.items()])
    self._write(self._event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

  def close(self) -> None:
    self._file.close()


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
    # One write() of the whole line to an O_APPEND file, then fsync: a crash loses at most
    # this line, and a torn one is dropped by truncate_after() on resume.
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      os.write(fd, (json.dumps(record) + '\n').encode())
      os.fsync(fd)
    finally:
      os.close(fd)
    if self._tensorboard is not None:
      self._tensorboard.scalars(int(step), {k: float(v) for k, v in record.items()
                                            if k != 'step' and np.ndim(v) == 0})

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()
