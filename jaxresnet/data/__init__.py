"""Data: decode a dataset once into uint8 arrays, cache them, augment on device.

Sources:
  * any TFDS image classification dataset by name ('cifar10', 'cifar100'),
    read through TFDS (needs TensorFlow), `config.data_dir` being a TFDS data dir
    (tfds.py);
  * 'image_folder': `config.data_dir` holds train/<class>/*.jpg and
    test/<class>/*.jpg (TFDS ImageFolder layout), decoded with Pillow
    (image_folder.py); it may also be a .tar.gz, .tar.bz2, .tar.xz or .zip of such a folder (archive.py).

Either way the decoded arrays go to one .npz cache (cache.py), so later runs
start in seconds and need no TensorFlow; loader.py picks the source and goes
through the cache. arrays.py holds what a run does with the arrays: the
Dataset, the validation split, normalization and the on-device augmentation.

The names below are the package's interface: `from jaxresnet import data;
data.load_dataset(config)`.
"""
from jaxresnet.data.archive import ARCHIVE_EXTENSIONS, is_archive, read_image_folder_archive
from jaxresnet.data.arrays import Dataset, augment, describe, input_statistics, normalize, split_validation
from jaxresnet.data.cache import ARRAY_KEYS, cache_problem, content_hash, default_cache_dir
from jaxresnet.data.image_folder import (IMAGE_EXTENSIONS, decode_image, list_image_folder, read_image_as,
                                         read_image_folder, read_labelled_folder)
from jaxresnet.data.loader import load_arrays, load_dataset
from jaxresnet.data.progress import PROGRESS_EVERY_S, Progress
from jaxresnet.data.tfds import (DOWNLOAD_PROBE_TIMEOUT_S, IMAGE_FOLDER_HINT, can_connect, download_probe_address,
                                 read_tfds)
