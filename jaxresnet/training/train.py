"""Training: the train state, the pure train step and its jit wrapper, and the loop that runs them.

`train_step` is a pure function of a `TrainState` and a batch, so it can be
tested alone. `make_train_fn` wraps it with what runs on the device around it:
pick the batch out of the on-device training set by the epoch's permutation,
normalize and augment it, shard it over the `data` axis of the device mesh.
`train_and_evaluate` is the whole run; its periodic jobs live in jobs.py.

A population (`config.num_seeds` = K > 1) trains the runs of seeds seed ...
seed+K-1 in one program: every array of the train state, and the epoch's
permutation, get a leading members axis, and the step is vmapped over
it (devices.over_members). Member k computes exactly what a run with `--config.seed=seed+k` computes
alone (its own initialization, example order, augmentation and BatchNorm
statistics; the batch size is per member). With K = 1 nothing is vmapped and
the state has today's shapes, so older checkpoints still restore.
"""
import dataclasses
import os
from typing import Any, Dict, List, Optional

from flax.training import train_state
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxresnet.infra import checkpoints
from jaxresnet.infra import config as config_lib
from jaxresnet import data
from jaxresnet.infra import devices
from jaxresnet.infra import heartbeat
from jaxresnet.infra import host_memory
from jaxresnet.training import evaluation
from jaxresnet.training import jobs
from jaxresnet import models
from jaxresnet.training import optim
from jaxresnet.training import switches
from jaxresnet.infra import rundir
from jaxresnet.infra.tensorboard import MetricWriter
from jaxresnet.infra.signals import StopRequest


class TrainState(train_state.TrainState):
  """Everything a run needs to continue exactly where it stopped."""
  batch_stats: Any
  rng: jax.Array  # Raw uint32 key; step s draws its randomness from step_rngs(state).
  input_mean: jax.Array  # Normalization of the training set, kept for evaluate/predict.
  input_std: jax.Array


class EmaTrainState(TrainState):
  """A TrainState with an exponential moving average of the weights (config.ema_decay > 0).

  Its own class, so that runs without an EMA keep the checkpoint layout they always had.
  """
  ema_params: Any
  ema_batch_stats: Any

  def ema(self):
    """The state with the averaged weights in place of the trained ones (for evaluation)."""
    return self.replace(params=self.ema_params, batch_stats=self.ema_batch_stats)


@dataclasses.dataclass(frozen=True)
class Recipe:
  """What the train step does besides SGD on the crop-and-flip batch: configs/default.py's recipe switches.

  All off by default, so the paper's recipe computes exactly what it always did.
  """
  num_classes: int
  policy: Optional[switches.ImagePolicy] = None  # RandAugment / AutoAugment, on uint8 images.
  cutout: int = 0
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  label_smoothing: float = 0.0
  ema_decay: float = 0.0
  sam: bool = False
  crop_padding: int = 4
  crop_padding_mode: str = 'constant'
  flip: str = config_lib.SCHEMA['flip'].default  # A key of switches.FLIPS.

  @classmethod
  def from_config(cls, config, num_classes: int) -> 'Recipe':
    return cls(num_classes=num_classes, policy=switches.parse_policy(config.randaugment), cutout=config.cutout,
               mixup_alpha=config.mixup_alpha, cutmix_alpha=config.cutmix_alpha,
               label_smoothing=config.label_smoothing, ema_decay=config.ema_decay, sam=config.sam_rho > 0,
               crop_padding=config.crop_padding, crop_padding_mode=config.crop_padding_mode, flip=config.flip)

  @property
  def mixes(self) -> bool:
    return self.mixup_alpha > 0 or self.cutmix_alpha > 0


def seed_keys(config, fold: Optional[int] = None) -> jax.Array:
  """PRNGKey(seed) (folded with `fold`), with a leading members axis for a population."""
  keys = [jax.random.PRNGKey(s) for s in config_lib.seeds(config).all]
  if fold is not None:
    keys = [jax.random.fold_in(k, fold) for k in keys]
  return keys[0] if config.num_seeds == 1 else jnp.stack(keys)


