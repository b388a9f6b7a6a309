"""Classifies image files with a trained run's checkpoint.

    python -m jaxresnet.predict --workdir=DIR [--top_k=3] IMAGE_OR_FOLDER...

Prints one line per image, its top-k classes with probabilities:

    photos/cat.jpg: cat 91.20%  dog 5.03%  deer 1.10%

Folders are searched recursively for image files (.jpg .jpeg .png .bmp .gif).
Images of any size or mode are resized and converted to the run's image shape
(32x32 RGB on CIFAR), with a warning. A file that cannot be read gets one
`error:` line on stderr and the others are still classified; the exit status
is then 1. Only the checkpoint is read, not the training data; it must be the
run's own, as for evaluate (jaxresnet.training.inference holds the logic).
"""

from jaxresnet.infra import signals

if __name__ == '__main__':  # First, before the slow imports: Ctrl-C or SIGTERM while starting up is one line.
  signals.stop_on_signals()

import sys

from absl import flags
from absl import logging

from jaxresnet import data
from jaxresnet.infra import cli
from jaxresnet.infra import errors
from jaxresnet.infra import rundir
from jaxresnet.infra.cli import exit_on_user_error, exit_with_error
from jaxresnet.training import inference

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('workdir', None, 'The training run\'s workdir (holding config.json and checkpoints/).')
  flags.DEFINE_integer('step', None, 'Checkpoint step to use (default: the newest).')
  flags.DEFINE_integer('seed', None, 'In the workdir of a population (num_seeds > 1): which seed to use.')
  flags.DEFINE_integer('top_k', 3, 'How many classes to print per image.', lower_bound=1)
  flags.DEFINE_integer('batch_size', 256, 'Images classified per forward pass.', lower_bound=1)
  flags.mark_flag_as_required('workdir')


def main(argv):
  paths = argv[1:]
  if not paths:
    exit_with_error('name at least one image file or folder to classify')
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.ERROR)  # Orbax warns about every read-only restore.
    errors.send_library_noise_to(rundir.log_path(FLAGS.workdir))  # And logs its errors' tracebacks.
  with exit_on_user_error():
    _, metadata, _, state = inference.restore_model(FLAGS.workdir, FLAGS.step, FLAGS.seed)
  class_names, image_shape = metadata['class_names'], tuple(metadata['image_shape'])
  files = inference.find_images(paths)
  if not files:
    exit_with_error(f'no image files ({", ".join(data.IMAGE_EXTENSIONS)}) in {", ".join(paths)}')
  failed = 0
  for path, probabilities, changed, error in inference.classify_files(state, files, image_shape, FLAGS.batch_size):
    if error:
      print(f'error: {error}', file=sys.stderr, flush=True)
      failed += 1
      continue
    shown = errors.printable(path)  # A file name that is not UTF-8, as \xNN.
    if changed:
      print(f'warning: {shown} is {changed}; resized/converted to {image_shape[1]}x{image_shape[0]} RGB',
            file=sys.stderr, flush=True)
    print(f'{shown}: {inference.format_top_k(probabilities, class_names, FLAGS.top_k)}', flush=True)
  if failed:
    exit_with_error(f'{failed} of {len(files)} files could not be read')


if __name__ == '__main__':
  define_flags()
  cli.run_cli(main)
