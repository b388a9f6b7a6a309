"""The periodic jobs of the training loop (jaxresnet/jobs.py), each on its own."""
import json
import os
import time

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxresnet.training import jobs
from jaxresnet.infra.errors import CheckpointError
from jaxresnet.infra.tensorboard import MetricWriter


def test_itstime_every_n_steps_at_the_end_and_when_forced():
  assert [s for s in range(1, 11) if jobs.itstime(s, 4, 10)] == [4, 8, 10]
  assert [s for s in range(1, 11) if jobs.itstime(s, 0, 10)] == [10]  # 0: only at the end.
  assert jobs.itstime(3, 4, 10, force=True)


def test_due_a_stop_forces_log_and_save_but_not_eval():
  config = ml_collections.ConfigDict({'log_every_steps': 5, 'checkpoint_every_steps': 10, 'eval_every_steps': 20})
  assert jobs.Due.after(7, config, 100) == jobs.Due(log=False, save=False, eval=False)
  assert not jobs.Due.after(7, config, 100).any
  assert jobs.Due.after(20, config, 100) == jobs.Due(log=True, save=True, eval=True)
  assert jobs.Due.after(7, config, 100, stopping=True) == jobs.Due(log=True, save=True, eval=False)


def test_epoch_order_draws_one_permutation_per_epoch():
  calls = []

  def permutation_fn(key, epoch):
    calls.append(epoch)
    return f'perm{epoch}'

  order = jobs.EpochOrder(permutation_fn, 'key', steps_per_epoch=3)
  assert [order(s) for s in range(7)] == ['perm0'] * 3 + ['perm1'] * 3 + ['perm2']
  assert calls == [0, 1, 2]
  resumed = jobs.EpochOrder(permutation_fn, 'key', steps_per_epoch=3)
  assert resumed(4) == 'perm1'  # A resumed run starts mid-epoch with that epoch's order.


def device_metrics(loss, accuracy=0.5, finite=True, skipped=0):
  return {'loss': jnp.float32(loss), 'accuracy': jnp.float32(accuracy), 'finite': jnp.bool_(finite),
          'skipped': jnp.int32(skipped)}


def test_metric_window_means_and_empties():
  window = jobs.MetricWindow(skip_nonfinite=False)
  for step, loss in ((1, 2.0), (2, 4.0)):
    window.add(step, device_metrics(loss, accuracy=step / 4))
  window.check(last_good_step=0)
  [summary] = window.summary()  # One record per member; a single run is a population of one.
  assert summary == pytest.approx({'train_loss': 3.0, 'train_accuracy': 0.375, 'train_window_steps': 2})
  assert window.summary() == [{}]


def test_metric_window_stops_at_the_first_nonfinite_step_naming_the_last_good_checkpoint():
  window = jobs.MetricWindow(skip_nonfinite=False)
  window.add(5, device_metrics(1.0))
  window.add(6, device_metrics(float('nan'), finite=False))
  with pytest.raises(jobs.NonFiniteLossError, match='diverged at step 6 .*last good checkpoint is step 4'):
    window.check(last_good_step=4)


def test_metric_window_counts_skipped_updates_instead_of_stopping():
  window = jobs.MetricWindow(skip_nonfinite=True)
  window.add(1, device_metrics(1.0))
  window.add(2, device_metrics(float('nan'), finite=False, skipped=1))
  window.check(last_good_step=None)
  [summary] = window.summary()
  assert summary['skipped_updates'] == 1 and summary['train_loss'] == 1.0  # The skipped NaN loss is left out.


def test_chrono_excludes_the_compile_step_and_paused_time():
  chrono = jobs.Chrono(images_per_step=100)
  chrono.tick()  # The first (compiling) step only starts the clock.
  assert chrono.rate() == {}
  chrono.tick()
  with chrono.paused():
    time.sleep(0.3)
  rate = chrono.rate()['train_images_per_second']
  assert rate > 100 / 0.3  # The 0.3 s in paused() did not count.


class FullDiskManager:
  """Stands in for an Orbax CheckpointManager whose disk is full; checkpoint 2 was written before."""
  directory = '/run/checkpoints'

  def save(self, *args, **kwargs):
    raise OSError(28, 'No space left on device')

  def all_steps(self):
    return [2]


def test_checkpointer_names_the_intact_checkpoint_when_a_save_fails():
  checkpointer = jobs.Checkpointer(FullDiskManager(), {'model': 'x'}, start_step=2)
  state = ml_collections.ConfigDict({'step': 3})
  with pytest.raises(CheckpointError, match=r'cannot write checkpoint 3 to /run/checkpoints: .*No space left on '
                                            r'device.*previous checkpoint \(2\) is intact'):
    checkpointer.save(state, 3)
  assert checkpointer.last_step == 2


def test_console_writes_metrics_and_one_line_per_record(tmp_path, capsys):
  console = jobs.Console([MetricWriter(str(tmp_path))], total_steps=10, start_step=0, enabled=True)
  console.write(1, [{}])
  console.write(2, [{'train_loss': 0.5, 'learning_rate': 0.1}])
  console.close()
  assert capsys.readouterr().out.splitlines() == ['step 2/10  train_loss 0.5000  learning_rate 0.1']
  records = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert records == [{'step': 2, 'train_loss': 0.5, 'learning_rate': 0.1}]
  assert os.listdir(tmp_path / 'tensorboard')


def test_console_of_a_population_writes_each_member_and_one_line_of_means(tmp_path, capsys):
  writers = [MetricWriter(str(tmp_path / f'seed{k}')) for k in range(2)]
  for k in range(2):
    os.makedirs(tmp_path / f'seed{k}', exist_ok=True)
  console = jobs.Console(writers, total_steps=10, start_step=0, enabled=True)
  console.write(5, [{'train_loss': 1.0, 'train_images_per_second': 100.0, 'skipped_updates': 1},
                    {'train_loss': 3.0, 'train_images_per_second': 100.0, 'skipped_updates': 0}])
  console.close()
  assert capsys.readouterr().out.splitlines() == [
      'step 5/10  train_loss 2.0000  train_images_per_second 200  skipped_updates 1  '
      '(2 seeds: mean; images/s and skipped updates summed)']
  for k, loss in ((0, 1.0), (1, 3.0)):
    assert json.loads(open(tmp_path / f'seed{k}' / 'metrics.jsonl').read())['train_loss'] == loss


def test_console_writes_nothing_for_a_step_without_a_record(tmp_path, capsys):
  """Silences between records are jaxresnet.infra.heartbeat's to fill (tests/test_heartbeat.py)."""
  console = jobs.Console([MetricWriter(str(tmp_path))], total_steps=100, start_step=0, enabled=True)
  console.write(1, [{}])
  console.write(2, [{}])
  console.close()
  assert capsys.readouterr().out == ''
  assert not os.path.exists(tmp_path / 'metrics.jsonl')