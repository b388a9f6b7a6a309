"""Classifies image files with a trained run's checkpoint.

    python -m jaxresnet.predict --workdir=DIR [--top_k=3] IMAGE_OR_FOLDER...

Prints one line per image, its top-k classes with probabilities:

    photos/cat.jpg: cat 91.20%  dog 5.03%  deer 1.10%

Folders are searched recursively for image files (.jpg .jpeg .png .bmp .gif).
Images of any size or mode are resized and converted to the run's image shape
(32x32 RGB on CIFAR), with a warning. A file that cannot be read gets one
`error:` line on stderr and the others are still classified; the exit status
is then 1. Only the checkpoint is read, not the training data.
"""

from jaxresnet.infra import signals

if __name__ == '__main__':  # First, before the slow imports: Ctrl-C or SIGTERM while starting up is one line.
  signals.stop_on_signals()

import os
import sys
from typing import List

from absl import flags
from absl import logging
import jax
import numpy as np

from jaxresnet import data
from jaxresnet.infra import errors
from jaxresnet import evaluate
from jaxresnet.training import evaluation
from jaxresnet.infra import rundir
from jaxresnet.infra.errors import DataError, exit_on_user_error

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('workdir', None, 'The training run\'s workdir (holding config.json and checkpoints/).')
  flags.DEFINE_integer('step', None, 'Checkpoint step to use (default: the newest).')
  flags.DEFINE_integer('seed', None, 'In the workdir of a population (config.num_seeds > 1): which seed to use.')
  flags.DEFINE_integer('top_k', 3, 'How many classes to print per image.', lower_bound=1)
  flags.DEFINE_integer('batch_size', 256, 'Images classified per forward pass.', lower_bound=1)
  flags.mark_flag_as_required('workdir')


def find_images(paths: List[str]) -> List[str]:
  """Each file named, and the image files under each folder named (recursively, sorted)."""
  files = []
  for path in paths:
    if not os.path.isdir(path):
      files.append(path)  # Whether it is a readable image is found out when it is read.
      continue
    for root, dirs, names in os.walk(path):
      dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
      files += [os.path.join(root, n) for n in sorted(names)
                if n.lower().endswith(data.IMAGE_EXTENSIONS) and not n.startswith('.')]
  return files


def make_predict_fn():
  """jit(state, uint8 images) -> class probabilities, normalized as in training."""

  def predict_fn(state, images):
    return jax.nn.softmax(evaluation.logits(state, images))

  return jax.jit(predict_fn)


def format_top_k(probabilities: np.ndarray, class_names: List[str], k: int) -> str:
  top = np.argsort(-probabilities, kind='stable')[:k]
  return '  '.join(f'{class_names[i]} {100 * probabilities[i]:.2f}%' for i in top)


def main(argv):
  paths = argv[1:]
  if not paths:
    print('error: name at least one image file or folder to classify', file=sys.stderr)
    sys.exit(2)
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.ERROR)  # Orbax warns about every read-only restore.
    errors.send_library_noise_to(rundir.log_path(FLAGS.workdir))  # And logs its errors' tracebacks.
  with exit_on_user_error():
    _, metadata, _, state = evaluate.restore_model(FLAGS.workdir, FLAGS.step, FLAGS.seed)
  class_names, image_shape = metadata['class_names'], tuple(metadata['image_shape'])
  files = find_images(paths)
  if not files:
    print(f'error: no image files ({", ".join(data.IMAGE_EXTENSIONS)}) in {", ".join(paths)}',
          file=sys.stderr)
    sys.exit(1)
  predict_fn = make_predict_fn()
  batch_size = min(FLAGS.batch_size, len(files))  # Every batch padded to this size: one compile.
  failed = 0
  for start in range(0, len(files), batch_size):
    batch_files, images = [], []
    for path in files[start:start + batch_size]:
      try:
        image, changed = data.read_image_as(path, image_shape)
      except DataError as e:
        print(f'error: {e}', file=sys.stderr, flush=True)
        failed += 1
        continue
      if changed:
        print(f'warning: {path} is {changed}; resized/converted to {image_shape[1]}x{image_shape[0]} RGB',
              file=sys.stderr, flush=True)
      batch_files.append(path)
      images.append(image)
    if not images:
      continue
    padded = np.zeros((batch_size, *image_shape), np.uint8)
    padded[:len(images)] = np.stack(images)
    probabilities = np.asarray(predict_fn(state, padded))[:len(images)]
    for path, p in zip(batch_files, probabilities):
      print(f'{path}: {format_top_k(p, class_names, FLAGS.top_k)}')
    sys.stdout.flush()
  if failed:
    print(f'error: {failed} of {len(files)} files could not be read', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  define_flags()
  errors.run_cli(main)
