"""Training and evaluation: pure step functions, and the loop that runs them.

`train_step` and `eval_step` are pure functions of a `TrainState` and a batch,
so they can be tested alone. `make_train_fn` wraps `train_step` with what runs
on the device around it: pick the batch out of the on-device training set by
the epoch's permutation, normalize and augment it, shard it over the `data`
axis of the device mesh. `train_and_evaluate` is the whole run.
"""
import functools
import json
import os
import sys
import time
from typing import Any, Dict, Optional

from flax.training import train_state
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxresnet import checkpoints
from jaxresnet import config as config_lib
from jaxresnet import data
from jaxresnet import models
from jaxresnet import optim
from jaxresnet.errors import CheckpointError
from jaxresnet.metric_writers import MetricWriter
from jaxresnet.preemption import StopRequest


class TrainState(train_state.TrainState):
  """Everything a run needs to continue exactly where it stopped."""
  batch_stats: Any
  rng: jax.Array  # Raw uint32 key; step s draws its randomness from step_rngs(state).
  input_mean: jax.Array  # Normalization of the training set, kept for evaluate/predict.
  input_std: jax.Array


def create_train_state(model, tx, rng, input_mean, input_std, image_shape) -> TrainState:
  init_rng, augment_rng = jax.random.split(rng)
  variables = model.init(init_rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                           batch_stats=variables.get('batch_stats', {}), rng=augment_rng,
                           input_mean=jnp.asarray(input_mean, jnp.float32),
                           input_std=jnp.asarray(input_std, jnp.float32))


def cross_entropy_loss(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def step_rngs(state: TrainState):
  """(augmentation, dropout) keys of the state's step: a pure function of seed and step."""
  return jax.random.split(jax.random.fold_in(state.rng, state.step))


def train_step(state: TrainState, images: jnp.ndarray, labels: jnp.ndarray,
               skip_nonfinite: bool = False):
  """One optimizer step on a batch of normalized (and augmented) float images.

  With `skip_nonfinite`, an update whose loss or gradients are not finite is
  dropped (the step counter still advances) and counted in metrics['skipped'].
  """

  def loss_fn(params):
    logits, updates = state.apply_fn({'params': params, 'batch_stats': state.batch_stats},
                                     images, train=True, mutable=['batch_stats'],
                                     rngs={'dropout': step_rngs(state)[1]})
    return cross_entropy_loss(logits, labels), (logits, updates.get('batch_stats', {}))  # none without BatchNorm

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  # A finite loss can still come with an update that overflows the weights: check both.
  finite = jnp.isfinite(loss) & jnp.all(jnp.array(
      [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves((new_state.params, batch_stats))]))
  metrics = {'loss': loss, 'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels), 'finite': finite}
  if skip_nonfinite:
    unchanged = state.replace(step=new_state.step)
    new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old), new_state, unchanged)
    metrics['skipped'] = jnp.logical_not(finite).astype(jnp.int32)
  return new_state, metrics


def eval_step(state: TrainState, images: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray):
  """Sums over the real (mask=1) examples of a batch: loss, correct, count, confusion matrix."""
  logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                          images, train=False)
  num_classes = logits.shape[-1]
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  predictions = jnp.argmax(logits, -1)
  weights = mask.astype(jnp.float32)
  confusion = jnp.einsum('n,ni,nj->ij', weights, jax.nn.one_hot(labels, num_classes),
                         jax.nn.one_hot(predictions, num_classes))
  return {'loss_sum': jnp.sum(losses * weights),
          'correct': jnp.sum((predictions == labels) * weights),
          'count': jnp.sum(weights),
          'confusion': confusion}


# --------------------------------------------------------------------------
# What runs on the devices around the pure steps.


def make_mesh() -> jax.sharding.Mesh:
  """All devices of all processes on one `data` axis."""
  # Auto axes: we place data with sharding constraints and let XLA propagate the rest.
  return jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


