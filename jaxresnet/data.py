"""Data: decode a dataset once into uint8 arrays, cache them, augment on device.

Sources:
  * any TFDS image classification dataset by name ('cifar10', 'cifar100'),
    read through TFDS (needs TensorFlow), `config.data_dir` being a TFDS data dir;
  * 'image_folder': `config.data_dir` holds train/<class>/*.jpg and
    test/<class>/*.jpg (TFDS ImageFolder layout), decoded with Pillow; it may
    also be a .tar.gz of such a folder (unpacked to a temporary dir once).

Either way the decoded arrays go to one .npz cache, so later runs start in
seconds and need no TensorFlow. The whole training set then lives on the
accelerator: batches are gathered, cropped and flipped inside the jitted step.
"""
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import tarfile
import tempfile
from typing import Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxresnet.errors import DataError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')
_SPLIT_SEED = 0  # The train/validation split is the same for every run seed.


@dataclasses.dataclass
class Dataset:
  """uint8 NHWC images and int32 labels for each split, on the host."""
  train_images: np.ndarray
  train_labels: np.ndarray
  val_images: np.ndarray
  val_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  class_names: List[str]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


# --------------------------------------------------------------------------
# Reading and caching.


def list_image_folder(root: str) -> Tuple[List[str], Dict[str, List[Tuple[str, int]]]]:
  """Class names and, per split, (path, label) pairs of an ImageFolder tree."""
  if not os.path.isdir(root):
    raise DataError(f'image folder {root!r} does not exist')
  splits = {}
  class_names = None
  for split in ('train', 'test'):
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
      raise DataError(f'image folder {root!r} has no {split}/ folder '
                      '(expected train/<class>/*.jpg and test/<class>/*.jpg)')
    names = sorted(d for d in os.listdir(split_dir)
                   if os.path.isdir(os.path.join(split_dir, d)) and not d.startswith('.'))
    if not names:
      raise DataError(f'{split_dir!r} holds no class folders')
    if class_names is None:
      class_names = names
    elif names != class_names:
      raise DataError(f'class folders differ between train/ and test/ in {root!r}: '
                      f'{sorted(set(names) ^ set(class_names))}')
    files = []
    for label, name in enumerate(names):
      class_dir = os.path.join(split_dir, name)
      files += [(os.path.join(class_dir, f), label) for f in sorted(os.listdir(class_dir))
                if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not files:
      raise DataError(f'{split_dir!r} holds no images ({", ".join(IMAGE_EXTENSIONS)})')
    splits[split] = files
  return class_names, splits


def decode_image(path: str, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
  """One image as uint8 HWC RGB; `size` (width, height) resizes it if it differs."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      image = image.convert('RGB')
      if size is not None and image.size != tuple(size):
        image = image.resize(size, Image.BILINEAR)
      return np.asarray(image, dtype=np.uint8)
  except Exception as e:  # PIL raises many kinds; all mean "not a usable image".
    raise DataError(f'cannot read image {path}: {e}') from None


def read_image_folder(root: str) -> Dict[str, np.ndarray]:
  """Decodes an ImageFolder tree with Pillow; all images must share one size."""
  class_names, splits = list_image_folder(root)
  first = splits['train'][0][0]
  shape = decode_image(first).shape
  arrays = {'class_names': np.array(class_names)}
  with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
    for split, files in splits.items():
      images = list(pool.map(lambda f: decode_image(f[0]), files, chunksize=256))
      for (path, _), image in zip(files, images):
        if image.shape != shape:
          raise DataError(f'image {path} is {image.shape[1]}x{image.shape[0]}, but the '
                          f'folder\'s images are {shape[1]}x{shape[0]} ({first})')
      arrays[f'{split}_images'] = np.stack(images)
      arrays[f'{split}_labels'] = np.array([label for _, label in files], np.int32)
  return arrays


def read_tfds(name: str, data_dir: str) -> Dict[str, np.ndarray]:
  """Reads a TFDS dataset's train and test splits whole (needs TensorFlow)."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise DataError(f'dataset {name!r} is read through tensorflow-datasets, which is not '
                    'installed; install it (pip install tensorflow-cpu tensorflow-datasets) or '
                    'use dataset=image_folder') from None
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
    builder.download_and_prepare()
    arrays = {}
    for split in ('train', 'test'):
      # Batches, not batch_size=-1: that needs a known cardinality, which mocked data lacks.
      batches = list(tfds.as_numpy(builder.as_dataset(split=split, batch_size=1024)))
      arrays[f'{split}_images'] = np.concatenate([b['image'] for b in batches]).astype(np.uint8)
      arrays[f'{split}_labels'] = np.concatenate([b['label'] for b in batches]).astype(np.int32)
    arrays['class_names'] = np.array(builder.info.features['label'].names)
  except DataError:
    raise
  except Exception as e:  # TFDS: unknown name, failed download, missing split...
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DataError(f'cannot load TFDS dataset {name!r}: {message}') from None
  return arrays


ARCHIVE_EXTENSIONS = ('.tar.gz', '.tgz', '.tar')


def _is_archive(path: str) -> bool:
  return path.endswith(ARCHIVE_EXTENSIONS) and os.path.isfile(path)


def _fingerprint(dataset: str, data_dir: str) -> str:
  """Changes whenever the source data changes, so a stale cache is never read."""
  h = hashlib.sha256(f'{dataset}\0{os.path.abspath(data_dir) if data_dir else ""}'.encode())
  if dataset == 'image_folder' and _is_archive(data_dir):
    st = os.stat(data_dir)
    h.update(f'{st.st_size}\0{st.st_mtime_ns}'.encode())
  elif dataset == 'image_folder':
    _, splits = list_image_folder(data_dir)
    for split, files in sorted(splits.items()):
      for path, label in files:
        st = os.stat(path)
        h.update(f'{split}\0{path}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode())
  return h.hexdigest()[:16]


def read_image_folder_archive(archive: str) -> Dict[str, np.ndarray]:
  """Unpacks a .tar.gz of an image folder to a temporary dir and reads it."""
  with tempfile.TemporaryDirectory() as tmp:
    try:
      with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter='data')  # 'data' refuses links and paths outside tmp.
    except (tarfile.TarError, OSError, EOFError) as e:
      raise DataError(f'cannot unpack {archive}: {e}') from None
    # The folder holding train/ and test/: the archive's root or one level down.
    for root in [tmp] + sorted(os.path.join(tmp, d) for d in os.listdir(tmp)):
      if os.path.isdir(os.path.join(root, 'train')):
        return read_image_folder(root)
    raise DataError(f'{archive} holds no train/ folder (expected [name/]train/<class>/*.jpg)')


def default_cache_dir() -> str:
  return os.environ.get('JAXRESNET_CACHE_DIR') or os.path.join(
      os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'jaxresnet')


def load_arrays(dataset: str, data_dir: str, cache_dir: str = '') -> Dict[str, np.ndarray]:
  """The decoded train and test arrays, from the cache when it is fresh."""
  if dataset == 'image_folder' and not data_dir:
    raise DataError('dataset=image_folder needs config.data_dir (a folder holding train/ and test/)')
  cache_dir = cache_dir or default_cache_dir()
  path = os.path.join(cache_dir, f'{dataset}-{_fingerprint(dataset, data_dir)}.npz')
  if os.path.exists(path):
    try:
      with np.load(path) as cached:
        return {k: cached[k] for k in cached.files}
    except Exception:  # A damaged cache is rebuilt, never trusted.
      pass
  if dataset == 'image_folder' and _is_archive(data_dir):
    arrays = read_image_folder_archive(data_dir)
  elif dataset == 'image_folder':
    arrays = read_image_folder(data_dir)
  else:
    arrays = read_tfds(dataset, data_dir)
  try:
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}.npz'
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # Atomic: a crash never leaves a half cache under the real name.
  except OSError:
    pass  # An unwritable cache only costs the next run a decode.
  return arrays


