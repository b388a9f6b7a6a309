"""The config schema (infra/config.py FIELDS): configs/default.py is its defaults, every list is read off it,
durations have one convention, and run files of older versions are recognised as the same run."""
import glob
import json
import os
import re
import types

import ml_collections
import pytest

from conftest import REPO
from jaxresnet import models
from jaxresnet.configs import default
from jaxresnet.infra import checkpoints
from jaxresnet.infra import config as config_lib
from jaxresnet.infra import rundir
from jaxresnet.infra.errors import CheckpointError, ConfigError
from jaxresnet.training import switches

OLD = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'old_configs')
KINDS = (config_lib.RECIPE, config_lib.IDENTITY, config_lib.BOOKKEEPING)


def read(name):
  with open(os.path.join(OLD, name)) as f:
    return json.load(f)


def test_default_py_is_the_schemas_defaults_and_every_field_has_a_kind_a_check_and_a_meaning():
  config = default.get_config()
  assert list(config.keys()) == sorted(f.name for f in config_lib.FIELDS)  # ConfigDict sorts its keys.
  assert config.to_dict() == {f.name: f.default for f in config_lib.FIELDS}
  for field in config_lib.FIELDS:
    assert field.kind in KINDS and callable(field.check) and field.meaning.strip(), field.name
  config_lib.validate(config)  # Every default passes its own check.


class NotAValue:
  def __repr__(self):
    return 'NotAValue()'


@pytest.mark.parametrize('name', [f.name for f in config_lib.FIELDS])
def test_every_fields_check_refuses_a_value_of_no_kind_naming_the_field(name):
  config = default.get_config()
  with config.ignore_type():
    config[name] = NotAValue()
  with pytest.raises(ConfigError) as error:
    config_lib.validate(config)
  assert f'config.{name}' in str(error.value) or (name == 'model' and 'unknown model' in str(error.value))


def test_the_lists_other_modules_use_are_read_off_the_schema():
  kinds = {f.name: f.kind for f in config_lib.FIELDS}
  assert set(config_lib.BOOKKEEPING_FIELDS) == {n for n, k in kinds.items() if k == config_lib.BOOKKEEPING}
  assert set(config_lib.BOOKKEEPING_FIELDS) == {  # What a session of a run may change: nothing it trains.
      'data_dir', 'cache_dir', 'eval_batch_size', 'eval_every_steps', 'log_every_steps', 'checkpoint_every_steps',
      'checkpoints_to_keep', 'allow_fresh_start', 'allow_data_change', 'skip_nonfinite_updates'}
  assert checkpoints.IDENTITY_FIELDS[:len(config_lib.IDENTITY_FIELDS)] == config_lib.IDENTITY_FIELDS
  assert models.CONFIG_TO_MODEL_FIELD is config_lib.MODEL_FIELDS
  for config_field, model_field in config_lib.MODEL_FIELDS.items():
    assert any(model_field in models.model_fields(m) for m in models.MODELS), config_field
  assert config_lib.CHOICES['tta'] == switches.TTA_MODES
  assert set(config_lib.DURATION_FIELDS) == {'num_train_steps', 'warmup_steps', 'lr_boundaries', 'log_every_steps',
                                             'eval_every_steps', 'checkpoint_every_steps'}


def test_config_num_seeds_and_config_seed_are_read_in_at_most_three_files():
  """The issue's bar: the seeds reach the rest of the code through config.seeds() (a frozen Seeds)."""
  for pattern in (r'config\.num_seeds|\.num_seeds\b', r'config\.seed\b'):
    files = [path for path in glob.glob(os.path.join(REPO, 'jaxresnet', '**', '*.py'), recursive=True)
             if re.search(pattern, open(path).read())]
    assert len(files) <= 3, (pattern, sorted(os.path.relpath(p, REPO) for p in files))


# --------------------------------------------------------------------------
# Durations.


@pytest.mark.parametrize('value,unit,amount', [
    (64000, 'steps', 64000), ('64000', 'steps', 64000), ('64000 steps', 'steps', 64000), ('1 step', 'steps', 1),
    ('200 epochs', 'epochs', 200), ('0.5 epoch', 'epochs', 0.5), (' 2.5  Epochs ', 'epochs', 2.5),
    ('50%', '%', 50), ('12.5 %', '%', 12.5), (0, 'steps', 0)])
def test_a_duration_is_steps_epochs_or_a_share_of_the_run(value, unit, amount):
  assert config_lib.parse_duration(value) == config_lib.Duration(amount, unit)


@pytest.mark.parametrize('value', [-1, 2.5, True, '2.5 steps', '3 weeks', 'inf epochs', 'nan%', '', '1e999 epochs',
                                   None, (1,), '1 epochs 2'])
def test_what_is_not_a_duration(value):
  assert config_lib.parse_duration(value) is None


