"""An image folder packed as .tar.gz/.tgz/.tar: unpacked to a temporary folder once, then read."""
import os
import tarfile
import tempfile
from typing import Dict

import numpy as np

from jaxresnet.data.image_folder import read_image_folder
from jaxresnet.data.progress import Progress
from jaxresnet.infra.errors import DataError

ARCHIVE_EXTENSIONS = ('.tar.gz', '.tgz', '.tar')


def is_archive(path: str) -> bool:
  return path.endswith(ARCHIVE_EXTENSIONS) and os.path.isfile(path)


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