def split_validation(images: np.ndarray, labels: np.ndarray, num_val: int):
  """Deterministic train/validation split, independent of the run's seed."""
  if not 0 <= num_val < len(images):
    raise DataError(f'num_val_examples={num_val} must be in [0, {len(images)}) for this dataset')
  order = np.random.default_rng(_SPLIT_SEED).permutation(len(images))
  train, val = np.sort(order[num_val:]), np.sort(order[:num_val])
  return images[train], labels[train], images[val], labels[val]


def load_dataset(config) -> Dataset:
  """The dataset a config names, split into train, validation and test."""
  arrays = load_arrays(config.dataset, config.data_dir, config.cache_dir)
  train_images, train_labels, val_images, val_labels = split_validation(
      arrays['train_images'], arrays['train_labels'], config.num_val_examples)
  return Dataset(train_images, train_labels, val_images, val_labels,
                 arrays['test_images'], arrays['test_labels'],
                 [str(c) for c in arrays['class_names']])


# --------------------------------------------------------------------------
# Normalization and augmentation (pure JAX, run inside jit).


def input_statistics(train_images: np.ndarray, normalization: str):
  """(mean, std) in [0, 1] units, broadcastable against NHWC images."""
  x = train_images.astype(np.float32) / 255.0
  if normalization == 'pixel_mean':  # The paper: subtract the per-pixel mean.
    return x.mean(axis=0), np.ones((x.shape[-1],), np.float32)
  if normalization == 'channel_mean_std':
    return x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))
  raise ValueError(f'unknown normalization {normalization!r}')