def replicate(mesh, array: np.ndarray) -> jax.Array:
  """A host array as a global array copied on every device (multi-process safe)."""
  array = np.asarray(array)
  return jax.make_array_from_callback(array.shape, NamedSharding(mesh, P()), lambda i: array[i])


def to_host(tree):
  """Fetches replicated global arrays (also across processes) as numpy."""
  return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0)), tree)


def prepare_images(state: TrainState, images_uint8, augment: bool):
  images = data.normalize(images_uint8, state.input_mean, state.input_std)
  if augment:
    images = data.augment(step_rngs(state)[0], images)
  return images


# Which ops XLA:CPU hands to the YNNPACK library (the rest it compiles itself or runs with Eigen).
# ELTWISE: without it, XLA copies each block's relu(bn(conv) + shortcut) into every
# weight-gradient transpose that reads it, so a block recomputes all earlier blocks of its stage:
# work quadratic in depth. Not INDIVIDUAL_CONVOLUTION (on by default): YNNPACK's convolutions,
# and above all its weight gradients, are slower here than XLA's Eigen ones. benchmarks/README.md
# has the measurements (`train` against `train_compiler_options`, and the conv-layer table).
_CPU_LIBRARY_FUSIONS = 'LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_ELTWISE'


@functools.cache
def compiler_options() -> Optional[Dict[str, str]]:
  """XLA options for the train and eval steps: only on CPU, and only where this jaxlib knows them."""
  if jax.default_backend() != 'cpu':
    return None
  options = {'xla_cpu_experimental_ynn_fusion_type': _CPU_LIBRARY_FUSIONS}
  try:  # An experimental option: another jaxlib may reject it (INVALID_ARGUMENT).
    jax.jit(lambda x: x + 1).lower(jnp.zeros(())).compile(options)
  except Exception:  # pylint: disable=broad-except
    return None
  return options


def make_train_fn(mesh, batch_size: int, steps_per_epoch: int, augment: bool,
                  skip_nonfinite: bool = False):
  """jit(state, train_images, train_labels, permutation) -> (state, metrics), state donated."""
  replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))

  def train_fn(state, train_images, train_labels, permutation):
    start = (state.step % steps_per_epoch) * batch_size
    indices = jax.lax.dynamic_slice(permutation, (start,), (batch_size,))
    # Each device gathers, augments and computes on its own slice of the batch.
    indices = jax.lax.with_sharding_constraint(indices, batch)
    images = prepare_images(state, train_images[indices], augment)
    return train_step(state, images, train_labels[indices], skip_nonfinite)

  return jax.jit(train_fn, donate_argnums=(0,), out_shardings=(replicated, replicated),
                 compiler_options=compiler_options())


def make_permutation_fn(mesh, num_examples: int):
  """jit(key, epoch) -> the epoch's example order: a pure function of seed and epoch."""
  return jax.jit(lambda key, epoch: jax.random.permutation(jax.random.fold_in(key, epoch), num_examples),
                 out_shardings=NamedSharding(mesh, P()))


class EvalSet:
  """One split on the devices, padded to whole batches with a mask, evaluated in one jit call."""

  def __init__(self, mesh, images: np.ndarray, labels: np.ndarray, batch_size: int):
    self.size = len(labels)
    padded = -len(labels) % batch_size
    self.images = replicate(mesh, np.concatenate([images, np.zeros((padded, *images.shape[1:]), images.dtype)]))
    self.labels = replicate(mesh, np.concatenate([labels, np.zeros((padded,), labels.dtype)]))
    self.mask = replicate(mesh, np.concatenate([np.ones(len(labels), bool), np.zeros(padded, bool)]))


