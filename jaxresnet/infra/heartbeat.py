"""A line at least every 30 s while a run works, whatever it is doing: loading data, compiling, a slow step.

The run's own lines (step records, decode progress) come when work finishes;
a single step or compilation can take minutes on a loaded CPU, and XLA's "Very
slow compile? If you want to file a bug..." banner would then be all a person
sees. So a background thread writes one line to stdout whenever nothing was
written for HEARTBEAT_SECONDS, saying what the run is doing and for how long:

    heartbeat: compiling the train step and running step 1/200 (2 min 10 s so far)
    heartbeat: step 37/200, 1,020 images/s, about 6 min 30 s left; step 38 running for 28 s

The run tells it what it does: `while_running` around the whole run, `now(what)`
for each stage of its start, `training(...)` before the loop, `at_step(step,
metrics)` after dispatching every step and `doing(what)` around a save or an
evaluation. The run's own lines call `printed()`, so a heartbeat comes only
into a silence. Steps are dispatched asynchronously, ahead of the computation,
so a step counts as done when its metrics are ready (jax.Array.is_ready()),
which the thread checks each time it wakes: rates and times are to a second.
$JAXRESNET_HEARTBEAT_S overrides the interval (tests make it short).
"""
import contextlib
import functools
import os
import sys
import threading
import time
from typing import Any, Iterator, Optional

# A heartbeat after this many seconds without a line; checked every POLL_SECONDS, so the gap stays under 30 s.
HEARTBEAT_SECONDS = 25.0
POLL_SECONDS = 1.0
FIRST_SECONDS = 5.0


def process_age() -> float:
  """Seconds since this process started (Linux; 0 elsewhere): its imports count as silence too."""
  try:
    with open('/proc/self/stat') as f:
      start_ticks = int(f.read().rsplit(')', 1)[1].split()[19])  # Field 22, after the command name.
    with open('/proc/uptime') as f:
      uptime = float(f.read().split()[0])
    return max(0.0, uptime - start_ticks / os.sysconf('SC_CLK_TCK'))
  except (OSError, ValueError, IndexError):
    return 0.0


def duration(seconds: float) -> str:
  """'45 s', '2 min 05 s', '1 h 03 min'."""
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds} s'
  if seconds < 3600:
    return f'{seconds // 60} min {seconds % 60:02d} s'
  return f'{seconds // 3600} h {seconds % 3600 // 60:02d} min'


class Heartbeat:
  """The thread and what it knows about the run; one at a time, module-level (see while_running)."""

  def __init__(self, every: Optional[float] = None, enabled: bool = True):
    self.every = every if every is not None else float(os.environ.get('JAXRESNET_HEARTBEAT_S', HEARTBEAT_SECONDS))
    self.enabled = enabled
    self.lock = threading.Lock()
    # The program's imports were silent too (minutes on a loaded CPU), but the first line waits FIRST_SECONDS:
    # a run that fails or is stopped at once has nothing to say.
    self.last_output = time.monotonic() - min(process_age(), max(0.0, self.every - FIRST_SECONDS))
    self.stage, self.stage_since = 'starting', time.monotonic()
    self.interruption: Optional[str] = None  # A save or evaluation inside the training stage (doing()).
    self.interruption_since = 0.0
    # start_step, total_steps, batch_size; pending: (step, an array of its metrics) not seen ready yet;
    # step, step_time: the last step done and when; first_step, first_time: the first done (compiled already).
    self.training_run: Optional[dict] = None
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._loop, name='jaxresnet-heartbeat', daemon=True)

  def start(self) -> None:
    if self.enabled:
      self._thread.start()

  def stop(self) -> None:
    self._stop.set()
    if self._thread.is_alive():
      self._thread.join()

  def _loop(self) -> None:
    while not self._stop.wait(min(POLL_SECONDS, self.every / 5)):
      with self.lock:
        now = time.monotonic()
        self._collect_done_steps(now)
        if now - self.last_output < self.every:
          continue
        line = 'heartbeat: ' + self.describe(now)
        self.last_output = now
      write(line)

  def _collect_done_steps(self, now: float) -> None:
    run = self.training_run
    while run is not None and run['pending'] and _is_ready(run['pending'][0][1]):
      run['step'], run['step_time'] = run['pending'].pop(0)[0], now
      if run['first_step'] is None:
        run['first_step'], run['first_time'] = run['step'], now

  def describe(self, now: float) -> str:
    """What the run is doing, as the heartbeat line says it."""
    if self.interruption is not None:
      return f'{self.interruption} ({duration(now - self.interruption_since)} so far)'
    run = self.training_run
    if run is None:
      return f'{self.stage} ({duration(now - self.stage_since)} so far)'
    if run['step'] == run['start_step']:
      return (f'compiling the train step and running step {run["start_step"] + 1}/{run["total_steps"]} '
              f'({duration(now - self.stage_since)} so far)')
    line = f'step {run["step"]}/{run["total_steps"]}'
    steps = run['step'] - run['first_step']
    if steps > 0 and run['step_time'] > run['first_time']:  # From the first step's end: compiling is not speed.
      seconds_per_step = (run['step_time'] - run['first_time']) / steps
      line += (f', {run["batch_size"] / seconds_per_step:,.0f} images/s, about '
               f'{duration(seconds_per_step * (run["total_steps"] - run["step"]))} left')
    if run['step'] < run['total_steps']:
      line += f'; step {run["step"] + 1} running for {duration(now - run["step_time"])}'
    return line


