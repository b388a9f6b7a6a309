"""infra.heartbeat: a run prints a line at least every HEARTBEAT_SECONDS, whatever it is doing (issue 35)."""
import time

from conftest import tiny_config
from jaxresnet import data
from jaxresnet.infra import heartbeat
from jaxresnet.training import train


class TimedStream:
  """stdout/stderr that remembers when each line ended."""

  def __init__(self):
    self.text, self.line_ends = '', []

  def write(self, text):
    self.text += text
    self.line_ends += [time.monotonic()] * text.count('\n')
    return len(text)

  def flush(self):
    pass

  def isatty(self):
    return False


def test_a_silent_stage_gets_lines_naming_it(monkeypatch, capsys):
  monkeypatch.setenv('JAXRESNET_HEARTBEAT_S', '0.2')

  @heartbeat.while_running
  def run():
    heartbeat.now('compiling something slow')
    time.sleep(0.9)

  run()
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) >= 2, lines
  assert all(line.startswith('heartbeat: compiling something slow (') and line.endswith(' s so far)')
             for line in lines), lines


def test_the_runs_own_lines_postpone_the_heartbeat(monkeypatch, capsys):
  monkeypatch.setenv('JAXRESNET_HEARTBEAT_S', '0.5')

  @heartbeat.while_running
  def run():
    heartbeat.printed()  # This process started long ago: a silence as long as it would be due at once.
    for _ in range(8):
      time.sleep(0.1)
      heartbeat.printed()

  run()
  assert capsys.readouterr().out == ''


def test_training_lines_give_the_step_speed_and_what_is_left():
  beat = heartbeat.Heartbeat(every=30)
  beat.stage_since = 0.0
  beat.training_run = dict(start_step=0, total_steps=200, batch_size=128, pending=[], step=0, first_step=None,
                           first_time=None, step_time=0.0)
  assert beat.describe(now=150.0) == 'compiling the train step and running step 1/200 (2 min 30 s so far)'
  beat.training_run.update(step=11, first_step=1, first_time=100.0, step_time=120.0)  # 10 steps in 20 s.
  assert beat.describe(now=150.0) == ('step 11/200, 64 images/s, about 6 min 18 s left; '
                                      'step 12 running for 30 s')
  beat.interruption, beat.interruption_since = 'evaluating on test', 140.0
  assert beat.describe(now=150.0) == 'evaluating on test (10 s so far)'


class Metrics:
  def __init__(self):
    self.ready = False

  def is_ready(self):
    return self.ready


def test_a_step_counts_as_done_when_its_metrics_are_ready_not_when_it_is_dispatched(monkeypatch):
  monkeypatch.setattr(heartbeat, '_current', heartbeat.Heartbeat(every=30))
  heartbeat.training(start_step=0, total_steps=10, batch_size=4)
  dispatched = [Metrics() for _ in range(3)]
  for step, metrics in enumerate(dispatched, 1):
    heartbeat.at_step(step, {'loss': metrics})
  beat = heartbeat._current  # pylint: disable=protected-access
  beat._collect_done_steps(now=5.0)  # pylint: disable=protected-access
  assert beat.describe(now=5.0).startswith('compiling the train step and running step 1/10 (')
  dispatched[0].ready = dispatched[1].ready = True
  beat._collect_done_steps(now=6.0)  # pylint: disable=protected-access
  assert beat.describe(now=8.0) == 'step 2/10; step 3 running for 2 s'


def test_a_run_with_slow_stages_prints_a_line_at_least_every_interval(image_folder, tmp_path, monkeypatch):
  """Loading, initializing and every step made slower than the interval: the silences stay short."""
  every, slow = 0.5, 2.5
  monkeypatch.setenv('JAXRESNET_HEARTBEAT_S', str(every))

  def slowed(function):
    def slow_function(*args, **kwargs):
      time.sleep(slow)
      return function(*args, **kwargs)
    return slow_function

  make_train_fn = train.make_train_fn
  monkeypatch.setattr(train.data, 'load_dataset', slowed(data.load_dataset))
  monkeypatch.setattr(train, 'build', slowed(train.build))

  def slow_make_train_fn(*args, **kwargs):
    train_fn = make_train_fn(*args, **kwargs)
    slow = slowed(train_fn)
    slow.lower = train_fn.lower  # The step compiled before the loop (host_memory.fit_to_step) is the same.
    return slow

  monkeypatch.setattr(train, 'make_train_fn', slow_make_train_fn)
  stream = TimedStream()
  monkeypatch.setattr('sys.stdout', stream)
  monkeypatch.setattr('sys.stderr', stream)
  config = tiny_config(image_folder, num_train_steps=3, log_every_steps=3, eval_every_steps=3,
                       checkpoint_every_steps=3, lr_boundaries=(2,))
  start = time.monotonic()
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  ends = [start] + stream.line_ends + [time.monotonic()]
  silences = [b - a for a, b in zip(ends, ends[1:])]
  assert max(silences) < 3 * every, (max(silences), stream.text)
  for said in ('heartbeat: loading the data (', 'heartbeat: compiling and running the parameter initialization (',
               'heartbeat: compiling the train step and running step 1/3 (', 'heartbeat: step 1/3'):
    assert said in stream.text, stream.text
