import json
import os
import shutil
import signal
import threading

import numpy as np
from PIL import Image
import pytest

from conftest import run_module
from jaxresnet.infra import checkpoints
from jaxresnet.infra import devices
from jaxresnet.infra import host_memory
from jaxresnet.experiments import reproduction
from jaxresnet.experiments import tables
from jaxresnet.infra import rundir
from jaxresnet.infra.errors import ConfigError, DataError

# Tiny runs on the conftest image folder (40 train, 8 val, 12 test images): 64000 * 0.0001 = 6 steps.
TINY = dict(dataset='image_folder', batch_size=8, eval_batch_size=8, num_val_examples=8, eval_every_steps=3,
            log_every_steps=2, checkpoint_every_steps=3)
SCALE = 0.0001


def tiny_flags(image_folder):
  return [f'--{k}={v}' for k, v in TINY.items()] + [f'--data_dir={image_folder}', f'--steps_scale={SCALE}']


def read_lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


# --------------------------------------------------------------------------
# Configs.


def test_run_config_is_the_config_file_with_seed_and_overrides():
  config = reproduction.run_config('resnet110', seed=2, batch_size=64, data_dir=None)
  assert (config.model, config.seed, config.batch_size) == ('resnet110', 2, 64)
  assert (config.num_train_steps, tuple(config.lr_boundaries)) == (64000, (32000, 48000))
  assert (config.warmup_steps, config.warmup, config.warmup_lr) == (400, 'constant', 0.01)  # The paper's.
  assert reproduction.run_config('plain20').model == 'plain20'
  # A zoo model without a config file gets configs/default.py's recipe.
  assert reproduction.run_config('resnet8').to_dict() == {**reproduction.run_config('resnet20').to_dict(),
                                                       'model': 'resnet8'}


def test_steps_scale_shrinks_the_whole_schedule():
  config = reproduction.run_config('resnet110', steps_scale=0.0005)
  assert config.num_train_steps == 32
  assert tuple(config.lr_boundaries) == (16, 24)
  assert config.warmup_steps == 1  # 0.2 steps rounds up: a warm-up stays a warm-up.
  # Evaluations and checkpoints stay at most MAX_EVALS_PER_RUN (10) a run: every 4th of 32 steps.
  assert (config.eval_every_steps, config.checkpoint_every_steps, config.log_every_steps) == (4, 4, 1)
  assert config.num_train_steps // config.eval_every_steps <= reproduction.MAX_EVALS_PER_RUN
  assert reproduction.run_config('resnet20', steps_scale=0.5, eval_every_steps=7).eval_every_steps == 7


@pytest.mark.parametrize('call,match', [
    (lambda: reproduction.run_config('resnet21'), 'unknown model'),
    (lambda: reproduction.run_config('resnet20', steps_scale=0), 'must be positive'),
    (lambda: reproduction.run_config('resnet20', no_such_field=1), 'unknown config field'),
])
def test_bad_settings_are_config_errors(call, match):
  with pytest.raises(ConfigError, match=match):
    call()


def test_a_run_dir_with_another_config_is_refused(tmp_path):
  config = reproduction.run_config('resnet20')
  os.makedirs(tmp_path / 'run')
  with open(tmp_path / 'run' / 'config.json', 'w') as f:
    f.write(config.to_json_best_effort())
  changed = reproduction.run_config('resnet20', data_dir='/elsewhere', eval_every_steps=5)
  rundir.check_same_run(str(tmp_path / 'run'), changed)  # Paths and intervals may change.
  changed.learning_rate = 0.2
  with pytest.raises(ConfigError, match=r"learning_rate: 0\.1 there, 0\.2 now"):
    rundir.check_same_run(str(tmp_path / 'run'), changed)


def test_a_run_dir_from_before_a_field_was_added_to_the_defaults_is_the_same_run(tmp_path):
  """As a resume of main decides it (config.recipe_differences): a field the file lacks has its default."""
  config = reproduction.run_config('resnet20')
  saved = json.loads(config.to_json_best_effort())
  for field in ('tta', 'ema_decay', 'num_seeds'):  # Fields added to configs/default.py after the run started.
    del saved[field]
  os.makedirs(tmp_path / 'run')
  with open(tmp_path / 'run' / 'config.json', 'w') as f:
    json.dump(saved, f)
  rundir.check_same_run(str(tmp_path / 'run'), config)
  config.tta = 'flip'
  with pytest.raises(ConfigError, match=r"tta: '' there, 'flip' now"):
    rundir.check_same_run(str(tmp_path / 'run'), config)


