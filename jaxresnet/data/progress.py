"""Progress of a long decode or unpack on stderr: a tqdm bar on a terminal, plain lines in a log."""
import os
import sys
import time
from typing import Optional

from jaxresnet.infra import heartbeat

# Without a terminal (logs, pipes) a plain line every PROGRESS_EVERY_S seconds;
# $JAXRESNET_PROGRESS_EVERY_S overrides it.
PROGRESS_EVERY_S = 5.0


class Progress:
  """Counts work done: a tqdm bar on a terminal, a line every few seconds elsewhere.

  A bar rewrites one line, which a log file would keep as thousands of lines;
  so without a terminal the count is printed as `<what>: <done>/<total> <unit>`
  at most every PROGRESS_EVERY_S seconds, and once more at the end if any line
  was printed (so a short decode prints nothing).
  """

  def __init__(self, what: str, total: Optional[int] = None, unit: str = 'images', stream=None):
    self.what, self.total, self.unit, self.done = what, total, unit, 0
    self.stream = stream or sys.stderr
    self.every = float(os.environ.get('JAXRESNET_PROGRESS_EVERY_S', PROGRESS_EVERY_S))
    self.last = time.monotonic()
    self.printed = False
    self.bar = None
    isatty = getattr(self.stream, 'isatty', None)
    if isatty is not None and isatty():
      import tqdm  # pylint: disable=g-import-not-at-top
      self.bar = tqdm.tqdm(total=total, desc=what, unit=unit, file=self.stream, leave=False,
                           mininterval=0.5)

  def _line(self) -> str:
    of = f'/{self.total}' if self.total is not None else ''
    return f'{self.what}: {self.done}{of} {self.unit}'

  def update(self, n: int = 1) -> None:
    self.done += n
    if self.bar is not None:
      self.bar.update(n)
    elif time.monotonic() - self.last >= self.every:
      self._write_line()
      self.last, self.printed = time.monotonic(), True

  def _write_line(self) -> None:
    # One write, not print()'s two (text, then newline): a Ctrl-C between them would put the
    # command's "stopped by SIGINT" line on the end of this one.
    self.stream.write(self._line() + '\n')
    self.stream.flush()
    heartbeat.printed()

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
    elif self.printed and (self.total is None or self.done == self.total):
      self._write_line()