def test_every_duration_in_steps():
  config = default.get_config()
  config.update(num_train_steps='10 epochs', warmup_steps='1.5 epochs', lr_boundaries=(300, '5 epochs', '90%'),
                log_every_steps='1%', eval_every_steps='2 epochs', checkpoint_every_steps=0)
  config_lib.validate(config)
  steps = config_lib.steps(config, num_train_examples=4000)  # 31 steps of 128 an epoch, 310 in the run.
  assert steps == config_lib.Steps(steps_per_epoch=31, num_train_steps=310, warmup_steps=46,
                                   lr_boundaries=(300, 155, 279), log_every_steps=3, eval_every_steps=62,
                                   checkpoint_every_steps=0)
  config.warmup_steps = '10 epochs'  # As long as the run: refused once the run's length is known.
  with pytest.raises(ConfigError, match="config.warmup_steps='10 epochs' is 310 steps, not below the run's 310"):
    config_lib.steps(config, num_train_examples=4000)


def test_scaling_a_config_counted_in_steps_keeps_what_reproduce_did():
  config = importlib_config('resnet110')
  config_lib.scale_durations(config, 0.0005)
  assert (config.num_train_steps, tuple(config.lr_boundaries), config.warmup_steps) == (32, (16, 24), 1)
  assert (config.eval_every_steps, config.checkpoint_every_steps, config.log_every_steps) == (1, 1, 1)


def test_scaling_reaches_a_config_counted_in_epochs():
  """reproduce --steps_scale refused these: its scaling knew steps only."""
  config = importlib_config('resnet26_5m')
  config.update(warmup_steps='5%', lr_boundaries=('30 epochs', 60))
  config_lib.scale_durations(config, 0.125)
  assert config.num_train_steps == '12.5 epochs'
  assert (config.warmup_steps, tuple(config.lr_boundaries)) == ('5%', ('3.75 epochs', 8))  # A share scales itself.
  config_lib.validate(config)
  assert config_lib.num_train_steps(config, 45000) == round(12.5 * 703)
  with pytest.raises(ConfigError, match='must be positive'):
    config_lib.scale_durations(config, 0)


def importlib_config(name):
  return __import__(f'jaxresnet.configs.{name}', fromlist=['get_config']).get_config()


def test_a_duration_override_takes_steps_or_a_unit_on_the_command_line():
  from test_cli import parsed_config  # pylint: disable=g-import-not-at-top
  config = parsed_config('--config.num_train_steps=30 epochs', "--config.lr_boundaries=('50%', '75%')",
                         '--config.eval_every_steps=500')
  assert (config.num_train_steps, tuple(config.lr_boundaries), config.eval_every_steps) == (
      '30 epochs', ('50%', '75%'), 500)
  config_lib.validate(config)


# --------------------------------------------------------------------------
# Run files of older versions: one place maps their fields (config.upgrade), the same-run rule reads them.

# runs/he2016_eighth/resnet20/seed0: started by `reproduce --steps_scale=0.125 --nopopulation --peer
# --dataset=image_folder --data_dir=...` with the code before the schema (num_epochs, lr_boundaries_unit).
HE2016_EIGHTH = dict(steps_scale=0.125, dataset='image_folder', data_dir='/work/shared/data/cifar10_jpeg.tar.gz')


def test_the_he2016_eighth_run_in_progress_is_the_same_run_for_todays_reproduce(tmp_path):
  from jaxresnet.experiments import reproduction  # pylint: disable=g-import-not-at-top
  saved = read('he2016_eighth_resnet20_seed0.json')
  assert saved['lr_boundaries_unit'] == 'steps' and saved['num_epochs'] == -1  # The old fields.
  config = reproduction.run_config('resnet20', 0, **HE2016_EIGHTH)
  assert config_lib.recipe_differences(saved, config) == []
  directory = tmp_path / 'resnet20' / 'seed0'
  directory.mkdir(parents=True)
  (directory / 'config.json').write_text(json.dumps(saved))
  rundir.check_same_run(str(directory), config)  # What reproduce and the peer ask before resuming.
  with pytest.raises(ConfigError, match="holds a run with a different config .*seed: 0 there, 1 now"):
    rundir.check_same_run(str(directory), reproduction.run_config('resnet20', 1, **HE2016_EIGHTH))
  # Its checkpoint's metadata (written with the old field names) is that of the same run too.
  metadata = read('he2016_eighth_resnet20_seed0_checkpoint_metadata.json')
  manager = types.SimpleNamespace(directory=str(directory / 'checkpoints'))
  checkpoints.check_same_run(manager, metadata, checkpoints.config_metadata(config), step=800)
  longer = reproduction.run_config('resnet20', 0, **{**HE2016_EIGHTH, 'steps_scale': 0.25})
  with pytest.raises(CheckpointError, match=r'was trained with lr_boundaries=\[4000, 6000\]'):
    checkpoints.check_same_run(manager, metadata, checkpoints.config_metadata(longer), step=800)


# runs/he2016_eighth/plain56/seed0 (issue 33, Figure 6): started at 4c9db6d by `reproduce --nopopulation
# --steps_scale=0.125 --max_eval_examples=0 --eval_every_steps=500 --models=plain56,resnet56 --seeds=2`. It trains for
# hours across sessions and code changes, and must resume with whatever code comes next.


