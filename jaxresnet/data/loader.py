"""load_arrays and load_dataset: the source a config names, decoded once and then read from the cache."""
import hashlib
import os
import sys
from typing import Dict

import numpy as np

from jaxresnet.data import cache
from jaxresnet.data.archive import is_archive, read_image_folder_archive
from jaxresnet.data.arrays import Dataset, split_validation
from jaxresnet.data.image_folder import (image_folder_expectations, list_image_folder, read_image_folder,
                                         stat_image)
from jaxresnet.data.tfds import read_tfds
from jaxresnet.infra.errors import DataError


def fingerprint(dataset: str, data_dir: str, listing=None) -> str:
  """Changes whenever the source data changes, so a stale cache is never read.

  `listing` is list_image_folder(data_dir) for an image folder, if the caller has it.
  """
  # Paths as bytes (os.fsencode): a file name that is not UTF-8 is a lone surrogate in a str, which .encode() refuses.
  h = hashlib.sha256(f'{dataset}\0'.encode() + (os.fsencode(os.path.abspath(data_dir)) if data_dir else b''))
  if dataset == 'image_folder' and is_archive(data_dir):
    st = os.stat(data_dir)
    h.update(f'{st.st_size}\0{st.st_mtime_ns}'.encode())
  elif dataset == 'image_folder':
    _, splits = listing or list_image_folder(data_dir)
    for split, files in sorted(splits.items()):
      for path, label in files:
        st = stat_image(path)
        h.update(f'{split}\0'.encode() + os.fsencode(path) + f'\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode())
  return h.hexdigest()[:16]


def load_arrays(dataset: str, data_dir: str, cache_dir: str = '') -> Dict[str, np.ndarray]:
  """The decoded train and test arrays, from the cache when it is fresh and sound.

  The cache is `<cache_dir>/<dataset>-<fingerprint>.npz`, with cache_dir ''
  meaning cache.default_cache_dir(); the fingerprint follows the source's files.
  """
  return _load_arrays(dataset, data_dir, cache_dir)[0]


def _load_arrays(dataset: str, data_dir: str, cache_dir: str = ''):
  """(load_arrays' arrays, their cache.split_fingerprints): kept in the cache's meta record, hashed once."""
  if dataset == 'image_folder' and not data_dir:
    raise DataError('dataset=image_folder needs config.data_dir (a folder holding train/ and test/)')
  listing = expected = None
  if dataset == 'image_folder' and not is_archive(data_dir):
    listing = list_image_folder(data_dir)
    expected = image_folder_expectations(listing)
  cache_dir = cache_dir or cache.default_cache_dir()
  cache.remove_stale(cache_dir)
  key = fingerprint(dataset, data_dir, listing)
  path = os.path.join(cache_dir, f'{dataset}-{key}.npz')
  arrays = cache.read_cache(path, key, expected)
  if arrays is not None:
    splits = cache.read_meta(path).get('splits')  # Caches written before fingerprints: hashed now.
    return arrays, splits if isinstance(splits, dict) else cache.split_fingerprints(arrays)
  # No signal handling here: the commands call infra.signals.stop_on_signals()
  # first, so SIGTERM raises and the `finally` blocks below remove their files.
  if dataset == 'image_folder' and is_archive(data_dir):
    arrays = read_image_folder_archive(data_dir, cache_dir)
  elif dataset == 'image_folder':
    arrays = read_image_folder(data_dir, listing)
  else:
    arrays = read_tfds(dataset, data_dir)
  source = f'{dataset}:{os.path.abspath(data_dir) if data_dir else ""}'
  splits = cache.split_fingerprints(arrays)
  try:
    cache.write_cache(path, arrays, key, source, splits)
  except OSError as e:  # Read-only, full, or not a folder: this run goes on, and says what the next one costs.
    print(f'warning: cannot write the cache in {cache_dir} ({e.strerror or e}); the next run decodes the '
          'images again', file=sys.stderr, flush=True)
  else:
    cache.prune_old_caches(path, source)
  return arrays, splits


def load_dataset(config) -> Dataset:
  """The dataset a config names, split into train, validation and test."""
  arrays, fingerprint = _load_arrays(config.dataset, config.data_dir, config.cache_dir)
  train_images, train_labels, val_images, val_labels = split_validation(
      arrays['train_images'], arrays['train_labels'], config.num_val_examples)
  return Dataset(train_images, train_labels, val_images, val_labels,
                 arrays['test_images'], arrays['test_labels'],
                 [str(c) for c in arrays['class_names']], fingerprint)
