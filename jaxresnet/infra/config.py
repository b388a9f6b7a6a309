"""The config's schema, declared once: every field's default, meaning, kind and check; and what follows from it.

FIELDS below is the one list of the config's fields. configs/default.py is its
defaults (`default_config()`), and every configs/<model>.py starts from there.
Each field has a kind:

  * recipe: decides what a run trains. A resumed run, or a reproduction
    resuming a run directory, refuses a config whose recipe differs
    (`recipe_differences`, the "same run" rule).
  * identity: which net the checkpoint holds and how many members (model,
    shortcut, num_seeds); compared like the recipe, and checked first.
  * bookkeeping: where the files are, how often to log, evaluate and save,
    what to do about trouble. May change between the sessions of a run.

Durations have one convention. Every field counted in time (num_train_steps,
warmup_steps, each of lr_boundaries, log_every_steps, eval_every_steps,
checkpoint_every_steps) is a whole number of steps, or a string with its unit:
'<x> epochs' (passes over the training split) or '<x>%' (a share of the run).
`--config.num_train_steps='200 epochs' --config.lr_boundaries="('50%','75%')"`.
`steps()` turns them into steps once the training set's size is known, and
`scale_durations()` scales them all (reproduce --steps_scale).

Files written by older versions name two fields that are gone (num_epochs with
num_train_steps=-1, and lr_boundaries_unit); `upgrade()` maps them, and the
same-run rule reads every old config.json and checkpoint through it.
"""
import dataclasses
import json
import math
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from jaxresnet.infra.errors import ConfigError

RECIPE, IDENTITY, BOOKKEEPING = 'recipe', 'identity', 'bookkeeping'

# jax.random.PRNGKey(seed) keeps the seed's low 32 bits when x64 is off (the default): 2**32 gives
# seed 0's key, -1 seed 4294967295's. Seeds beyond this range are refused rather than repeated.
MAX_SEED = 2**32 - 1


# --------------------------------------------------------------------------
# Durations: a whole number of steps, '<x> epochs' or '<x>%' of the run.