# --------------------------------------------------------------------------
# End to end on tiny runs.


@pytest.mark.slow
def test_reproduce_cli_runs_reports_and_skips_finished_runs(image_folder, tmp_path):
  workdir, output = tmp_path / 'he2016', tmp_path / 'results' / 'table.md'
  args = [f'--workdir={workdir}', '--models=resnet8,plain8', '--seeds=1', f'--output={output}',
          *tiny_flags(image_folder)]
  first = run_module('jaxresnet.reproduce', *args, check=True)
  assert '[1/2] resnet8 seed 0: training' in first.stdout
  assert '[2/2] plain8 seed 0: training' in first.stdout
  for model in ('resnet8', 'plain8'):
    run = workdir / model / 'seed0'
    results = json.load(open(run / 'results.json'))
    assert results['step'] == 6 and results['model'] == model
    sessions = json.load(open(run / 'timing.json'))['sessions']
    assert len(sessions) == 1 and sessions[0]['seconds'] > 0 and sessions[0]['versions']['jax']
    assert sessions[0]['host'] == devices.host_cpu()

  data = json.load(open(workdir / 'report.json'))
  rows = {row['model']: row for row in data['models']}
  assert list(rows)[:9] == list(tables.TABLES['he2016'].models)  # The paper's rows, run or not.
  assert rows['resnet20']['num_finished'] == 0 and rows['resnet20']['paper_test_error'] == 0.0875
  resnet8 = rows['resnet8']
  results = json.load(open(workdir / 'resnet8' / 'seed0' / 'results.json'))
  assert resnet8['num_finished'] == 1 and resnet8['test_error_mean'] == results['test_error']
  assert resnet8['test_error_std'] is None  # One seed has no spread.
  assert (resnet8['num_params'], resnet8['macs']) == (results['num_params'], results['macs'])
  assert resnet8['devices'] == [results['devices']]
  assert data['settings'] == {'table': 'he2016', 'steps_scale': SCALE, 'dataset': 'image_folder',
                              'recipe_overrides': {'batch_size': 8, 'num_val_examples': 8},
                              'max_eval_examples': reproduction.SMOKE_EVAL_EXAMPLES}  # Scaled down: a smoke run.
  assert json.load(open(workdir / 'resnet8' / 'seed0' / 'config.json'))['max_eval_examples'] == 1000

  markdown = (workdir / 'report.md').read_text()
  assert '**Shortened schedule**' in markdown and '`batch_size=8`' in markdown
  assert '**Evaluated on a subset**: at most 1,000 images of each split' in markdown
  assert f'| ResNet-8 | {resnet8["num_params"] / 1e6:.2f}M | — | {resnet8["macs"] / 1e6:.2f}M | — |' in markdown
  assert f'{100 * results["test_error"]:.2f} | 1/1 |' in markdown
  assert f'| {results["devices"]} on {devices.host_cpu()} |' in markdown  # The runs table: devices and host.
  assert '| ResNet-110 | — | 1.70M | — | 6.43 | not run |' in markdown
  assert 'python -m jaxresnet.reproduce --workdir=' in markdown  # The command that made it.
  with Image.open(workdir / 'figure6.png') as image:
    assert image.size == (1200, 450)
  # --output: the same report, with its figure beside it.
  assert (tmp_path / 'results' / 'table.png').exists()
  assert '![train and test error vs iterations](table.png)' in output.read_text()

  metrics_before = (workdir / 'resnet8' / 'seed0' / 'metrics.jsonl').read_text()
  second = run_module('jaxresnet.reproduce', *args, check=True)
  assert '[1/2] resnet8 seed 0: finished, skipped' in second.stdout
  assert '[2/2] plain8 seed 0: finished, skipped' in second.stdout
  assert (workdir / 'resnet8' / 'seed0' / 'metrics.jsonl').read_text() == metrics_before
  assert len(json.load(open(workdir / 'resnet8' / 'seed0' / 'timing.json'))['sessions']) == 1
  assert len(json.load(open(workdir / 'reproduce.json'))['commands']) == 2

  # Other settings in the same workdir are refused before anything runs.
  other = run_module('jaxresnet.reproduce', *[a for a in args if not a.startswith('--steps_scale')],
                     '--steps_scale=0.0002')
  assert other.returncode == 1 and 'Traceback' not in other.stderr
  assert other.stderr.strip().splitlines()[-1].startswith('error: ')
  assert 'use another --workdir' in other.stderr


