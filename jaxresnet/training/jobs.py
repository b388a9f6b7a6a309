"""The periodic jobs of the training loop, each a small object with its own state.

`train.train_and_evaluate` calls them in this order after every step:

    EpochOrder     the example order of the current epoch (a new permutation when an epoch starts)
    MetricWindow   collects the step's device metrics; `check()` fetches them and stops
                   the run on a non-finite loss (the divergence check, before any save)
    Chrono         training images per second between log lines, compile, saves and evals excluded
    RunClock       the run's train and compile seconds, for results.json
    Checkpointer   saves the state (asynchronously) and knows the last good step
    Evaluator      evaluates every split, after the save, so a failure there costs no checkpoint
    Console        writes the step's record to metrics.jsonl/TensorBoard and one line to the terminal

`Due` says which jobs are due after a step; stopping on SIGTERM/SIGINT is `signals.StopRequest`.
"""
import contextlib
import dataclasses
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from jaxresnet.infra import checkpoints
from jaxresnet.infra import devices
from jaxresnet.infra import heartbeat
from jaxresnet.training import evaluation
from jaxresnet.infra.errors import CheckpointError
from jaxresnet.infra.tensorboard import MetricWriter


def itstime(step: int, every: int, total_steps: int, force: bool = False) -> bool:
  """Whether a job run every `every` steps (0: never) is due after `step`; always at the end."""
  return force or step == total_steps or (every > 0 and step % every == 0)


@dataclasses.dataclass(frozen=True)
class Due:
  """Which periodic jobs run after a step. A stop request forces a log line and a checkpoint."""
  log: bool
  save: bool
  eval: bool

  @classmethod
  def after(cls, step: int, config, total_steps: int, stopping: bool = False) -> 'Due':
    return cls(log=itstime(step, config.log_every_steps, total_steps, stopping),
               save=itstime(step, config.checkpoint_every_steps, total_steps, stopping),
               eval=itstime(step, config.eval_every_steps, total_steps))

  @property
  def any(self) -> bool:
    return self.log or self.save or self.eval


class EpochOrder:
  """The example order of the epoch a step falls in; a new permutation is drawn as an epoch starts."""

  def __init__(self, permutation_fn, key, steps_per_epoch: int):
    self.permutation_fn, self.key, self.steps_per_epoch = permutation_fn, key, steps_per_epoch
    self._epoch, self._permutation = None, None

  def __call__(self, step: int):
    if step // self.steps_per_epoch != self._epoch:
      self._epoch = step // self.steps_per_epoch
      self._permutation = self.permutation_fn(self.key, self._epoch)
    return self._permutation


class NonFiniteLossError(CheckpointError):
  pass


