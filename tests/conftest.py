"""Shared fixtures: small real image folders written as JPEGs, and the CIFAR-10-JPEG archive."""
import os
import shutil
import subprocess
import sys
import tarfile

import numpy as np
from PIL import Image
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_ARCHIVE = os.path.join(REPO, '..', 'shared', 'data', 'cifar10_jpeg.tar.gz')


REAL_DATA_FIXTURES = {'cifar10_jpeg', 'cifar10_subset'}


def pytest_collection_modifyitems(items):
  """A test that reads the real archive is `slow` (out of the fast tier) wherever it lives, marked or not."""
  for item in items:
    if REAL_DATA_FIXTURES & set(getattr(item, 'fixturenames', ())):
      item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope='session')
def _shared_compilation_cache(tmp_path_factory):
  """One persistent XLA compilation cache for the session (and its subprocesses and xdist workers).

  Many tests start the CLI on the same model, so the same programs are compiled
  again and again; on 2 CPU cores this cache halves their run time. It changes
  nothing that is computed.
  """
  import jax  # pylint: disable=g-import-not-at-top
  cache = str(tmp_path_factory.getbasetemp().parent / 'xla_cache')
  settings = {'JAX_COMPILATION_CACHE_DIR': cache, 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
              'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0'}
  os.environ.update(settings)
  jax.config.update('jax_compilation_cache_dir', cache)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  yield


@pytest.fixture(autouse=True, scope='session')
def _session_cache(tmp_path_factory):
  """No test writes to the user's cache: fixtures wider than one test (set up before _private_cache) included."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('JAXRESNET_CACHE_DIR', str(tmp_path_factory.mktemp('session_cache')))
    yield


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
  """Every test decodes into its own cache, so tests never see each other's arrays."""
  monkeypatch.setenv('JAXRESNET_CACHE_DIR', str(tmp_path / 'cache'))


def write_image_folder(root, classes=('cat', 'dog', 'ship'), train_per_class=16, test_per_class=4,
                       size=32, seed=0):
  """Writes train/<class>/*.jpg and test/<class>/*.jpg: each class a distinct colour plus noise."""
  rng = np.random.default_rng(seed)
  palette = rng.integers(0, 256, (len(classes), 3))
  for split, count in (('train', train_per_class), ('test', test_per_class)):
    for label, name in enumerate(classes):
      os.makedirs(os.path.join(root, split, name), exist_ok=True)
      for i in range(count):
        pixels = np.clip(palette[label] + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(root, split, name, f'{i:04d}.jpg'), quality=95)
  return str(root)


@pytest.fixture
def image_folder(tmp_path):
  return write_image_folder(tmp_path / 'images')


def tiny_config(data_dir, **overrides):
  """The default config shrunk to a few steps of the smallest ResNet on a tiny folder."""
  from jaxresnet.configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.update(model='resnet8', dataset='image_folder', data_dir=data_dir, batch_size=8,
                eval_batch_size=8, num_val_examples=8, num_train_steps=6, log_every_steps=2,
                eval_every_steps=3, checkpoint_every_steps=3, lr_boundaries=(4,))
  config.update(**overrides)
  return config


@pytest.fixture(scope='session')
def cifar10_jpeg(tmp_path_factory):
  """The unpacked CIFAR-10-JPEG folder ($CIFAR10_JPEG_DIR, or ../shared/data unpacked); skips if absent."""
  if os.environ.get('CIFAR10_JPEG_DIR'):
    return os.environ['CIFAR10_JPEG_DIR']
  if not os.path.exists(SHARED_ARCHIVE):
    pytest.skip(f'CIFAR-10-JPEG not found: set CIFAR10_JPEG_DIR or provide {SHARED_ARCHIVE}')
  root = tmp_path_factory.mktemp('cifar10')
  with tarfile.open(SHARED_ARCHIVE) as tar:
    tar.extractall(root, filter='data')
  return str(root / 'cifar10_jpeg')


SUBSET = {'train': 40, 'test': 10}  # Images per class: 400 training images (350 after the 50 held out), 100 test.


@pytest.fixture(scope='session')
def cifar10_subset(tmp_path_factory):
  """The first SUBSET[split] real CIFAR-10-JPEG images of each class, as an image folder.

  Read from $CIFAR10_JPEG_DIR, or streamed out of the shared archive in one pass
  (2 s, where unpacking all 60,000 files takes several times that); skips without either.
  """
  root = tmp_path_factory.mktemp('cifar10_subset')
  wanted = lambda split, file: int(os.path.splitext(file)[0]) < SUBSET[split]  # Files are 0000.jpg, 0001.jpg...
  if os.environ.get('CIFAR10_JPEG_DIR'):
    source = os.environ['CIFAR10_JPEG_DIR']
    for split in SUBSET:
      for name in os.listdir(os.path.join(source, split)):
        os.makedirs(root / split / name)
        for file in os.listdir(os.path.join(source, split, name)):
          if wanted(split, file):
            shutil.copyfile(os.path.join(source, split, name, file), root / split / name / file)
  elif os.path.exists(SHARED_ARCHIVE):
    with tarfile.open(SHARED_ARCHIVE, 'r:gz') as tar:
      for member in tar:
        parts = member.name.split('/')  # cifar10_jpeg/<split>/<class>/NNNN.jpg
        if member.isfile() and len(parts) == 4 and parts[1] in SUBSET and wanted(parts[1], parts[3]):
          os.makedirs(root / parts[1] / parts[2], exist_ok=True)
          with tar.extractfile(member) as f:
            (root / parts[1] / parts[2] / parts[3]).write_bytes(f.read())
  else:
    pytest.skip(f'CIFAR-10-JPEG not found: set CIFAR10_JPEG_DIR or provide {SHARED_ARCHIVE}')
  return str(root)


# A subprocess's time limit guards against a hang, never against a busy machine: under a load of 8-12 on 2 cores a
# 4-minute child took over 10 (issue 34), so the limit is far above any run's time on a slow machine.
HANG_TIMEOUT_S = 1800


def run_module(module, *args, env=None, timeout=HANG_TIMEOUT_S, check=False):
  """Runs `python -m module args` from the repo root; returns the CompletedProcess."""
  full_env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'TF_CPP_MIN_LOG_LEVEL': '3', **(env or {})}
  result = subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
  if check and result.returncode != 0:
    raise AssertionError(f'{module} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}')
  return result


def small_tmpfs(tmp_path, name: str, size: str):
  """Yields a tmpfs of `size` (e.g. '256k') mounted at tmp_path/name; skips where it cannot be mounted (not root)."""
  mount = tmp_path / name
  mount.mkdir()
  result = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(mount)], capture_output=True)
  if result.returncode:
    pytest.skip(f'cannot mount a small tmpfs here: {result.stderr.decode().strip()}')
  yield str(mount)
  subprocess.run(['umount', '-l', str(mount)], check=False)
