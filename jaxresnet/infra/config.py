"""Checks a resolved config before any work, derives the run length, and says which fields are its recipe."""
import json
import math
from typing import Any, Dict, List, Sequence, Tuple

from jaxresnet import models
from jaxresnet.training import switches
from jaxresnet.infra.errors import ConfigError

CHOICES = {
    'shortcut': ('A', 'B'),
    'optimizer': ('sgd', 'adam', 'adamw', 'rmsprop', 'adagrad'),
    'weight_decay_type': ('l2', 'decoupled'),
    'schedule': ('step', 'cosine', 'constant'),
    'lr_boundaries_unit': ('steps', 'epochs', 'fraction'),
    'warmup': ('linear', 'constant'),
    'normalization': ('pixel_mean', 'channel_mean_std'),
    'tta': switches.TTA_MODES,
}
# jax.random.PRNGKey(seed) keeps the seed's low 32 bits when x64 is off (the default): 2**32 gives
# seed 0's key, -1 seed 4294967295's. Seeds beyond this range are refused rather than repeated.
MAX_SEED = 2**32 - 1


def validate(config, num_devices: int = 1) -> None:
  """Raises ConfigError, naming the field, for the first value that makes no sense."""
  if config.model not in models.MODELS:
    raise ConfigError(f'unknown model {config.model!r}; known models: {", ".join(sorted(models.MODELS))}')
  for field, allowed in CHOICES.items():
    if config[field] not in allowed:
      raise ConfigError(f'config.{field}={config[field]!r} is not one of {", ".join(allowed)}')
  if not config.dataset:
    raise ConfigError('config.dataset is empty; use a TFDS name such as cifar10, or image_folder')
  if isinstance(config.num_seeds, bool) or not isinstance(config.num_seeds, int) or config.num_seeds < 1:
    raise ConfigError(f'config.num_seeds={config.num_seeds!r} must be a whole number of at least 1')
  if isinstance(config.seed, bool) or not isinstance(config.seed, int):
    raise ConfigError(f'config.seed={config.seed!r} must be a whole number')
  last_seed = config.seed + config.num_seeds - 1
  if config.seed < 0 or last_seed > MAX_SEED:
    members = f' (with num_seeds={config.num_seeds}, seeds up to {last_seed})' if config.num_seeds > 1 else ''
    raise ConfigError(f'config.seed={config.seed}{members}: seeds must be whole numbers from 0 to {MAX_SEED}; '
                      'JAX keeps 32 bits of a seed, so a larger one would train what a smaller one trains')
  positive = ['batch_size', 'eval_batch_size', 'log_every_steps', 'checkpoints_to_keep']
  non_negative = ['learning_rate', 'weight_decay', 'momentum', 'warmup_steps', 'warmup_lr',
                  'eval_every_steps', 'checkpoint_every_steps', 'num_val_examples', 'lr_decay_factor',
                  'max_eval_examples']
  for field in positive:
    if not config[field] > 0:
      raise ConfigError(f'config.{field}={config[field]!r} must be positive')
  for field in non_negative:
    if not math.isfinite(config[field]):  # First: NaN is neither negative nor not.
      raise ConfigError(f'config.{field}={config[field]!r} must be a finite number')
    if not config[field] >= 0:
      raise ConfigError(f'config.{field}={config[field]!r} must not be negative')
  if config.num_train_steps == -1:
    if not config.num_epochs > 0:
      raise ConfigError('config.num_train_steps=-1 derives the run length from config.num_epochs, '
                        f'which must then be positive (got {config.num_epochs})')
  elif not config.num_train_steps > 0:
    raise ConfigError(f'config.num_train_steps={config.num_train_steps} must be positive, or -1 to use num_epochs')
  # A population splits its members over math.gcd(num_seeds, devices) of the devices (devices.make_mesh),
  # and each member's batch over the rest.
  data_devices = num_devices // math.gcd(config.num_seeds, num_devices)
  for field in ('batch_size', 'eval_batch_size'):
    if config[field] % data_devices:
      split = (f' (with num_seeds={config.num_seeds}, each seed\'s batch is split over {data_devices} of them)'
               if data_devices != num_devices else '')
      raise ConfigError(f'config.{field}={config[field]} is not divisible by the {num_devices} devices{split}')
  if config.warmup_steps and config.num_train_steps > 0 and config.warmup_steps >= config.num_train_steps:
    raise ConfigError(f'config.warmup_steps={config.warmup_steps} must be below num_train_steps')
  for field in ('dropout', 'adam_b1', 'adam_b2', 'rmsprop_decay', 'label_smoothing', 'ema_decay'):
    if not 0 <= config[field] < 1:
      raise ConfigError(f'config.{field}={config[field]!r} must be in [0, 1)')
  for field in ('cutout', 'mixup_alpha', 'cutmix_alpha', 'sam_rho'):
    if not 0 <= config[field] < math.inf:  # Also catches NaN.
      raise ConfigError(f'config.{field}={config[field]!r} must be a finite number >= 0 (0 is off)')
  switches.parse_policy(config.randaugment)  # One line naming the accepted forms.
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
    if config.lr_boundaries_unit == 'fraction' and any(not 0 < b < 1 for b in bounds):
      raise ConfigError(f'config.lr_boundaries={tuple(bounds)} are fractions of the run '
                        "(lr_boundaries_unit='fraction') and must be between 0 and 1, e.g. (0.5, 0.75)")


