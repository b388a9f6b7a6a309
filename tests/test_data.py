import os
import socket

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxresnet import data
from jaxresnet.infra.errors import DataError
from conftest import tiny_config, write_image_folder
from float32_tolerance import sum_atol


def test_image_folder_reads_real_jpegs_with_labels(image_folder):
  arrays = data.load_arrays('image_folder', image_folder)
  assert list(arrays['class_names']) == ['cat', 'dog', 'ship']
  assert arrays['train_images'].shape == (48, 32, 32, 3) and arrays['train_images'].dtype == np.uint8
  assert arrays['test_images'].shape == (12, 32, 32, 3)
  assert np.array_equal(arrays['train_labels'], np.repeat([0, 1, 2], 16))
  # Each class was written around its own colour: labels must follow the folders.
  means = [arrays['train_images'][arrays['train_labels'] == k].mean(axis=(0, 1, 2)) for k in range(3)]
  assert np.linalg.norm(means[0] - means[1]) > 20


def test_cache_is_reused_and_refreshed_when_files_change(image_folder, tmp_path):
  cache = tmp_path / 'cache'
  first = data.load_arrays('image_folder', image_folder, str(cache))
  assert len(os.listdir(cache)) == 1
  # A cached copy is read back identically, without decoding (remove Pillow's access to prove it).
  again = data.load_arrays('image_folder', image_folder, str(cache))
  assert all(np.array_equal(first[k], again[k]) for k in first)
  os.remove(os.path.join(image_folder, 'train', 'cat', '0000.jpg'))
  changed = data.load_arrays('image_folder', image_folder, str(cache))
  assert len(changed['train_labels']) == 47 and len(os.listdir(cache)) == 2


def test_archive_of_an_image_folder(image_folder, tmp_path):
  import tarfile
  archive = tmp_path / 'images.tar.gz'
  with tarfile.open(archive, 'w:gz') as tar:
    tar.add(image_folder, arcname='my_images')
  from_archive = data.load_arrays('image_folder', str(archive))
  from_folder = data.load_arrays('image_folder', image_folder, str(tmp_path / 'other_cache'))
  assert all(np.array_equal(from_archive[k], from_folder[k]) for k in from_folder)


def test_broken_image_names_the_file(image_folder):
  bad = os.path.join(image_folder, 'train', 'dog', 'broken.jpg')
  with open(bad, 'wb') as f:
    f.write(b'not a jpeg at all')
  with pytest.raises(DataError, match='cannot read image .*broken.jpg'):
    data.load_arrays('image_folder', image_folder)


@pytest.mark.parametrize('damage,message', [
    (lambda root: os.rename(os.path.join(root, 'test', 'ship'), os.path.join(root, 'test', 'boat')),
     'classes of train/ missing from test/'),
    (lambda root: os.rename(os.path.join(root, 'test'), os.path.join(root, 'eval')), 'has no test/ folder'),
    (lambda root: None, None),
])
def test_folder_layout_errors(image_folder, damage, message):
  damage(image_folder)
  if message is None:
    data.load_arrays('image_folder', image_folder)
  else:
    with pytest.raises(DataError, match=message):
      data.load_arrays('image_folder', image_folder)


def test_missing_and_empty_folders(tmp_path):
  with pytest.raises(DataError, match='does not exist'):
    data.load_arrays('image_folder', str(tmp_path / 'nowhere'))
  os.makedirs(tmp_path / 'empty' / 'train')
  os.makedirs(tmp_path / 'empty' / 'test')
  with pytest.raises(DataError, match='holds no class folders'):
    data.load_arrays('image_folder', str(tmp_path / 'empty'))
  with pytest.raises(DataError, match='needs config.data_dir'):
    data.load_arrays('image_folder', '')


def test_images_of_different_sizes_are_rejected(tmp_path):
  root = write_image_folder(tmp_path / 'a', size=32)
  write_image_folder(tmp_path / 'b', size=24)
  os.replace(tmp_path / 'b' / 'train' / 'cat' / '0001.jpg', os.path.join(root, 'train', 'cat', '0001.jpg'))
  with pytest.raises(DataError, match='0001.jpg is 24x24'):
    data.load_arrays('image_folder', root)


def test_validation_split_is_deterministic_and_disjoint(image_folder):
  config = tiny_config(image_folder, num_val_examples=9)
  a, b = data.load_dataset(config), data.load_dataset(config)
  assert len(a.train_labels) == 39 and len(a.val_labels) == 9 and len(a.test_labels) == 12
  assert np.array_equal(a.val_images, b.val_images) and np.array_equal(a.train_labels, b.train_labels)
  # The split does not depend on the run's seed.
  config.seed = 7
  assert np.array_equal(data.load_dataset(config).val_images, a.val_images)
  train_rows = {x.tobytes() for x in a.train_images}
  assert not any(x.tobytes() in train_rows for x in a.val_images)


def test_pixel_mean_normalization_centres_the_training_set(image_folder):
  images = data.load_arrays('image_folder', image_folder)['train_images']
  mean, std = data.input_statistics(images, 'pixel_mean')
  assert mean.shape == (32, 32, 3) and np.all(std == 1)
  normalized = data.normalize(jnp.asarray(images), mean, std)
  # Summed in float64, so only float32's rounding of the mean and of each difference is left: 2 ulp of 255.
  assert abs(float(np.mean(np.asarray(normalized, np.float64)))) < sum_atol(1, float(images.max()))
  mean, std = data.input_statistics(images, 'channel_mean_std')
  normalized = np.asarray(data.normalize(jnp.asarray(images), mean, std))
  np.testing.assert_allclose(normalized.std(axis=(0, 1, 2)), 1, atol=1e-3)


def test_augment_crops_and_flips_keeping_shape():
  images = jax.random.normal(jax.random.key(0), (64, 32, 32, 3))
  out = data.augment(jax.random.key(1), images)
  assert out.shape == images.shape
  # Every output is a shifted (by at most 4 pixels), possibly mirrored copy of its input.
  padded = np.pad(np.asarray(images), ((0, 0), (4, 4), (4, 4), (0, 0)))
  for i in range(8):
    candidates = [padded[i, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
    candidates += [c[:, ::-1] for c in candidates]
    assert any(np.array_equal(np.asarray(out[i]), c) for c in candidates)
  # Randomness: different keys, different crops; same key, same crops; roughly half flipped.
  assert not np.array_equal(out, data.augment(jax.random.key(2), images))
  assert np.array_equal(out, data.augment(jax.random.key(1), images))


@pytest.mark.slow
def test_tfds_source_through_mock_data(monkeypatch):
  tfds = pytest.importorskip('tensorflow_datasets')
  # The mocked dataset is not prepared, so the download probe runs first: let it reach a local listener.
  listener = socket.create_server(('127.0.0.1', 0))
  monkeypatch.setenv('JAXRESNET_DOWNLOAD_PROBE', f'127.0.0.1:{listener.getsockname()[1]}')
  with listener, tfds.testing.mock_data(num_examples=20):
    arrays = data.read_tfds('cifar10', '')
  assert arrays['train_images'].shape == (20, 32, 32, 3) and arrays['train_images'].dtype == np.uint8
  assert arrays['test_labels'].shape == (20,) and len(arrays['class_names']) == 10
  assert set(arrays['train_labels']) <= set(range(10))


def test_tfds_unknown_dataset_is_a_clear_error():
  pytest.importorskip('tensorflow_datasets')
  with pytest.raises(DataError, match="cannot load TFDS dataset 'no_such_dataset'"):
    data.read_tfds('no_such_dataset', '')