def test_a_workdir_keeps_its_evaluation_subset_and_one_started_before_it_existed_evaluates_everything(
    tmp_path, monkeypatch):
  planned = []
  monkeypatch.setattr(reproduction, '_train_runs', lambda workdir, runs, plan, output: planned.append((runs, plan)))
  settings = dict(models=['resnet8'], seeds=1, overrides={'dataset': 'image_folder', 'data_dir': '/unused'})
  reproduction.reproduce(str(tmp_path / 'new'), steps_scale=SCALE, **settings)
  reproduction.reproduce(str(tmp_path / 'full'), steps_scale=1.0, **settings)
  old = tmp_path / 'old'  # A plan written before max_eval_examples existed: it evaluated every image.
  os.makedirs(old)
  with open(old / 'reproduce.json', 'w') as f:
    json.dump({'table': 'he2016', 'settings': {'table': 'he2016', 'steps_scale': SCALE, 'dataset': 'image_folder',
                                               'recipe_overrides': {}}}, f)
  reproduction.reproduce(str(old), steps_scale=SCALE, **settings)
  with pytest.raises(ConfigError, match='was started with settings'):
    reproduction.reproduce(str(old), steps_scale=SCALE, max_eval_examples=500, **settings)
  assert [[config.max_eval_examples for _, _, config, _ in runs] for runs, _ in planned] == [[1000], [0], [0]]
  assert ['max_eval_examples' in plan['settings'] for _, plan in planned] == [True, False, False]


@pytest.mark.slow
def test_a_stopped_run_ends_the_table_and_resumes_with_its_time_added_up(image_folder, tmp_path, monkeypatch):
  if threading.current_thread() is not threading.main_thread():
    pytest.skip('signal handlers need the main thread')
  workdir = str(tmp_path / 'he2016')
  settings = dict(workdir=workdir, models=['resnet8'], steps_scale=SCALE, overrides={**TINY, 'data_dir': image_folder})
  real_save = checkpoints.save

  def save_then_sigterm(manager, state, metadata, step):  # As a scheduler would, while step 3 is saved.
    real_save(manager, state, metadata, step)
    monkeypatch.setattr(checkpoints, 'save', real_save)
    os.kill(os.getpid(), signal.SIGTERM)

  monkeypatch.setattr(checkpoints, 'save', save_then_sigterm)
  settings['population'] = False  # Seed by seed: the stop must also end the table.
  reproduction.reproduce(seeds=2, **settings)  # Stops at the next step, 4, with a checkpoint.
  run = os.path.join(workdir, 'resnet8', 'seed0')
  assert not os.path.exists(os.path.join(run, 'results.json'))
  assert not os.path.exists(os.path.join(workdir, 'resnet8', 'seed1'))  # The table stopped too.
  session = json.load(open(os.path.join(run, 'timing.json')))['sessions'][0]
  first_session = session['seconds']
  assert first_session > 0
  assert session['freed_memory_kept'] is host_memory.freed_memory_kept()  # What the speed depended on.
  row = tables.collect(workdir)['models'][-1]
  assert row['model'] == 'resnet8' and row['num_finished'] == 0
  assert [(r['status'], r['step']) for r in row['runs']] == [('unfinished', 4), ('not started', None)]

  reproduction.reproduce(seeds=1, **settings)
  assert json.load(open(os.path.join(run, 'results.json')))['step'] == 6
  assert [r['step'] for r in read_lines(os.path.join(run, 'metrics.jsonl'))] == [2, 3, 4, 6]
  sessions = json.load(open(os.path.join(run, 'timing.json')))['sessions']
  assert len(sessions) == 2 and sessions[0]['seconds'] == first_session
  row = tables.collect(workdir)['models'][-1]
  assert row['num_finished'] == 1 and row['num_seeds'] == 2  # The plan still has 2 seeds.
  assert row['wall_clock_seconds_mean'] == pytest.approx(sum(s['seconds'] for s in sessions))


def test_a_session_that_fails_still_records_its_time(tmp_path):
  config = reproduction.run_config('resnet8', dataset='image_folder', data_dir=str(tmp_path / 'missing'))
  with pytest.raises(DataError, match='does not exist'):
    reproduction.train_run(config, str(tmp_path / 'run'))
  sessions = json.load(open(tmp_path / 'run' / rundir.TIMING_FILE))['sessions']
  assert len(sessions) == 1 and sessions[0]['seconds'] >= 0 and sessions[0]['versions']['jax']


