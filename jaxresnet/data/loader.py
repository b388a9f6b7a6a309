"""load_arrays and load_dataset: the source a config names, decoded once and then read from the cache."""
import contextlib
import hashlib
import os
import signal
import threading
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
  h = hashlib.sha256(f'{dataset}\0{os.path.abspath(data_dir) if data_dir else ""}'.encode())
  if dataset == 'image_folder' and is_archive(data_dir):
    st = os.stat(data_dir)
    h.update(f'{st.st_size}\0{st.st_mtime_ns}'.encode())
  elif dataset == 'image_folder':
    _, splits = listing or list_image_folder(data_dir)
    for split, files in sorted(splits.items()):
      for path, label in files:
        st = stat_image(path)
        h.update(f'{split}\0{path}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode())
  return h.hexdigest()[:16]


class _Terminated(BaseException):
  """SIGTERM, raised so that `finally` blocks remove temporary files before the process ends."""


@contextlib.contextmanager
def _sigterm_raises():
  """Within the block, a SIGTERM that would kill the process outright raises _Terminated instead.

  SIGTERM's default action ends the process at once, skipping every `finally`:
  that left half-written caches and unpacked archives behind. If someone has
  installed a handler (main records the signal and stops at the next step),
  it is left alone and the block finishes normally. Otherwise the files are
  removed and then the process still dies of SIGTERM, as its sender expects.
  Ctrl-C needs nothing: KeyboardInterrupt runs the same `finally` blocks.
  """
  if (threading.current_thread() is not threading.main_thread()
      or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
    yield
    return

  def handler(signum, frame):
    del signum, frame
    raise _Terminated()

  signal.signal(signal.SIGTERM, handler)
  try:
    yield
  except _Terminated:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    raise
  finally:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def load_arrays(dataset: str, data_dir: str, cache_dir: str = '') -> Dict[str, np.ndarray]:
  """The decoded train and test arrays, from the cache when it is fresh and sound.

  The cache is `<cache_dir>/<dataset>-<fingerprint>.npz`, with cache_dir ''
  meaning cache.default_cache_dir(); the fingerprint follows the source's files.
  """
  if dataset == 'image_folder' and not data_dir:
    raise DataError('dataset=image_folder needs config.data_dir (a folder holding train/ and test/)')
  listing = expected = None
  if dataset == 'image_folder' and not is_archive(data_dir):
    listing = list_image_folder(data_dir)
    expected = image_folder_expectations(listing)
  cache_dir = cache_dir or cache.default_cache_dir()
  key = fingerprint(dataset, data_dir, listing)
  path = os.path.join(cache_dir, f'{dataset}-{key}.npz')
  arrays = cache.read_cache(path, key, expected)
  if arrays is not None:
    return arrays
  with _sigterm_raises():
    if dataset == 'image_folder' and is_archive(data_dir):
      arrays = read_image_folder_archive(data_dir)
    elif dataset == 'image_folder':
      arrays = read_image_folder(data_dir, listing)
    else:
      arrays = read_tfds(dataset, data_dir)
    try:
      cache.write_cache(path, arrays, key)
    except OSError:
      pass  # An unwritable cache only costs the next run a decode.
  return arrays


def load_dataset(config) -> Dataset:
  """The dataset a config names, split into train, validation and test."""
  arrays = load_arrays(config.dataset, config.data_dir, config.cache_dir)
  train_images, train_labels, val_images, val_labels = split_validation(
      arrays['train_images'], arrays['train_labels'], config.num_val_examples)
  return Dataset(train_images, train_labels, val_images, val_labels,
                 arrays['test_images'], arrays['test_labels'],
                 [str(c) for c in arrays['class_names']])
