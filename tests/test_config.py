import glob
import importlib
import os

import pytest

from jaxresnet import models  # Registers the zoo's checks (model names, model fields) with validate.
from jaxresnet.infra import config as config_lib
from jaxresnet.infra.errors import ConfigError
from jaxresnet.training import switches  # Registers the image-policy check.
from conftest import REPO, run_module

CONFIG_FILES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, 'configs', '*.py'))
                      if not p.endswith('__init__.py'))


def load(name):
  return importlib.import_module(f'jaxresnet.configs.{name}').get_config()


@pytest.mark.parametrize('name', CONFIG_FILES)
def test_every_config_file_is_valid_and_documents_its_command(name):
  config = load(name)
  config_lib.validate(config)
  doc = importlib.import_module(f'jaxresnet.configs.{name}').__doc__
  assert f'--config=configs/{name}.py' in doc


def test_variants_only_override_the_default():
  default = load('default')
  for name in CONFIG_FILES:
    assert set(load(name).keys()) == set(default.keys()), name


def test_paper_recipe_in_default():
  c = load('default')
  assert (c.batch_size, c.learning_rate, c.momentum, c.weight_decay) == (128, 0.1, 0.9, 1e-4)
  assert tuple(c.lr_boundaries) == (32000, 48000) and c.num_train_steps == 64000
  assert c.num_val_examples == 5000 and c.shortcut == 'A' and c.normalization == 'pixel_mean'
  assert load('resnet110').warmup_steps == 400 and load('resnet110').warmup_lr == 0.01


@pytest.mark.parametrize('field,value,message', [
    ('model', 'resnet21', "unknown model 'resnet21'"),
    ('shortcut', 'C', "config.shortcut='C' is not one of A, B"),
    ('learning_rate', -0.1, 'config.learning_rate=-0.1 must not be negative'),
    ('learning_rate', float('nan'), 'config.learning_rate=nan must be a finite number'),  # Not "negative".
    ('learning_rate', float('inf'), 'config.learning_rate=inf must be a finite number'),
    ('batch_size', 0, 'config.batch_size=0 must be positive'),
    ('num_train_steps', 0, "config.num_train_steps=0 must be positive (a whole number of steps, or '<x> epochs')"),
    ('num_train_steps', -1,
     "config.num_train_steps=-1 is not a duration: give a whole number of steps, or '<x> epochs'"),
    ('num_train_steps', '50%', "config.num_train_steps='50%' is not a duration"),
    ('warmup_steps', '2 weeks', "config.warmup_steps='2 weeks' is not a duration"),
    ('eval_every_steps', 2.5, 'config.eval_every_steps=2.5 is not a duration'),
    ('lr_boundaries', ('50%', '150%'), "config.lr_boundaries='150%' is a share of the run, which must be below 100%"),
    ('schedule', 'exponential', "config.schedule='exponential' is not one of"),
    ('lr_boundaries', (48000, 32000), 'must be positive and increasing'),
    ('dataset', '', 'config.dataset is empty'),
])
def test_bad_values_raise_one_clear_error(field, value, message):
  config = load('default')
  config[field] = value
  with pytest.raises(ConfigError, match=message.replace('(', r'\(').replace(')', r'\)')):
    config_lib.validate(config)


def test_a_run_counted_in_epochs():
  config = load('default')
  config.num_train_steps = '3 epochs'
  config_lib.validate(config)
  assert config_lib.num_train_steps(config, 45000) == 3 * 351
  config.num_train_steps = '0 epochs'
  with pytest.raises(ConfigError, match='must be positive'):
    config_lib.validate(config)


def test_a_config_with_a_retired_field_is_told_what_replaced_it():
  config = load('default')
  config.num_epochs = 30  # A config file written for an older version (the ConfigDict accepts a new field).
  with pytest.raises(ConfigError, match="config.num_epochs is no longer a field: .*num_train_steps='<N> epochs'"):
    config_lib.validate(config)


# Without x64, jax.random.PRNGKey keeps a seed's low 32 bits: seed 2**32 would train what seed 0 trains.
@pytest.mark.parametrize('seed,num_seeds', [(2**32, 1), (2**40, 1), (-1, 1), (2**32 - 2, 3)])
def test_a_seed_jax_would_truncate_is_refused(seed, num_seeds):
  config = load('default')
  config.seed, config.num_seeds = seed, num_seeds
  with pytest.raises(ConfigError, match=r'config.seed=-?\d+\b.*seeds must be whole numbers from 0 to 4294967295'):
    config_lib.validate(config)


def test_the_largest_seeds_are_distinct_keys():
  import jax  # pylint: disable=g-import-not-at-top
  config = load('default')
  config.seed, config.num_seeds = 2**32 - 2, 2
  config_lib.validate(config)
  keys = {tuple(int(w) for w in jax.random.PRNGKey(s)) for s in (0, 1, 2**32 - 2, 2**32 - 1)}
  assert len(keys) == 4


def test_batch_must_divide_over_devices():
  config = load('default')
  config.batch_size = 126
  with pytest.raises(ConfigError, match='not divisible by the 4 devices'):
    config_lib.validate(config, num_devices=4)


@pytest.mark.slow
@pytest.mark.parametrize('args,status,message', [
    (['--config.nonexistent=1'], 1, "error: unknown config field 'nonexistent'"),
    (['--config.learning_rate=abc'], 1, 'error: flag --config.learning_rate=abc'),
    (['--config.model=resnet21'], 1, "error: unknown model 'resnet21'"),
    (['--config.learning_rate=-1'], 1, 'error: config.learning_rate=-1.0 must not be negative'),
    (['--config=configs/missing.py'], 1, 'error: cannot load the config file'),
    (['--config.num_epochs=3'], 1, "error: unknown config field 'num_epochs': the run's length in epochs is now "
                                   "--config.num_train_steps='<N> epochs'"),
    (['--config.num_train_steps=3 weeks'], 1, "error: config.num_train_steps='3 weeks' is not a duration"),
    (['--config.seed=4294967296'], 1,
     'error: config.seed=4294967296: seeds must be whole numbers from 0 to 4294967295'),
])
def test_cli_bad_config_is_one_line_and_nothing_is_written(tmp_path, args, status, message):
  workdir = tmp_path / 'run'
  result = run_module('jaxresnet.main', '--config=configs/resnet20.py', f'--workdir={workdir}', *args)
  assert result.returncode == status, result.stderr
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert lines[-1].startswith(message), result.stderr
  assert 'Traceback' not in result.stderr
  assert not workdir.exists()


def epochs_of(config):
  """The run length in epochs, or None for a run counted in steps."""
  duration = config_lib.parse_duration(config.num_train_steps)
  return f'{duration.amount:g}' if duration.unit == config_lib.EPOCHS else None


@pytest.mark.parametrize('name', CONFIG_FILES)
def test_a_config_counted_in_epochs_trains_the_epochs_its_docstring_names(name):
  epochs = epochs_of(load(name))
  if epochs is not None:
    doc = ' '.join(importlib.import_module(f'jaxresnet.configs.{name}').__doc__.split())
    assert f'{epochs} epochs' in doc, f'configs/{name}.py trains {epochs} epochs; its docstring says otherwise'


def test_the_training_loop_validates_with_the_checks_of_the_layers_above():
  """infra/config.py imports nothing above it: the zoo and the switches register their checks; the loop has both."""
  from jaxresnet.training import train  # pylint: disable=g-import-not-at-top,unused-import
  assert {models.check_config, switches.check_config} <= set(config_lib.LIBRARY_CHECKS)