# --------------------------------------------------------------------------
# The report, on runs written by hand: what it computes and what it refuses to guess.


def fake_run(workdir, model, seed, test_error=None, step=10, num_train_steps=10, seconds=(60.0,),
             dataset='image_folder', class_names=tables.CIFAR10_CLASSES):
  """The files of a run: finished (results.json) when test_error is given, else unfinished."""
  directory = tables.run_dir(str(workdir), model, seed)
  os.makedirs(directory)
  with open(os.path.join(directory, 'config.json'), 'w') as f:
    f.write(reproduction.run_config(model, seed, dataset=dataset, data_dir='/data/cifar10_jpeg').to_json_best_effort())
  config = json.load(open(os.path.join(directory, 'config.json')))
  config['num_train_steps'] = num_train_steps
  json.dump(config, open(os.path.join(directory, 'config.json'), 'w'))
  with open(os.path.join(directory, 'metrics.jsonl'), 'w') as f:
    for s in range(1, step + 1):
      f.write(json.dumps({'step': s, 'train_accuracy': 0.5, 'train_images_per_second': 1000.0 * s,
                          **({'test_error': 0.5} if s % 5 == 0 else {})}) + '\n')
  with open(os.path.join(directory, rundir.TIMING_FILE), 'w') as f:
    json.dump({'sessions': [{'seconds': s, 'versions': {'jax': '0.0'}} for s in seconds]}, f)
  if test_error is not None:
    with open(os.path.join(directory, 'results.json'), 'w') as f:
      json.dump({'step': step, 'test_error': test_error, 'val_error': test_error + 0.01, 'num_params': 269722,
                 'macs': 40_550_000, 'devices': '1 x NVIDIA H100', 'class_names': class_names}, f)


def test_report_means_finished_seeds_and_shows_the_rest_as_they_are(tmp_path):
  fake_run(tmp_path, 'resnet20', 0, test_error=0.08)
  fake_run(tmp_path, 'resnet20', 1, test_error=0.09, seconds=(100.0, None))  # A session killed outright.
  fake_run(tmp_path, 'resnet20', 2, step=7)  # Unfinished: not averaged.
  fake_run(tmp_path, 'resnet56', 0, test_error=0.07, step=8, num_train_steps=10)  # Stopped early.
  fake_run(tmp_path, 'resnet110', 0, step=3)
  with open(tmp_path / rundir.PLAN_FILE, 'w') as f:
    json.dump({'table': 'he2016', 'seeds': 3, 'models': ['resnet20', 'resnet56', 'resnet110'],
               'settings': {'steps_scale': 1.0}, 'commands': ['python -m jaxresnet.reproduce ...']}, f)
  data = tables.write_report(str(tmp_path))

  rows = {row['model']: row for row in data['models']}
  resnet20 = rows['resnet20']
  assert (resnet20['num_finished'], resnet20['num_seeds']) == (2, 3)
  assert resnet20['test_error_mean'] == pytest.approx(0.085)
  assert resnet20['test_error_std'] == pytest.approx(np.std([0.08, 0.09], ddof=1))
  assert resnet20['wall_clock_seconds_mean'] == pytest.approx(80.0)
  assert resnet20['wall_clock_complete'] is False
  assert [r['status'] for r in resnet20['runs']] == ['finished', 'finished', 'unfinished']
  assert resnet20['runs'][2]['step'] == 7 and resnet20['runs'][2]['test_error'] is None
  assert rows['resnet56']['num_finished'] == 0  # results.json before the last step does not count.
  assert [r['status'] for r in rows['resnet110']['runs']] == ['unfinished', 'not started', 'not started']
  assert data['dataset'] == 'CIFAR-10-JPEG'

  markdown = (tmp_path / 'report.md').read_text()
  assert '| ResNet-20 | 0.27M | 0.27M | 40.55M | 8.75 | 8.50 ± 0.71 | 2/3 | 9.50 ± 0.71 | ≥ 1.3 min |' in markdown
  assert '| ResNet-56 | — | 0.85M | — | 6.97 | not run | 0/3 |' in markdown
  assert '| ResNet-110 | — | 1.70M | — | 6.43 | not run | 0/3 |' in markdown
  assert '| Plain-20 | — | — | — | 9.5* | not run | — |' in markdown
  assert '| ResNet-20 | 2 | unfinished | 7/10 | — |' in markdown
  assert '| ResNet-110 | 1 | not started | — |' in markdown
  assert '| 9.00 | 10.00 | ≥ 1.7 min | 1 x NVIDIA H100 |' in markdown  # Its timing file names no host.
  assert 'Shortened schedule' not in markdown
  assert 'CIFAR-10-JPEG is CIFAR-10 stored as JPEG' in markdown
  assert 'ResNet-110 warm-up: learning rate 0.01 (constant) for the first 400 iterations' in markdown
  assert '![train and test error vs iterations](figure6.png)' in markdown
  assert os.path.exists(tmp_path / 'figure6.png')


