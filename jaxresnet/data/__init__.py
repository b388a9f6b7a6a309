"""Data: decode a dataset once into uint8 arrays, cache them, augment on device.

Sources:
  * any TFDS image classification dataset by name ('cifar10', 'cifar100'),
    read through TFDS (needs TensorFlow), `config.data_dir` being a TFDS data dir;
  * 'image_folder': `config.data_dir` holds train/<class>/*.jpg and
    test/<class>/*.jpg (TFDS ImageFolder layout), decoded with Pillow; it may
    also be a .tar.gz of such a folder (unpacked to a temporary dir once).

Either way the decoded arrays go to one .npz cache, so later runs start in
seconds and need no TensorFlow. The cache carries a hash of its content and is
checked before use: anything off is rebuilt, never trained on. The whole
training set then lives on the accelerator: batches are gathered, cropped and
flipped inside the jitted step.
"""
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import socket
import sys
import tarfile
import tempfile
import threading
import time
from typing import Dict, List, Optional, Tuple
import urllib.parse

import jax
import jax.numpy as jnp
import numpy as np

from jaxresnet.infra.errors import DataError

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


# Decoding shows progress on stderr: a tqdm bar on a terminal, otherwise (logs,
# pipes) a plain line every PROGRESS_EVERY_S seconds; $JAXRESNET_PROGRESS_EVERY_S overrides it.
PROGRESS_EVERY_S = 5.0