STEPS, EPOCHS, SHARE = 'steps', 'epochs', '%'
_DURATION = re.compile(r'\s*(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)\s*'
                       r'(steps?|epochs?|%)?\s*', re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Duration:
  """A duration as written in a config: an amount and its unit (STEPS, EPOCHS or SHARE of the run)."""
  amount: float
  unit: str

  def steps(self, steps_per_epoch: int, run_steps: Optional[int]) -> int:
    """In steps, rounded to the nearest; a share needs the run's length."""
    if self.unit == STEPS:
      return int(self.amount)
    if self.unit == EPOCHS:
      return int(round(self.amount * steps_per_epoch))
    return int(round(self.amount / 100 * run_steps))

  def value(self):
    """As written in a config: an int for steps, else the string with its unit."""
    if self.unit == STEPS:
      return int(self.amount)
    text = f'{self.amount:.12g}'  # 12 digits: exact for any amount typed by hand, and no 0.30000000000000004.
    return f'{text}%' if self.unit == SHARE else f'{text} epochs'


def parse_duration(value) -> Optional[Duration]:
  """The Duration a config value means, or None if it is not one (a bool, a negative number, 'x epochs', ...)."""
  if isinstance(value, bool):
    return None
  if isinstance(value, int):
    return Duration(float(value), STEPS) if value >= 0 else None
  if not isinstance(value, str):
    return None
  match = _DURATION.fullmatch(value)
  if not match:
    return None
  amount, unit = float(match.group(1)), (match.group(2) or STEPS).lower()
  unit = SHARE if unit == '%' else STEPS if unit.startswith('step') else EPOCHS
  if not math.isfinite(amount) or (unit == STEPS and amount != int(amount)):
    return None
  return Duration(amount, unit)


def in_steps(value, steps_per_epoch: int, run_steps: Optional[int] = None) -> int:
  """A config duration in steps."""
  duration = parse_duration(value)
  if duration is None:
    raise ConfigError(f"{value!r} is not a duration: give a whole number of steps, '<x> epochs' or '<x>%' of the run")
  return duration.steps(steps_per_epoch, run_steps)


def scaled_duration(value, factor: float):
  """A config duration times `factor`, written in its own unit: steps stay whole (at least 1 unless 0), a
  number of epochs scales, a share of the run scales with the run by itself."""
  duration = parse_duration(value)
  if duration.unit == STEPS:
    return 0 if duration.amount == 0 else max(1, int(round(duration.amount * factor)))
  if duration.unit == EPOCHS:
    return Duration(duration.amount * factor, EPOCHS).value()
  return value


# --------------------------------------------------------------------------
# Checks: each raises ConfigError naming the field and its value, or returns.

Check = Callable[[str, Any], None]


def _refuse(name: str, value, problem: str):
  raise ConfigError(f'config.{name}={value!r} {problem}')


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def boolean(name, value):
  if not isinstance(value, bool):
    _refuse(name, value, 'must be True or False')


def text(name, value):
  if not isinstance(value, str):
    _refuse(name, value, 'must be a string')


def one_of(*choices) -> Check:
  def check(name, value):
    if not isinstance(value, str) or value not in choices:
      _refuse(name, value, f'is not one of {", ".join(choices)}')
  check.choices = choices
  return check


def positive(name, value):
  if not _is_number(value) or not value > 0:  # `not >` also catches NaN.
    _refuse(name, value, 'must be positive')


def whole(at_least: int, problem: str = '') -> Check:
  def check(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < at_least:
      _refuse(name, value, problem or f'must be a whole number of at least {at_least}')
  return check


def non_negative(name, value):
  if not _is_number(value) or not math.isfinite(value):  # First: NaN is neither negative nor not.
    _refuse(name, value, 'must be a finite number')
  if not value >= 0:
    _refuse(name, value, 'must not be negative')


def below_one(name, value):
  if not _is_number(value) or not 0 <= value < 1:
    _refuse(name, value, 'must be in [0, 1)')


def off_or_positive(name, value):
  if not _is_number(value) or not 0 <= value < math.inf:  # Also catches NaN.
    _refuse(name, value, 'must be a finite number >= 0 (0 is off)')


_DURATION_FORMS = {(STEPS, EPOCHS): "a whole number of steps, or '<x> epochs'",
                   (STEPS, EPOCHS, SHARE): "a whole number of steps, '<x> epochs' or '<x>%' of the run"}


def duration(units=(STEPS, EPOCHS, SHARE), zero: bool = True) -> Check:
  """A duration in one of `units`; 0 allowed only with `zero`."""
  def check(name, value):
    parsed = parse_duration(value)
    if parsed is None or parsed.unit not in units:
      _refuse(name, value, f'is not a duration: give {_DURATION_FORMS[units]}')
    if not zero and parsed.amount == 0:
      _refuse(name, value, f'must be positive ({_DURATION_FORMS[units]})')
    if parsed.unit == SHARE and not parsed.amount < 100:
      _refuse(name, value, 'is a share of the run, which must be below 100%')
  check.duration = True
  return check


def boundaries(name, value):
  """lr_boundaries: a tuple of positive durations, increasing where they share a unit."""
  if not isinstance(value, (tuple, list)):
    _refuse(name, value, "must be a tuple of durations, e.g. (32000, 48000) or ('50%', '75%')")
  check = duration()
  parsed = []
  for bound in value:
    check(name, bound)
    parsed.append(parse_duration(bound))
  for unit in (STEPS, EPOCHS, SHARE):
    amounts = [d.amount for d in parsed if d.unit == unit]
    if amounts != sorted(amounts) or any(not a > 0 for a in amounts):
      _refuse(name, tuple(value), 'must be positive and increasing')
    if unit == SHARE and any(not 0 < a < 100 for a in amounts):
      _refuse(name, tuple(value), 'are shares of the run and must be between 0% and 100%, e.g. (\'50%\', \'75%\')')


boundaries.duration = True


def model_name(name, value):
  """Non-empty text; whether the zoo has it is the zoo's check (models registers it, see library_check)."""
  text(name, value)
  if not value:
    _refuse(name, value, "must name a model, e.g. 'resnet20' (python -m jaxresnet.models lists them)")


def dataset_name(name, value):
  text(name, value)
  if not value:
    raise ConfigError('config.dataset is empty; use a TFDS name such as cifar10, or image_folder')


def seed_check(name, value):
  if not isinstance(value, int) or isinstance(value, bool):
    _refuse(name, value, 'must be a whole number')


# --------------------------------------------------------------------------
# The schema.


@dataclasses.dataclass(frozen=True)
class Field:
  name: str
  default: Any
  kind: str  # RECIPE, IDENTITY or BOOKKEEPING.
  check: Check
  meaning: str
  model_field: Optional[str] = None  # The model's field it sets (models.from_config), for the models that have it.

  @property
  def is_duration(self) -> bool:
    return getattr(self.check, 'duration', False)


# The config's fields, in the order of configs/default.py's sections.
FIELDS = (
    # The model.
    Field('model', 'resnet20', IDENTITY, model_name,
          "A name from jaxresnet.models.MODELS, e.g. 'resnet20' or 'plain56' (python -m jaxresnet.models lists them)."),
    Field('shortcut', 'A', IDENTITY, one_of('A', 'B'),
          "'A': zero-padded identity (the paper's, for CIFAR); 'B': 1x1 projection.", model_field='shortcut'),
    Field('half_precision', False, RECIPE, boolean, 'bf16 compute; parameters and BatchNorm statistics stay fp32.'),
    Field('dropout', 0.0, RECIPE, below_one, 'Dropout before the classifier (resnet18*, *_5m nets only).',
          model_field='dropout_rate'),
    Field('squeeze_excitation', False, RECIPE, boolean, 'Squeeze-excitation in every block (resnet18*, *_5m only).',
          model_field='squeeze_excitation'),
    # The data.
    Field('dataset', 'cifar10', RECIPE, dataset_name, "A TFDS name ('cifar10', 'cifar100') or 'image_folder'."),
    Field('data_dir', '', BOOKKEEPING, text,
          'TFDS data dir, or the image folder (or its .tar.gz/.tgz/.tar/.tar.bz2/.tar.xz/.zip archive) holding '
          'train/ and test/.'),
    Field('cache_dir', '', BOOKKEEPING, text,
          'Where decoded arrays are cached, as <dataset>-<fingerprint>.npz (the fingerprint follows the source\'s '
          "files). '' = $JAXRESNET_CACHE_DIR, else $XDG_CACHE_HOME/jaxresnet, else ~/.cache/jaxresnet."),
    Field('num_val_examples', 5000, RECIPE, whole(0), 'Held out of the training split (45k/5k in the paper).'),
    Field('augment', True, RECIPE, boolean, 'Pad by crop_padding, crop back at random, and mirror (see flip).'),
    Field('crop_padding', 4, RECIPE, whole(0), 'How far the random crop may move an image, in pixels.'),
    Field('crop_padding_mode', 'constant', RECIPE, one_of('constant', 'reflect'),
          "What fills the padding: 'constant' zeros (the paper's), or 'reflect' (airbench's)."),
    Field('flip', 'random', RECIPE, one_of('random', 'alternating'),
          "'random': each image mirrored with probability 1/2 at every step; 'alternating' (airbench): at random "
          'in the first epoch, then each image the other way round every epoch.'),
    Field('normalization', 'pixel_mean', RECIPE, one_of('pixel_mean', 'channel_mean_std'),
          "'pixel_mean' (the paper's per-pixel mean) or 'channel_mean_std' (torchvision's Normalize)."),
    # Recipe switches (training/switches.py), all off: the paper's recipe is crop + flip only. Each runs
    # inside the jitted step from the step's keys, so a resumed run stays bit-identical.
    Field('randaugment', '', RECIPE, text,
          "'' off; 'N,M': RandAugment, N ops at magnitude M (0-10); 'autoaugment': the CIFAR-10 policy."),
    Field('cutout', 0, RECIPE, off_or_positive,
          'Side in pixels of the square set to the mean (DeVries & Taylor 2017); 0 is off.'),
    Field('mixup_alpha', 0.0, RECIPE, off_or_positive, "Mixup's Beta(alpha, alpha) (Zhang et al. 2018); 0 is off."),
    Field('cutmix_alpha', 0.0, RECIPE, off_or_positive,
          "CutMix's Beta(alpha, alpha) (Yun et al. 2019); with mixup too, one of them per batch at random."),
    Field('label_smoothing', 0.0, RECIPE, below_one, 'Targets (1 - e) y + e / K (Szegedy et al. 2016).'),
    Field('sam_rho', 0.0, RECIPE, off_or_positive,
          "SAM's neighbourhood radius (Foret et al. 2021) around the optimizer; 0 is off."),
    Field('ema_decay', 0.0, RECIPE, below_one,
          'EMA of the weights and BatchNorm statistics, decay per step; 0 is off. The EMA model is evaluated '
          'and checkpointed beside the trained one (ema_* in metrics and results).'),
    Field('tta', '', RECIPE, one_of('', 'flip', 'flip_translate'),
          "Test-time augmentation of evaluation: '' off, 'flip' (image and mirror), 'flip_translate' "
          "(airbench's: also 1-pixel shifts); reported as *_tta_* beside the plain numbers."),
    # The optimizer and its schedule.
    Field('batch_size', 128, RECIPE, whole(1, 'must be positive'),
          'The batch of a run (of each member of a population), split over the devices.'),
    Field('optimizer', 'sgd', RECIPE, one_of('sgd', 'adam', 'adamw', 'rmsprop', 'adagrad', 'airbench_muon'),
          "'sgd', 'adam', 'adamw', 'rmsprop', 'adagrad' (training/optim.py), or 'airbench_muon' (whitened_vgg "
          'only, training/fast94.py): Muon at learning_rate on the 3x3 filters, Nesterov SGD with momentum on the '
          "biases and the head at airbench's rates scaled alike, weight_decay per example as airbench's wd."),
    Field('momentum', 0.9, RECIPE, non_negative, 'sgd only.'),
    Field('nesterov', False, RECIPE, boolean, 'sgd only.'),
    Field('adam_b1', 0.9, RECIPE, below_one, 'adam and adamw.'),
    Field('adam_b2', 0.999, RECIPE, below_one, 'adam and adamw.'),
    Field('rmsprop_decay', 0.9, RECIPE, below_one, 'rmsprop: decay of the squared-gradient average.'),
    Field('learning_rate', 0.1, RECIPE, non_negative, 'The peak learning rate.'),
    Field('weight_decay', 1e-4, RECIPE, non_negative, 'See weight_decay_type.'),
    Field('weight_decay_type', 'l2', RECIPE, one_of('l2', 'decoupled'),
          "'l2': weight_decay * params added to the gradient (the paper's SGD; equals L2 in the loss); "
          "'decoupled': added after the optimizer, scaled by the learning rate (AdamW, SGDW). adamw is always "
          'decoupled.'),
    Field('schedule', 'step', RECIPE, one_of('step', 'cosine', 'linear', 'constant'),
          "'step' (lr_boundaries), 'cosine' or 'linear' (to 0 at the end of the run), or 'constant'."),
    Field('lr_boundaries', (32000, 48000), RECIPE, boundaries,
          "'step' schedule: the durations after which the learning rate is multiplied by lr_decay_factor."),
    Field('lr_decay_factor', 0.1, RECIPE, non_negative, "'step' schedule: see lr_boundaries."),
    Field('warmup_steps', 0, RECIPE, duration(),
          'How long the learning rate warms up (a duration), before the schedule; 0 is none.'),
    Field('warmup', 'linear', RECIPE, one_of('linear', 'constant'),
          "'linear' ramp from warmup_lr, or 'constant' warmup_lr (the paper's ResNet-110)."),
    Field('warmup_lr', 0.0, RECIPE, non_negative, 'Where the warm-up starts (linear) or stays (constant).'),
    # The run's length. Part of the recipe only where the schedule depends on it (cosine, or a share
    # of the run in the boundaries or warm-up); otherwise a longer run continues a shorter one exactly.
    Field('num_train_steps', 64000, RECIPE, duration((STEPS, EPOCHS), zero=False),
          "The run's length: steps (64000, the paper's), or epochs ('200 epochs')."),
    # Logging, evaluation and checkpoints.
    Field('log_every_steps', 100, BOOKKEEPING, duration(zero=False),
          'How often a line goes to metrics.jsonl; between lines a heartbeat line comes at least every 30 s '
          '(jaxresnet/infra/heartbeat.py).'),
    Field('eval_every_steps', 2000, BOOKKEEPING, duration(), 'How often to evaluate; 0 = only at the end.'),
    Field('eval_batch_size', 1000, BOOKKEEPING, whole(1, 'must be positive'),
          'Capped at the largest evaluated split (bigger would only add padding).'),
    Field('max_eval_examples', 0, RECIPE, whole(0),
          'Evaluate at most this many images of each split (validation, test): a fixed, evenly spaced subset, '
          'for quick smoke runs (reproduce evaluates 1000 when --steps_scale < 1). 0 = every image. Its numbers '
          "are not comparable with a whole split's; a resumed run keeps it."),
    Field('checkpoint_every_steps', 2000, BOOKKEEPING, duration(), 'How often to save; 0 = only at the end.'),
    Field('checkpoints_to_keep', 3, BOOKKEEPING, whole(1, 'must be positive'),
          'The newest checkpoints kept in WORKDIR/checkpoints.'),
    Field('allow_fresh_start', False, BOOKKEEPING, boolean,
          'When every checkpoint in the workdir is unreadable (moved to WORKDIR/unreadable_checkpoints/): False '
          'stops the run with one line; True starts it over from step 0.'),
    Field('allow_data_change', False, BOOKKEEPING, boolean,
          'When a resumed checkpoint was trained on other data than data_dir holds now (its fingerprint, a hash '
          'of the decoded splits, differs): False stops the run with one line naming both; True goes on with '
          "this data and records the change in config.json's data_changes."),
    Field('skip_nonfinite_updates', False, BOOKKEEPING, boolean,
          'When the loss turns NaN/inf: False stops the run (the last good checkpoint stays); True drops such '
          'updates and counts them (skipped_updates in the log). Only what happens to an update that is not '
          'finite: a diverged run may resume with it.'),
    # Seeds.
    Field('seed', 0, RECIPE, seed_check, 'The run\'s seed: its initialization, example order and augmentation.'),
    Field('num_seeds', 1, IDENTITY, whole(1),
          'A population: train the runs of seeds seed, seed+1, ..., seed+num_seeds-1 together, in one compiled '
          'step (a members axis on the train state; batch_size is per member). Each member computes what its '
          'seed computes alone, and writes WORKDIR/seed<k>/{metrics.jsonl,results.json}; a member that diverges '
          'is frozen and the others go on. 1 = a single run in WORKDIR.'),
)
SCHEMA: Dict[str, Field] = {field.name: field for field in FIELDS}

# The lists other modules used to keep by hand, read off the schema.
BOOKKEEPING_FIELDS = tuple(f.name for f in FIELDS if f.kind == BOOKKEEPING)
IDENTITY_FIELDS = tuple(f.name for f in FIELDS if f.kind == IDENTITY)
DURATION_FIELDS = tuple(f.name for f in FIELDS if f.is_duration)
CHOICES = {f.name: f.check.choices for f in FIELDS if hasattr(f.check, 'choices')}
MODEL_FIELDS = {f.name: f.model_field for f in FIELDS if f.model_field}  # Config field -> the model's field.
RUN_LENGTH_FIELDS = ('num_train_steps',)

# Fields of older versions, and what took their place (upgrade() maps files that still have them).
RETIRED_FIELDS = {
    'num_epochs': "the run's length in epochs is now --config.num_train_steps='<N> epochs'",
    'lr_boundaries_unit': "each boundary now carries its unit: --config.lr_boundaries=\"('100 epochs', "
                          "'150 epochs')\" or \"('50%', '75%')\" (steps: plain numbers)",
}


def default_config():
  """The default config, as configs/default.py gives it: every field of FIELDS at its default."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict()
  for field in FIELDS:
    if field.is_duration and not isinstance(field.default, tuple):
      # Typed `object`, so an override may be steps (an int) or a string with a unit.
      config[field.name] = ml_collections.FieldReference(field.default, field_type=object)
    else:
      config[field.name] = field.default
  return config


def describe(name: str) -> str:
  """'name (kind, default ...): meaning' for one field."""
  field = SCHEMA[name]
  return f'{field.name} ({field.kind}, default {field.default!r}): {field.meaning}'


# --------------------------------------------------------------------------
# Validation.


def validate(config, num_devices: int = 1) -> None:
  """Raises ConfigError, naming the field, for the first value that makes no sense."""
  for name, hint in RETIRED_FIELDS.items():
    if name in config:
      raise ConfigError(f'config.{name} is no longer a field: {hint}')
  for field in FIELDS:
    field.check(field.name, config[field.name])
  last_seed = config.seed + config.num_seeds - 1
  if config.seed < 0 or last_seed > MAX_SEED:
    members = f' (with num_seeds={config.num_seeds}, seeds up to {last_seed})' if config.num_seeds > 1 else ''
    raise ConfigError(f'config.seed={config.seed}{members}: seeds must be whole numbers from 0 to {MAX_SEED}; '
                      'JAX keeps 32 bits of a seed, so a larger one would train what a smaller one trains')
  # A population splits its members over math.gcd(num_seeds, devices) of the devices (devices.make_mesh),
  # and each member's batch over the rest.
  data_devices = num_devices // math.gcd(config.num_seeds, num_devices)
  for name in ('batch_size', 'eval_batch_size'):
    if config[name] % data_devices:
      split = (f' (with num_seeds={config.num_seeds}, each seed\'s batch is split over {data_devices} of them)'
               if data_devices != num_devices else '')
      raise ConfigError(f'config.{name}={config[name]} is not divisible by the {num_devices} devices{split}')
  warmup, run = parse_duration(config.warmup_steps), parse_duration(config.num_train_steps)
  if warmup.amount and warmup.unit == run.unit and warmup.amount >= run.amount:  # Other units: see steps_for.
    raise ConfigError(f'config.warmup_steps={config.warmup_steps!r} must be below num_train_steps')
  for check in LIBRARY_CHECKS:
    check(config)


# Checks that need a layer above this one (the zoo's model names and fields, the image-policy parser, which
# optimizer suits which net) are declared there and registered here by `library_check` when their module is
# imported, so that infra imports nothing above it. Every caller of validate is a library module that
# imports the models and the training switches; a test of those checks imports them too.
LIBRARY_CHECKS: List[Callable[[Any], None]] = []


def library_check(check: Callable[[Any], None]) -> Callable[[Any], None]:
  """Registers `check(config)` (raises ConfigError) to run at the end of every `validate`; a decorator."""
  if check not in LIBRARY_CHECKS:
    LIBRARY_CHECKS.append(check)
  return check


# --------------------------------------------------------------------------
# Views: the small frozen pieces of a config that code below the loop takes instead of the ConfigDict.


@dataclasses.dataclass(frozen=True)
class Seeds:
  """The seeds a config trains: `first`, first + 1, ..., first + count - 1 (count > 1: a population)."""
  first: int
  count: int = 1

  @property
  def all(self) -> Tuple[int, ...]:
    return tuple(range(self.first, self.first + self.count))

  @property
  def is_population(self) -> bool:
    return self.count > 1


def seeds(config) -> Seeds:
  """The config's seeds (config.json files from before populations have no num_seeds: one seed)."""
  return Seeds(config['seed'], config.get('num_seeds', 1))


def with_seeds(config, first: int, count: int = 1):
  """A copy of the config (a ConfigDict) that trains seeds first .. first + count - 1."""
  copy = config.copy_and_resolve_references()
  with copy.unlocked():
    copy.seed, copy.num_seeds = first, count
  return copy


def member_config(config, seed: int):
  """The config of the single run that a population's member of seed `seed` equals."""
  return with_seeds(config, seed, 1)


@dataclasses.dataclass(frozen=True)
class Steps:
  """Every duration of a config in steps, for a training split of a given size: what the loop counts.

  Named as the config's fields, so code that reads config.log_every_steps
  (jobs.Due) reads the same from this.
  """
  steps_per_epoch: int
  num_train_steps: int
  warmup_steps: int
  lr_boundaries: Tuple[int, ...]
  log_every_steps: int
  eval_every_steps: int
  checkpoint_every_steps: int


def steps_for(config, steps_per_epoch: int, num_train_steps: Optional[int] = None) -> Steps:
  """The config's durations in steps, with `steps_per_epoch` (and the run's length, if already known)."""
  run = num_train_steps if num_train_steps is not None else in_steps(config.num_train_steps, steps_per_epoch)
  if run < 1:
    raise ConfigError(f'config.num_train_steps={config.num_train_steps!r} is {run} steps ({steps_per_epoch} '
                      'an epoch); a run needs at least one')
  every = lambda value: 0 if parse_duration(value).amount == 0 else max(1, in_steps(value, steps_per_epoch, run))
  result = Steps(steps_per_epoch=steps_per_epoch, num_train_steps=run,
                 warmup_steps=in_steps(config.warmup_steps, steps_per_epoch, run),
                 lr_boundaries=tuple(in_steps(b, steps_per_epoch, run) for b in config.lr_boundaries),
                 log_every_steps=every(config.log_every_steps), eval_every_steps=every(config.eval_every_steps),
                 checkpoint_every_steps=every(config.checkpoint_every_steps))
  if result.warmup_steps and result.warmup_steps >= run:
    raise ConfigError(f'config.warmup_steps={config.warmup_steps!r} is {result.warmup_steps} steps, not below '
                      f'the run\'s {run}')
  return result


def steps(config, num_train_examples: int) -> Steps:
  """The config's durations in steps, on a training split of `num_train_examples`."""
  if config.batch_size > num_train_examples:
    raise ConfigError(f'config.batch_size={config.batch_size} exceeds the {num_train_examples} '
                      'training examples')
  return steps_for(config, num_train_examples // config.batch_size)


def num_train_steps(config, num_train_examples: int) -> int:
  """The run's length in steps, on a training split of `num_train_examples`."""
  return steps(config, num_train_examples).num_train_steps


def known_num_train_steps(config) -> Optional[int]:
  """The run's length in steps where the config gives it so; None for one in epochs (it needs the data)."""
  run = parse_duration(config.num_train_steps)
  return int(run.amount) if run is not None and run.unit == STEPS else None


def durations_text(values) -> str:
  """Durations for a report: 'steps 32000, 48000' when all are steps, else each with its unit."""
  if all(getattr(parse_duration(v), 'unit', None) == STEPS for v in values):
    return 'steps ' + ', '.join(str(v) for v in values)
  return ', '.join(str(v) for v in values)


def scale_durations(config, factor: float) -> None:
  """Multiplies every duration of the config (DURATION_FIELDS) by `factor`, in place (see scaled_duration)."""
  if not factor > 0:
    raise ConfigError(f'the scale of a run\'s durations must be positive, not {factor}')
  for name in DURATION_FIELDS:
    value = config[name]
    config[name] = (tuple(scaled_duration(v, factor) for v in value) if isinstance(value, (tuple, list))
                    else scaled_duration(value, factor))


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
# The same run: old files in today's fields, and the recipe two configs differ in.


def _json_values(config) -> Dict[str, Any]:
  """A config (ConfigDict or a config.json dict) as JSON values: tuples become lists."""
  values = config.to_dict() if hasattr(config, 'to_dict') else dict(config)
  return json.loads(json.dumps(values, sort_keys=True, default=str))


def upgrade(values: Mapping[str, Any]) -> Dict[str, Any]:
  """A config, recipe or config.json written by an older jaxresnet, in today's fields (RETIRED_FIELDS).

  num_train_steps=-1 with num_epochs=N is num_train_steps='N epochs';
  lr_boundaries in lr_boundaries_unit 'epochs' or 'fraction' carry their unit
  ('<b> epochs', '<100 b>%'). Anything else is kept as it is.
  """
  values = dict(values)
  if 'num_epochs' in values:
    epochs = values.pop('num_epochs')
    run = values.get('num_train_steps')
    if _is_number(run) and run <= 0 and _is_number(epochs):
      values['num_train_steps'] = Duration(float(epochs), EPOCHS).value()
  if 'lr_boundaries_unit' in values:
    unit = values.pop('lr_boundaries_unit')
    bounds = values.get('lr_boundaries')
    if unit in ('epochs', 'fraction') and isinstance(bounds, (list, tuple)):
      values['lr_boundaries'] = [Duration(float(b), EPOCHS).value() if unit == 'epochs'
                                 else Duration(100 * float(b), SHARE).value() for b in bounds]
  return values


def from_saved(saved: Mapping[str, Any]):
  """The ConfigDict of a config.json: upgraded, and the fields it lacks (added since) at their defaults."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  values = default_config().to_dict()
  values.update(upgrade(saved))
  return ml_collections.ConfigDict(values)


def schedule_depends_on_length(values: Mapping[str, Any]) -> bool:
  """Whether the learning rate of a step depends on the run's length (cosine, or a share of the run)."""
  share = lambda value: getattr(parse_duration(value), 'unit', None) == SHARE
  bounds = values.get('lr_boundaries') or ()
  return (values.get('schedule') == 'cosine' or share(values.get('warmup_steps', 0)) or
          (values.get('schedule') == 'step' and any(share(b) for b in bounds)))


def recipe(config) -> Dict[str, Any]:
  """The config's recipe and identity fields and their values (JSON): everything but BOOKKEEPING_FIELDS."""
  return {field: value for field, value in _json_values(config).items() if field not in BOOKKEEPING_FIELDS}


def recipe_differences(theirs: Mapping[str, Any], mine: Mapping[str, Any]) -> List[Tuple[str, Any, Any]]:
  """The same-run rule: (field, their value, my value) for each recipe or identity field two configs differ in.

  Either may be a ConfigDict, a config.json or a checkpoint's recipe, of any
  version (`upgrade`). A field that `theirs` lacks (added to the schema since it
  was written) counts as having its default value; one only `theirs` has is
  ignored. The run's length is compared only where the schedule depends on it.
  """
  theirs, mine = upgrade(_json_values(theirs)), upgrade(_json_values(mine))
  defaults = _json_values(default_config())
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


if __name__ == '__main__':  # python -m jaxresnet.infra.config: the fields, their defaults, kinds and meanings.
  for _field in FIELDS:
    print(describe(_field.name))