def create_train_state(model, tx, rng, input_mean, input_std, image_shape, ema: bool = False,
                       init_params=None) -> TrainState:
  """The initial state; `init_params(params)` changes the initialized params first (fast94's whitening conv)."""
  init_rng, augment_rng = jax.random.split(rng)
  variables = model.init(init_rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  params = variables['params'] if init_params is None else init_params(variables['params'])
  fields = dict(apply_fn=model.apply, params=params, tx=tx,
                batch_stats=variables.get('batch_stats', {}), rng=augment_rng,
                input_mean=jnp.asarray(input_mean, jnp.float32), input_std=jnp.asarray(input_std, jnp.float32))
  if ema:  # The average starts as a copy of the initial weights (optax.incremental_update has no debiasing).
    return EmaTrainState.create(**fields, ema_params=fields['params'], ema_batch_stats=fields['batch_stats'])
  return TrainState.create(**fields)


def cross_entropy_loss(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def step_rngs(state: TrainState):
  """(augmentation, dropout) keys of the state's step: a pure function of seed and step."""
  return jax.random.split(jax.random.fold_in(state.rng, state.step))


# The recipe switches draw from the step's augmentation key folded with these (switches.SWITCHES), so the crop
# and flip (the augmentation key itself) stay what they were before the switches existed.
POLICY_KEY, CUTOUT_KEY, MIX_KEY = (switches.KEYS[field] for field in ('randaugment', 'cutout', 'mixup_alpha'))
# A switches.FLIPS flip's epoch-0 coin of each image comes from the run's key folded with this: the
# same for every step, so that each later epoch can mirror the image the other way round.
FLIP_KEY = switches.KEYS['flip']


def recipe_key(state: TrainState, which: int) -> jax.Array:
  return jax.random.fold_in(step_rngs(state)[0], which)


def train_step(state: TrainState, images: jnp.ndarray, labels: jnp.ndarray,
               skip_nonfinite: bool = False, frozen=None, recipe: Optional[Recipe] = None):
  """One optimizer step on a batch of normalized (and augmented) float images.

  With `skip_nonfinite`, an update whose loss or gradients are not finite is
  dropped (the step counter still advances) and counted in metrics['skipped'].
  A `frozen` (bool) member of a population drops every update. `recipe` adds
  mixup/cutmix, label smoothing, SAM and the weight EMA.
  """
  targets = labels
  if recipe is not None and recipe.mixes:
    images, targets = switches.mix(recipe_key(state, MIX_KEY), images, jax.nn.one_hot(labels, recipe.num_classes),
                                  recipe.mixup_alpha, recipe.cutmix_alpha)
  smoothing = recipe.label_smoothing if recipe is not None else 0.0

  def loss_fn(params):
    logits, updates = state.apply_fn({'params': params, 'batch_stats': state.batch_stats},
                                     images, train=True, mutable=['batch_stats'],
                                     rngs={'dropout': step_rngs(state)[1]})
    if targets is labels and not smoothing:
      loss = cross_entropy_loss(logits, labels)
    else:
      loss = switches.cross_entropy(logits, targets, smoothing)
    return loss, (logits, updates.get('batch_stats', {}))  # none without BatchNorm

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  # SAM asks for the gradient at its perturbed weights itself; the first pass's BatchNorm statistics are kept.
  sam_grad_fn = switches.sam_grad_fn(loss_fn) if recipe is not None and recipe.sam else None
  new_state = switches.apply_gradients(state, grads, sam_grad_fn, batch_stats=batch_stats)
  if recipe is not None and recipe.ema_decay:
    ema_params, ema_batch_stats = switches.ema_update((state.ema_params, state.ema_batch_stats),
                                                     (new_state.params, batch_stats), recipe.ema_decay)
    new_state = new_state.replace(ema_params=ema_params, ema_batch_stats=ema_batch_stats)
  # A finite loss can still come with an update that overflows the weights: check both.
  finite = jnp.isfinite(loss) & jnp.all(jnp.array(
      [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves((new_state.params, batch_stats))]))
  metrics = {'loss': loss, 'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels), 'finite': finite}
  if skip_nonfinite:
    keep = finite if frozen is None else finite & jnp.logical_not(frozen)
    unchanged = state.replace(step=new_state.step)
    new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(keep, new, old), new_state, unchanged)
    metrics['skipped'] = jnp.logical_not(finite).astype(jnp.int32)
  return new_state, metrics


def prepare_images(state: TrainState, images_uint8, augment: bool, recipe: Optional[Recipe] = None,
                   indices=None, epoch=None):
  """The step's training batch: RandAugment/AutoAugment (uint8), normalized, then (with `augment`)
  padded, cropped and flipped, then cut out. A flip of switches.FLIPS gets the images' dataset `indices`
  and the `epoch`."""
  if recipe is not None:
    images_uint8 = switches.apply_policy(recipe_key(state, POLICY_KEY), images_uint8, recipe.policy)
  images = data.normalize(images_uint8, state.input_mean, state.input_std)
  if augment:
    recipe = recipe or Recipe(num_classes=0)
    flip = switches.FLIPS[recipe.flip]
    images = data.augment(step_rngs(state)[0], images, recipe.crop_padding, recipe.crop_padding_mode,
                          flip=flip is None)
    if flip is not None:
      images = flip(images, epoch, jax.random.fold_in(state.rng, FLIP_KEY), indices)
  if recipe is not None and recipe.cutout:
    images = switches.cutout(recipe_key(state, CUTOUT_KEY), images, recipe.cutout)
  return images


def make_train_fn(mesh, config, steps_per_epoch: int, num_classes: int, jit: bool = True):
  """(state, train_images, train_labels, permutation[, frozen]) -> (state, metrics): the step and its input.

  For a population, `state` and `permutation` have a members axis and `frozen`
  (bool per member) stops the members that diverged; the training set is shared.
  Jitted with the state donated; `jit=False` gives the pure function (to compose, e.g. in a scan).
  """
  batch_size = config.batch_size
  batch = NamedSharding(mesh, P('data'))
  # A diverged member must not stop the others: in a population its non-finite updates are dropped.
  skip_nonfinite = config.skip_nonfinite_updates or config.num_seeds > 1
  recipe = Recipe.from_config(config, num_classes)

  def member_fn(state, train_images, train_labels, permutation, frozen):
    start = (state.step % steps_per_epoch) * batch_size
    indices = jax.lax.dynamic_slice(permutation, (start,), (batch_size,))
    # Each device gathers, augments and computes on its own slice of the batch.
    indices = jax.lax.with_sharding_constraint(indices, batch)
    images = prepare_images(state, train_images[indices], config.augment, recipe, indices,
                            epoch=state.step // steps_per_epoch)
    return train_step(state, images, train_labels[indices], skip_nonfinite, frozen, recipe)

  vmapped = devices.over_members(member_fn, config.num_seeds, in_axes=(0, None, None, 0, 0))

  def train_fn(state, train_images, train_labels, permutation, frozen=None):
    return vmapped(state, train_images, train_labels, permutation, frozen)

  if not jit:
    return train_fn
  return jax.jit(train_fn, donate_argnums=(0,), out_shardings=(devices.members_sharding(mesh, config.num_seeds),
                                                                NamedSharding(mesh, P())),
                 compiler_options=devices.compiler_options(config.num_seeds))


def make_permutation_fn(mesh, config, num_examples: int):
  """jit(keys, epoch) -> the epoch's example order (per member): a pure function of seed and epoch."""
  permutation = lambda key, epoch: jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)
  return jax.jit(devices.over_members(permutation, config.num_seeds, in_axes=(0, None)),
                 out_shardings=devices.members_sharding(mesh, config.num_seeds))


def data_key(config) -> jax.Array:
  """The key(s) of the run's example order (the permutation of each epoch)."""
  return seed_keys(config, fold=1)


def build(config, dataset: data.Dataset, mesh):
  """(model, initial train state replicated over the mesh, learning-rate schedule) for a config and dataset."""
  model = models.from_config(config, num_classes=dataset.num_classes)
  num_train = len(dataset.train_labels)
  schedule = optim.create_learning_rate_schedule(config, num_train // config.batch_size,
                                                 config_lib.num_train_steps(config, num_train))
  tx = optim.create_optimizer(config, schedule, num_train // config.batch_size, config.batch_size)
  if config.sam_rho > 0:
    tx = switches.sam(tx, config.sam_rho)
  mean, std = data.input_statistics(dataset.train_images, config.normalization)
  # A model's own init hook sets weights from the training data (whitened_vgg's whitening conv), never trained.
  init_from_data = getattr(type(model), 'init_from_data', None)
  init_params = init_from_data(dataset.train_images, lambda x: data.normalize(x, mean, std)) if init_from_data else None
  init = lambda rng: create_train_state(model, tx, rng, mean, std, dataset.train_images.shape[1:],
                                        ema=config.ema_decay > 0, init_params=init_params)
  state = jax.jit(devices.over_members(init, config.num_seeds),
                  out_shardings=devices.members_sharding(mesh, config.num_seeds))(seed_keys(config))
  return model, state, schedule


@heartbeat.while_running
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains (or resumes) the run a config describes in `workdir`; returns the final metrics.

  On SIGTERM/SIGINT it saves a checkpoint at the current step and returns early
  (summary['stopped'] names the signal); rerunning resumes exactly. A population
  returns {'members': [each member's summary]} and writes them to WORKDIR/seed<k>/.
  """
  config_lib.validate(config, jax.device_count())
  run_lock = rundir.check_before_run(workdir, config)  # Now, not after the data: a file, busy, another run's.
  known_length = config_lib.known_num_train_steps(config)  # None for a run set in epochs.
  if known_length is not None and rundir.finished(config, workdir, known_length):
    return already_finished(config, workdir, run_lock)  # Before the data: known in a second.
  mesh = devices.make_mesh(config.num_seeds)
  heartbeat.now('loading the data')
  dataset = data.load_dataset(config)
  durations = config_lib.steps(config, len(dataset.train_labels))  # Every duration of the config, in steps.
  total_steps = durations.num_train_steps
  if rundir.finished(config, workdir, total_steps):  # A run set in epochs: its length needed the data.
    return already_finished(config, workdir, run_lock)
  steps_per_epoch = len(dataset.train_labels) // config.batch_size
  heartbeat.now('compiling and running the parameter initialization')
  model, state, schedule = build(config, dataset, mesh)
  config = config_lib.fit_to_splits(config, dataset, jax.device_count())  # eval_batch_size <= the largest split.
  metadata = checkpoints.run_metadata(config, dataset)
  # Creates and locks the workdir only now (bad data leave nothing behind); the manager holds the lock.
  heartbeat.now('opening the workdir (and restoring its newest checkpoint)')
  manager, state, start_step = rundir.open_run(workdir, config, state, metadata, run_lock, total_steps)
  resumed = checkpoints.read_metadata(manager, start_step) if start_step else {}
  # One member's size (all have the same), counted once from an abstract trace of `init`.
  size = models.count_params_and_macs(model, dataset.train_images.shape[1:])
  console, last_logged = start_console(config, workdir, size, dataset, start_step, total_steps)

  train_images = devices.replicate(mesh, dataset.train_images)
  train_labels = devices.replicate(mesh, dataset.train_labels)
  train_fn = make_train_fn(mesh, config, steps_per_epoch, dataset.num_classes)
  epoch_order = jobs.EpochOrder(make_permutation_fn(mesh, config, len(dataset.train_labels)), data_key(config),
                                steps_per_epoch)
  window = jobs.MetricWindow(config.skip_nonfinite_updates, config.num_seeds)
  window.diverged = {int(member): int(at) for member, at in resumed.get('diverged', [])}
  window.restore(resumed.get('log', {}).get('window'))  # The steps since the last log line, before the stop.
  check_some_member_trains(config, window, start_step)
  chrono, frozen = jobs.Chrono(config.batch_size), frozen_members(mesh, config, window)
  checkpointer = jobs.Checkpointer(manager, metadata, start_step)
  splits = evaluation.eval_splits(mesh, dataset, config.eval_batch_size, config.max_eval_examples)
  evaluator = jobs.Evaluator(eval_views(mesh, config), splits, config.num_seeds)
  step, stopped, failed = start_step, None, True
  run_clock = jobs.RunClock(resumed.get('log', {}).get('seconds'))
  heartbeat.training(start_step, total_steps, config.batch_size)
  try:
    if start_step and record_missing(start_step, last_logged):
      # Killed between this checkpoint and its record (evaluating, say): the record is written now.
      records = resumed.get('log', {}).get('records') or [{}] * config.num_seeds
      if jobs.itstime(start_step, durations.eval_every_steps, total_steps):
        records = [{**r, **e} for r, e in zip(records, evaluator(state))]
      if any(records):
        console.write(start_step, records)
    with StopRequest() as stop, run_clock:
      # Compiled here, the loop's first call reuses it; its temporaries decide how glibc treats freed memory.
      host_memory.fit_to_step(train_fn.lower(state, train_images, train_labels, epoch_order(step), frozen).compile())
      while step < total_steps and not stopped:
        state, metrics = train_fn(state, train_images, train_labels, epoch_order(step), frozen)
        step += 1
        heartbeat.at_step(step, metrics)
        window.add(step, metrics)
        chrono.tick(metrics)
        # Every process must stop at the same step: of several, they decide together, at log steps.
        if stop.requested(collective=jobs.itstime(step, durations.log_every_steps, total_steps)):
          stopped = stop.signal_name or 'a signal to another process'
        due, records = jobs.Due.after(step, durations, total_steps, stopping=bool(stopped)), [{}] * config.num_seeds
        # Before any save: no checkpoint holds a diverged single run; a diverged member is frozen.
        newly_diverged = window.check(checkpointer.last_step) if due.any else {}
        if newly_diverged:
          check_some_member_trains(config, window, checkpointer.last_step)
          frozen = frozen_members(mesh, config, window, console, newly_diverged)
        if due.log:
          common = {'learning_rate': float(schedule(step - 1)), **chrono.rate()}
          records = [{**r, **common} for r in window.summary()]
        with chrono.paused(after=state if due.save or due.eval else None):  # Not training time.
          if due.save:
            with run_clock.excluded():
              checkpointer.save(state, step, diverged=window.diverged,
                                log={'records': records, 'window': window.saved(), 'seconds': run_clock.seconds()})
          if due.eval:  # After the save: a failing evaluation never costs the step's checkpoint.
            records = [{**r, **e} for r, e in zip(records, evaluator(state))]
          console.write(step, records)
      # Read now: waiting below for the background checkpoint writes (checkpointer.finish) is not training.
      seconds = run_clock.seconds()
    failed = False
  finally:
    console.close()
    checkpointer.finish(step, failed)
  if stopped:
    console.print(f'stopped by {stopped} at step {step}: checkpoint saved; run the same command to resume')
    return {'model': config.model, 'step': step, 'stopped': stopped}
  return write_results(config, workdir, console, evaluator, state, step, size, dataset, window.diverged, seconds)


def record_missing(step: int, last_logged: Optional[int]) -> bool:
  """Whether metrics.jsonl lacks the record of checkpoint `step`, the same answer on every process.

  Process 0 alone reads metrics.jsonl (last_logged: its last step after the
  resume's truncation); the record may need an evaluation, which all take part in.
  """
  missing = jax.process_index() == 0 and (last_logged is None or last_logged < step)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    missing = bool(multihost_utils.broadcast_one_to_all(np.array(missing)))
  return missing


def check_some_member_trains(config, window: jobs.MetricWindow, last_good_step: Optional[int]) -> None:
  """One line (NonFiniteLossError) once every member of a population has diverged: nothing trains any more."""
  if config.num_seeds == 1 or len(window.diverged) < config.num_seeds:
    return
  seeds = config_lib.seeds(config).all
  which = ', '.join(f'seed {seeds[member]} at step {at}' for member, at in sorted(window.diverged.items()))
  raise jobs.NonFiniteLossError(
      f'every seed of the population diverged ({which}; loss or weights not finite): nothing is left to train. '
      f'The last checkpoint is step {last_good_step or "none"}; lower the learning rate')


def already_finished(config, workdir: str, run_lock) -> Dict[str, Any]:
  """The summary in results.json of a run that reached its last step, said in a few lines; nothing is redone."""
  if run_lock is not None:
    run_lock.release()
  summaries = [rundir.read_results(directory) for directory in rundir.member_dirs(config, workdir)]
  step = summaries[0]['step']
  if jax.process_index() == 0:
    print(f'{workdir}: already finished at step {step} (results.json); nothing to train or evaluate', flush=True)
    for summary in summaries:
      print(results_line(summary, config.num_seeds), flush=True)
  return summaries[0] if config.num_seeds == 1 else {'model': config.model, 'step': step, 'members': summaries}


def results_line(summary: Dict[str, Any], num_seeds: int) -> str:
  # A subset (config.max_eval_examples) says so: its error is not the test set's. Older results.json lack the counts.
  evaluated, split = summary.get('test_images'), summary.get('test_split_images')
  subset = f' on {evaluated:,} of {split:,} test images' if evaluated and split and evaluated < split else ''
  return (f'final test error {100 * summary["test_error"]:.2f}% (accuracy {100 * summary["test_accuracy"]:.2f}%)'
          f'{subset} at step {summary["step"]}' + (f', seed {summary["seed"]}' if num_seeds > 1 else ''))


def eval_views(mesh, config) -> List[tuple]:
  """(prefix, eval_fn, state -> evaluated state) for jobs.Evaluator: the trained weights, and with the
  recipe's test-time augmentation and weight EMA also those."""
  plain = evaluation.make_eval_fn(mesh, config.eval_batch_size, config.num_seeds)
  tta = evaluation.make_eval_fn(mesh, config.eval_batch_size, config.num_seeds, config.tta) if config.tta else None
  trained, averaged = (lambda state: state), (lambda state: state.ema())
  views = [('', plain, trained)] + ([('tta_', tta, trained)] if tta else [])
  if config.ema_decay:
    views += [('ema_', plain, averaged)] + ([('ema_tta_', tta, averaged)] if tta else [])
  return views


def frozen_members(mesh, config, window: jobs.MetricWindow, console: Optional[jobs.Console] = None,
                   newly_diverged: Optional[Dict[int, int]] = None):
  """The device mask of the members that stopped training (None for a single run); reports the new ones."""
  if config.num_seeds == 1:
    return None
  if console is not None:
    for member, step in sorted((newly_diverged or {}).items()):
      console.print(f'warning: seed {config_lib.seeds(config).all[member]} diverged at step {step} (loss or '
                    'weights not finite); it is frozen there and the other seeds go on')
  mask = np.zeros(config.num_seeds, bool)
  mask[list(window.diverged)] = True
  return devices.replicate(mesh, mask)


def start_console(config, workdir, size, dataset, start_step, total_steps):
  """(console, the step of the last record kept): writes config.json (per member too) and opens the metrics,
  dropping records after `start_step`; the first lines say what is trained where."""
  is_main = jax.process_index() == 0
  dirs, seeds = rundir.member_dirs(config, workdir), config_lib.seeds(config).all
  config_files = {workdir: config}  # A population's, and each member's: the single run it equals.
  if config.num_seeds > 1:
    config_files.update({d: config_lib.member_config(config, s) for d, s in zip(dirs, seeds)})
  if is_main:
    for directory, run_config in config_files.items():
      rundir.write_config(directory, run_config, dataset.fingerprint)
  writers = [MetricWriter(directory, enabled=is_main) for directory in dirs]
  last_logged = [writer.truncate_after(start_step) for writer in writers][0]
  console = jobs.Console(writers, total_steps, start_step, enabled=is_main)
  population = f'; {config.num_seeds} seeds {seeds[0]}-{seeds[-1]} in one program' \
      if config.num_seeds > 1 else ''
  switched_on = switches_line(config)
  num_params, macs = size
  console.print(f'{config.model}: {num_params:,} parameters, {macs / 1e6:.1f}M multiply-adds per image; '
                f'data {data.describe(dataset)}; {device_names()}; {total_steps} steps of batch {config.batch_size}'
                + population + (f'; switches: {switched_on}' if switched_on else ''))
  if start_step:
    console.print(f'resumed from checkpoint at step {start_step}')
  return console, last_logged


def switches_line(config) -> str:
  """The recipe switches that are on (switches.SWITCHES, and a recipe's own optimizer after the flip), with their
  settings, e.g. 'cutout 16, label_smoothing 0.1' ('' if none)."""
  on = switches.switched_on(config)
  inputs = [switches.describe(switch, value) for switch, value in on if switch.place in ('uint8 batch', 'augment')]
  others = [switches.describe(switch, value) for switch, value in on if switch.place not in ('uint8 batch', 'augment')]
  return ', '.join(inputs + [name for name in [optim.own_optimizer(config)] if name] + others)


def device_names() -> str:
  return f'{jax.device_count()} x {jax.devices()[0].device_kind}'


def write_results(config, workdir, console, evaluator, state, step, size, dataset, diverged,
                  seconds: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
  """results.json of every member: the final model's numbers on every split, and the run's seconds
  (jobs.RunClock: training and evaluation, and compilation beside them; a population's are the whole program's)."""
  if evaluator.results is None:  # Resumed at the end: the last evaluation was not kept.
    evaluator(state)
  summaries = []
  num_params, macs = size
  for member, (seed, directory, results) in enumerate(zip(config_lib.seeds(config).all,
                                                          rundir.member_dirs(config, workdir),
                                                          evaluator.results)):
    summary = {'model': config.model, 'step': step, 'seed': seed, 'num_params': num_params, 'macs': macs,
               'devices': device_names(),
               **{f'{name}_accuracy': r['accuracy'] for name, r in results.items()},
               **{f'{name}_error': 1.0 - r['accuracy'] for name, r in results.items()},
               **{f'{name}_loss': r['loss'] for name, r in results.items()},
               'test_per_class_accuracy': results['test']['per_class_accuracy'],
               'test_images': evaluator.splits['test'].size, 'test_split_images': len(dataset.test_labels),
               'class_names': dataset.class_names}
    if seconds is not None:
      summary.update(train_seconds=round(seconds['train'], 3), compile_seconds=round(seconds['compile'], 3))
    if member in diverged:
      summary['diverged_at_step'] = diverged[member]
    if config.num_seeds > 1:
      summary['population'] = {'workdir': os.path.abspath(workdir), 'num_seeds': config.num_seeds}
    if jax.process_index() == 0:
      rundir.write_results(directory, summary)
    console.print(results_line(summary, config.num_seeds))
    summaries.append(summary)
  return summaries[0] if config.num_seeds == 1 else {'model': config.model, 'step': step, 'members': summaries}