def num_train_steps(config, num_train_examples: int) -> int:
  """Run length in steps: `num_train_steps`, or `num_epochs` whole epochs if it is -1."""
  if config.batch_size > num_train_examples:
    raise ConfigError(f'config.batch_size={config.batch_size} exceeds the {num_train_examples} '
                      'training examples')
  if config.num_train_steps > 0:
    return config.num_train_steps
  return config.num_epochs * (num_train_examples // config.batch_size)


def fitted_eval_batch_size(config, split_sizes: Sequence[int], num_devices: int) -> int:
  """config.eval_batch_size, capped at the largest split (rounded up to whole devices).

  A bigger batch would only evaluate padding, and could run out of memory
  (eval_batch_size=100000 on a 10,000-image test split); the results are the
  same whatever the batch size, so it is capped rather than refused.
  """
  largest = max([size for size in split_sizes if size] or [1])
  return min(config.eval_batch_size, -(-largest // num_devices) * num_devices)


def fit_to_splits(config, dataset, num_devices: int):
  """The config of a run on `dataset`, with eval_batch_size fitted to its evaluated splits (a copy if changed)."""
  size = fitted_eval_batch_size(config, [len(dataset.val_labels), len(dataset.test_labels)], num_devices)
  if size == config.eval_batch_size:
    return config
  fitted = config.copy_and_resolve_references()
  fitted.eval_batch_size = size
  return fitted


# --------------------------------------------------------------------------
# The recipe: the fields that decide what a run trains.

# Fields that may change between the sessions of one run, or between runs of one experiment:
# where the data and files are, how often to log, evaluate and save, how to react to trouble.
# None of them changes a trained weight. Every other field is the run's recipe: a resume
# refuses a checkpoint whose recipe differs (checkpoints.check_same_run), and so does
# `reproduce` for a run directory.
BOOKKEEPING_FIELDS = ('data_dir', 'cache_dir', 'eval_batch_size', 'eval_every_steps', 'log_every_steps',
                      'checkpoint_every_steps', 'checkpoints_to_keep', 'allow_fresh_start',
                      # Only what happens to an update that is not finite: a diverged run may resume with it.
                      'skip_nonfinite_updates')
# The run's length is part of its recipe only where the schedule depends on it (cosine, or lr
# boundaries as fractions of the run); otherwise a longer run continues the shorter one exactly,
# so a finished run can be extended by resuming it with more steps.
RUN_LENGTH_FIELDS = ('num_train_steps', 'num_epochs')


def _json_values(config) -> Dict[str, Any]:
  """A config (ConfigDict or a config.json dict) as JSON values: tuples become lists."""
  values = config.to_dict() if hasattr(config, 'to_dict') else dict(config)
  return json.loads(json.dumps(values, sort_keys=True, default=str))


def schedule_depends_on_length(values: Dict[str, Any]) -> bool:
  return values.get('schedule') == 'cosine' or (
      values.get('schedule') == 'step' and values.get('lr_boundaries_unit') == 'fraction')


def recipe(config) -> Dict[str, Any]:
  """The config's recipe fields and their values (JSON): everything but BOOKKEEPING_FIELDS."""
  return {field: value for field, value in _json_values(config).items() if field not in BOOKKEEPING_FIELDS}


def recipe_differences(theirs: Dict[str, Any], mine: Dict[str, Any]) -> List[Tuple[str, Any, Any]]:
  """(field, their value, my value) for each recipe field in which two configs (or recipes) differ.

  A field that `theirs` lacks (added to configs/default.py since it was
  written) counts as having its default value; one only `theirs` has (since
  removed) is ignored. The run length is compared only where the schedule
  depends on it (RUN_LENGTH_FIELDS).
  """
  from jaxresnet.configs import default  # pylint: disable=g-import-not-at-top
  defaults = _json_values(default.get_config())
  theirs, mine = _json_values(theirs), _json_values(mine)
  ignored = set(BOOKKEEPING_FIELDS)
  if not schedule_depends_on_length(mine):
    ignored |= set(RUN_LENGTH_FIELDS)
  missing = object()
  differences = []
  for field in sorted(mine):
    if field in ignored:
      continue
    there = theirs.get(field, defaults.get(field, missing))
    if there is not missing and there != mine[field]:
      differences.append((field, there, mine[field]))
  return differences