class MetricWindow:
  """The train metrics since the last log line: kept on the device until a job needs them.

  Fetching waits for the device, so it happens only when a job is due. For a
  population (num_members > 1) every metric has a members axis, and a member
  whose loss turns non-finite is frozen instead of stopping the run: `check()`
  returns it, and the loop stops updating it (train.make_train_fn's `frozen`).
  """

  def __init__(self, skip_nonfinite: bool, num_members: int = 1):
    self.skip_nonfinite, self.num_members = skip_nonfinite, num_members
    self.diverged: Dict[int, int] = {}  # Member -> step of its first non-finite update.
    self._pending: List[Tuple[int, Any]] = []
    self._host: List[Dict[str, np.ndarray]] = []

  def add(self, step: int, metrics) -> None:
    self._pending.append((step, metrics))

  def check(self, last_good_step: Optional[int]) -> Dict[int, int]:
    """Fetches what is pending. A single run raises NonFiniteLossError at its first non-finite step
    (unless skipped); a population returns the members that diverged since the last check."""
    newly = {}
    steps = [s for s, _ in self._pending]
    for step, host in zip(steps, devices.to_host([m for _, m in self._pending])):
      self._host.append(host)
      if self.skip_nonfinite:
        continue
      finite = np.atleast_1d(host['finite'])
      if self.num_members == 1 and not finite[0]:
        raise NonFiniteLossError(
            f'training diverged at step {step} (loss {float(host["loss"]):.4g}; loss or weights not '
            f'finite) and stopped without saving it. The last good checkpoint is step '
            f'{last_good_step or "none"}; lower the learning rate, or set '
            'config.skip_nonfinite_updates=True to skip such updates')
      for member in np.flatnonzero(~finite):
        if int(member) not in self.diverged:
          self.diverged[int(member)] = newly[int(member)] = step
    self._pending = []
    return newly

  def summary(self) -> List[Dict[str, Any]]:
    """Each member's means over the window (call after check()); empties it.

    `train_window_steps` says how many steps the means cover: log_every_steps,
    but fewer in the window a stop cut short, the one after it, and the last.
    """
    window, self._host = self._host, []
    if not window:
      return [{} for _ in range(self.num_members)]
    stacked = {key: np.stack([np.atleast_1d(m[key]) for m in window]) for key in window[0]}  # (steps, members)
    records = []
    for k in range(self.num_members):
      losses = stacked['loss'][:, k]  # NaN where a step diverged: left out of the mean.
      record = {'train_loss': float(np.nanmean(losses)) if not np.isnan(losses).all() else float('nan'),
                'train_accuracy': float(np.mean(stacked['accuracy'][:, k])), 'train_window_steps': len(window)}
      if self.skip_nonfinite:
        record['skipped_updates'] = int(stacked['skipped'][:, k].sum())
      records.append(record)
    return records

  def saved(self) -> Dict[str, list]:
    """The fetched metrics of the steps not summarized yet, as JSON values (for the checkpoint of this step).

    A run resumed from the checkpoint restores them, so its next record averages
    the same steps as a run that was never stopped.
    """
    if self._pending:
      raise ValueError('saved() before check(): some steps are not fetched yet')
    return {key: [np.atleast_1d(m[key]).tolist() for m in self._host] for key in (self._host[0] if self._host else {})}

  def restore(self, saved: Optional[Dict[str, list]]) -> None:
    """Takes back the steps saved() gave (None or {}: none)."""
    saved = saved or {}
    steps = len(next(iter(saved.values()), []))
    self._host = [{key: np.asarray(values[i]) for key, values in saved.items()} for i in range(steps)]


class Chrono:
  """Training throughput between log lines: from the end of the first (compiling) step, what runs
  `paused()` (checkpoints, evaluations, writing the metrics) excluded."""

  def __init__(self, images_per_step: int, clock=time.perf_counter):
    self.images_per_step, self.clock = images_per_step, clock
    self._start: Optional[float] = None
    self._steps = 0

  def tick(self, first_step_metrics=None) -> None:
    """After each step; the first call blocks on that step's result and starts the clock."""
    if self._start is None:
      if first_step_metrics is not None:
        import jax  # pylint: disable=g-import-not-at-top
        jax.block_until_ready(first_step_metrics)
      self._start = self.clock()
    else:
      self._steps += 1

  def rate(self) -> Dict[str, float]:
    """{'train_images_per_second': ...} since the last call (empty if only the compile step ran)."""
    record = {}
    if self._steps:
      elapsed = self.clock() - self._start
      record['train_images_per_second'] = self._steps * self.images_per_step / max(elapsed, 1e-9)
    self._start, self._steps = self.clock(), 0
    return record

  @contextlib.contextmanager
  def paused(self, after=None):
    """Time spent inside does not count as training; it starts once the arrays `after` are computed.

    Waiting for them first keeps the step still running on the device in the
    training time: only what the block itself adds (a save, an evaluation) is left out.
    """
    if after is not None:
      import jax  # pylint: disable=g-import-not-at-top
      jax.block_until_ready(after)
    start = self.clock()
    try:
      yield
    finally:
      if self._start is not None:
        self._start += self.clock() - start


# The events jax.monitoring reports for tracing, lowering and XLA compilation of a jitted function.
COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration', '/jax/core/compile/jaxpr_to_mlir_module_duration',
                  '/jax/core/compile/backend_compile_duration')


