"""Learning-rate schedules and optimizers, all from Optax.

The config's choices (schedule, optimizer, ...) were checked by config.validate.
"""
from typing import Callable, Dict, Optional

import optax

from jaxresnet.infra import config as config_lib
from jaxresnet.infra.errors import ConfigError
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


# Each optimizer's update direction, before the weight decay and the learning rate join it (create_optimizer).
DIRECTIONS: Dict[str, Callable[..., optax.GradientTransformation]] = {
    'sgd': lambda config: (optax.trace(decay=config.momentum, nesterov=config.nesterov) if config.momentum
                           else optax.identity()),
    'adam': lambda config: optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2),
    'adamw': lambda config: optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2),
    'rmsprop': lambda config: optax.scale_by_rms(decay=config.rmsprop_decay),
    'adagrad': lambda config: optax.scale_by_rss(),
}
ALWAYS_DECOUPLED = frozenset({'adamw'})  # Their weight decay is decoupled whatever config.weight_decay_type says.


def with_weight_decay(config, learning_rate: optax.Schedule) -> optax.GradientTransformation:
  """The optimizer of DIRECTIONS[config.optimizer] with the config's weight decay.

  'l2' (default) adds weight_decay * params to the gradient before the optimizer,
  as the paper's SGD and PyTorch's `weight_decay` argument do. 'decoupled' adds it
  after the optimizer's direction, so it is only scaled by the learning rate:
  AdamW (Loshchilov & Hutter 2019), or SGDW for sgd. adamw is always decoupled.
  The same structure as optax.sgd/optax.adamw, so results match them exactly.
  """
  direction = DIRECTIONS[config.optimizer](config)
  if config.optimizer in ALWAYS_DECOUPLED or config.weight_decay_type == 'decoupled':
    return optax.chain(direction, optax.add_decayed_weights(config.weight_decay),
                       optax.scale_by_learning_rate(learning_rate))
  return optax.chain(optax.add_decayed_weights(config.weight_decay),
                     optax.chain(direction, optax.scale_by_learning_rate(learning_rate)))


# name -> factory(config, learning-rate schedule, steps per epoch, batch size): every config.optimizer. A recipe's own
# optimizer with parameter groups (fast94's Muon) comes from its module's OPTIMIZERS.
OPTIMIZERS: Dict[str, Callable[..., optax.GradientTransformation]] = {
    **{name: lambda config, learning_rate, steps_per_epoch, batch_size: with_weight_decay(config, learning_rate)
       for name in DIRECTIONS},
    **fast94.OPTIMIZERS,
}


# config.optimizer -> the only nets it can train (an optimizer of parameter groups that only they have).
OPTIMIZER_MODELS = {**fast94.OPTIMIZER_MODELS}


@config_lib.library_check
def check_config(config) -> None:
  """One line (ConfigError) where the optimizer labels parameter groups that config.model does not have."""
  models = OPTIMIZER_MODELS.get(config.optimizer)
  if models is not None and config.model not in models:
    raise ConfigError(f"config.optimizer={config.optimizer!r} trains {' or '.join(models)}'s parameter groups; "
                      f'config.model={config.model!r} has none of them (use sgd, adam, ...)')


def own_optimizer(config) -> str:
  """config.optimizer where it is a recipe's own (one of the switches the start line names), else ''."""
  return config.optimizer if config.optimizer in fast94.OPTIMIZERS else ''


def create_optimizer(config, learning_rate: optax.Schedule, steps_per_epoch: int = 1,
                     batch_size: Optional[int] = None) -> optax.GradientTransformation:
  """The config's optimizer (OPTIMIZERS). The run's `steps_per_epoch` and `batch_size` (train.build) are for the
  optimizers that need them: fast94's Muon trains the whitening bias for some epochs and its rates are per example."""
  return OPTIMIZERS[config.optimizer](config, learning_rate, steps_per_epoch, batch_size)
