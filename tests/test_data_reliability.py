"""The decoded-array cache and image folders under damage (issue 11): a wrong cache is rebuilt
with one warning, temporary files never outlive their process, a dangling symlink is one line."""
import json
import os
import signal
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from conftest import REPO, write_image_folder
from jaxresnet import data
from jaxresnet.infra.errors import DataError


def cache_files(cache_dir):
  return sorted(os.listdir(cache_dir)) if os.path.isdir(cache_dir) else []


def forge(path, arrays, fingerprint=None, meta=True):
  """Writes `arrays` under the cache's name, as a valid .npz; with meta, as the cache writer would."""
  extra = {}
  if meta:
    extra['meta'] = np.array(json.dumps({'format': 1, 'fingerprint': fingerprint,
                                         'sha256': data.content_hash(arrays)}))
  np.savez(path, **arrays, **extra)


def cached_path(cache_dir):
  (name,) = cache_files(cache_dir)
  return os.path.join(cache_dir, name)


def other_content(arrays, change):
  other = {k: v.copy() for k, v in arrays.items()}
  change(other)
  return other


def small_images(a):
  a['train_images'] = a['train_images'][:, :16, :16]
  a['test_images'] = a['test_images'][:, :16, :16]


def labels_out_of_range(a):
  a['train_labels'] = a['train_labels'] + 7


def shorter_labels(a):
  a['train_labels'] = a['train_labels'][:-5]


def other_classes(a):
  a['class_names'] = np.array(['apple', 'pear', 'plum'])


def one_pixel(a):
  a['test_images'][0, 0, 0, 0] ^= 1


@pytest.mark.parametrize('change,meta,reason', [
    (small_images, False, "missing key 'meta'"),  # A foreign .npz, or one from before the hash.
    (small_images, True, 'images are 16x16, the source\'s are 32x32'),
    (labels_out_of_range, True, 'train labels outside [0, 3)'),
    (shorter_labels, True, '48 train images but 43 labels'),
    (other_classes, True, "classes ['apple', 'pear', 'plum'] differ from the source's ['cat', 'dog', 'ship']"),
    (lambda a: a.pop('test_labels'), True, "missing key 'test_labels'"),
    (lambda a: a.update(train_images=a['train_images'].astype(np.float32)), True,
     'train_images is float32 of shape (48, 32, 32, 3), expected uint8 (N, H, W, 3)'),
])
def test_wrong_cache_is_rebuilt_with_one_warning(image_folder, tmp_path, capsys, change, meta, reason):
  cache = str(tmp_path / 'cache')
  fresh = data.load_arrays('image_folder', image_folder, cache)
  path = cached_path(cache)
  fingerprint = os.path.basename(path)[len('image_folder-'):-len('.npz')]
  arrays = other_content(fresh, change)
  if meta and 'test_labels' in arrays:
    forge(path, arrays, fingerprint)
  else:
    np.savez(path, **arrays, **({'meta': np.array('{}')} if meta else {}))
  capsys.readouterr()

  again = data.load_arrays('image_folder', image_folder, cache)
  assert capsys.readouterr().err == f'warning: cache {path} is invalid ({reason}); rebuilding it\n'
  assert sorted(again) == sorted(fresh) and all(np.array_equal(again[k], fresh[k]) for k in fresh)
  # Rebuilt in place: the next run reads it silently.
  assert cache_files(cache) == [os.path.basename(path)]
  data.load_arrays('image_folder', image_folder, cache)
  assert capsys.readouterr().err == ''


def test_cache_of_an_archive_is_checked_by_its_content_hash(image_folder, tmp_path, capsys):
  """An archive's listing is not known before unpacking it, so a one-bit change is found by the hash alone."""
  archive = tmp_path / 'images.tar.gz'
  with tarfile.open(archive, 'w:gz') as tar:
    tar.add(image_folder, arcname='images')
  cache = str(tmp_path / 'cache')
  fresh = data.load_arrays('image_folder', str(archive), cache)
  path = cached_path(cache)
  with np.load(path) as cached:
    stored = {k: cached[k] for k in cached.files}
  stored['test_images'][0, 0, 0, 0] ^= 1
  np.savez(path, **stored)  # Same meta record, so the same hash as before the flip.
  capsys.readouterr()
  again = data.load_arrays('image_folder', str(archive), cache)
  assert capsys.readouterr().err == f'warning: cache {path} is invalid (content hash does not match); rebuilding it\n'
  assert np.array_equal(again['test_images'], fresh['test_images'])

  # A sound cache written for other data (copied under this name) is not trusted either.
  forge(path, fresh, fingerprint='0123456789abcdef')
  data.load_arrays('image_folder', str(archive), cache)
  assert '(written for other source data)' in capsys.readouterr().err