def make_eval_fn(mesh, batch_size: int):
  """jit(state, images, labels, mask) -> summed eval_step results over the whole split."""
  batch = NamedSharding(mesh, P('data'))

  def eval_fn(state, images, labels, mask):
    def body(totals, i):
      window = lambda a: jax.lax.dynamic_slice_in_dim(a, i * batch_size, batch_size)
      batch_images = jax.lax.with_sharding_constraint(window(images), batch)
      out = eval_step(state, prepare_images(state, batch_images, augment=False),
                      window(labels), window(mask))
      return jax.tree_util.tree_map(jnp.add, totals, out), None

    zeros = jax.eval_shape(eval_step, state, images[:batch_size].astype(jnp.float32),
                           labels[:batch_size], mask[:batch_size])
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), zeros)
    totals, _ = jax.lax.scan(body, zeros, jnp.arange(images.shape[0] // batch_size))
    return totals

  return jax.jit(eval_fn, out_shardings=NamedSharding(mesh, P()), compiler_options=compiler_options())


def evaluate(eval_fn, state, split: EvalSet) -> Dict[str, Any]:
  totals = to_host(eval_fn(state, split.images, split.labels, split.mask))
  confusion = totals['confusion']
  per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
  return {'loss': float(totals['loss_sum'] / totals['count']),
          'accuracy': float(totals['correct'] / totals['count']),
          'per_class_accuracy': per_class.tolist(),
          'confusion_matrix': confusion.astype(np.int64).tolist()}


# --------------------------------------------------------------------------
# The run.


def build(config, dataset: data.Dataset, mesh, num_train_steps: int):
  """The model and initial train state (replicated over the mesh) for a config and dataset."""
  model = models.from_config(config, num_classes=dataset.num_classes)
  steps_per_epoch = len(dataset.train_labels) // config.batch_size
  schedule = optim.create_learning_rate_schedule(config, steps_per_epoch, num_train_steps)
  tx = optim.create_optimizer(config, schedule)
  mean, std = data.input_statistics(dataset.train_images, config.normalization)
  init = functools.partial(create_train_state, model, tx, jax.random.PRNGKey(config.seed), mean, std,
                           dataset.train_images.shape[1:])
  state = jax.jit(init, out_shardings=NamedSharding(mesh, P()))()
  return model, state, schedule


def checkpoint_metadata(config, dataset: data.Dataset) -> Dict[str, Any]:
  return {'model': config.model, 'shortcut': config.shortcut, 'dataset': config.dataset,
          'class_names': dataset.class_names, 'image_shape': list(dataset.train_images.shape[1:])}


def restore_checkpoint(manager, state, config, dataset):
  """`state` with the newest readable checkpoint of this run's model (or unchanged if there is none).

  A checkpoint that cannot be read (truncated, corrupt) is reported in one line
  and moved aside to WORKDIR/unreadable_checkpoints/, and the next older one is
  tried: a half-broken workdir never stops a resume, and nothing is deleted.
  """
  mine = checkpoint_metadata(config, dataset)
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      meta = checkpoints.read_metadata(manager, step)
    except Exception as e:  # Orbax raises many kinds for a damaged checkpoint.
      checkpoints.move_aside(manager, step, f'its metadata is unreadable ({checkpoints.first_line(e)})')
      continue
    for key in ('model', 'shortcut', 'class_names', 'image_shape'):
      if meta.get(key) != mine[key]:
        raise CheckpointError(
            f'{manager.directory} holds a checkpoint of a different run ({key}: {meta.get(key)!r}, '
            f'this config: {mine[key]!r}); use another --workdir')
    try:
      return checkpoints.restore(manager, state, step)
    except CheckpointError as e:
      checkpoints.move_aside(manager, step, str(e))
  return state


class NonFiniteLossError(CheckpointError):
  pass


def _log_line(step, total, record) -> str:
  parts = [f'step {step}/{total}']
  for key, fmt in (('train_loss', '{:.4f}'), ('train_accuracy', '{:.4f}'), ('learning_rate', '{:.4g}'),
                   ('train_images_per_second', '{:.0f}'), ('skipped_updates', '{:d}'),
                   ('val_accuracy', '{:.4f}'), ('test_accuracy', '{:.4f}')):
    if key in record:
      parts.append(f'{key} {fmt.format(record[key])}')
  return '  '.join(parts)


def _writable_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test.{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise CheckpointError(f'cannot write to workdir {workdir}: {e.strerror or e}') from None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains (or resumes) the run a config describes in `workdir`; returns the final metrics.

  On SIGTERM/SIGINT it saves a checkpoint at the current step and returns early
  (summary['stopped'] names the signal); rerunning resumes exactly.
  """
  mesh = make_mesh()
  config_lib.validate(config, jax.device_count())
  is_main = jax.process_index() == 0
  dataset = data.load_dataset(config)
  total_steps = config_lib.num_train_steps(config, len(dataset.train_labels))
  steps_per_epoch = len(dataset.train_labels) // config.batch_size
  model, state, schedule = build(config, dataset, mesh, total_steps)
  num_params = models.count_params(state.params)
  macs = models.count_macs(model, dataset.train_images.shape[1:])
  devices = f'{jax.device_count()} x {jax.devices()[0].device_kind}'

  # Only now touch the workdir: a bad config or bad data leave nothing behind.
  _writable_workdir(workdir)
  manager = checkpoints.create_manager(workdir, config.checkpoints_to_keep)
  state = restore_checkpoint(manager, state, config, dataset)
  start_step = int(to_host(state.step))
  writer = MetricWriter(workdir, enabled=is_main)
  writer.truncate_after(start_step)
  if is_main:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    print(f'{config.model}: {num_params:,} parameters, {macs / 1e6:.1f}M multiply-adds per image; '
          f'data {data.describe(dataset)}; {devices}; {total_steps} steps of batch {config.batch_size}',
          flush=True)
    if start_step:
      print(f'resumed from checkpoint at step {start_step}', flush=True)

  train_images, train_labels = replicate(mesh, dataset.train_images), replicate(mesh, dataset.train_labels)
  eval_sets = {'val': EvalSet(mesh, dataset.val_images, dataset.val_labels, config.eval_batch_size),
               'test': EvalSet(mesh, dataset.test_images, dataset.test_labels, config.eval_batch_size)}
  eval_sets = {name: s for name, s in eval_sets.items() if s.size}
  train_fn = make_train_fn(mesh, config.batch_size, steps_per_epoch, config.augment,
                           config.skip_nonfinite_updates)
  permutation_fn = make_permutation_fn(mesh, len(dataset.train_labels))
  eval_fn = make_eval_fn(mesh, config.eval_batch_size)
  data_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
  metadata = checkpoint_metadata(config, dataset)

  def save(state, step):
    try:
      checkpoints.save(manager, state, metadata)
    except Exception as e:  # Disk full, permissions, a vanished directory...
      kept = [s for s in manager.all_steps() if s != step]
      raise CheckpointError(f'cannot write checkpoint {step} to {manager.directory}: '
                            f'{checkpoints.first_line(e)}; the previous checkpoint '
                            f'({max(kept) if kept else "none"}) is intact') from None

  progress = None
  if is_main and sys.stderr.isatty():
    import tqdm  # pylint: disable=g-import-not-at-top
    progress = tqdm.tqdm(total=total_steps, initial=start_step, unit='step', dynamic_ncols=True)
  epoch, permutation = None, None
  pending = []  # (step, device metrics) not yet fetched: fetching waits for the device.
  window, window_start, window_steps = [], None, 0  # Host metrics since the last log line.
  last_good_step = start_step
  results = None
  stopped = None
  step = start_step
  failed = True
  try:
    with StopRequest() as stop:
      while step < total_steps:
        if step // steps_per_epoch != epoch:
          epoch = step // steps_per_epoch
          permutation = permutation_fn(data_key, epoch)
        state, metrics = train_fn(state, train_images, train_labels, permutation)
        step += 1
        pending.append((step, metrics))
        if window_start is None:  # Throughput is timed from the end of the first (compiling) step.
          jax.block_until_ready(metrics)
          window_start = time.perf_counter()
        else:
          window_steps += 1

        is_last = step == total_steps
        stop_now = stop.requested(collective=step % config.log_every_steps == 0 or is_last)
        log_now = step % config.log_every_steps == 0 or is_last or stop_now
        eval_now = (config.eval_every_steps and step % config.eval_every_steps == 0) or is_last
        save_now = (config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0) or is_last or stop_now
        if log_now or eval_now or save_now:
          # Every checkpoint is preceded by this check, so none ever holds a diverged model.
          for pending_step, host in zip([s for s, _ in pending], to_host([m for _, m in pending])):
            if not config.skip_nonfinite_updates and not host['finite']:
              raise NonFiniteLossError(
                  f'training diverged at step {pending_step} (loss {host["loss"]:.4g}; loss or weights not '
                  f'finite) and stopped without saving it. The last good checkpoint is step '
                  f'{last_good_step or "none"}; lower the learning rate, or set '
                  'config.skip_nonfinite_updates=True to skip such updates')
            window.append(host)
          pending = []
        record = {}
        if log_now and window:
          elapsed = time.perf_counter() - window_start
          record.update(train_loss=float(np.nanmean([m['loss'] for m in window])),
                        train_accuracy=float(np.mean([m['accuracy'] for m in window])),
                        learning_rate=float(schedule(step - 1)))
          if window_steps:  # Not for a window holding only the compiling first step.
            record['train_images_per_second'] = window_steps * config.batch_size / max(elapsed, 1e-9)
          if config.skip_nonfinite_updates:
            record['skipped_updates'] = int(sum(m['skipped'] for m in window))
          window, window_start, window_steps = [], time.perf_counter(), 0
        if eval_now:
          results = {name: evaluate(eval_fn, state, split) for name, split in eval_sets.items()}
          for name, result in results.items():
            record.update({f'{name}_loss': result['loss'], f'{name}_accuracy': result['accuracy'],
                           f'{name}_error': 1.0 - result['accuracy']})
          window_start = time.perf_counter()  # Evaluation time is not training throughput.
        if record:
          writer.write(step, record)
          line = _log_line(step, total_steps, record)
          if progress is not None:
            progress.write(line)
          elif is_main:
            print(line, flush=True)
        if save_now:
          save(state, step)
          last_good_step = step
        if progress is not None:
          progress.update(1)
        if stop_now:
          stopped = stop.signal_name or 'a signal to another process'
          break
    failed = False
  finally:
    # Also on an error: let the checkpoint being written finish, so the last good one is complete.
    if progress is not None:
      progress.close()
    try:
      manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      if not failed:
        raise CheckpointError(f'cannot finish writing checkpoint {step} to {manager.directory}: '
                              f'{checkpoints.first_line(e)}') from None
    writer.close()
    manager.close()

  if stopped:
    if is_main:
      print(f'stopped by {stopped} at step {step}: checkpoint saved; run the same command to resume',
            flush=True)
    return {'model': config.model, 'step': step, 'stopped': stopped}
  if results is None:  # Resumed at the end: the last evaluation was not kept.
    results = {name: evaluate(eval_fn, state, split) for name, split in eval_sets.items()}
  summary = {'model': config.model, 'step': step, 'num_params': num_params, 'macs': macs,
             'devices': devices,
             **{f'{name}_accuracy': r['accuracy'] for name, r in results.items()},
             **{f'{name}_error': 1.0 - r['accuracy'] for name, r in results.items()},
             **{f'{name}_loss': r['loss'] for name, r in results.items()},
             'test_per_class_accuracy': results['test']['per_class_accuracy'],
             'class_names': dataset.class_names}
  if is_main:
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(summary, f, indent=2)
    print(f'final test error {100 * summary["test_error"]:.2f}% '
          f'(accuracy {100 * summary["test_accuracy"]:.2f}%) at step {step}', flush=True)
  return summary