def test_the_figure6_run_in_progress_is_the_same_run_for_todays_reproduce(tmp_path):
  from jaxresnet.experiments import reproduction  # pylint: disable=g-import-not-at-top
  saved = read('he2016_eighth_plain56_seed0.json')
  settings = {**HE2016_EIGHTH, 'eval_every_steps': 500, 'max_eval_examples': 0}
  config = reproduction.run_config('plain56', 0, **settings)
  assert config_lib.recipe_differences(saved, config) == []
  directory = tmp_path / 'plain56' / 'seed0'
  directory.mkdir(parents=True)
  (directory / 'config.json').write_text(json.dumps(saved))
  rundir.check_same_run(str(directory), config)
  with pytest.raises(ConfigError, match="holds a run with a different config .*model: 'plain56' there"):
    rundir.check_same_run(str(directory), reproduction.run_config('resnet56', 0, **settings))
  # Its checkpoint at step 800 (the metadata as Orbax wrote it, checksums included) is that of the same run too.
  metadata = read('he2016_eighth_plain56_seed0_checkpoint_metadata.json')
  manager = types.SimpleNamespace(directory=str(directory / 'checkpoints'))
  checkpoints.check_same_run(manager, metadata, checkpoints.config_metadata(config), step=800)


def test_a_config_json_of_commit_c622524_is_todays_resnet20():
  """The c622524 era (the ResNet-20 checkpoint trained on an H200): its defaults, before recipe switches,
  populations and the schema. Fields added since count as their defaults."""
  saved = read('c622524_resnet20.json')
  assert 'num_seeds' not in saved and 'lr_boundaries_unit' in saved
  assert config_lib.recipe_differences(saved, importlib_config('resnet20')) == []
  loaded = config_lib.from_saved(saved)  # What evaluate and predict read a workdir's config.json as.
  config_lib.validate(loaded)
  assert (loaded.num_train_steps, tuple(loaded.lr_boundaries), loaded.num_seeds) == (64000, (32000, 48000), 1)


@pytest.mark.parametrize('model,epochs', [('cnn_small', 20), ('cnn_deep', 24), ('resnet18_1111', 3)])
def test_the_committed_cpu_baselines_are_runs_in_epochs_of_todays_configs(model, epochs):
  saved = json.load(open(os.path.join(REPO, 'results', 'cpu_baselines', model, 'config.json')))
  assert (saved['num_train_steps'], saved['num_epochs']) == (-1, epochs)
  assert config_lib.upgrade(saved)['num_train_steps'] == f'{epochs} epochs'
  config = importlib_config(model)
  config.update(dataset='image_folder', num_train_steps=f'{epochs} epochs')
  assert config_lib.recipe_differences(saved, config) == []
  config_lib.validate(config_lib.from_saved(saved))


@pytest.mark.parametrize('unit,bounds,expected', [
    ('epochs', [5, 7.5, 3.501], ['5 epochs', '7.5 epochs', '3.501 epochs']),
    ('fraction', [0.5, 0.75, 0.3, 0.1, 1 / 3], ['50%', '75%', '30%', '10%', '33.3333333333%']),
    ('steps', [4000, 6000], [4000, 6000])])
def test_old_boundary_units_carry_over_to_the_same_steps(unit, bounds, expected):
  upgraded = config_lib.upgrade({'lr_boundaries': bounds, 'lr_boundaries_unit': unit})
  assert upgraded == {'lr_boundaries': expected}
  steps_per_epoch, run = 351, 64000
  old = {'steps': lambda b: b, 'epochs': lambda b: b * steps_per_epoch, 'fraction': lambda b: b * run}[unit]
  # The old optim's rounding, int(round(...)), gives the same step for each.
  assert [config_lib.in_steps(b, steps_per_epoch, run) for b in expected] == [int(round(old(b))) for b in bounds]


def test_a_share_of_the_run_makes_the_length_part_of_the_recipe():
  mine = default.get_config()
  assert config_lib.recipe_differences({**mine.to_dict(), 'num_train_steps': 100}, mine) == []  # Step schedule.
  mine.lr_boundaries = ('50%', '75%')
  assert config_lib.recipe_differences({**mine.to_dict(), 'num_train_steps': 100}, mine) == [
      ('num_train_steps', 100, 64000)]
  old_fraction = {**mine.to_dict(), 'lr_boundaries': [0.5, 0.75], 'lr_boundaries_unit': 'fraction'}
  assert config_lib.recipe_differences(old_fraction, mine) == []


def test_a_retired_field_on_the_command_line_or_in_a_config_says_what_replaced_it():
  with pytest.raises(ConfigError, match="unknown config field 'lr_boundaries_unit': each boundary now carries"):
    from test_cli import parsed_config  # pylint: disable=g-import-not-at-top
    parsed_config('--config.lr_boundaries_unit=epochs')
  config = ml_collections.ConfigDict({**default.get_config().to_dict(), 'lr_boundaries_unit': 'epochs'})
  with pytest.raises(ConfigError, match='config.lr_boundaries_unit is no longer a field'):
    config_lib.validate(config)
