"""sweep: a grid of runs in sub-workdirs, one comparison table, reruns that skip or resume."""
import csv
import json
import os

import pytest

from jaxresnet.experiments import sweeps
from jaxresnet.infra.errors import ConfigError
from conftest import run_module, tiny_config


def tiny_args(image_folder, workdir):
  return ['--config=configs/default.py', f'--workdir={workdir}', '--config.model=resnet8',
          '--config.dataset=image_folder', f'--config.data_dir={image_folder}', '--config.batch_size=8',
          '--config.eval_batch_size=8', '--config.num_val_examples=8', '--config.num_train_steps=2',
          '--config.log_every_steps=2', '--config.lr_boundaries=(1,)']


@pytest.mark.slow
def test_sweep_cli_runs_a_2x1_grid_and_skips_it_on_rerun(image_folder, tmp_path):
  workdir = tmp_path / 'sweep'
  args = tiny_args(image_folder, workdir) + ['--sweep.optimizer=adam,sgd', '--sweep.learning_rate=0.05']
  run_module('jaxresnet.sweep', *args, check=True)
  names = ['optimizer=adam,learning_rate=0.05', 'optimizer=sgd,learning_rate=0.05']
  assert sorted(os.listdir(workdir)) == sorted(names + ['.lock', 'sweep.csv', 'sweep.md'])  # .lock: one sweep at a time.
  with open(workdir / 'sweep.csv') as f:
    rows = list(csv.DictReader(f))
  assert [(r['point'], r['optimizer'], r['learning_rate'], r['status']) for r in rows] == [
      (names[0], 'adam', '0.05', 'done'), (names[1], 'sgd', '0.05', 'done')]
  md = (workdir / 'sweep.md').read_text()
  for name, row in zip(names, rows):
    results = json.load(open(workdir / name / 'results.json'))
    config = json.load(open(workdir / name / 'config.json'))
    assert (config['optimizer'], config['learning_rate'], config['model']) == (row['optimizer'], 0.05, 'resnet8')
    assert float(row['test_accuracy']) == pytest.approx(results['test_accuracy'])
    assert float(row['val_accuracy']) == pytest.approx(results['val_accuracy'])
    assert f'| {row["optimizer"]} | 0.05 | 2 | {100 * results["val_accuracy"]:.2f} | ' \
           f'{100 * results["test_accuracy"]:.2f} |' in md
  assert 'Best by validation accuracy' in md and '| optimizer \\ learning_rate | 0.05 |' in md

  second = run_module('jaxresnet.sweep', *args, check=True)
  assert second.stdout.count('finished earlier, skipped') == 2
  assert 'parameters' not in second.stdout  # No run was started.


@pytest.mark.slow
def test_unfinished_points_resume(image_folder, tmp_path):
  workdir = str(tmp_path / 'sweep')
  grid = [('learning_rate', [0.05])]
  sweeps.run_sweep(tiny_config(image_folder, num_train_steps=2, log_every_steps=1), workdir, grid)
  results = sweeps.run_sweep(tiny_config(image_folder, num_train_steps=4, log_every_steps=1), workdir, grid)
  assert results['learning_rate=0.05']['step'] == 4
  steps = [json.loads(l)['step'] for l in open(os.path.join(workdir, 'learning_rate=0.05', 'metrics.jsonl'))]
  assert steps == [1, 2, 3, 4]  # Steps 1-2 from the first sweep, 3-4 resumed.


@pytest.mark.slow
@pytest.mark.parametrize('arg,message', [
    ('--sweep.nonexistent=1,2', "error: unknown sweep field 'nonexistent'"),
    ('--sweep.learning_rate=0.1,fast', "error: --sweep.learning_rate: 'fast' is not a valid float"),
    ('--sweep.optimizer=adam,nadam', "error: sweep point optimizer=nadam: config.optimizer='nadam' is not one of"),
])
def test_bad_sweep_values_are_one_line(tmp_path, arg, message):
  workdir = tmp_path / 'sweep'
  result = run_module('jaxresnet.sweep', '--config=configs/default.py', f'--workdir={workdir}', arg)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr
  assert 'Traceback' not in result.stderr and not workdir.exists()


def test_values_are_parsed_to_the_field_type():
  config = tiny_config('unused')
  grid = sweeps.parse_grid(['--sweep.lr_boundaries=(100,150),(200,)', '--sweep.augment=true,False',
                           '--sweep.batch_size=64,128', '--sweep.learning_rate=1,0.5'], config)
  assert grid == [('lr_boundaries', [(100, 150), (200,)]), ('augment', [True, False]),
                  ('batch_size', [64, 128]), ('learning_rate', [1.0, 0.5])]
  assert isinstance(grid[3][1][0], float)
  assert sweeps.point_name(['lr_boundaries', 'augment'], [(100, 150), True]) == 'lr_boundaries=(100,150),augment=True'
  for bad, message in (('--sweep.batch_size=1.5', "'1.5' is not a valid int"),
                       ('--sweep.augment=maybe', "'maybe' is not a valid bool"),
                       ('--sweep.batch_size', 'expected --sweep.<field>=value1,value2'),
                       ('--sweep.seed=1', None)):
    if message is None:
      with pytest.raises(ConfigError, match='given twice'):
        sweeps.parse_grid([bad, bad], config)
    else:
      with pytest.raises(ConfigError, match=message):
        sweeps.parse_grid([bad], config)
