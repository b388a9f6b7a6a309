"""evaluate: the confusion matrix files, a user's own test folder, and restoring without the data."""
import csv
import json
import os
import shutil

import jax
import numpy as np
from PIL import Image
import pytest

from jaxresnet import data
from jaxresnet.training import inference
from jaxresnet.infra import devices
from jaxresnet.training import train
from jaxresnet.infra.errors import DataError
from conftest import run_module, tiny_config, write_image_folder


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp('evaluate')
  folder = write_image_folder(root / 'images')
  workdir = str(root / 'run')
  summary = train.train_and_evaluate(tiny_config(folder, num_train_steps=3, cache_dir=str(root / 'cache')),
                                     workdir)
  return workdir, folder, summary, root


def read_csv(path):
  with open(path) as f:
    rows = list(csv.reader(f))
  return rows[0], {row[0]: [int(x) for x in row[1:]] for row in rows[1:]}


@pytest.mark.slow
def test_evaluate_writes_the_confusion_matrix(run):
  workdir, _, summary, _ = run
  result = run_module('jaxresnet.evaluate', f'--workdir={workdir}', check=True)
  assert f'accuracy {100 * summary["test_accuracy"]:.2f}%' in result.stdout
  header, rows = read_csv(os.path.join(workdir, 'confusion_matrix.csv'))
  assert header == ['true \\ predicted', 'cat', 'dog', 'ship']
  matrix = np.array([rows[c] for c in ('cat', 'dog', 'ship')])
  assert matrix.sum(axis=1).tolist() == [4, 4, 4]  # Four test images per class.
  assert np.trace(matrix) / 12 == pytest.approx(summary['test_accuracy'])
  with open(os.path.join(workdir, 'confusion_matrix.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
def test_evaluate_that_cannot_write_its_confusion_matrix_prints_the_results_and_one_error_line(run, tmp_path):
  workdir, _, summary, _ = run
  a_file = tmp_path / 'a_file'
  a_file.write_text('not a folder')
  for output_dir, reason in ((a_file, 'it is a file, not a folder'), (a_file / 'below', 'a_file is a file, not a folder')):
    result = run_module('jaxresnet.evaluate', f'--workdir={workdir}', f'--output_dir={output_dir}')
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr
    assert f'accuracy {100 * summary["test_accuracy"]:.2f}%' in result.stdout  # The numbers came first.
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: cannot write') and reason in last, last
  assert a_file.read_text() == 'not a folder'


@pytest.mark.slow
def test_evaluate_on_my_own_folder(run):
  workdir, folder, _, root = run
  custom = root / 'custom'  # Flat <class>/* layout, two of the three classes, odd sizes and modes.
  for name in ('cat', 'ship'):
    shutil.copytree(os.path.join(folder, 'test', name), custom / name)
  Image.fromarray(np.full((48, 40), 128, np.uint8)).save(custom / 'cat' / 'gray.png')  # Grayscale, 40x48.
  out = root / 'custom_report'
  result = run_module('jaxresnet.evaluate', f'--workdir={workdir}', f'--data_dir={custom}',
                      f'--output_dir={out}', check=True)
  assert f'on {custom} (9 images)' in result.stdout
  assert 'dog' in result.stdout and 'n/a  (no images)' in result.stdout
  assert [l for l in result.stderr.splitlines() if l.startswith('warning:')] == [
      f'warning: 1 image(s) were not 32x32 RGB and were resized/converted (e.g. {custom}/cat/gray.png: 40x48 L)']
  _, rows = read_csv(out / 'confusion_matrix.csv')
  assert [sum(rows[c]) for c in ('cat', 'dog', 'ship')] == [5, 0, 4]
  assert (out / 'confusion_matrix.png').exists()


@pytest.mark.slow
def test_custom_folder_errors(run):
  workdir, folder, _, root = run
  with pytest.raises(DataError, match="has class folders that are not classes of the model .*: horse"):
    os.makedirs(root / 'zoo' / 'horse')
    data.read_labelled_folder(str(root / 'zoo'), ['cat', 'dog', 'ship'], (32, 32, 3))
  # test/ is used when the folder has one; labels follow the model's class order.
  images, labels, changes = data.read_labelled_folder(folder, ['ship', 'dog', 'cat'], (32, 32, 3))
  assert images.shape == (12, 32, 32, 3) and sorted(np.bincount(labels).tolist()) == [4, 4, 4]
  assert labels[0] == 2 and not changes  # The cat folder comes first; cat is class 2 of this model.
  result = run_module('jaxresnet.evaluate', f'--workdir={workdir}', f'--data_dir={root / "missing"}')
  assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == \
      f"error: image folder '{root / 'missing'}' does not exist"


@pytest.mark.slow
def test_restore_model_needs_no_data_and_loads_old_configs(run):
  workdir, _, _, root = run
  _, _, _, full = inference.restore_run(workdir)
  moved = str(root / 'run_copy')
  shutil.copytree(workdir, moved)
  config_path = os.path.join(moved, 'config.json')
  saved = json.load(open(config_path))
  saved['data_dir'] = str(root / 'gone')  # No data anywhere,
  for field in ('dropout', 'squeeze_excitation', 'weight_decay_type', 'adam_b1'):  # and an older config.
    del saved[field]
  json.dump(saved, open(config_path, 'w'))
  config, metadata, _, state = inference.restore_model(moved)
  assert metadata['class_names'] == ['cat', 'dog', 'ship'] and config.weight_decay_type == 'l2'
  for a, b in zip(jax.tree_util.tree_leaves(devices.to_host(full)), jax.tree_util.tree_leaves(devices.to_host(state))):
    np.testing.assert_array_equal(a, b)


VIEWS = (('', ''), ('tta_', ', tta (flip)'), ('ema_', ', ema'), ('ema_tta_', ', ema + tta (flip)'))


@pytest.mark.slow
def test_evaluate_reports_the_ema_and_tta_numbers_of_results_json(image_folder, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(image_folder, num_train_steps=3, ema_decay=0.9, tta='flip'), workdir)
  results = json.load(open(os.path.join(workdir, 'results.json')))
  assert results['ema_test_accuracy'] != results['test_accuracy'] or results['ema_test_loss'] != results['test_loss']
  printed = run_module('jaxresnet.evaluate', f'--workdir={workdir}', check=True).stdout.splitlines()
  for prefix, name in VIEWS:
    line = next((l for l in printed if l.startswith(f'resnet8 at step 3 on test{name}: ')), None)
    assert line is not None, (name, printed)
    assert line.endswith(f': loss {results[prefix + "test_loss"]:.4f}  accuracy '
                         f'{100 * results[prefix + "test_accuracy"]:.2f}%  error '
                         f'{100 * results[prefix + "test_error"]:.2f}%'), (line, results)


@pytest.mark.slow
def test_a_run_with_max_eval_examples_evaluates_a_fixed_subset_and_evaluate_says_so(image_folder, tmp_path):
  from jaxresnet.training import evaluation  # pylint: disable=g-import-not-at-top
  images, labels = np.arange(12 * 2).reshape(12, 2), np.repeat(np.arange(3), 4)  # Sorted by class, as a folder.
  picked_images, picked_labels = evaluation.subset(images, labels, 6)
  assert picked_labels.tolist() == [0, 0, 1, 1, 2, 2] and picked_images[:, 0].tolist() == [0, 4, 8, 12, 16, 20]
  assert evaluation.subset(images, labels, 0)[1] is labels and evaluation.subset(images, labels, 50)[1] is labels
  workdir = str(tmp_path / 'run')
  summary = train.train_and_evaluate(tiny_config(image_folder, num_train_steps=3, max_eval_examples=6), workdir)
  printed = run_module('jaxresnet.evaluate', f'--workdir={workdir}', check=True).stdout
  assert [l.split()[-1] for l in printed.splitlines()[1:4]] == ['2)', '2)', '2)']  # '(of 2)' images per class.
  assert printed.startswith(f'resnet8 at step 3 on test (6 of 12 images: the run\'s config.max_eval_examples): '
                            f'loss {summary["test_loss"]:.4f}  accuracy {100 * summary["test_accuracy"]:.2f}%')


@pytest.mark.slow
@pytest.mark.parametrize('vanishes_in', ['read_metadata', 'restore'])
def test_a_checkpoint_rotated_away_while_evaluate_reads_it_is_not_called_unreadable(image_folder, tmp_path,
                                                                                   monkeypatch, capfd, vanishes_in):
  """evaluate beside a run still training (checkpoints_to_keep=1): the step it listed is deleted as the run saves
  the next one. That is not damage: it reads the new checkpoint, with no warning."""
  from jaxresnet.infra import checkpoints  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'run'
  train.train_and_evaluate(tiny_config(image_folder, checkpoints_to_keep=2), str(workdir))  # Checkpoints 3 and 6.
  saved = tmp_path / 'saved6'
  shutil.move(workdir / 'checkpoints' / '6', saved)  # The run is at step 3, about to save step 6.
  real = getattr(checkpoints, vanishes_in)

  def rotating(manager, *args, **kwargs):
    step = args[0] if vanishes_in == 'read_metadata' else args[1]  # restore(manager, state, step, ...).
    if step == 3 and not (workdir / 'checkpoints' / '6').exists():  # The run saves 6 and deletes 3.
      shutil.move(saved, workdir / 'checkpoints' / '6')
      shutil.rmtree(workdir / 'checkpoints' / '3')
    return real(manager, *args, **kwargs)

  monkeypatch.setattr(checkpoints, vanishes_in, rotating)
  _, _, _, state = inference.restore_model(str(workdir))
  assert int(jax.device_get(state.step)) == 6
  assert 'unreadable' not in capfd.readouterr().err
