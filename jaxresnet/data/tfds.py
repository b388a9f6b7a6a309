"""TFDS datasets ('cifar10', 'cifar100', ...) read whole, after a quick check that a download can work."""
import os
import socket
import threading
from typing import Dict, Tuple
import urllib.parse

import numpy as np

from jaxresnet.infra.errors import DataError

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