def test_unreadable_cache_file_is_rebuilt(image_folder, tmp_path, capsys):
  cache = str(tmp_path / 'cache')
  data.load_arrays('image_folder', image_folder, cache)
  path = cached_path(cache)
  with open(path, 'r+b') as f:
    f.truncate(100)
  capsys.readouterr()
  data.load_arrays('image_folder', image_folder, cache)
  (line,) = capsys.readouterr().err.splitlines()
  assert line.startswith(f'warning: cache {path} is invalid (cannot be read: ') and line.endswith('; rebuilding it')


def test_cache_hash_covers_every_array():
  rng = np.random.default_rng(0)
  base = {'train_images': rng.integers(0, 256, (2, 20, 20, 3), np.uint8), 'train_labels': np.array([0, 1], np.int32),
          'test_images': rng.integers(0, 256, (1, 20, 20, 3), np.uint8), 'test_labels': np.array([1], np.int32),
          'class_names': np.array(['a', 'b'])}
  digest = data.content_hash(base)
  for change in (small_images, labels_out_of_range, other_classes, one_pixel,
                 lambda a: a.update(train_labels=a['train_labels'].astype(np.int64))):
    assert data.content_hash(other_content(base, change)) != digest


# --------------------------------------------------------------------------
# Temporary files on every way out.


def test_exception_or_ctrl_c_while_writing_the_cache_leaves_no_temporary_file(image_folder, tmp_path,
                                                                             monkeypatch):
  cache = str(tmp_path / 'cache')
  real_savez = np.savez

  def savez_then_fail(error):
    def savez(file, *args, **kwargs):
      real_savez(file, *args, **kwargs)
      assert os.path.exists(file)
      raise error
    return savez

  monkeypatch.setattr(np, 'savez', savez_then_fail(KeyboardInterrupt()))
  with pytest.raises(KeyboardInterrupt):
    data.load_arrays('image_folder', image_folder, cache)
  assert cache_files(cache) == []
  # A full disk: the arrays are still returned, only the cache is lost.
  monkeypatch.setattr(np, 'savez', savez_then_fail(OSError(28, 'No space left on device')))
  assert data.load_arrays('image_folder', image_folder, cache)['train_images'].shape == (48, 32, 32, 3)
  assert cache_files(cache) == []


# The child decodes `folder` into `cache` with a hook from this test: np.savez
# stops after writing the temporary file, or decoding slows down after 5 images;
# either way it prints one line when the test should send its signal.
CHILD = """
import signal, sys, time
from jaxresnet.infra import signals
signals.stop_on_signals()  # As the commands do first thing: SIGTERM raises, `finally` blocks run.
import numpy as np
from jaxresnet import data
from jaxresnet.data import image_folder
hook, folder, cache = sys.argv[1:]
received = []
if hook.endswith('handler'):  # As training does (signals.StopRequest): record the signal, stop at the next step.
  signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
if hook.startswith('write'):
  real_savez = np.savez
  def savez(file, *args, **kwargs):
    real_savez(file, *args, **kwargs)
    print('written', file, flush=True)
    deadline = time.monotonic() + 30
    while not received and time.monotonic() < deadline:
      time.sleep(0.01)
  np.savez = savez
else:
  import itertools, os
  os.cpu_count = lambda: 2  # Two decoding threads on any machine, so that few images are under way at once.
  real_decode, counter = image_folder.decode_image, itertools.count(1)
  def decode(path, size=None):
    n = next(counter)  # Atomic, unlike `count += 1`, which two threads can both read as 4 and skip 5.
    sys.stderr.write(f'decode {n}\\n')  # One write: print() writes the newline apart, and two threads interleave.
    sys.stderr.flush()
    if n == 5:
      print('decoding', flush=True)
    if n >= 5:
      time.sleep(1)
    return real_decode(path, size)
  image_folder.decode_image = decode
data.load_arrays('image_folder', folder, cache)
print('finished', received, flush=True)
"""