@pytest.fixture
def small_disk(tmp_path):
  from conftest import small_tmpfs  # pylint: disable=g-import-not-at-top
  yield from small_tmpfs(tmp_path, 'disk', '64k')


@pytest.mark.slow
def test_export_to_a_full_disk_is_one_error_line_and_leaves_no_partial_export(tmp_path, small_disk):
  workdir = tmp_path / 'runs'
  fake_run(workdir, 'resnet20', 0, test_error=0.08, step=3000, num_train_steps=3000)  # A 250 KB metrics.jsonl.
  target = os.path.join(small_disk, 'results')
  result = run_module('jaxresnet.report', f'--workdir={workdir}', f'--export_to={target}')
  assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr
  [line] = result.stderr.strip().splitlines()
  assert line.startswith(f'error: cannot export to {target}: No space left on device'), line
  assert os.listdir(small_disk) == []  # Nothing half-exported: no results.json beside an empty metrics.jsonl.


@pytest.mark.slow
def test_report_output_under_a_file_is_one_error_line_and_writes_nothing_there(tmp_path):
  workdir = tmp_path / 'runs'
  fake_run(workdir, 'resnet20', 0, test_error=0.08)
  (tmp_path / 'a_file').write_text('kept')
  result = run_module('jaxresnet.report', f'--workdir={workdir}', f'--output={tmp_path / "a_file" / "table.md"}')
  assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr
  [line] = result.stderr.strip().splitlines()
  assert line.startswith('error: cannot write') and 'a_file is a file, not a folder' in line, line
  assert (tmp_path / 'a_file').read_text() == 'kept'


@pytest.mark.slow
def test_export_copies_the_finished_runs_records_and_the_report_is_the_same_from_them(tmp_path):
  workdir, target = tmp_path / 'runs', tmp_path / 'results'
  fake_run(workdir, 'resnet20', 0, test_error=0.08)
  fake_run(workdir, 'resnet20', 1, step=7)  # Unfinished: stays behind.
  fake_run(workdir, 'plain20', 0, test_error=0.1)
  for checkpoint in ('checkpoints/8/state', 'peer_checkpoint.pt'):
    os.makedirs(os.path.dirname(workdir / 'resnet20' / 'seed0' / checkpoint), exist_ok=True)
    (workdir / 'resnet20' / 'seed0' / checkpoint).write_text('weights')
  with open(workdir / rundir.PLAN_FILE, 'w') as f:
    json.dump({'table': 'he2016', 'seeds': 2, 'models': ['resnet20', 'plain20'], 'settings': {'steps_scale': 1.0},
               'commands': ['python -m jaxresnet.reproduce ...']}, f)
  result = run_module('jaxresnet.report', f'--workdir={workdir}', f'--export_to={target}', check=True)
  assert 'copied the records of 2 finished runs' in result.stdout

  copied = sorted(str(p.relative_to(target)) for p in target.rglob('*') if p.is_file())
  assert copied == sorted([rundir.PLAN_FILE, tables.REPORT_MD, tables.REPORT_JSON, tables.FIGURE_FILE] +
                          [f'{run}/{name}' for run in ('plain20/seed0', 'resnet20/seed0') for name in tables.RECORD_FILES])
  table_rows = lambda path: [line for line in path.read_text().splitlines() if line.startswith('| ResNet-20 |')
                             or line.startswith('| Plain-20 |')][:2]  # The paper table's two rows.
  tables.write_report(str(workdir))
  assert table_rows(target / tables.REPORT_MD) == table_rows(workdir / tables.REPORT_MD)
  assert '| ResNet-20 | 1 | not started |' in (target / tables.REPORT_MD).read_text()  # Not copied, not made up.

  tables.export_records(str(workdir), str(target))  # Again: the same records, nothing to refuse.
  results = json.load(open(workdir / 'plain20' / 'seed0' / 'results.json'))
  with open(workdir / 'plain20' / 'seed0' / 'results.json', 'w') as f:  # The same run trained again elsewhere.
    json.dump({**results, 'test_error': 0.2}, f)
  before = (target / 'plain20' / 'seed0' / 'results.json').read_text()
  with pytest.raises(DataError, match='already records another finished run'):
    tables.export_records(str(workdir), str(target))
  assert (target / 'plain20' / 'seed0' / 'results.json').read_text() == before  # The finished record stays.
  with pytest.raises(DataError, match='into itself'):
    tables.export_records(str(workdir), str(workdir))


