"""The decoded-array cache: one .npz per version of a source, checked before use, written atomically.

A cache carries a meta record (format, the source it was read from, the
source's fingerprint, a sha256 of its arrays); anything off is rebuilt with
one warning line, never trained on.

Disk use is bounded: each source keeps its KEEP_CACHES_PER_SOURCE newest
caches (a changed folder gets a new one, and the oldest goes). What a killed
process leaves behind (a temporary cache file, an unpacked archive) carries
its host and PID in its name, and the next run on that host removes it once
that process is gone.
"""
import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from typing import Dict, Iterator, Optional

import numpy as np

# The arrays of a dataset, in the order the content hash reads them.
ARRAY_KEYS = ('train_images', 'train_labels', 'test_images', 'test_labels', 'class_names')
CACHE_FORMAT = 1  # Bumped when the cache's layout changes; older caches are rebuilt.
# Per source (dataset and data_dir): the cache in use and the one before it, so
# that going back to the previous version of a folder needs no decode either.
KEEP_CACHES_PER_SOURCE = 2


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


def split_fingerprints(arrays: Dict[str, np.ndarray]) -> Dict[str, str]:
  """{'train': ..., 'test': ...}: sha256 (16 hex digits) of each split's images and labels with the class names.

  What identifies the data a run trains on: other images under the same file
  names, or a folder replaced in place, change it; where the files came from does not.
  """
  fingerprints = {}
  for split in ('train', 'test'):
    h = hashlib.sha256()
    for key in (f'{split}_images', f'{split}_labels', 'class_names'):
      array = np.ascontiguousarray(arrays[key])
      h.update(f'{key}\0{array.dtype.str}\0{array.shape}\0'.encode())
      h.update(memoryview(array).cast('B'))
    fingerprints[split] = h.hexdigest()[:16]
  return fingerprints


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


def host_tag() -> str:
  """This machine's name as part of a file name: PIDs mean something only on the host that made them."""
  return re.sub(r'[^A-Za-z0-9.-]', '_', socket.gethostname()) or 'localhost'


def owner_tag() -> str:
  return f'{host_tag()}-{os.getpid()}'


def pid_alive(pid: int) -> bool:
  if pid == os.getpid():
    return True
  try:
    os.kill(pid, 0)  # Signal 0: only asks whether the process exists.
  except ProcessLookupError:
    return False
  except OSError:  # PermissionError: it exists, under another user.
    return True
  return True


# Leftovers and the owner they name: unpacked archives, temporary cache files,
# and temporary cache files as written before names carried the host.
_UNPACK = re.compile(r'^(?:jaxresnet-)?unpack-(?P<host>.+)-(?P<pid>\d+)-[^-]+$')
_TEMPORARY = re.compile(r'\.npz\.tmp-(?P<host>.+)-(?P<pid>\d+)\.npz$')
_OLD_TEMPORARY = re.compile(r'\.npz\.tmp(?P<pid>\d+)\.npz$')


def remove_stale(cache_dir: str) -> None:
  """Removes what processes of this host that no longer run left in cache_dir (and in $TMPDIR).

  A process killed outright (SIGKILL, out of memory, a power cut) runs no
  `finally`: its unpacked archive and half-written cache stay on disk.
  """
  for folder, patterns in ((cache_dir, (_UNPACK, _TEMPORARY, _OLD_TEMPORARY)), (tempfile.gettempdir(), (_UNPACK,))):
    try:
      names = os.listdir(folder)
    except OSError:
      continue
    for name in names:
      match = next((m for m in (p.search(name) for p in patterns) if m), None)
      if not match or (folder != cache_dir and not name.startswith('jaxresnet-')):
        continue
      host = match.groupdict().get('host') or host_tag()
      if host != host_tag() or pid_alive(int(match['pid'])):
        continue
      path = os.path.join(folder, name)
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
      else:
        with contextlib.suppress(OSError):
          os.remove(path)


@contextlib.contextmanager
def scratch_dir(cache_dir: str) -> Iterator[str]:
  """A new folder for unpacking, removed on the way out; named for remove_stale if the process is killed.

  In the cache folder (it is ours, and on the disk the cache goes to anyway),
  or in $TMPDIR where the cache folder cannot be written.
  """
  prefix = f'unpack-{owner_tag()}-'
  try:
    os.makedirs(cache_dir, exist_ok=True)
    path = tempfile.mkdtemp(prefix=prefix, dir=cache_dir)
  except OSError:
    path = tempfile.mkdtemp(prefix=f'jaxresnet-{prefix}')
  try:
    yield path
  finally:
    shutil.rmtree(path, ignore_errors=True)


def write_cache(path: str, arrays: Dict[str, np.ndarray], fingerprint: str, source: str = '',
                splits: Optional[Dict[str, str]] = None) -> None:
  """Writes the cache under a temporary name, then renames it: a crash never leaves a half cache.

  The temporary file is removed on every way out: an unwritable or full disk,
  an exception, Ctrl-C, or SIGTERM where signals.stop_on_signals() makes it raise
  (the commands call it first thing); after SIGKILL, by the next run's
  remove_stale. `source` names what the arrays were read from (prune_old_caches); `splits` is their
  split_fingerprints, kept so that a run reading the cache need not hash the arrays again.
  """
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  meta = {'format': CACHE_FORMAT, 'fingerprint': fingerprint, 'sha256': content_hash(arrays), 'source': source}
  if splits is not None:
    meta['splits'] = splits
  tmp = f'{path}.tmp-{owner_tag()}.npz'  # Ends in .npz, or np.savez would append it.
  try:
    np.savez(tmp, meta=np.array(json.dumps(meta)), **{k: arrays[k] for k in ARRAY_KEYS})
    os.replace(tmp, path)  # Atomic: readers see the old cache or the new one.
  finally:
    with contextlib.suppress(OSError):
      os.remove(tmp)


def read_meta(path: str) -> Dict:
  """A cache file's meta record ({} if it has none or is unreadable); reads only that small record."""
  try:
    with np.load(path, allow_pickle=False) as cached:
      meta = json.loads(str(cached['meta']))
  except Exception:  # Not ours to judge here: read_cache warns about it when it is read.
    return {}
  return meta if isinstance(meta, dict) else {}


def _source_of(path: str) -> Optional[str]:
  """The source a cache file says it holds; None if it does not say (written before caches did) or is unreadable."""
  source = read_meta(path).get('source')
  return source if isinstance(source, str) and source else None


def prune_old_caches(path: str, source: str, keep: int = KEEP_CACHES_PER_SOURCE) -> None:
  """Removes all but the `keep` newest caches of `source` beside `path` (the one just written, kept whatever).

  Each change to an image folder (even a `touch`) gives it a new fingerprint,
  so without this every version of the folder kept a full cache.
  """
  folder = os.path.dirname(path) or '.'
  dataset = os.path.basename(path).split('-', 1)[0]
  others = []
  for other in glob.glob(os.path.join(glob.escape(folder), f'{glob.escape(dataset)}-*.npz')):
    if (os.path.normpath(other) == os.path.normpath(path) or '.tmp' in os.path.basename(other)
        or _source_of(other) != source):
      continue
    with contextlib.suppress(OSError):
      others.append((os.stat(other).st_mtime_ns, other))
  for _, old in sorted(others, reverse=True)[max(keep - 1, 0):]:
    with contextlib.suppress(OSError):
      os.remove(old)