class RunClock:
  """The run's wall time in two parts, for results.json: `compile` (tracing, lowering and compiling
  every jitted function, from jax.monitoring's time spans, whose overlaps, a jit traced inside
  another, count once) and `train` (everything else inside the `with`: the steps and the
  evaluations, what runs `excluded()`, the checkpoint saves, left out). A resumed run starts from
  the `seconds()` its checkpoint saved, so the totals cover every session up to the last save.
  """

  def __init__(self, carried: Optional[Dict[str, float]] = None):
    carried = carried or {}
    self._carried = {'train': float(carried.get('train', 0.0)), 'compile': float(carried.get('compile', 0.0))}
    self._spans: List[Tuple[float, float]] = []
    self._excluded = 0.0
    self._start: Optional[float] = None

  def _listen(self, event, start, end, **_):
    if event in COMPILE_EVENTS:
      self._spans.append((start, end))

  def __enter__(self):
    import jax  # pylint: disable=g-import-not-at-top
    jax.monitoring.register_event_time_span_listener(self._listen)
    self._start = time.time()  # jax.monitoring's spans are in time.time().
    return self

  def __exit__(self, *exc):
    import jax  # pylint: disable=g-import-not-at-top
    jax.monitoring.unregister_event_time_span_listener(self._listen)

  @contextlib.contextmanager
  def excluded(self):
    start = time.time()
    try:
      yield
    finally:
      self._excluded += time.time() - start

  def compile_seconds(self) -> float:
    """This session's compile time: the length of the union of the compile spans."""
    total, reach = 0.0, None
    for start, end in sorted(self._spans):
      if reach is None or start > reach:
        total, reach = total + end - start, end
      elif end > reach:
        total, reach = total + end - reach, end
    return total

  def seconds(self) -> Dict[str, float]:
    compiling = self.compile_seconds()
    session = time.time() - self._start - self._excluded - compiling
    return {'train': self._carried['train'] + session, 'compile': self._carried['compile'] + compiling}


class Checkpointer:
  """Saves the train state with the run's metadata; errors become one line naming the intact checkpoint."""

  def __init__(self, manager, metadata: Dict[str, Any], start_step: int):
    self.manager, self.metadata = manager, metadata
    self.last_step = start_step  # The newest checkpoint written or resumed from.

  def save(self, state, step: int, diverged: Optional[Dict[int, int]] = None,
           log: Optional[Dict[str, Any]] = None) -> None:
    """Saves `state` at `step`; a population's frozen members (member -> step) go into the metadata, and so
    does `log`: what the metrics of a run resumed here need (the step's train records, the open window)."""
    metadata = {**self.metadata, 'diverged': sorted(diverged.items())} if diverged else self.metadata
    if log is not None:
      metadata = {**metadata, 'log': log}
    try:
      checkpoints.save(self.manager, state, metadata, step)
    except Exception as e:  # Disk full, permissions, a vanished directory...
      # Saves run in the background: a SaveError names the checkpoint that failed, maybe an earlier one.
      failed, reason = (e.step, e.reason) if isinstance(e, checkpoints.SaveError) else (step, checkpoints.first_line(e))
      checkpoints.remove_unfinished(self.manager, failed)
      kept = [s for s in self.manager.all_steps() if s < failed]
      raise CheckpointError(f'cannot write checkpoint {failed} to {self.manager.directory}: {reason}; the '
                            f'previous checkpoint ({max(kept) if kept else "none"}) is intact') from None
    self.last_step = step

  def finish(self, step: int, failed: bool) -> None:
    """Waits for the checkpoint being written, also after an error, so the last good one is complete.

    After an error (`failed`) what closing the manager raises too is left to
    the log file: the first error is the one to report.
    """
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      checkpoints.log_details(f'finishing checkpoint {step} failed', e)
      checkpoints.remove_unfinished(self.manager, getattr(self.manager, 'writing', None) or step)
      if not failed:
        failed = True
        raise CheckpointError(f'cannot finish writing checkpoint {step} to {self.manager.directory}: '
                              f'{checkpoints.short_reason(e)}') from None
    finally:
      try:
        self.manager.close()
      except Exception as e:  # pylint: disable=broad-except
        checkpoints.log_details(f'closing the checkpoints in {self.manager.directory} failed', e)
        if not failed:
          raise CheckpointError(f'cannot finish writing checkpoint {step} to {self.manager.directory}: '
                                f'{checkpoints.short_reason(e)}') from None