_current: Optional[Heartbeat] = None


def write(line: str) -> None:
  """One line to stdout, in one write (a Ctrl-C cannot split it); above tqdm's bar on a terminal."""
  stream = sys.stdout
  isatty = getattr(stream, 'isatty', None)
  if isatty is not None and isatty():
    import tqdm  # pylint: disable=g-import-not-at-top
    tqdm.tqdm.write(line, file=stream)
  else:
    stream.write(line + '\n')
  stream.flush()


def while_running(run):
  """Decorates a run (train_and_evaluate): the heartbeat beats from its start to its end.

  A run inside a run (a sweep's points) shares the outer one's heartbeat.
  Only JAX's process 0 writes, as with the run's other lines.
  """

  @functools.wraps(run)
  def wrapper(*args, **kwargs):
    global _current
    if _current is not None:
      return run(*args, **kwargs)
    import jax  # pylint: disable=g-import-not-at-top
    _current = Heartbeat(enabled=jax.process_index() == 0)
    _current.start()
    try:
      return run(*args, **kwargs)
    finally:
      beat, _current = _current, None
      beat.stop()

  return wrapper


def now(stage: str) -> None:
  """The run has started `stage` (e.g. 'loading the data'); it lasts until the next one."""
  beat = _current
  if beat is not None:
    with beat.lock:
      beat.stage, beat.stage_since, beat.training_run = stage, time.monotonic(), None


def training(start_step: int, total_steps: int, batch_size: int) -> None:
  """The training loop starts at `start_step`: its first step compiles the train step."""
  beat = _current
  if beat is not None:
    with beat.lock:
      beat.stage, beat.stage_since = 'training', time.monotonic()
      beat.training_run = dict(start_step=start_step, total_steps=total_steps, batch_size=batch_size, pending=[],
                               step=start_step, step_time=time.monotonic(), first_step=None, first_time=None)


def _is_ready(metrics: Any) -> bool:
  is_ready = getattr(metrics, 'is_ready', None)  # jax.Array's; anything else is done when handed over.
  try:
    return is_ready is None or is_ready()
  except Exception:  # pylint: disable=broad-except
    return True  # A deleted array (a failed run's) cannot tell: never wait on it.


def at_step(step: int, metrics: Any = None) -> None:
  """The loop has dispatched `step`, whose `metrics` (a dict of arrays, or one) are ready once it has run."""
  beat = _current
  if beat is None or beat.training_run is None:
    return
  if isinstance(metrics, dict):
    metrics = next(iter(metrics.values()), None)
  with beat.lock:
    beat.training_run['pending'].append((step, metrics))


@contextlib.contextmanager
def doing(what: str) -> Iterator[None]:
  """Inside the block the run does `what` (e.g. 'saving checkpoint 400'), then goes back to its stage."""
  beat = _current
  if beat is None:
    yield
    return
  with beat.lock:
    beat.interruption, beat.interruption_since = what, time.monotonic()
  try:
    yield
  finally:
    with beat.lock:
      beat.interruption = None


def printed() -> None:
  """The run wrote a line of its own: the next heartbeat is due HEARTBEAT_SECONDS from now."""
  beat = _current
  if beat is not None:
    with beat.lock:
      beat.last_output = time.monotonic()