def normalize(images: jnp.ndarray, mean: jnp.ndarray, std: jnp.ndarray) -> jnp.ndarray:
  return (images.astype(jnp.float32) / 255.0 - mean) / std


def augment(rng: jax.Array, images: jnp.ndarray, pad: int = 4) -> jnp.ndarray:
  """Pads by `pad` with zeros, crops back at random and flips half the images."""
  n, h, w, c = images.shape
  crop_rng, flip_rng = jax.random.split(rng)
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = jax.random.randint(crop_rng, (n, 2), 0, 2 * pad + 1)
  crops = jax.vmap(lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0), (h, w, c)))(
      padded, offsets)
  flip = jax.random.bernoulli(flip_rng, 0.5, (n, 1, 1, 1))
  return jnp.where(flip, crops[:, :, ::-1, :], crops)


def describe(dataset: Dataset) -> str:
  return json.dumps({'train': len(dataset.train_labels), 'val': len(dataset.val_labels),
                     'test': len(dataset.test_labels), 'classes': dataset.num_classes})


# --------------------------------------------------------------------------
# Images from outside the training data: a user's own test folder, files to predict.


def read_image_as(path: str, image_shape) -> Tuple[np.ndarray, Optional[str]]:
  """An image as uint8 `image_shape` (H, W, 3) RGB, and what it was ('640x480 RGBA') if it had to change."""
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  height, width, channels = image_shape
  if channels != 3:
    raise DataError(f'the model takes {channels}-channel images; only RGB (3) files can be read')
  try:
    with Image.open(path) as image:  # Reads the header only.
      size, mode = image.size, image.mode
  except UnidentifiedImageError:
    raise DataError(f'cannot read image {path}: not an image file Pillow can read') from None
  except Exception as e:  # Missing file, permissions...
    raise DataError(f'cannot read image {path}: {e}') from None
  changed = None if (size == (width, height) and mode == 'RGB') else f'{size[0]}x{size[1]} {mode}'
  return decode_image(path, (width, height)), changed


def read_labelled_folder(root: str, class_names: List[str], image_shape):
  """(images, labels, changes) of a test-style folder, root/<class>/* or root/test/<class>/*.

  Labels are indices into `class_names` (the model's classes); the folder may
  hold fewer classes, but none the model does not know. `changes` lists
  (path, what it was) for each image resized or converted to `image_shape` RGB.
  """
  if not os.path.isdir(root):
    raise DataError(f'image folder {root!r} does not exist')
  if os.path.isdir(os.path.join(root, 'test')):
    root = os.path.join(root, 'test')
  names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith('.'))
  if not names:
    raise DataError(f'{root!r} holds no class folders (expected <class>/*.jpg or test/<class>/*.jpg)')
  unknown = [n for n in names if n not in class_names]
  if unknown:
    raise DataError(f'{root!r} has class folders that are not classes of the model '
                    f'({", ".join(class_names)}): {", ".join(unknown)}')
  files = [(os.path.join(root, name, f), class_names.index(name)) for name in names
           for f in sorted(os.listdir(os.path.join(root, name)))
           if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.')]
  if not files:
    raise DataError(f'{root!r} holds no images ({", ".join(IMAGE_EXTENSIONS)})')
  with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
    decoded = list(pool.map(lambda f: read_image_as(f[0], image_shape), files))
  changes = [(path, changed) for (path, _), (_, changed) in zip(files, decoded) if changed]
  return (np.stack([image for image, _ in decoded]), np.array([label for _, label in files], np.int32),
          changes)
