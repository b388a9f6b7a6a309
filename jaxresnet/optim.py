"""Learning-rate schedules and optimizers, all from Optax."""
import optax

from jaxresnet.errors import ConfigError


def create_learning_rate_schedule(config, steps_per_epoch: int, num_train_steps: int) -> optax.Schedule:
  """The config's schedule, with its warm-up in front when `warmup_steps` > 0."""
  warmup = config.warmup_steps
  if config.schedule == 'step':
    to_steps = {'steps': lambda b: b, 'epochs': lambda b: b * steps_per_epoch,
                'fraction': lambda b: b * num_train_steps}[config.lr_boundaries_unit]
    main = optax.piecewise_constant_schedule(
        config.learning_rate,
        {int(round(to_steps(b))) - warmup: config.lr_decay_factor for b in config.lr_boundaries})
  elif config.schedule == 'cosine':
    main = optax.cosine_decay_schedule(config.learning_rate, max(1, num_train_steps - warmup))
  elif config.schedule == 'constant':
    main = optax.constant_schedule(config.learning_rate)
  else:
    raise ConfigError(f'unknown schedule {config.schedule!r}; known: step, cosine, constant')
  if warmup <= 0:
    return main
  if config.warmup == 'linear':
    ramp = optax.linear_schedule(config.warmup_lr, config.learning_rate, warmup)
  else:  # 'constant': the paper's ResNet-110 trick, a small lr for the first steps.
    ramp = optax.constant_schedule(config.warmup_lr)
  return optax.join_schedules([ramp, main], [warmup])


def create_optimizer(config, learning_rate: optax.Schedule) -> optax.GradientTransformation:
  """SGD with momentum; weight decay is L2 added to the gradient, as in the paper."""
  if config.optimizer != 'sgd':
    raise ConfigError(f'unknown optimizer {config.optimizer!r}; known: sgd')
  return optax.chain(
      optax.add_decayed_weights(config.weight_decay),
      optax.sgd(learning_rate, momentum=config.momentum or None, nesterov=config.nesterov))
