"""The decoded-array cache: one .npz per source, checked before use, written atomically.

A cache carries a meta record (format, the source's fingerprint, a sha256 of
its arrays); anything off is rebuilt with one warning line, never trained on.
"""
import contextlib
import hashlib
import json
import os
import sys
from typing import Dict, Optional

import numpy as np

# The arrays of a dataset, in the order the content hash reads them.
ARRAY_KEYS = ('train_images', 'train_labels', 'test_images', 'test_labels', 'class_names')
CACHE_FORMAT = 1  # Bumped when the cache's layout changes; older caches are rebuilt.


def default_cache_dir() -> str:
  return os.environ.get('JAXRESNET_CACHE_DIR') or os.path.join(
      os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'jaxresnet')


def content_hash(arrays: Dict[str, np.ndarray]) -> str:
  """sha256 of the arrays' dtypes, shapes and bytes: any change to the cached data changes it."""
  h = hashlib.sha256()
  for key in ARRAY_KEYS:
    array = np.ascontiguousarray(arrays[key])
    h.update(f'{key}\0{array.dtype.str}\0{array.shape}\0'.encode())
    h.update(memoryview(array).cast('B'))
  return h.hexdigest()


def cache_problem(arrays: Dict[str, np.ndarray], fingerprint: str,
                  expected: Optional[dict] = None) -> Optional[str]:
  """Why cached arrays must not be used (a short phrase), or None when they are sound.

  Checks what a wrong cache would break, cheapest first: keys, dtypes, shapes,
  matching lengths, label range, the source it was written for, then the
  content hash written with it. `expected` holds what the source's listing
  says (class_names, image_hw, and per split the number of images) where that
  is known without decoding.
  """
  missing = [k for k in ARRAY_KEYS + ('meta',) if k not in arrays]
  if missing:
    return f'missing key {missing[0]!r}'
  try:
    meta = json.loads(str(arrays['meta']))
    assert isinstance(meta, dict)
  except (ValueError, AssertionError):
    return 'unreadable meta record'
  if meta.get('format') != CACHE_FORMAT:
    return f'format {meta.get("format")!r}, expected {CACHE_FORMAT}'
  names = arrays['class_names']
  if names.ndim != 1 or names.dtype.kind != 'U' or not len(names):
    return f'class_names is {names.dtype} of shape {names.shape}, expected a list of names'
  image_hw = None
  for split in ('train', 'test'):
    images, labels = arrays[f'{split}_images'], arrays[f'{split}_labels']
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or not len(images):
      return f'{split}_images is {images.dtype} of shape {images.shape}, expected uint8 (N, H, W, 3)'
    if labels.dtype.kind not in 'iu' or labels.ndim != 1:
      return f'{split}_labels is {labels.dtype} of shape {labels.shape}, expected integers (N,)'
    if len(labels) != len(images):
      return f'{len(images)} {split} images but {len(labels)} labels'
    if labels.min() < 0 or labels.max() >= len(names):
      return f'{split} labels outside [0, {len(names)})'
    if image_hw is not None and images.shape[1:3] != image_hw:
      return f'train images are {image_hw[1]}x{image_hw[0]} but test images {images.shape[2]}x{images.shape[1]}'
    image_hw = images.shape[1:3]
    if expected and split in expected and len(images) != expected[split]:
      return f'{len(images)} {split} images, the source has {expected[split]}'
  if expected and 'class_names' in expected and [str(n) for n in names] != list(expected['class_names']):
    return f'classes {[str(n) for n in names]} differ from the source\'s {list(expected["class_names"])}'
  if expected and 'image_hw' in expected and tuple(image_hw) != tuple(expected['image_hw']):
    h, w = expected['image_hw']
    return f'images are {image_hw[1]}x{image_hw[0]}, the source\'s are {w}x{h}'
  if meta.get('fingerprint') != fingerprint:
    return 'written for other source data'
  if meta.get('sha256') != content_hash(arrays):
    return 'content hash does not match'
  return None


def read_cache(path: str, fingerprint: str, expected: Optional[dict]) -> Optional[Dict[str, np.ndarray]]:
  """The cached arrays if `path` holds a sound cache; else None, after one warning line if it exists."""
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as cached:
      arrays = {k: cached[k] for k in cached.files}
    problem = cache_problem(arrays, fingerprint, expected)
  except Exception as e:  # Not a zip, truncated, pickled objects, bad CRC...: all mean "rebuild".
    problem = f'cannot be read: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}'
  if problem is None:
    return {k: arrays[k] for k in ARRAY_KEYS}
  print(f'warning: cache {path} is invalid ({problem[:200]}); rebuilding it', file=sys.stderr, flush=True)
  return None


def write_cache(path: str, arrays: Dict[str, np.ndarray], fingerprint: str) -> None:
  """Writes the cache under a temporary name, then renames it: a crash never leaves a half cache.

  The temporary file is removed on every way out: an unwritable or full disk,
  an exception, Ctrl-C, or SIGTERM where signals.stop_on_signals() makes it raise
  (the commands call it first thing).
  """
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  meta = {'format': CACHE_FORMAT, 'fingerprint': fingerprint, 'sha256': content_hash(arrays)}
  tmp = f'{path}.tmp{os.getpid()}.npz'  # Ends in .npz, or np.savez would append it.
  try:
    np.savez(tmp, meta=np.array(json.dumps(meta)), **{k: arrays[k] for k in ARRAY_KEYS})
    os.replace(tmp, path)  # Atomic: readers see the old cache or the new one.
  finally:
    with contextlib.suppress(OSError):
      os.remove(tmp)
