"""Where training metrics go: metrics.jsonl and TensorBoard event files in the workdir.

The event files are written here, synchronously, with TensorBoard's own
record framing (tensorboard.summary.writer.record_writer: the TFRecord format
with its masked CRC-32C) and its protos, which import no TensorFlow. Checked
and not used for the writing itself:
  * TensorBoard's EventFileWriter: imports TensorFlow at its first write when
    TensorFlow is installed (the [tfds] extra: seconds, and TensorFlow may
    claim accelerator memory), and writes from a background thread.
  * tensorboardX (2.6.5): imports no TensorFlow, but imports torch whenever it
    is installed (the [peer] extra: 6 s on this project's 2-core machine),
    writes from a background thread (a full disk is lost there, not
    reported), and opens its file with 'wb' under a name that changes once a
    second (a session started within the second of the last truncates its file).
  * clu's metric writers: TensorBoard files through tf.summary (TensorFlow) or
    torch.utils.tensorboard (torch).
"""
import glob
import io
import json
import os
import socket
import struct
import sys
import time
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np

from jaxresnet.infra.errors import CheckpointError


def append_whole(path: str, data: bytes, sync: bool = False) -> None:
  """Appends `data` to `path` whole or not at all: on failure (a full disk) the file is cut back to where it
  ended (and removed if this call created it), so no torn line or record and no empty file is left."""
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    size = os.fstat(fd).st_size
    try:
      view = memoryview(data)
      while view:
        view = view[os.write(fd, view):]
      if sync:
        os.fsync(fd)
    except OSError:
      os.ftruncate(fd, size)  # Shortening needs no space.
      if not size:
        os.remove(path)
      raise
  finally:
    os.close(fd)


def _records(path: str) -> Iterator[Tuple[int, bytes]]:
  """(offset, data) of each whole record of a TFRecord file, up to a torn one (a crash while writing)."""
  with open(path, 'rb') as f:
    content = f.read()
  offset = 0
  while offset + 12 <= len(content):
    (length,) = struct.unpack_from('<Q', content, offset)  # Then the length's CRC, the data and its CRC.
    end = offset + 12 + length + 4
    if end > len(content):
      return
    yield offset, content[offset + 12:offset + 12 + length]
    offset = end