class Evaluator:
  """Evaluates every member of a state on every split, in each of its views; keeps the latest results.

  A view is (prefix, eval_fn, which state): the trained weights ('' prefix), and where the
  recipe has them, test-time augmentation ('tta_') and the weight EMA ('ema_', 'ema_tta_').
  Records name the numbers <prefix><split>_<loss|accuracy|error>.
  """

  def __init__(self, views: List[Tuple[str, Any, Any]], splits: Dict[str, evaluation.EvalSet],
               num_members: int = 1):
    self.views, self.splits, self.num_members = views, splits, num_members
    self.results: Optional[List[Dict[str, Dict[str, Any]]]] = None  # Per member: <prefix><split> -> result.

  def __call__(self, state) -> List[Dict[str, float]]:
    """Each member's record of loss, accuracy and error per view and split."""
    with heartbeat.doing(f'evaluating on {" and ".join(self.splits)}'):
      per_split = {prefix + name: evaluation.evaluate_members(eval_fn, view(state), split, self.num_members)
                   for prefix, eval_fn, view in self.views for name, split in self.splits.items()}
    self.results = [{name: per_split[name][k] for name in per_split} for k in range(self.num_members)]
    records = []
    for member in self.results:
      record = {}
      for name, result in member.items():
        record.update({f'{name}_loss': result['loss'], f'{name}_accuracy': result['accuracy'],
                       f'{name}_error': 1.0 - result['accuracy']})
      records.append(record)
    return records


_LOG_FIELDS = (('train_loss', '{:.4f}'), ('train_accuracy', '{:.4f}'), ('learning_rate', '{:.4g}'),
               ('train_images_per_second', '{:.0f}'), ('skipped_updates', '{:d}'),
               ('val_accuracy', '{:.4f}'), ('test_accuracy', '{:.4f}'), ('tta_test_accuracy', '{:.4f}'),
               ('ema_test_accuracy', '{:.4f}'), ('ema_tta_test_accuracy', '{:.4f}'))


def log_line(step: int, total_steps: int, record: Dict[str, Any]) -> str:
  parts = [f'step {step}/{total_steps}']
  parts += [f'{key} {fmt.format(record[key])}' for key, fmt in _LOG_FIELDS if key in record]
  return '  '.join(parts)


def population_line_record(records: List[Dict[str, Any]]) -> Dict[str, Any]:
  """One record for a population's log line: counts and throughput summed over members, the rest averaged."""
  summed = ('train_images_per_second', 'skipped_updates')
  return {key: (sum(r[key] for r in records) if key in summed else float(np.mean([r[key] for r in records])))
          for key in records[0]}


class Console:
  """Where a step's records go: each member's metrics.jsonl + TensorBoard, and one line (tqdm's bar on a terminal).

  A population's line shows the mean over its members. Silences between lines
  (a step or a compilation that takes minutes) get jaxresnet.infra.heartbeat's lines.
  """

  def __init__(self, writers: List[MetricWriter], total_steps: int, start_step: int, enabled: bool):
    self.writers, self.total_steps, self.enabled = writers, total_steps, enabled
    self.progress = None
    if enabled and sys.stderr.isatty():
      import tqdm  # pylint: disable=g-import-not-at-top
      self.progress = tqdm.tqdm(total=total_steps, initial=start_step, unit='step', dynamic_ncols=True)

  def print(self, line: str) -> None:
    if self.progress is not None:
      self.progress.write(line)
    elif self.enabled:
      print(line, flush=True)
    heartbeat.printed()

  def write(self, step: int, records: List[Dict[str, Any]]) -> None:
    """One record per member (all empty: nothing is due)."""
    if any(records):
      for writer, record in zip(self.writers, records):
        writer.write(step, record)
      if len(records) == 1:
        self.print(log_line(step, self.total_steps, records[0]))
      else:
        self.print(log_line(step, self.total_steps, population_line_record(records)) +
                   f'  ({len(records)} seeds: mean; images/s and skipped updates summed)')
    if self.progress is not None and step > self.progress.n:
      self.progress.update(step - self.progress.n)

  def close(self) -> None:
    if self.progress is not None:
      self.progress.close()
    for writer in self.writers:
      writer.close()