def test_a_report_before_any_run_finished_reads_as_sentences(tmp_path, monkeypatch):
  with open(tmp_path / rundir.PLAN_FILE, 'w') as f:
    json.dump({'table': 'he2016', 'seeds': 1, 'peer_seeds': 1, 'models': ['resnet20'], 'settings': {'steps_scale': 1.0},
               'commands': ['python -m jaxresnet.reproduce --peer A', 'python -m jaxresnet.reproduce --peer A',
                            'python -m jaxresnet.reproduce --peer B']}, f)
  monkeypatch.chdir(tmp_path.parent)
  tables.write_report(str(tmp_path))
  markdown = (tmp_path / 'report.md').read_text()
  assert '- ResNet-20: no comparison yet (neither jaxresnet nor the peer has a finished run).' in markdown
  assert 'split and test set. Its stride-2 padding is not recorded yet (no peer run has started).' in markdown
  # A command run again to resume is listed once, with how many times it ran.
  assert '```\npython -m jaxresnet.reproduce --peer A  # 2 times\npython -m jaxresnet.reproduce --peer B\n```' in markdown
  assert f'by `python -m jaxresnet.report --workdir={tmp_path.name}`.' in markdown  # Relative: no machine's path.


def test_report_of_an_empty_workdir_says_so(tmp_path):
  data = tables.write_report(str(tmp_path))
  assert data['figure'] is None and all(row['num_finished'] == 0 for row in data['models'])
  markdown = (tmp_path / 'report.md').read_text()
  assert 'no runs yet' in markdown and 'figure6.png' not in markdown


@pytest.mark.slow
def test_report_cli_names_tfds_cifar10_and_rejects_a_missing_dir(tmp_path):
  fake_run(tmp_path, 'plain20', 0, test_error=0.1, dataset='cifar10')
  result = run_module('jaxresnet.report', f'--workdir={tmp_path}', check=True)
  assert 'report.md' in result.stdout
  assert 'Dataset: **CIFAR-10 (TFDS)**' in (tmp_path / 'report.md').read_text()
  missing = run_module('jaxresnet.report', f'--workdir={tmp_path / "nope"}')
  assert missing.returncode == 1 and missing.stderr.strip().splitlines()[-1].startswith('error: ')


COMMITTED_EVIDENCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'results',
                                  'he2016_eighth_cpu')


def test_the_committed_he2016_eighth_report_is_what_its_run_files_give_and_the_readme_quotes_it(tmp_path):
  # results/he2016_eighth_cpu is exported with report --export_to; a hand edit of report.md or a run file that
  # was not exported again would make the committed report disagree with its own records.
  copy = tmp_path / 'evidence'
  shutil.copytree(COMMITTED_EVIDENCE, copy)
  report = tables.write_report(str(copy), dpi=20)
  def body(path):
    with open(path) as f:
      return [line for line in f if not line.startswith('Generated ')]
  assert body(copy / 'report.md') == body(os.path.join(COMMITTED_EVIDENCE, 'report.md'))

  def quoted(side):
    seeds = [run['seed'] for run in side['runs'] if run['status'] == 'finished']
    mean = f'{100 * side["test_error_mean"]:.2f}'
    if len(seeds) == 1:
      return f'{mean}% (seed {seeds[0]})'
    return f'{mean} ± {100 * side["test_error_std"]:.2f}% (seeds {", ".join(map(str, seeds))})'
  readme = open(os.path.join(os.path.dirname(COMMITTED_EVIDENCE), '..', 'README.md')).read()
  line = next(line for line in readme.splitlines() if line.startswith('| ResNet-20 and Plain-20 at 1/8 of the paper'))
  compared = [m for m in report['models'] if m['num_finished'] and (m.get('peer') or {}).get('num_finished')]
  assert [m['model'] for m in compared] == ['plain20', 'resnet20']
  for row in compared:
    assert f'{row["name"]}: jaxresnet {quoted(row)}, peer {quoted(row["peer"])}' in line, row['name']
