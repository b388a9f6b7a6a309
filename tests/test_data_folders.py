"""Image folders whose classes or files are off: refused in one line naming them, or read and reported."""
import os
import shutil

import numpy as np
from PIL import Image
import pytest

from jaxresnet import data
from jaxresnet.infra.errors import DataError


def load(folder, tmp_path):
  return data.load_arrays('image_folder', folder, str(tmp_path / 'cache'))


def one_line_error(folder, tmp_path):
  with pytest.raises(DataError) as error:
    load(folder, tmp_path)
  message = str(error.value)
  assert '\n' not in message, message
  return message


@pytest.mark.parametrize('split', ['train', 'test'])
def test_an_empty_class_folder_is_refused_naming_it(image_folder, tmp_path, split):
  """An empty train/ folder became an extra class with no images (and a wider output layer)."""
  os.makedirs(os.path.join(image_folder, 'train', 'horse'))
  os.makedirs(os.path.join(image_folder, 'test', 'horse'))
  source = os.path.join(image_folder, 'test' if split == 'train' else 'train', 'cat', '0000.jpg')
  shutil.copy(source, os.path.join(image_folder, 'test' if split == 'train' else 'train', 'horse'))
  message = one_line_error(image_folder, tmp_path)
  assert message == f"{os.path.join(image_folder, split)!r} has class folders without images: horse", message


def test_every_empty_class_is_named_at_once(image_folder, tmp_path):
  for name in ('horse', 'ant'):
    os.makedirs(os.path.join(image_folder, 'train', name))
    os.makedirs(os.path.join(image_folder, 'test', name))
  assert one_line_error(image_folder, tmp_path).endswith('has class folders without images: ant, horse')


def test_a_class_missing_from_test_is_refused_naming_it(image_folder, tmp_path):
  shutil.rmtree(os.path.join(image_folder, 'test', 'ship'))
  message = one_line_error(image_folder, tmp_path)
  assert message == f"classes of train/ missing from test/ in {image_folder!r}: ship", message
  os.makedirs(os.path.join(image_folder, 'test', 'ship'))
  shutil.copy(os.path.join(image_folder, 'train', 'ship', '0000.jpg'), os.path.join(image_folder, 'test', 'ship'))
  os.makedirs(os.path.join(image_folder, 'test', 'zebra'))
  message = one_line_error(image_folder, tmp_path)
  assert message == f"classes of test/ missing from train/ in {image_folder!r}: zebra", message


def test_webp_and_tiff_images_are_read(image_folder, tmp_path):
  cat = os.path.join(image_folder, 'train', 'cat')
  pixels = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), np.uint8)
  Image.fromarray(pixels[0]).save(os.path.join(cat, 'x1.webp'), lossless=True)
  Image.fromarray(pixels[1]).save(os.path.join(cat, 'x2.tif'))
  Image.fromarray(pixels[2]).save(os.path.join(cat, 'x3.TIFF'))
  arrays = load(image_folder, tmp_path)
  assert len(arrays['train_labels']) == 48 + 3
  cats = arrays['train_images'][arrays['train_labels'] == 0]
  assert all(any(np.array_equal(p, c) for c in cats) for p in pixels)


def test_files_that_are_not_images_are_reported_once(image_folder, tmp_path, capsys):
  cat, dog = os.path.join(image_folder, 'train', 'cat'), os.path.join(image_folder, 'test', 'dog')
  for path in (os.path.join(cat, 'notes.txt'), os.path.join(cat, 'more.txt'), os.path.join(dog, 'IMG_1.HEIC'),
               os.path.join(dog, 'README')):
    with open(path, 'w') as f:
      f.write('not an image')
  os.makedirs(os.path.join(cat, 'nested'))
  with open(os.path.join(cat, '.DS_Store'), 'w') as f:  # Hidden: the file manager's, not the user's.
    f.write('x')
  arrays = load(image_folder, tmp_path)
  assert len(arrays['train_labels']) == 48 and len(arrays['test_labels']) == 12
  lines = capsys.readouterr().err.splitlines()
  assert lines == [f'warning: skipped 5 entries of {image_folder} that are not image files '
                   f'(2 .txt, 1 .heic, 1 without an extension, 1 folder); images are '
                   f'{", ".join(data.IMAGE_EXTENSIONS)}'], lines


