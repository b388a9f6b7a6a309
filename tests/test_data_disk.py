"""The cache folder's disk use: what a killed run leaves is removed by the next, old caches do not pile up,
and a cache that cannot be written is said in one line."""
import os
import signal
import socket
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from conftest import REPO, write_image_folder
from jaxresnet import data
from jaxresnet.data import cache as cache_lib

# The child loads `source` into `cache` and stops for good at a cue line: inside np.savez once the
# temporary cache file is written ('write'), or at the 5th image decoded ('decode'); the test kills it there.
CHILD = """
import sys, time
import numpy as np
from jaxresnet import data
from jaxresnet.data import image_folder
hook, source, cache = sys.argv[1:]
if hook == 'write':
  real_savez = np.savez
  def savez(file, *args, **kwargs):
    real_savez(file, *args, **kwargs)
    print('written', file, flush=True)
    time.sleep(600)
  np.savez = savez
else:
  import itertools
  real_decode, counter = image_folder.decode_image, itertools.count(1)
  def decode(path, size=None):
    if next(counter) == 5:  # Atomic across the decoding threads.
      print('decoding', path, flush=True)
      time.sleep(600)
    return real_decode(path, size)
  image_folder.decode_image = decode
data.load_arrays('image_folder', source, cache)
"""


def kill_9_at_cue(hook, source, cache):
  """Runs the child up to its cue, kills it with SIGKILL (no `finally` runs), returns the cue's path."""
  process = subprocess.Popen([sys.executable, '-c', CHILD, hook, source, cache], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  try:
    cue = process.stdout.readline()
    assert cue, process.communicate()[1]
  finally:
    process.kill()
    process.communicate()
  assert process.returncode == -signal.SIGKILL
  return cue.split()[1]


def entries(folder):
  return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.mark.slow
def test_kill_9_while_unpacking_leaves_a_folder_the_next_run_removes(image_folder, tmp_path):
  archive = str(tmp_path / 'images.tar.gz')
  with tarfile.open(archive, 'w:gz') as tar:
    tar.add(image_folder, arcname='images')
  cache = str(tmp_path / 'cache')
  decoding = kill_9_at_cue('decode', archive, cache)
  # The unpacked copy lies in the cache folder, named after its host and process.
  (left,) = entries(cache)
  assert decoding.startswith(os.path.join(cache, left)) and left.startswith('unpack-')
  assert os.path.isfile(decoding)
  data.load_arrays('image_folder', archive, cache)
  (name,) = entries(cache)  # The cache alone: both unpacked copies are gone.
  assert name.startswith('image_folder-') and name.endswith('.npz')


@pytest.mark.slow
def test_kill_9_while_writing_the_cache_leaves_a_file_the_next_run_removes(image_folder, tmp_path, capsys):
  cache = str(tmp_path / 'cache')
  temporary = kill_9_at_cue('write', image_folder, cache)
  assert os.path.exists(temporary) and os.path.dirname(temporary) == cache
  arrays = data.load_arrays('image_folder', image_folder, cache)
  (name,) = entries(cache)
  assert '.tmp' not in name and arrays['train_images'].shape == (48, 32, 32, 3)
  assert capsys.readouterr().err == ''


def dead_pid():
  """The PID of a process that has exited (reused only after the kernel cycles through all PIDs)."""
  process = subprocess.Popen([sys.executable, '-c', ''])
  process.wait()
  return process.pid


@pytest.mark.slow
def test_only_leftovers_of_dead_processes_on_this_host_are_removed(image_folder, tmp_path):
  cache = tmp_path / 'cache'
  cache.mkdir()
  host, dead = cache_lib.host_tag(), dead_pid()
  stale = [f'unpack-{host}-{dead}-abc123', f'image_folder-0123456789abcdef.npz.tmp-{host}-{dead}.npz',
           f'image_folder-0123456789abcdef.npz.tmp{dead}.npz']  # As written before hosts were named.
  kept = [f'unpack-{host}-{os.getpid()}-abc123',  # This process's own: it may be in use.
          f'unpack-otherhost-{dead}-abc123',  # Another machine's (a shared home): its PIDs mean nothing here.
          f'image_folder-0123456789abcdef.npz.tmp-otherhost-{dead}.npz', 'notes.txt']
  for name in stale + kept:
    if name.startswith('unpack-'):
      os.makedirs(cache / name / 'train')
      (cache / name / 'train' / 'x.jpg').write_bytes(b'x')
    else:
      (cache / name).write_bytes(b'x')
  data.load_arrays('image_folder', image_folder, str(cache))
  assert [n for n in entries(cache) if not n.startswith('image_folder-') or 'tmp' in n] == sorted(kept)


def test_host_tag_is_a_plain_file_name_part(monkeypatch):
  monkeypatch.setattr(socket, 'gethostname', lambda: 'node-1.cluster/a b')
  assert cache_lib.host_tag() == 'node-1.cluster_a_b'


def test_old_caches_of_a_folder_are_removed_keeping_the_newest_two(tmp_path):
  folder = write_image_folder(tmp_path / 'images', train_per_class=4, test_per_class=1)
  other = write_image_folder(tmp_path / 'other', train_per_class=4, test_per_class=1)
  cache = str(tmp_path / 'cache')
  data.load_arrays('image_folder', other, cache)
  (other_cache,) = entries(cache)
  written = []
  for i in range(4):
    os.utime(os.path.join(folder, 'train', 'cat', '0000.jpg'), (1000 + i, 1000 + i))  # A `touch`: a new cache.
    data.load_arrays('image_folder', folder, cache)
    (new,) = [n for n in entries(cache) if n != other_cache and n not in written]
    written.append(new)
  assert cache_lib.KEEP_CACHES_PER_SOURCE == 2
  assert entries(cache) == sorted([other_cache] + written[-2:])  # Another folder's cache is not touched.
  # The newest is the one in use: read back without decoding.
  arrays = data.load_arrays('image_folder', folder, cache)
  assert len(arrays['train_labels']) == 12 and entries(cache) == sorted([other_cache] + written[-2:])


def under_a_file(tmp_path, monkeypatch):
  """A cache folder that cannot be made, whoever runs the test (root ignores read-only folders)."""
  del monkeypatch
  (tmp_path / 'file').write_text('x')
  return str(tmp_path / 'file' / 'cache')


def on_a_full_disk(tmp_path, monkeypatch):
  monkeypatch.setattr(np, 'savez', full_disk)
  return str(tmp_path / 'cache')


def full_disk(file, *args, **kwargs):
  del args, kwargs
  with open(file, 'wb') as f:
    f.write(b'partial')
  raise OSError(28, 'No space left on device')


@pytest.mark.parametrize('make_unwritable,reason', [(under_a_file, 'Not a directory'),
                                                    (on_a_full_disk, 'No space left on device')])
def test_a_cache_that_cannot_be_written_is_one_line_and_the_run_goes_on(image_folder, tmp_path, monkeypatch,
                                                                         capsys, make_unwritable, reason):
  cache = make_unwritable(tmp_path, monkeypatch)
  arrays = data.load_arrays('image_folder', image_folder, cache)
  assert arrays['train_images'].shape == (48, 32, 32, 3)
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 1 and lines[0].startswith(f'warning: cannot write the cache in {cache} ({reason}') \
      and lines[0].endswith('; the next run decodes the images again'), lines
  assert not [n for n in entries(cache) if 'tmp' in n]


def test_an_archive_unpacks_in_the_temporary_folder_when_the_cache_folder_is_unwritable(image_folder, tmp_path,
                                                                                       monkeypatch, capsys):
  archive = str(tmp_path / 'images.tar.gz')
  with tarfile.open(archive, 'w:gz') as tar:
    tar.add(image_folder, arcname='images')
  (tmp_path / 'file').write_text('x')
  tmpdir = tmp_path / 'tmp'
  tmpdir.mkdir()
  monkeypatch.setenv('TMPDIR', str(tmpdir))
  monkeypatch.setattr('tempfile.tempdir', None)  # Read $TMPDIR again.
  arrays = data.load_arrays('image_folder', archive, str(tmp_path / 'file' / 'cache'))
  assert arrays['train_images'].shape == (48, 32, 32, 3) and entries(tmpdir) == []
  assert len(capsys.readouterr().err.splitlines()) == 1  # The cache warning alone.
