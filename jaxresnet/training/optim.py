"""Learning-rate schedules and optimizers, all from Optax.

The config's choices (schedule, optimizer, ...) were checked by config.validate.
"""
import optax

from jaxresnet.infra import config as config_lib
from jaxresnet.training import fast94


def create_learning_rate_schedule(config, steps_per_epoch: int, num_train_steps: int) -> optax.Schedule:
  """The config's schedule, with its warm-up in front when `warmup_steps` > 0 (durations: config_lib.steps_for)."""
  steps = config_lib.steps_for(config, steps_per_epoch, num_train_steps)
  warmup = steps.warmup_steps
  if config.schedule == 'step':
    main = optax.piecewise_constant_schedule(
        config.learning_rate, {b - warmup: config.lr_decay_factor for b in steps.lr_boundaries})
  elif config.schedule == 'cosine':
    main = optax.cosine_decay_schedule(config.learning_rate, max(1, num_train_steps - warmup))
  elif config.schedule == 'linear':
    main = optax.linear_schedule(config.learning_rate, 0.0, max(1, num_train_steps - warmup))
  else:  # 'constant'
    main = optax.constant_schedule(config.learning_rate)
  if warmup <= 0:
    return main
  if config.warmup == 'linear':
    ramp = optax.linear_schedule(config.warmup_lr, config.learning_rate, warmup)
  else:  # 'constant': the paper's ResNet-110 trick, a small lr for the first steps.
    ramp = optax.constant_schedule(config.warmup_lr)
  return optax.join_schedules([ramp, main], [warmup])


def _direction(config) -> optax.GradientTransformation:
  """What the optimizers differ in: the update direction before the learning rate scales it."""
  if config.optimizer == 'sgd':
    return optax.trace(decay=config.momentum, nesterov=config.nesterov) if config.momentum else optax.identity()
  if config.optimizer in ('adam', 'adamw'):
    return optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2)
  if config.optimizer == 'rmsprop':
    return optax.scale_by_rms(decay=config.rmsprop_decay)
  return optax.scale_by_rss()  # 'adagrad'


def create_optimizer(config, learning_rate: optax.Schedule, steps_per_epoch: int = 1) -> optax.GradientTransformation:
  """The config's optimizer, with its weight decay.

  'airbench_muon' is fast94's parameter-group optimizer (training/fast94.py); `steps_per_epoch`
  sets how long it trains the whitening bias.

  'l2' (default) adds weight_decay * params to the gradient before the optimizer,
  as the paper's SGD and PyTorch's `weight_decay` argument do. 'decoupled' adds it
  after the optimizer's direction, so it is only scaled by the learning rate:
  AdamW (Loshchilov & Hutter 2019), or SGDW for sgd. adamw is always decoupled.
  The same structure as optax.sgd/optax.adamw, so results match them exactly.
  """
  if config.optimizer == 'airbench_muon':
    return fast94.optimizer_from_config(config, learning_rate, steps_per_epoch)
  direction = _direction(config)
  if config.optimizer == 'adamw' or config.weight_decay_type == 'decoupled':
    return optax.chain(direction, optax.add_decayed_weights(config.weight_decay),
                       optax.scale_by_learning_rate(learning_rate))
  return optax.chain(optax.add_decayed_weights(config.weight_decay),
                     optax.chain(direction, optax.scale_by_learning_rate(learning_rate)))