def run_child_until(hook, folder, cache, env=None):
  """Starts the child, waits for its cue line, and returns (process, cue line)."""
  process = subprocess.Popen([sys.executable, '-c', CHILD, hook, folder, cache], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
  cue = process.stdout.readline()
  assert cue, process.communicate()[1]
  return process, cue


@pytest.mark.slow
def test_sigterm_while_writing_the_cache_leaves_no_temporary_file(image_folder, tmp_path):
  cache = str(tmp_path / 'cache')
  process, cue = run_child_until('write', image_folder, cache)
  temporary = cue.split()[1]
  assert cue.startswith('written') and os.path.exists(temporary)  # The signal comes mid-write.
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=20)
  # One line and 128 + SIGTERM, as a shell reports a process the signal ended.
  assert process.returncode == 128 + signal.SIGTERM and stderr.splitlines()[-1] == 'stopped by SIGTERM', stderr
  assert cache_files(cache) == []


@pytest.mark.slow
def test_sigterm_while_decoding_an_archive_stops_at_once_and_removes_the_unpacked_copy(image_folder, tmp_path):
  archive = tmp_path / 'images.tar.gz'
  with tarfile.open(archive, 'w:gz') as tar:
    tar.add(image_folder, arcname='images')
  cache = str(tmp_path / 'cache')
  process, cue = run_child_until('decode', str(archive), cache)
  (unpacked,) = cache_files(cache)  # The unpacked archive, in the cache folder.
  assert cue == 'decoding\n' and unpacked.startswith('unpack-')
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=60)
  assert process.returncode == 128 + signal.SIGTERM and stderr.splitlines()[-1] == 'stopped by SIGTERM', stderr
  # The images still queued are dropped, not decoded first: the two threads had started a few
  # more (1 s each) when the signal came, far from all 48 training images.
  started = [int(line.split()[1]) for line in stderr.splitlines() if line.startswith('decode ')]
  assert max(started) < 48, stderr
  assert cache_files(cache) == []


@pytest.mark.slow
def test_sigterm_with_a_handler_installed_lets_the_cache_write_finish(image_folder, tmp_path, capsys):
  """main installs its own SIGTERM handler; then the write completes and main stops later."""
  cache = str(tmp_path / 'cache')
  process, cue = run_child_until('write_with_handler', image_folder, cache)
  assert cue.startswith('written')
  process.send_signal(signal.SIGTERM)
  stdout, stderr = process.communicate(timeout=20)
  assert process.returncode == 0, stderr
  assert stdout == f'finished [{int(signal.SIGTERM)}]\n'
  (name,) = cache_files(cache)
  assert name.endswith('.npz') and '.tmp' not in name
  data.load_arrays('image_folder', image_folder, cache)  # Sound: read without a warning.
  assert capsys.readouterr().err == ''


def test_loading_leaves_the_sigterm_handler_alone(image_folder, tmp_path):
  """Signals are the commands' business (infra.signals), not the data package's."""
  before = signal.getsignal(signal.SIGTERM)
  data.load_arrays('image_folder', image_folder, str(tmp_path / 'cache'))
  assert signal.getsignal(signal.SIGTERM) is before


# --------------------------------------------------------------------------
# Image folders.


def test_dangling_symlink_in_an_image_folder_is_one_line_naming_it(image_folder):
  link = os.path.join(image_folder, 'train', 'cat', 'zz_gone.jpg')
  os.symlink(os.path.join(image_folder, 'nowhere.jpg'), link)
  with pytest.raises(DataError) as error:
    data.load_arrays('image_folder', image_folder)
  message = str(error.value)
  assert message.startswith(f'{link}: dangling symlink') and 'nowhere.jpg' in message and '\n' not in message


def test_symlinked_images_that_resolve_are_read(tmp_path):
  real = write_image_folder(tmp_path / 'real')
  linked = tmp_path / 'linked'
  for split in ('train', 'test'):
    for name in ('cat', 'dog', 'ship'):
      os.makedirs(linked / split / name)
      for f in os.listdir(os.path.join(real, split, name)):
        os.symlink(os.path.join(real, split, name, f), linked / split / name / f)
  a = data.load_arrays('image_folder', real, str(tmp_path / 'c1'))
  b = data.load_arrays('image_folder', str(linked), str(tmp_path / 'c2'))
  assert all(np.array_equal(a[k], b[k]) for k in a)


def test_unreadable_class_folder_is_one_line(image_folder, monkeypatch):
  folder = os.path.join(image_folder, 'train', 'dog')
  real_listdir = os.listdir

  def listdir(path):  # As for chmod 000, which root (running these tests) would not feel.
    if path == folder:
      raise PermissionError(13, 'Permission denied', path)
    return real_listdir(path)

  monkeypatch.setattr(os, 'listdir', listdir)
  with pytest.raises(DataError, match=f'^cannot list {folder}: Permission denied$'):
    data.load_arrays('image_folder', image_folder)
