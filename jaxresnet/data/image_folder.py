"""Image folders: listing train/<class>/* and test/<class>/*, decoding with Pillow, labelled folders.

The training source reads DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg
(TFDS ImageFolder layout) whole; evaluate and predict read a user's own
images one by one, converted to the model's input shape.
"""
import collections
import concurrent.futures
import os
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np

from jaxresnet.data.progress import Progress
from jaxresnet.infra import errors
from jaxresnet.infra.errors import DataError

# What Pillow reads (WebP with its libwebp, as the wheels ship it). Other files
# in a class folder are skipped and counted in one warning line.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff')


def _class_folders(split_dir: str) -> List[str]:
  """The class folders of a split, sorted; one line if a name is not UTF-8 (the names go into the run's JSON
  records and its printed lines). Image file names may be anything: they are only opened."""
  names = sorted(d for d in _listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)) and not d.startswith('.'))
  for name in names:
    try:
      name.encode('utf-8')
    except UnicodeEncodeError:  # os.listdir gives undecodable bytes as lone surrogates.
      raise DataError(f'class folder {errors.printable(name)!r} in {split_dir!r} has a name that is not valid UTF-8; rename it '
                      '(class names are written to the run\'s records)') from None
  return names


def _image_files(class_dir: str, skipped: collections.Counter) -> List[str]:
  """The image files of a class folder, sorted; every other entry is counted in `skipped`.

  Hidden entries (.DS_Store and the like) belong to the file manager and are
  neither read nor counted.
  """
  files = []
  for name in sorted(_listdir(class_dir)):
    if name.startswith('.'):
      continue
    if os.path.isdir(os.path.join(class_dir, name)):
      skipped['folder'] += 1
    elif name.lower().endswith(IMAGE_EXTENSIONS):
      files.append(os.path.join(class_dir, name))
    else:
      skipped[os.path.splitext(name)[1].lower()] += 1
  return files


def warn_skipped(root: str, skipped: collections.Counter) -> None:
  """One line saying how many entries of which kind were not read, if any."""
  total = sum(skipped.values())
  if not total:
    return
  extensions = [(n, ext) for ext, n in skipped.items() if ext not in ('', 'folder')]
  kinds = [f'{n} {ext}' for n, ext in sorted(extensions, key=lambda c: (-c[0], c[1]))]
  if skipped['']:
    kinds.append(f'{skipped[""]} without an extension')
  if skipped['folder']:
    kinds.append(f'{skipped["folder"]} folder' + ('s' if skipped['folder'] > 1 else ''))
  what = 'entry of {} that is not an image file' if total == 1 else 'entries of {} that are not image files'
  print(f'warning: skipped {total} {what.format(root)} ({", ".join(kinds)}); images are '
        f'{", ".join(IMAGE_EXTENSIONS)}', file=sys.stderr, flush=True)


def list_image_folder(root: str) -> Tuple[List[str], Dict[str, List[Tuple[str, int]]]]:
  """Class names and, per split, (path, label) pairs of an ImageFolder tree.

  Both splits must hold the same classes, each with at least one image: an
  empty class folder would otherwise become a class the model is trained to
  output but never sees, and a class without test images is never measured.
  """
  if not os.path.isdir(root):
    raise DataError(f'image folder {root!r} does not exist')
  names = {}
  for split in ('train', 'test'):
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
      raise DataError(f'image folder {root!r} has no {split}/ folder '
                      '(expected train/<class>/*.jpg and test/<class>/*.jpg)')
    names[split] = _class_folders(split_dir)
    if not names[split]:
      raise DataError(f'{split_dir!r} holds no class folders')
  for split, other in (('train', 'test'), ('test', 'train')):
    missing = [n for n in names[split] if n not in names[other]]
    if missing:
      raise DataError(f'classes of {split}/ missing from {other}/ in {root!r}: {", ".join(missing)}')
  class_names = names['train']
  splits = {}
  skipped = collections.Counter()
  for split in ('train', 'test'):
    split_dir = os.path.join(root, split)
    per_class = [_image_files(os.path.join(split_dir, name), skipped) for name in class_names]
    empty = [name for name, files in zip(class_names, per_class) if not files]
    if empty:
      raise DataError(f'{split_dir!r} has class folders without images: {", ".join(empty)}')
    splits[split] = [(path, label) for label, files in enumerate(per_class) for path in files]
  warn_skipped(root, skipped)
  return class_names, splits


def _listdir(path: str) -> List[str]:
  try:
    return os.listdir(path)
  except OSError as e:  # Unreadable folder: one line, not a traceback.
    raise DataError(f'cannot list {path}: {e.strerror or e}') from None


def stat_image(path: str) -> os.stat_result:
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


# 16-bit greyscale, as Pillow opens 16-bit PNGs and TIFFs. Pillow's own
# convert('RGB') clips these at 255, so all but the darkest pixels turned white.
_SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N')
# Modes whose pixels have no range that says what black and white are, or no
# conversion in Pillow that gives what they show: refused by name.
_REFUSED_MODES = {
    'F': '32-bit floating point, whose range (0..1? 0..255?) the file does not say',
    'LAB': 'CIE L*a*b*, which Pillow converts to RGB only through a colour profile',
}


