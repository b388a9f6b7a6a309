"""An image folder packed as .tar.gz/.tgz/.tar/.tar.bz2/.tar.xz or .zip: unpacked to a scratch folder once, then read.

Unpacking is guarded on every Python the package allows: each member is
checked before it is written (no absolute path, no '..', no link leading out,
no device or pipe), and where tarfile has extraction filters (Python >= 3.12,
3.11.4, 3.10.12) the 'data' filter checks again. Python 3.10.0-3.10.11 and
3.11.0-3.11.3 have none (extractall takes no `filter` and trusts everything),
so there the package's own checks are the guard. A .zip's members get the same
checks of their paths; zipfile writes no links or special files, and verifies
each member's CRC as it is read.
"""
import os
import tarfile
from typing import Dict, Iterator, Tuple
import zipfile
import zlib

import numpy as np

from jaxresnet.data import cache
from jaxresnet.data.image_folder import read_image_folder
from jaxresnet.data.progress import Progress
from jaxresnet.infra.errors import DataError

ARCHIVE_EXTENSIONS = ('.tar.gz', '.tgz', '.tar', '.tar.bz2', '.tbz2', '.tar.xz', '.txz', '.zip')

# What a file starts with, and how tarfile opens it. tarfile's own 'r:*' tries
# every method and, when none works, reports each one's failure on its own line.
_COMPRESSIONS = ((b'\x1f\x8b', 'r:gz', 'gzip'), (b'BZh', 'r:bz2', 'bzip2'), (b'\xfd7zXZ\x00', 'r:xz', 'xz'))


def is_archive(path: str) -> bool:
  return path.endswith(ARCHIVE_EXTENSIONS) and os.path.isfile(path)


def _open(archive: str) -> Tuple[tarfile.TarFile, bool]:
  """The archive opened by what its first bytes say it is, and whether it is compressed.

  Anything else is one DataError line.
  """
  try:
    with open(archive, 'rb') as f:
      head = f.read(8)
  except OSError as e:
    raise DataError(f'cannot unpack {archive}: {e.strerror or e}') from None
  for magic, mode, compression in _COMPRESSIONS:
    if head.startswith(magic):
      try:
        return tarfile.open(archive, mode), True
      except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f'cannot unpack {archive}: {compression} data: {_reason(e)}') from None
  try:
    return tarfile.open(archive, 'r:'), False
  except (tarfile.TarError, OSError, EOFError) as e:
    raise DataError(f'cannot unpack {archive}: neither a tar archive nor gzip, bzip2 or xz compressed '
                    f'({_reason(e)})') from None


def _reason(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def _within(path: str, root: str) -> bool:
  return os.path.commonpath([path, root]) == root


def _refuse_path(archive: str, name: str) -> None:
  """One line if an archive member's path would land outside the unpack folder: absolute, or with a '..'."""
  if os.path.isabs(name) or name.startswith(('/', os.sep)):
    raise DataError(f'cannot unpack {archive}: member {name!r} has an absolute path; refusing to unpack it')
  if '..' in name.replace(os.sep, '/').split('/'):
    raise DataError(f"cannot unpack {archive}: member {name!r} has a '..' in its path; refusing to unpack it")


def _unpack_zip(archive: str, dest: str, progress: Progress) -> None:
  try:
    with zipfile.ZipFile(archive) as z:
      for member in z.infolist():
        _refuse_path(archive, member.filename)
        z.extract(member, dest)
        progress.update()
  except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error, RuntimeError,
          NotImplementedError) as e:  # Damaged, encrypted, or an unknown compression.
    raise DataError(f'cannot unpack {archive}: {_reason(e)}') from None


def _checked_members(tar: tarfile.TarFile, dest: str, archive: str, progress: Progress,
                     has_filters: bool) -> Iterator[tarfile.TarInfo]:
  """The archive's members, each checked just before extractall writes it.

  Checked lazily, so that the real paths of what is already unpacked count:
  a chain of links that each point inside can still lead out, and realpath
  follows them (as tarfile's 'data' filter does).
  """
  dest = os.path.realpath(dest)
  for member in tar:
    def refuse(why):
      raise DataError(f'cannot unpack {archive}: member {member.name!r} {why}; refusing to unpack it')

    _refuse_path(archive, member.name)
    if not _within(os.path.realpath(os.path.join(dest, member.name)), dest):
      refuse('would be written outside the unpack folder (through a link)')
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
      refuse('is a device, pipe or other special file')
    if member.issym() or member.islnk():
      if os.path.isabs(member.linkname):
        refuse(f'is a link to the absolute path {member.linkname!r}')
      base = os.path.dirname(member.name) if member.issym() else ''  # Hard links are relative to the root.
      if not _within(os.path.realpath(os.path.join(dest, base, member.linkname)), dest):
        refuse(f'is a link leading outside the unpack folder ({member.linkname!r})')
    if not has_filters:  # What the 'data' filter does to permissions and owners.
      member.mode &= 0o755  # No setuid, setgid or sticky bit, nothing writable by others.
      member.mode |= 0o700 if member.isdir() else 0o600  # This process can read what it unpacked.
      member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), '', ''
    yield member
    progress.update()


def _drain(tar: tarfile.TarFile) -> None:
  """Reads a compressed archive to its end, so that the checksum there is verified.

  tarfile stops at the first header it cannot parse and takes it for the end
  of the archive: in a damaged .tar.gz only the CRC at the very end tells.
  """
  while tar.fileobj.read(1 << 20):
    pass


def unpack(archive: str, dest: str) -> None:
  """Unpacks `archive` into the existing folder `dest`; a bad or unsafe archive is one DataError line."""
  has_filters = hasattr(tarfile, 'data_filter')
  progress = Progress(f'unpacking {os.path.basename(archive)}', unit='files')
  if archive.endswith('.zip'):
    try:
      _unpack_zip(archive, dest, progress)
    finally:
      progress.close()
    return
  try:
    tar, compressed = _open(archive)
    with tar:
      members = _checked_members(tar, dest, archive, progress, has_filters)
      if has_filters:
        tar.extractall(dest, members=members, filter='data')
      else:
        tar.extractall(dest, members=members)
      if compressed:
        _drain(tar)
  except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
    raise DataError(f'cannot unpack {archive}: {_reason(e)}') from None
  finally:
    progress.close()


def read_image_folder_archive(archive: str, cache_dir: str) -> Dict[str, np.ndarray]:
  """Unpacks an archive of an image folder to a scratch folder (cache.scratch_dir) and reads it."""
  with cache.scratch_dir(cache_dir) as tmp:
    unpack(archive, tmp)
    # The folder holding train/ and test/: the archive's root or one level down.
    for root in [tmp] + sorted(os.path.join(tmp, d) for d in os.listdir(tmp)):
      if os.path.isdir(os.path.join(root, 'train')):
        return read_image_folder(root)
    raise DataError(f'{archive} holds no train/ folder (expected [name/]train/<class>/*.jpg)')