class Progress:
  """Counts work done: a tqdm bar on a terminal, a line every few seconds elsewhere.

  A bar rewrites one line, which a log file would keep as thousands of lines;
  so without a terminal the count is printed as `<what>: <done>/<total> <unit>`
  at most every PROGRESS_EVERY_S seconds, and once more at the end if any line
  was printed (so a short decode prints nothing).
  """

  def __init__(self, what: str, total: Optional[int] = None, unit: str = 'images', stream=None):
    self.what, self.total, self.unit, self.done = what, total, unit, 0
    self.stream = stream or sys.stderr
    self.every = float(os.environ.get('JAXRESNET_PROGRESS_EVERY_S', PROGRESS_EVERY_S))
    self.last = time.monotonic()
    self.printed = False
    self.bar = None
    isatty = getattr(self.stream, 'isatty', None)
    if isatty is not None and isatty():
      import tqdm  # pylint: disable=g-import-not-at-top
      self.bar = tqdm.tqdm(total=total, desc=what, unit=unit, file=self.stream, leave=False,
                           mininterval=0.5)

  def _line(self) -> str:
    of = f'/{self.total}' if self.total is not None else ''
    return f'{self.what}: {self.done}{of} {self.unit}'

  def update(self, n: int = 1) -> None:
    self.done += n
    if self.bar is not None:
      self.bar.update(n)
    elif time.monotonic() - self.last >= self.every:
      print(self._line(), file=self.stream, flush=True)
      self.last, self.printed = time.monotonic(), True

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
    elif self.printed and (self.total is None or self.done == self.total):
      print(self._line(), file=self.stream, flush=True)


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
    names = sorted(d for d in _listdir(split_dir)
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
      files += [(os.path.join(class_dir, f), label) for f in sorted(_listdir(class_dir))
                if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not files:
      raise DataError(f'{split_dir!r} holds no images ({", ".join(IMAGE_EXTENSIONS)})')
    splits[split] = files
  return class_names, splits


def _listdir(path: str) -> List[str]:
  try:
    return os.listdir(path)
  except OSError as e:  # Unreadable folder: one line, not a traceback.
    raise DataError(f'cannot list {path}: {e.strerror or e}') from None


def _stat(path: str) -> os.stat_result:
  """os.stat of a listed image; a link to nowhere is named as such, since 'No such file' would puzzle."""
  try:
    return os.stat(path)
  except FileNotFoundError:
    if os.path.islink(path):
      raise DataError(f'{path}: dangling symlink (it points to {os.readlink(path)!r}, which does not '
                      'exist); remove it or fix its target') from None
    raise DataError(f'{path}: disappeared while the folder was read') from None
  except OSError as e:
    raise DataError(f'cannot read image {path}: {e.strerror or e}') from None


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


def _decode_files(paths: List[str], what: str, decode=None) -> List[np.ndarray]:
  """Decodes images on all cores, in order, showing progress.

  On an error, Ctrl-C or SIGTERM the images still queued are dropped, not
  decoded first (Executor.map cancels them when its iterator is dropped;
  cancel_futures makes sure), so the process stops within an image or two.
  """
  decode = decode or decode_image
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
  progress = Progress(what, len(paths))
  try:
    images = []
    for image in pool.map(decode, paths):
      images.append(image)
      progress.update()
    return images
  finally:
    progress.close()
    pool.shutdown(wait=True, cancel_futures=True)


def read_image_folder(root: str, listing=None) -> Dict[str, np.ndarray]:
  """Decodes an ImageFolder tree with Pillow; all images must share one size.

  `listing` is list_image_folder(root) when the caller has it already.
  """
  class_names, splits = listing or list_image_folder(root)
  first = splits['train'][0][0]
  shape = decode_image(first).shape
  arrays = {'class_names': np.array(class_names)}
  for split, files in splits.items():
    images = _decode_files([path for path, _ in files], f'decoding {split}')
    for (path, _), image in zip(files, images):
      if image.shape != shape:
        raise DataError(f'image {path} is {image.shape[1]}x{image.shape[0]}, but the '
                        f'folder\'s images are {shape[1]}x{shape[0]} ({first})')
    arrays[f'{split}_images'] = np.stack(images)
    arrays[f'{split}_labels'] = np.array([label for _, label in files], np.int32)
  return arrays


# Before TFDS downloads a dataset (it retries for minutes when offline), a TCP
# connection to the download host must open within DOWNLOAD_PROBE_TIMEOUT_S.
# $JAXRESNET_DOWNLOAD_PROBE=host:port names another address to try (tests point
# it at a closed local port); with an HTTPS proxy set, the proxy is tried.
DOWNLOAD_PROBE_TIMEOUT_S = 3.0
_DOWNLOAD_HOST = 'www.cs.toronto.edu'  # Where CIFAR-10 and CIFAR-100 come from.
IMAGE_FOLDER_HINT = ('train on an image folder instead: --config.dataset=image_folder --config.data_dir=DIR, where '
                     'DIR holds train/<class>/*.jpg and test/<class>/*.jpg or is a .tar.gz of such a folder '
                     '(see the README\'s Data section)')


def download_probe_address(homepage: str = '') -> Tuple[str, int]:
  """The (host, port) whose answer tells whether TFDS can download: override, proxy or dataset host."""
  override = os.environ.get('JAXRESNET_DOWNLOAD_PROBE')
  if override:
    host, _, port = override.rpartition(':')
    return host.strip('[]'), int(port)
  proxy = os.environ.get('https_proxy') or os.environ.get('HTTPS_PROXY')
  if proxy:
    parsed = urllib.parse.urlsplit(proxy if '://' in proxy else f'http://{proxy}')
    if parsed.hostname:
      return parsed.hostname, parsed.port or (443 if parsed.scheme == 'https' else 80)
  return urllib.parse.urlsplit(homepage).hostname or _DOWNLOAD_HOST, 443


def can_connect(host: str, port: int, timeout: float) -> bool:
  """Whether a TCP connection to host:port opens within `timeout` seconds.

  Runs in a thread, because name resolution has no timeout of its own and can
  hang far longer than the connection attempt.
  """
  result = []

  def connect():
    try:
      socket.create_connection((host, port), timeout=timeout).close()
      result.append(True)
    except OSError:
      result.append(False)

  thread = threading.Thread(target=connect, daemon=True, name='download-probe')
  thread.start()
  thread.join(timeout)
  return bool(result and result[0])


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
    # The test download_and_prepare makes before it downloads (is_prepared() also logs a warning).
    if not builder.data_path.exists():
      host, port = download_probe_address(builder.info.homepage or '')
      timeout = float(os.environ.get('JAXRESNET_DOWNLOAD_PROBE_TIMEOUT_S', DOWNLOAD_PROBE_TIMEOUT_S))
      if not can_connect(host, port, timeout):
        raise DataError(f'cannot download TFDS dataset {name!r}: {host}:{port} did not answer within '
                        f'{timeout:g} s, and no prepared copy is in {builder.data_dir_root}; '
                        f'{IMAGE_FOLDER_HINT}')
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


def _fingerprint(dataset: str, data_dir: str, listing=None) -> str:
  """Changes whenever the source data changes, so a stale cache is never read.

  `listing` is list_image_folder(data_dir) for an image folder, if the caller has it.
  """
  h = hashlib.sha256(f'{dataset}\0{os.path.abspath(data_dir) if data_dir else ""}'.encode())
  if dataset == 'image_folder' and _is_archive(data_dir):
    st = os.stat(data_dir)
    h.update(f'{st.st_size}\0{st.st_mtime_ns}'.encode())
  elif dataset == 'image_folder':
    _, splits = listing or list_image_folder(data_dir)
    for split, files in sorted(splits.items()):
      for path, label in files:
        st = _stat(path)
        h.update(f'{split}\0{path}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode())
  return h.hexdigest()[:16]


def read_image_folder_archive(archive: str) -> Dict[str, np.ndarray]:
  """Unpacks a .tar.gz of an image folder to a temporary dir and reads it."""
  with tempfile.TemporaryDirectory(prefix='jaxresnet-') as tmp:
    progress = Progress(f'unpacking {os.path.basename(archive)}', unit='files')

    def members(tar):
      for member in tar:
        yield member
        progress.update()

    try:
      with tarfile.open(archive) as tar:
        tar.extractall(tmp, members=members(tar), filter='data')  # 'data' refuses links and paths outside tmp.
    except (tarfile.TarError, OSError, EOFError) as e:
      raise DataError(f'cannot unpack {archive}: {e}') from None
    finally:
      progress.close()
    # The folder holding train/ and test/: the archive's root or one level down.
    for root in [tmp] + sorted(os.path.join(tmp, d) for d in os.listdir(tmp)):
      if os.path.isdir(os.path.join(root, 'train')):
        return read_image_folder(root)
    raise DataError(f'{archive} holds no train/ folder (expected [name/]train/<class>/*.jpg)')


def default_cache_dir() -> str:
  return os.environ.get('JAXRESNET_CACHE_DIR') or os.path.join(
      os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'jaxresnet')


# The arrays of a dataset, in the order the content hash reads them.
ARRAY_KEYS = ('train_images', 'train_labels', 'test_images', 'test_labels', 'class_names')
_CACHE_FORMAT = 1  # Bumped when the cache's layout changes; older caches are rebuilt.


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
  if meta.get('format') != _CACHE_FORMAT:
    return f'format {meta.get("format")!r}, expected {_CACHE_FORMAT}'
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


def _read_cache(path: str, fingerprint: str, expected: Optional[dict]) -> Optional[Dict[str, np.ndarray]]:
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


def _write_cache(path: str, arrays: Dict[str, np.ndarray], fingerprint: str) -> None:
  """Writes the cache under a temporary name, then renames it: a crash never leaves a half cache.

  The temporary file is removed on every way out: an unwritable or full disk,
  an exception, Ctrl-C or SIGTERM (see _sigterm_raises).
  """
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  meta = {'format': _CACHE_FORMAT, 'fingerprint': fingerprint, 'sha256': content_hash(arrays)}
  tmp = f'{path}.tmp{os.getpid()}.npz'  # Ends in .npz, or np.savez would append it.
  try:
    np.savez(tmp, meta=np.array(json.dumps(meta)), **{k: arrays[k] for k in ARRAY_KEYS})
    os.replace(tmp, path)  # Atomic: readers see the old cache or the new one.
  finally:
    with contextlib.suppress(OSError):
      os.remove(tmp)


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


def _image_folder_expectations(listing) -> dict:
  """What a cache of this folder must hold, known from its listing and one image header."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  class_names, splits = listing
  expected = {'class_names': class_names, **{split: len(files) for split, files in splits.items()}}
  try:
    with Image.open(splits['train'][0][0]) as image:  # Reads the header only.
      expected['image_hw'] = (image.size[1], image.size[0])
  except Exception:  # Unreadable: decoding will say so if the cache is not used.
    pass
  return expected


def load_arrays(dataset: str, data_dir: str, cache_dir: str = '') -> Dict[str, np.ndarray]:
  """The decoded train and test arrays, from the cache when it is fresh and sound.

  The cache is `<cache_dir>/<dataset>-<fingerprint>.npz`, with cache_dir ''
  meaning default_cache_dir(); the fingerprint follows the source's files.
  """
  if dataset == 'image_folder' and not data_dir:
    raise DataError('dataset=image_folder needs config.data_dir (a folder holding train/ and test/)')
  listing = expected = None
  if dataset == 'image_folder' and not _is_archive(data_dir):
    listing = list_image_folder(data_dir)
    expected = _image_folder_expectations(listing)
  cache_dir = cache_dir or default_cache_dir()
  fingerprint = _fingerprint(dataset, data_dir, listing)
  path = os.path.join(cache_dir, f'{dataset}-{fingerprint}.npz')
  arrays = _read_cache(path, fingerprint, expected)
  if arrays is not None:
    return arrays
  with _sigterm_raises():
    if dataset == 'image_folder' and _is_archive(data_dir):
      arrays = read_image_folder_archive(data_dir)
    elif dataset == 'image_folder':
      arrays = read_image_folder(data_dir, listing)
    else:
      arrays = read_tfds(dataset, data_dir)
    try:
      _write_cache(path, arrays, fingerprint)
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
