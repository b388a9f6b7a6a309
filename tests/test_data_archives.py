"""Image-folder archives: unpacked safely on every Python the package allows, bad archives in one line."""
import io
import os
import tarfile

import numpy as np
import pytest

from jaxresnet import data
from jaxresnet.infra.errors import DataError


def pack(image_folder, archive, arcname='images'):
  with tarfile.open(archive, 'w:gz') as tar:
    tar.add(image_folder, arcname=arcname)
  return str(archive)


@pytest.fixture(params=['tarfile', 'tarfile_before_filters'])
def tarfile_version(request, monkeypatch):
  """This Python's tarfile, or one as in Python 3.10.0-3.10.11 (and 3.11.0-3.11.3): no extraction filters.

  There extractall() takes no `filter` argument (TypeError) and trusts every
  member, so the package's own member checks are all that stands between an
  archive and the rest of the disk.
  """
  if request.param == 'tarfile_before_filters':
    monkeypatch.delattr(tarfile, 'data_filter')
    real_extractall = tarfile.TarFile.extractall

    def extractall(self, path='.', members=None, *, numeric_owner=False, **kwargs):
      if kwargs:
        raise TypeError(f'extractall() got an unexpected keyword argument {next(iter(kwargs))!r}')
      # Python 3.14 filters by default: ask for what the old versions did.
      return real_extractall(self, path, members, numeric_owner=numeric_owner, filter='fully_trusted')

    monkeypatch.setattr(tarfile.TarFile, 'extractall', extractall)
  return request.param


def test_an_archive_reads_as_its_folder(image_folder, tmp_path, tarfile_version):
  archive = pack(image_folder, tmp_path / 'images.tar.gz')
  from_archive = data.load_arrays('image_folder', archive, str(tmp_path / 'cache_a'))
  from_folder = data.load_arrays('image_folder', image_folder, str(tmp_path / 'cache_f'))
  assert all(np.array_equal(from_archive[k], from_folder[k]) for k in from_folder)


def add_file(tar, name, content=b'evil'):
  info = tarfile.TarInfo(name)
  info.size = len(content)
  tar.addfile(info, io.BytesIO(content))


def add_link(tar, name, target, kind=tarfile.SYMTYPE):
  info = tarfile.TarInfo(name)
  info.type, info.linkname = kind, target
  tar.addfile(info)


def add_special(tar, name, kind):
  info = tarfile.TarInfo(name)
  info.type, info.devmajor, info.devminor = kind, 1, 3  # 1,3 is /dev/null.
  tar.addfile(info)


def symlink_chain(tar, outside):
  """Each link points inside on paper; together they lead to the parent of the unpack folder."""
  info = tarfile.TarInfo('images/a')
  info.type = tarfile.DIRTYPE
  tar.addfile(info)
  add_link(tar, 'images/a/b', '..')  # images/a/b is images/.
  add_link(tar, 'images/a/b/c', '..')  # images/c, pointing at images/.. (looks like images/a on paper).
  add_link(tar, 'images/a/b/c/d', '..')
  add_file(tar, 'images/a/b/c/d/evil.txt')


ATTACKS = {
    'dot-dot path': lambda tar, outside: add_file(tar, '../evil.txt'),
    'dot-dot inside the path': lambda tar, outside: add_file(tar, 'images/../../evil.txt'),
    'absolute path': lambda tar, outside: add_file(tar, os.path.join(outside, 'evil.txt')),
    # Up to / from wherever the archive is unpacked, then down to `outside`.
    'symlink out': lambda tar, outside: (add_link(tar, 'images/out', '../' * 40 + outside.lstrip('/')),
                                         add_file(tar, 'images/out/evil.txt')),
    'absolute symlink': lambda tar, outside: (add_link(tar, 'images/out', outside),
                                              add_file(tar, 'images/out/evil.txt')),
    'hard link out': lambda tar, outside: add_link(tar, 'images/secret', os.path.join(outside, 'secret.txt'),
                                                   tarfile.LNKTYPE),
    'symlink chain': symlink_chain,
    'character device': lambda tar, outside: add_special(tar, 'images/null', tarfile.CHRTYPE),
    'block device': lambda tar, outside: add_special(tar, 'images/disk', tarfile.BLKTYPE),
    'fifo': lambda tar, outside: add_special(tar, 'images/pipe', tarfile.FIFOTYPE),
}


