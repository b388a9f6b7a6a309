"""predict: top-k classes of image files and folders, from the checkpoint alone."""
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from jaxresnet import data
from jaxresnet.training import inference
from jaxresnet.training import train
from conftest import run_module, tiny_config, write_image_folder


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A tiny trained run, whose training images are then deleted: predict must not need them."""
  root = tmp_path_factory.mktemp('predict')
  folder = write_image_folder(root / 'images')
  workdir = str(root / 'run')
  train.train_and_evaluate(tiny_config(folder, num_train_steps=3, cache_dir=str(root / 'cache')), workdir)
  samples = root / 'samples'
  os.makedirs(samples / 'nested')
  shutil.copy(os.path.join(folder, 'test', 'cat', '0000.jpg'), samples / 'cat.jpg')
  shutil.copy(os.path.join(folder, 'test', 'ship', '0001.jpg'), samples / 'nested' / 'ship.jpg')
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 4), np.uint8)).save(samples / 'big.png')
  (samples / 'broken.jpg').write_bytes(b'this is not a JPEG')
  (samples / 'notes.txt').write_text('not an image, and not an image name: skipped in folders')
  shutil.rmtree(folder)
  shutil.rmtree(root / 'cache')
  return workdir, samples


def lines(text, prefix=''):
  return [l for l in text.splitlines() if l.startswith(prefix)]


@pytest.mark.slow
def test_predict_a_folder_with_a_broken_file(run):
  workdir, samples = run
  result = run_module('jaxresnet.predict', f'--workdir={workdir}', '--top_k=2', str(samples))
  assert result.returncode == 1, result.stderr
  errors = lines(result.stderr, 'error:')
  assert errors[0] == f'error: cannot read image {samples / "broken.jpg"}: not an image file Pillow can read'
  assert errors[1] == 'error: 1 of 4 files could not be read' and len(errors) == 2
  assert lines(result.stderr, 'warning:') == [
      f'warning: {samples / "big.png"} is 70x50 RGBA; resized/converted to 32x32 RGB']
  predicted = {l.split(': ')[0]: l.split(': ')[1] for l in result.stdout.splitlines()}
  assert sorted(predicted) == sorted(str(samples / n) for n in ('big.png', 'cat.jpg', 'nested/ship.jpg'))
  for text in predicted.values():
    assert re.fullmatch(r'(cat|dog|ship) \d+\.\d\d%  (cat|dog|ship) \d+\.\d\d%', text), text

  # The same probabilities as the model computes in-process, for the file given by name too.
  _, metadata, _, state = inference.restore_model(workdir)
  image, changed = data.read_image_as(str(samples / 'cat.jpg'), metadata['image_shape'])
  assert changed is None
  probabilities = np.asarray(jax.nn.softmax(state.apply_fn(
      {'params': state.params, 'batch_stats': state.batch_stats},
      train.prepare_images(state, jnp.asarray(image[None]), augment=False), train=False)))[0]
  single = run_module('jaxresnet.predict', f'--workdir={workdir}', '--top_k=3', str(samples / 'cat.jpg'))
  assert single.returncode == 0, single.stderr
  assert single.stdout.strip() == (f'{samples / "cat.jpg"}: ' +
                                   inference.format_top_k(probabilities, metadata['class_names'], 3))
  assert predicted[str(samples / 'cat.jpg')] == inference.format_top_k(probabilities, metadata['class_names'], 2)


@pytest.mark.slow
def test_file_names_that_are_not_utf8_are_printed_as_escapes_on_a_strict_terminal(run, tmp_path):
  workdir, samples = run
  folder = os.fsencode(str(tmp_path / 'odd'))
  os.makedirs(folder)
  shutil.copy(str(samples / 'cat.jpg'), os.path.join(folder, b'caf\xe9.jpg'))  # Latin-1 names, not UTF-8.
  with open(os.path.join(folder, b'br\xf6ken.jpg'), 'wb') as f:
    f.write(b'this is not a JPEG')
  result = run_module('jaxresnet.predict', f'--workdir={workdir}', str(tmp_path / 'odd'),
                      env={'PYTHONIOENCODING': 'utf-8:strict'})  # A terminal that refuses what is not UTF-8.
  assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr
  assert lines(result.stdout, f'{tmp_path / "odd"}/caf\\xe9.jpg: ')
  assert f'error: cannot read image {tmp_path / "odd"}/br\\xf6ken.jpg: not an image file' in result.stderr


def test_find_images_recurses_and_keeps_named_files(run):
  _, samples = run
  found = inference.find_images([str(samples), str(samples / 'notes.txt')])
  assert found == [str(samples / n) for n in ('big.png', 'broken.jpg', 'cat.jpg', 'nested/ship.jpg', 'notes.txt')]


def test_format_top_k_orders_by_probability():
  assert inference.format_top_k(np.array([0.1, 0.7, 0.2]), ['a', 'b', 'c'], 5) == 'b 70.00%  c 20.00%  a 10.00%'