def test_a_clean_folder_prints_nothing(image_folder, tmp_path, capsys):
  load(image_folder, tmp_path)
  assert capsys.readouterr().err == ''


def test_a_labelled_folder_reports_skipped_files_too(image_folder, capsys):
  with open(os.path.join(image_folder, 'test', 'cat', 'notes.txt'), 'w') as f:
    f.write('not an image')
  images, labels, _ = data.read_labelled_folder(image_folder, ['cat', 'dog', 'ship'], (32, 32, 3))
  assert len(labels) == 12
  test_dir = os.path.join(image_folder, 'test')
  assert capsys.readouterr().err.splitlines() == [
      f'warning: skipped 1 entry of {test_dir} that is not an image file (1 .txt); images are '
      f'{", ".join(data.IMAGE_EXTENSIONS)}']


def test_a_labelled_folder_skips_broken_images_as_predict_does(image_folder, capsys):
  """evaluate --data_dir refused a whole folder over one broken image, where predict skips it and goes on."""
  test_dir = os.path.join(image_folder, 'test')
  broken = [os.path.join(test_dir, 'cat', 'broken1.jpg'), os.path.join(test_dir, 'dog', 'broken2.png'),
            os.path.join(test_dir, 'dog', 'broken3.jpg'), os.path.join(test_dir, 'ship', 'broken4.jpg')]
  for path in broken:
    with open(path, 'wb') as f:
      f.write(b'not an image at all')
  images, labels, changes = data.read_labelled_folder(image_folder, ['cat', 'dog', 'ship'], (32, 32, 3))
  assert images.shape == (12, 32, 32, 3) and np.bincount(labels).tolist() == [4, 4, 4] and not changes
  (line,) = capsys.readouterr().err.splitlines()
  assert line.startswith(f'warning: skipped 4 of 16 images in {test_dir} that could not be read: '
                         f'{broken[0]}: ') and f'; {broken[1]}: ' in line and f'; {broken[2]}: ' in line, line
  assert broken[3] not in line and line.endswith('; ...'), line  # The first few are named, not all.


def test_a_labelled_folder_of_broken_images_only_is_one_error_line(tmp_path):
  os.makedirs(tmp_path / 'mine' / 'cat')
  (tmp_path / 'mine' / 'cat' / 'a.jpg').write_bytes(b'not an image')
  with pytest.raises(DataError) as error:
    data.read_labelled_folder(str(tmp_path / 'mine'), ['cat', 'dog'], (32, 32, 3))
  message = str(error.value)
  assert message.startswith(f'none of the 1 images in {tmp_path / "mine"} could be read: ') and '\n' not in message


def test_a_file_name_that_is_not_utf8_is_read_and_a_class_folder_name_is_one_line(image_folder, tmp_path):
  cat = os.path.join(image_folder, 'train', 'cat')
  os.rename(os.path.join(cat, '0000.jpg'), os.path.join(os.fsencode(cat), b'caf\xe9.jpg'))  # Latin-1, not UTF-8.
  arrays = data.load_arrays('image_folder', image_folder, str(tmp_path / 'cache'))
  assert len(arrays['train_labels']) == 48  # 16 per class: the renamed image too.
  test = os.path.join(image_folder, 'test')
  os.rename(os.path.join(test, 'dog'), os.path.join(os.fsencode(test), b'd\xf6g'))
  with pytest.raises(DataError) as refused:
    data.load_arrays('image_folder', image_folder, str(tmp_path / 'cache'))
  message = str(refused.value)
  assert 'not valid UTF-8' in message and "'d\\\\xf6g'" in message and '\n' not in message
  message.encode('utf-8')  # Printable: no lone surrogates.
