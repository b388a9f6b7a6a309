"""Training: the train state, the pure train step and its jit wrapper, and the loop that runs them.

`train_step` is a pure function of a `TrainState` and a batch, so it can be
tested alone. `make_train_fn` wraps it with what runs on the device around it:
pick the batch out of the on-device training set by the epoch's permutation,
normalize and augment it, shard it over the `data` axis of the device mesh.
`train_and_evaluate` is the whole run; its periodic jobs live in jobs.py.
"""
import functools
import json
import os
from typing import Any, Dict

from flax.training import train_state
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import ml_collections
import optax

from jaxresnet import checkpoints
from jaxresnet import config as config_lib
from jaxresnet import data
from jaxresnet import devices
from jaxresnet import evaluation
from jaxresnet import jobs
from jaxresnet import models
from jaxresnet import optim
from jaxresnet import workdir as workdir_lib
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


def prepare_images(state: TrainState, images_uint8, augment: bool):
  """The step's training batch: normalized, then (with `augment`) padded, cropped and flipped."""
  images = data.normalize(images_uint8, state.input_mean, state.input_std)
  if augment:
    images = data.augment(step_rngs(state)[0], images)
  return images


def make_train_fn(mesh, config, steps_per_epoch: int, jit: bool = True):
  """(state, train_images, train_labels, permutation) -> (state, metrics): the step with its input pipeline.

  Jitted with the state donated; `jit=False` gives the pure function (to compose, e.g. in a scan).
  """
  batch_size = config.batch_size
  replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))

  def train_fn(state, train_images, train_labels, permutation):
    start = (state.step % steps_per_epoch) * batch_size
    indices = jax.lax.dynamic_slice(permutation, (start,), (batch_size,))
    # Each device gathers, augments and computes on its own slice of the batch.
    indices = jax.lax.with_sharding_constraint(indices, batch)
    images = prepare_images(state, train_images[indices], config.augment)
    return train_step(state, images, train_labels[indices], config.skip_nonfinite_updates)

  if not jit:
    return train_fn
  return jax.jit(train_fn, donate_argnums=(0,), out_shardings=(replicated, replicated),
                 compiler_options=devices.compiler_options())


def make_permutation_fn(mesh, num_examples: int):
  """jit(key, epoch) -> the epoch's example order: a pure function of seed and epoch."""
  return jax.jit(lambda key, epoch: jax.random.permutation(jax.random.fold_in(key, epoch), num_examples),
                 out_shardings=NamedSharding(mesh, P()))


def data_key(config) -> jax.Array:
  """The key of the run's example order (the permutation of each epoch)."""
  return jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)