def rgb_pixels(image, path: str) -> np.ndarray:
  """A Pillow image's pixels as uint8 HWC RGB: what the image shows, whatever its mode.

  16-bit (and 32-bit integer, taken as 16-bit: what a 16-bit PNG opens as in
  older Pillows) greyscale is scaled to 8 bits, round(v / 257). Transparency
  (an alpha band, a palette's or a PNG's transparent colour) is composited
  over black, so that a transparent pixel is black whatever colour is stored
  under it (dropping the alpha band would keep that arbitrary colour); black
  is also what the augmentation pads with. Every other mode ('1', L, P, RGB,
  RGBX, CMYK, YCbCr, HSV...) goes through Pillow's conversion.
  """
  mode = image.mode
  if mode in _REFUSED_MODES:
    raise DataError(f'cannot read image {path}: mode {mode} ({_REFUSED_MODES[mode]}) is not read; '
                    'convert it to 8-bit RGB first')
  if mode in _SIXTEEN_BIT_MODES or mode == 'I':
    values = np.asarray(image)
    if mode == 'I' and values.size and (values.min() < 0 or values.max() > 65535):
      raise DataError(f'cannot read image {path}: mode I (32-bit integers) with values in '
                      f'{values.min()}..{values.max()}, outside the 16-bit range 0..65535 that says '
                      'what black and white are; convert it to 8-bit first')
    grey = ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # round(v * 255 / 65535).
    return np.repeat(grey[..., None], 3, axis=-1)
  if mode in ('LA', 'La', 'PA', 'RGBA', 'RGBa') or 'transparency' in image.info:
    try:
      rgba = np.asarray(image.convert('RGBA'), np.uint32)
    except ValueError as e:  # A mode Pillow cannot convert ('La').
      raise DataError(f'cannot read image {path}: mode {mode} cannot be converted to RGB ({e})') from None
    # round(colour * alpha / 255): adding 127 before the floor division rounds, and no tie can occur.
    return ((rgba[..., :3] * rgba[..., 3:] + 127) // 255).astype(np.uint8)
  try:
    return np.asarray(image.convert('RGB'), np.uint8)
  except ValueError as e:
    raise DataError(f'cannot read image {path}: mode {mode} cannot be converted to RGB ({e})') from None


def decode_image(path: str, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
  """One image as uint8 HWC RGB (see rgb_pixels); `size` (width, height) resizes it if it differs."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      pixels = rgb_pixels(image, path)
    if size is not None and (pixels.shape[1], pixels.shape[0]) != tuple(size):
      pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.BILINEAR), np.uint8)
    return pixels
  except DataError:
    raise
  except Exception as e:  # PIL raises many kinds; all mean "not a usable image".
    raise DataError(f'cannot read image {path}: {e}') from None


def decode_files(paths: List[str], what: str, decode=None) -> List[np.ndarray]:
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
    images = decode_files([path for path, _ in files], f'decoding {split}')
    for (path, _), image in zip(files, images):
      if image.shape != shape:
        raise DataError(f'image {path} is {image.shape[1]}x{image.shape[0]}, but the '
                        f'folder\'s images are {shape[1]}x{shape[0]} ({first})')
    arrays[f'{split}_images'] = np.stack(images)
    arrays[f'{split}_labels'] = np.array([label for _, label in files], np.int32)
  return arrays


def image_folder_expectations(listing) -> dict:
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


SKIPPED_NAMED = 3  # How many unreadable images a labelled folder's warning names.


def read_labelled_folder(root: str, class_names: List[str], image_shape):
  """(images, labels, changes) of a test-style folder, root/<class>/* or root/test/<class>/*.

  Labels are indices into `class_names` (the model's classes); the folder may
  hold fewer classes, but none the model does not know. `changes` lists
  (path, what it was) for each image resized or converted to `image_shape` RGB.
  Images that cannot be read are left out, with one warning line naming the
  first SKIPPED_NAMED of them; a folder with none readable is a DataError.
  """
  if not os.path.isdir(root):
    raise DataError(f'image folder {root!r} does not exist')
  if os.path.isdir(os.path.join(root, 'test')):
    root = os.path.join(root, 'test')
  names = _class_folders(root)
  if not names:
    raise DataError(f'{root!r} holds no class folders (expected <class>/*.jpg or test/<class>/*.jpg)')
  unknown = [n for n in names if n not in class_names]
  if unknown:
    raise DataError(f'{root!r} has class folders that are not classes of the model '
                    f'({", ".join(class_names)}): {", ".join(unknown)}')
  skipped = collections.Counter()
  files = [(path, class_names.index(name)) for name in names
           for path in _image_files(os.path.join(root, name), skipped)]
  warn_skipped(root, skipped)
  if not files:
    raise DataError(f'{root!r} holds no images ({", ".join(IMAGE_EXTENSIONS)})')
  if image_shape[-1] != 3:  # The model's, not an image's problem: it would fail every image.
    raise DataError(f'the model takes {image_shape[-1]}-channel images; only RGB (3) files can be read')

  def read(path):
    try:
      return read_image_as(path, image_shape)
    except DataError as e:
      return e

  with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
    decoded = list(pool.map(read, [path for path, _ in files]))
  # A broken image is skipped and counted, as predict does, rather than refusing the whole folder.
  broken = [str(result).removeprefix('cannot read image ') for result in decoded if isinstance(result, DataError)]
  read_files = [(file, result) for file, result in zip(files, decoded) if not isinstance(result, DataError)]
  if not read_files:
    raise DataError(f'none of the {len(files)} images in {root} could be read: {broken[0]}')
  if broken:
    named = '; '.join(broken[:SKIPPED_NAMED]) + ('; ...' if len(broken) > SKIPPED_NAMED else '')
    print(f'warning: skipped {len(broken)} of {len(files)} images in {root} that could not be read: {named}',
          file=sys.stderr, flush=True)
  changes = [(path, changed) for (path, _), (_, changed) in read_files if changed]
  return (np.stack([image for _, (image, _) in read_files]),
          np.array([label for (_, label), _ in read_files], np.int32), changes)