class EventFileWriter:
  """Writes TensorBoard scalars as a TFRecord file of Event protos, one record at a time (see the module's doc)."""

  def __init__(self, logdir: str):
    from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
    self._event_pb2 = event_pb2
    os.makedirs(logdir, exist_ok=True)
    self.path = os.path.join(logdir, f'events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}')
    self._write(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))

  def _write(self, event) -> None:
    from tensorboard.summary.writer.record_writer import RecordWriter  # pylint: disable=g-import-not-at-top
    framed = io.BytesIO()
    RecordWriter(framed).write(event.SerializeToString())
    append_whole(self.path, framed.getvalue())

  def scalars(self, step: int, values: Dict[str, float]) -> None:
    from tensorboard.compat.proto import summary_pb2  # pylint: disable=g-import-not-at-top
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=k, simple_value=v)
                                         for k, v in values.items()])
    self._write(self._event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

  def close(self) -> None:
    pass  # Every record is written when it is given.


def truncate_events_after(logdir: str, step: int) -> None:
  """Cuts each event file in `logdir` before its first event of a step after `step` (and before a torn record).

  A resumed run writes those steps again: TensorBoard would show them twice.
  One writer's events are in step order, so the cut keeps every earlier one.
  """
  from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
  for path in sorted(glob.glob(os.path.join(logdir, 'events.out.tfevents.*'))):
    end = 0
    for offset, data in _records(path):
      event = event_pb2.Event.FromString(data)
      if event.step > step:
        break
      end = offset + 12 + len(data) + 4
    if end < os.path.getsize(path):
      os.truncate(path, end)


_REPORTED = set()  # (path, line numbers) already reported by read_metric_lines: each once per process.


def read_metric_lines(path: str) -> Iterator[Tuple[Dict[str, Any], bytes]]:
  """(record, its line as written) for each record of a metrics.jsonl: a JSON object with a whole-number step.

  The one reader of the format. A line that is not one (bytes that are not
  UTF-8, JSON that is not an object, text that is not JSON) is skipped and
  reported in one warning line, once; a last line cut short by a crash is
  skipped silently, as it always was.
  """
  with open(path, 'rb') as f:
    lines = f.readlines()
  skipped = []
  for number, line in enumerate(lines, 1):
    try:
      record = json.loads(line.decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError):
      record = None
    step = record.get('step') if isinstance(record, dict) else None
    if isinstance(step, int) and not isinstance(step, bool):
      yield record, line
    elif line.endswith(b'\n'):
      skipped.append(number)
  if skipped and (path, tuple(skipped)) not in _REPORTED:
    _REPORTED.add((path, tuple(skipped)))
    shown = ', '.join(map(str, skipped[:5])) + (', ...' if len(skipped) > 5 else '')
    print(f'warning: {path}: skipped {len(skipped)} line(s) that are not metric records (line {shown})',
          file=sys.stderr, flush=True)


def _plain(value: Any) -> Any:
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


class MetricWriter:
  """Appends one JSON object per call to WORKDIR/metrics.jsonl and mirrors scalars to TensorBoard.

  Each line is written whole and synced, or not at all, so a crash or a full
  disk leaves no half line; on resume `truncate_after(step)` drops the lines
  (and TensorBoard events) a restarted run will write again. A file that
  cannot be written is one line (CheckpointError) naming it. Only process 0
  writes; the others get a writer that does nothing.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.tensorboard_dir = os.path.join(workdir, 'tensorboard')
    self._tensorboard = None
    if not enabled:
      return
    try:
      self._tensorboard = EventFileWriter(self.tensorboard_dir)
    except ImportError:  # TensorBoard is optional: metrics.jsonl has everything.
      pass
    except OSError as e:
      raise CheckpointError(f'cannot write TensorBoard events to {self.tensorboard_dir}: {e.strerror or e}') from None

  def truncate_after(self, step: int) -> Optional[int]:
    """Keeps only complete lines with step <= `step` (a resumed run redoes the rest); the last one's step kept.

    The TensorBoard event files are cut at the same step.
    """
    if not self.enabled:
      return None
    if os.path.isdir(self.tensorboard_dir):
      try:
        truncate_events_after(self.tensorboard_dir, step)
      except OSError as e:
        raise CheckpointError(f'cannot rewrite TensorBoard events in {self.tensorboard_dir}: '
                              f'{e.strerror or e}') from None
    if not os.path.exists(self.path):
      return None
    try:
      with open(self.path, 'rb') as f:
        lines = f.readlines()
    except OSError as e:
      raise CheckpointError(f'cannot read {self.path}: {e.strerror or e}') from None
    # Whole records up to `step`; a line cut short by a crash, or one that is no record, is dropped.
    kept = [(record['step'], line) for record, line in read_metric_lines(self.path)
            if line.endswith(b'\n') and record['step'] <= step]
    if len(kept) < len(lines):
      tmp = self.path + '.tmp'
      try:
        with open(tmp, 'wb') as f:
          f.writelines(line for _, line in kept)
          f.flush()
          os.fsync(f.fileno())
        os.replace(tmp, self.path)
      except OSError as e:
        if os.path.exists(tmp):
          os.remove(tmp)
        raise CheckpointError(f'cannot rewrite {self.path}: {e.strerror or e}') from None
    return kept[-1][0] if kept else None

  def write(self, step: int, metrics: Dict[str, Any]) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), **{k: _plain(v) for k, v in metrics.items()}}
    try:
      append_whole(self.path, (json.dumps(record) + '\n').encode(), sync=True)
    except OSError as e:
      raise CheckpointError(f'cannot write metrics to {self.path}: {e.strerror or e}') from None
    if self._tensorboard is not None:
      try:
        self._tensorboard.scalars(int(step), {k: float(v) for k, v in record.items()
                                              if k != 'step' and np.ndim(v) == 0})
      except OSError as e:
        raise CheckpointError(f'cannot write TensorBoard events to {self._tensorboard.path}: '
                              f'{e.strerror or e}') from None

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()