@pytest.mark.parametrize('attack', list(ATTACKS))
def test_an_archive_cannot_write_outside_its_folder(image_folder, tmp_path, tarfile_version, attack):
  outside = tmp_path / 'outside'
  outside.mkdir()
  (outside / 'secret.txt').write_text('secret')
  archive = str(tmp_path / 'attack.tar')
  with tarfile.open(archive, 'w') as tar:
    tar.add(image_folder, arcname='images')
    ATTACKS[attack](tar, str(outside))
  with pytest.raises(DataError) as error:
    data.load_arrays('image_folder', archive, str(tmp_path / 'cache'))
  message = str(error.value)
  assert message.startswith(f'cannot unpack {archive}: ') and '\n' not in message, message
  written = [os.path.join(d, f) for d, _, files in os.walk(tmp_path) for f in files if f.startswith('evil')]
  assert written == [] and os.listdir(outside) == ['secret.txt']
  assert (outside / 'secret.txt').read_text() == 'secret'


@pytest.mark.parametrize('content,reason', [
    (b'<html>404 Not Found</html>\n' * 40, 'neither a tar archive nor gzip, bzip2 or xz compressed'),
    (b'', 'neither a tar archive nor gzip, bzip2 or xz compressed (empty file)'),
    (b'\x1f\x8b\x08\x00' + b'\x00' * 60, 'gzip data: '),
])
def test_a_file_that_is_not_a_tar_gz_is_one_line(tmp_path, content, reason):
  archive = tmp_path / 'images.tar.gz'
  archive.write_bytes(content)
  with pytest.raises(DataError) as error:
    data.load_arrays('image_folder', str(archive), str(tmp_path / 'cache'))
  message = str(error.value)
  assert message.startswith(f'cannot unpack {archive}: {reason}') and '\n' not in message, message


def test_a_truncated_or_damaged_tar_gz_is_one_line(image_folder, tmp_path):
  whole = open(pack(image_folder, tmp_path / 'whole.tar.gz'), 'rb').read()
  damaged = bytearray(whole)
  damaged[len(whole) // 2:len(whole) // 2 + 64] = bytes(64)  # Zeros in the middle of the deflate stream.
  for name, content in (('truncated', whole[:len(whole) // 2]), ('damaged', bytes(damaged))):
    archive = tmp_path / f'{name}.tar.gz'
    archive.write_bytes(content)
    with pytest.raises(DataError) as error:
      data.load_arrays('image_folder', str(archive), str(tmp_path / 'cache'))
    message = str(error.value)
    assert message.startswith(f'cannot unpack {archive}: ') and '\n' not in message, message


@pytest.mark.parametrize('extension,mode', [('.zip', None), ('.tar.xz', 'w:xz'), ('.tar.bz2', 'w:bz2')])
def test_zip_xz_and_bz2_archives_read_as_their_folder(image_folder, tmp_path, extension, mode):
  import shutil  # pylint: disable=g-import-not-at-top
  archive = str(tmp_path / f'images{extension}')
  if mode is None:
    shutil.make_archive(archive[:-len('.zip')], 'zip', os.path.dirname(image_folder), 'images')
  else:
    with tarfile.open(archive, mode) as tar:
      tar.add(image_folder, arcname='images')
  from_archive = data.load_arrays('image_folder', archive, str(tmp_path / 'cache_a'))
  from_folder = data.load_arrays('image_folder', image_folder, str(tmp_path / 'cache_f'))
  for key in data.ARRAY_KEYS:
    np.testing.assert_array_equal(from_archive[key], from_folder[key])


def test_a_zip_member_leading_out_is_refused_in_one_line(tmp_path):
  import zipfile  # pylint: disable=g-import-not-at-top
  archive = str(tmp_path / 'evil.zip')
  with zipfile.ZipFile(archive, 'w') as z:
    z.writestr('../outside.txt', 'x')
  with pytest.raises(DataError, match=r"member '../outside.txt' has a '\.\.' in its path"):
    data.load_arrays('image_folder', archive, str(tmp_path / 'cache'))
  assert not os.path.exists(tmp_path / 'outside.txt')