def build(config, dataset: data.Dataset, mesh):
  """(model, initial train state replicated over the mesh, learning-rate schedule) for a config and dataset."""
  model = models.from_config(config, num_classes=dataset.num_classes)
  num_train = len(dataset.train_labels)
  schedule = optim.create_learning_rate_schedule(config, num_train // config.batch_size,
                                                 config_lib.num_train_steps(config, num_train))
  tx = optim.create_optimizer(config, schedule)
  mean, std = data.input_statistics(dataset.train_images, config.normalization)
  init = functools.partial(create_train_state, model, tx, jax.random.PRNGKey(config.seed), mean, std,
                           dataset.train_images.shape[1:])
  state = jax.jit(init, out_shardings=NamedSharding(mesh, P()))()
  return model, state, schedule


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains (or resumes) the run a config describes in `workdir`; returns the final metrics.

  On SIGTERM/SIGINT it saves a checkpoint at the current step and returns early
  (summary['stopped'] names the signal); rerunning resumes exactly.
  """
  mesh = devices.make_mesh()
  config_lib.validate(config, jax.device_count())
  dataset = data.load_dataset(config)
  total_steps = config_lib.num_train_steps(config, len(dataset.train_labels))
  steps_per_epoch = len(dataset.train_labels) // config.batch_size
  model, state, schedule = build(config, dataset, mesh)
  workdir_lib.check_writable(workdir)  # Only now: a bad config or bad data leave nothing behind.
  metadata = checkpoints.run_metadata(config, dataset)
  manager = checkpoints.create_manager(workdir, config.checkpoints_to_keep)
  state, start_step = checkpoints.restore_newest(manager, state, metadata)
  start_step = start_step or 0
  console = start_console(config, workdir, model, state, dataset, start_step, total_steps)

  train_images, train_labels = devices.replicate(mesh, dataset.train_images), devices.replicate(mesh, dataset.train_labels)
  train_fn = make_train_fn(mesh, config, steps_per_epoch)
  epoch_order = jobs.EpochOrder(make_permutation_fn(mesh, len(dataset.train_labels)), data_key(config),
                                steps_per_epoch)
  window, chrono = jobs.MetricWindow(config.skip_nonfinite_updates), jobs.Chrono(config.batch_size)
  checkpointer = jobs.Checkpointer(manager, metadata, start_step)
  evaluator = jobs.Evaluator(evaluation.make_eval_fn(mesh, config.eval_batch_size),
                             evaluation.eval_splits(mesh, dataset, config.eval_batch_size))
  step, stopped, failed = start_step, None, True
  try:
    with StopRequest() as stop:
      while step < total_steps and not stopped:
        state, metrics = train_fn(state, train_images, train_labels, epoch_order(step))
        step += 1
        window.add(step, metrics)
        chrono.tick(metrics)
        if stop.requested(collective=jobs.itstime(step, config.log_every_steps, total_steps)):
          stopped = stop.signal_name or 'a signal to another process'
        due, record = jobs.Due.after(step, config, total_steps, stopping=bool(stopped)), {}
        if due.any:
          window.check(checkpointer.last_step)  # Before any save: no checkpoint holds a diverged model.
        if due.log:
          record.update(**window.summary(), learning_rate=float(schedule(step - 1)), **chrono.rate())
        if due.save:
          checkpointer.save(state, step)
        if due.eval:  # After the save: a failing evaluation never costs the step's checkpoint.
          with chrono.paused():
            record.update(evaluator(state))
        console.write(step, record)
    failed = False
  finally:
    console.close()
    checkpointer.finish(step, failed)
  if stopped:
    console.print(f'stopped by {stopped} at step {step}: checkpoint saved; run the same command to resume')
    return {'model': config.model, 'step': step, 'stopped': stopped}
  return write_results(config, workdir, console, evaluator, state, step, model, dataset)


def start_console(config, workdir, model, state, dataset, start_step, total_steps) -> jobs.Console:
  """Writes config.json and opens the metrics; the run's first lines say what is trained where."""
  is_main = jax.process_index() == 0
  if is_main:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  writer = MetricWriter(workdir, enabled=is_main)
  writer.truncate_after(start_step)
  console = jobs.Console(writer, total_steps, start_step, enabled=is_main)
  console.print(f'{config.model}: {models.count_params(state.params):,} parameters, '
                f'{models.count_macs(model, dataset.train_images.shape[1:]) / 1e6:.1f}M multiply-adds per image; '
                f'data {data.describe(dataset)}; {device_names()}; {total_steps} steps of batch {config.batch_size}')
  if start_step:
    console.print(f'resumed from checkpoint at step {start_step}')
  return console


def device_names() -> str:
  return f'{jax.device_count()} x {jax.devices()[0].device_kind}'


def write_results(config, workdir, console, evaluator, state, step, model, dataset) -> Dict[str, Any]:
  """WORKDIR/results.json: the final model's numbers on every split."""
  if evaluator.results is None:  # Resumed at the end: the last evaluation was not kept.
    evaluator(state)
  results = evaluator.results
  summary = {'model': config.model, 'step': step, 'num_params': models.count_params(state.params),
             'macs': models.count_macs(model, dataset.train_images.shape[1:]), 'devices': device_names(),
             **{f'{name}_accuracy': r['accuracy'] for name, r in results.items()},
             **{f'{name}_error': 1.0 - r['accuracy'] for name, r in results.items()},
             **{f'{name}_loss': r['loss'] for name, r in results.items()},
             'test_per_class_accuracy': results['test']['per_class_accuracy'],
             'class_names': dataset.class_names}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(summary, f, indent=2)
  console.print(f'final test error {100 * summary["test_error"]:.2f}% '
                f'(accuracy {100 * summary["test_accuracy"]:.2f}%) at step {step}')
  return summary
