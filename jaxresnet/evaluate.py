"""Evaluates the newest checkpoint of a run without retraining.

    python -m jaxresnet.evaluate --workdir=DIR [--data_dir=MY_IMAGES] [--output_dir=DIR]

Prints loss, accuracy, error and per-class accuracy on the run's test split,
using the run's own config (WORKDIR/config.json) and the normalization stored
in its checkpoint, and writes confusion_matrix.csv and confusion_matrix.png
(rows: true class, columns: predicted) into --output_dir (default: the workdir).
A run trained with test-time augmentation (config.tta) or a weight EMA
(config.ema_decay) gets a line for each of those views too: the numbers of its
results.json (tta_*, ema_*, ema_tta_*). A checkpoint that is not this run's
(another model, seed or recipe, or one copied under another step number) is
refused in one line, as a resume refuses it. The logic is in
jaxresnet.training.inference.

--data_dir evaluates on any other labelled image folder instead, a "custom
test set": <class>/*.jpg or test/<class>/*.jpg, the class folders named as the
run's classes (a subset is fine). Images of another size or mode are resized
and converted, with a warning. The training data is not read. A run that
evaluated a subset of its test split (config.max_eval_examples, smoke runs) is
evaluated on the same subset, and the line says so.
"""

from jaxresnet.infra import signals

if __name__ == '__main__':  # First, before the slow imports: Ctrl-C or SIGTERM while starting up is one line.
  signals.stop_on_signals()

import os
import sys

from absl import flags
from absl import logging
import numpy as np

from jaxresnet import data
from jaxresnet.infra import devices
from jaxresnet.infra import cli
from jaxresnet.infra import errors
from jaxresnet.infra import rundir
from jaxresnet.infra.cli import exit_on_extra_arguments, exit_on_user_error
from jaxresnet.training import inference

FLAGS = flags.FLAGS


def define_flags():
  """The CLI's flags: defined only when run as a program, so other modules can import this one."""
  flags.DEFINE_string('workdir', None, 'The training run\'s workdir (holding config.json and checkpoints/).')
  flags.DEFINE_integer('step', None, 'Checkpoint step to evaluate (default: the newest).')
  flags.DEFINE_integer('seed', None, 'In the workdir of a population (num_seeds > 1): which seed to evaluate.')
  flags.DEFINE_string('data_dir', None, 'Evaluate on this image folder (<class>/*.jpg or test/<class>/*.jpg) '
                      'instead of the run\'s test split.')
  flags.DEFINE_string('output_dir', None, 'Where confusion_matrix.csv/.png go (default: the workdir).')
  flags.mark_flag_as_required('workdir')


def main(argv):
  exit_on_extra_arguments(argv)
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.ERROR)  # Orbax warns about every read-only restore.
    errors.send_library_noise_to(rundir.log_path(FLAGS.workdir))  # And logs its errors' tracebacks.
  with exit_on_user_error():
    if FLAGS.data_dir:
      config, metadata, mesh, state = inference.restore_model(FLAGS.workdir, FLAGS.step, FLAGS.seed)
      class_names = metadata['class_names']
      images, labels, changes = data.read_labelled_folder(FLAGS.data_dir, class_names, metadata['image_shape'])
      warning = inference.changed_images_warning(changes, metadata['image_shape'])
      if warning:
        print(warning, file=sys.stderr, flush=True)
      where = f'{FLAGS.data_dir} ({len(labels)} images)'
    else:
      config, dataset, mesh, state = inference.restore_run(FLAGS.workdir, FLAGS.step, FLAGS.seed)
      class_names = dataset.class_names
      images, labels, where = inference.run_test_split(config, dataset)
    views = inference.evaluate_views(config, mesh, state, images, labels)
  step = int(devices.to_host(state.step))
  for prefix, result in views:
    print(f'{config.model} at step {step} on {where}{inference.view_name(prefix, config)}: '
          f'loss {result["loss"]:.4f}  accuracy {100 * result["accuracy"]:.2f}%  '
          f'error {100 * (1 - result["accuracy"]):.2f}%')
  result = views[0][1]  # The trained weights: what the per-class lines and the confusion matrix show.
  confusion = np.asarray(result['confusion_matrix'])
  width = max(len(c) for c in class_names)
  for name, accuracy, count in zip(class_names, result['per_class_accuracy'], confusion.sum(axis=1)):
    print(f'  {name:<{width}}  ' + (f'{100 * accuracy:6.2f}%  (of {count})' if count else '    n/a  (no images)'))
  with exit_on_user_error():  # A read-only run dir, or an --output_dir that is a file: one line.
    paths = inference.write_confusion_matrix(
        confusion, class_names, FLAGS.output_dir or FLAGS.workdir,
        title=f'{config.model}, step {step}, {os.path.basename(os.path.normpath(FLAGS.data_dir or "test"))}\n'
              f'accuracy {100 * result["accuracy"]:.2f}% on {len(labels)} images')
  print(f'wrote {" and ".join(paths)}')
  sys.stdout.flush()


if __name__ == '__main__':
  define_flags()
  cli.run_cli(main)
