"""Checks a resolved config before any work, and derives the run length."""
import math

from jaxresnet import models
from jaxresnet.errors import ConfigError

CHOICES = {
    'shortcut': ('A', 'B'),
    'optimizer': ('sgd', 'adam', 'adamw', 'rmsprop', 'adagrad'),
    'weight_decay_type': ('l2', 'decoupled'),
    'schedule': ('step', 'cosine', 'constant'),
    'lr_boundaries_unit': ('steps', 'epochs', 'fraction'),
    'warmup': ('linear', 'constant'),
    'normalization': ('pixel_mean', 'channel_mean_std'),
}


def validate(config, num_devices: int = 1) -> None:
  """Raises ConfigError, naming the field, for the first value that makes no sense."""
  if config.model not in models.MODELS:
    raise ConfigError(f'unknown model {config.model!r}; known models: {", ".join(sorted(models.MODELS))}')
  for field, allowed in CHOICES.items():
    if config[field] not in allowed:
      raise ConfigError(f'config.{field}={config[field]!r} is not one of {", ".join(allowed)}')
  if not config.dataset:
    raise ConfigError('config.dataset is empty; use a TFDS name such as cifar10, or image_folder')
  positive = ['batch_size', 'eval_batch_size', 'log_every_steps', 'checkpoints_to_keep']
  non_negative = ['learning_rate', 'weight_decay', 'momentum', 'warmup_steps', 'warmup_lr',
                  'eval_every_steps', 'checkpoint_every_steps', 'num_val_examples', 'lr_decay_factor']
  for field in positive:
    if not config[field] > 0:
      raise ConfigError(f'config.{field}={config[field]!r} must be positive')
  for field in non_negative:
    if not config[field] >= 0:  # `not >=` also catches NaN.
      raise ConfigError(f'config.{field}={config[field]!r} must not be negative')
    if not math.isfinite(config[field]):
      raise ConfigError(f'config.{field}={config[field]!r} must be finite')
  if config.num_train_steps == -1:
    if not config.num_epochs > 0:
      raise ConfigError('config.num_train_steps=-1 derives the run length from config.num_epochs, '
                        f'which must then be positive (got {config.num_epochs})')
  elif not config.num_train_steps > 0:
    raise ConfigError(f'config.num_train_steps={config.num_train_steps} must be positive, or -1 to use num_epochs')
  for field in ('batch_size', 'eval_batch_size'):
    if config[field] % num_devices:
      raise ConfigError(f'config.{field}={config[field]} is not divisible by the {num_devices} devices')
  if config.warmup_steps and config.num_train_steps > 0 and config.warmup_steps >= config.num_train_steps:
    raise ConfigError(f'config.warmup_steps={config.warmup_steps} must be below num_train_steps')
  for field in ('dropout', 'adam_b1', 'adam_b2', 'rmsprop_decay'):
    if not 0 <= config[field] < 1:
      raise ConfigError(f'config.{field}={config[field]!r} must be in [0, 1)')
  fields = models.model_fields(config.model)
  for config_field, value in (('dropout', config.dropout), ('squeeze_excitation', config.squeeze_excitation)):
    if value and models.CONFIG_TO_MODEL_FIELD[config_field] not in fields:
      having = sorted(m for m in models.MODELS
                      if models.CONFIG_TO_MODEL_FIELD[config_field] in models.model_fields(m))
      raise ConfigError(f'config.{config_field}={value!r} does not apply to model {config.model!r}; '
                        f'models that have it: {", ".join(having)}')
  if config.schedule == 'step':
    bounds = list(config.lr_boundaries)
    if bounds != sorted(bounds) or any(not b > 0 for b in bounds):
      raise ConfigError(f'config.lr_boundaries={tuple(bounds)} must be positive and increasing')


def num_train_steps(config, num_train_examples: int) -> int:
  """Run length in steps: `num_train_steps`, or `num_epochs` whole epochs if it is -1."""
  if config.batch_size > num_train_examples:
    raise ConfigError(f'config.batch_size={config.batch_size} exceeds the {num_train_examples} '
                      'training examples')
  if config.num_train_steps > 0:
    return config.num_train_steps
  return config.num_epochs * (num_train_examples // config.batch_size)
