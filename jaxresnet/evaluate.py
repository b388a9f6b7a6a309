"""Evaluates the newest checkpoint of a run without retraining.

    python -m jaxresnet.evaluate --workdir=DIR [--data_dir=MY_IMAGES] [--output_dir=DIR]

Prints loss, accuracy, error and per-class accuracy on the run's test split,
using the run's own config (WORKDIR/config.json) and the normalization stored
in its checkpoint, and writes confusion_matrix.csv and confusion_matrix.png
(rows: true class, columns: predicted) into --output_dir (default: the workdir).

--data_dir evaluates on any other labelled image folder instead, a "custom
test set": <class>/*.jpg or test/<class>/*.jpg, the class folders named as the
run's classes (a subset is fine). Images of another size or mode are resized
and converted, with a warning. The training data is not read.
"""

from jaxresnet.infra import signals

if __name__ == '__main__':  # First, before the slow imports: Ctrl-C or SIGTERM while starting up is one line.
  signals.stop_on_signals()

import csv
import functools
import json
import os
import sys
from typing import List, Optional

from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from jaxresnet.infra import checkpoints
from jaxresnet.infra import config as config_lib
from jaxresnet import data
from jaxresnet.infra import devices
from jaxresnet.training import evaluation
from jaxresnet import models
from jaxresnet.infra import errors
from jaxresnet.training import train
from jaxresnet.infra import rundir
from jaxresnet.infra.errors import CheckpointError, exit_on_extra_arguments, exit_on_user_error

FLAGS = flags.FLAGS


def define_flags():
  """The CLI's flags: defined only when run as a program, so other modules can import this one."""
  flags.DEFINE_string('workdir', None, 'The training run\'s workdir (holding config.json and checkpoints/).')
  flags.DEFINE_integer('step', None, 'Checkpoint step to evaluate (default: the newest).')
  flags.DEFINE_integer('seed', None, 'In the workdir of a population (config.num_seeds > 1): which seed to evaluate.')
  flags.DEFINE_string('data_dir', None, 'Evaluate on this image folder (<class>/*.jpg or test/<class>/*.jpg) '
                      'instead of the run\'s test split.')
  flags.DEFINE_string('output_dir', None, 'Where confusion_matrix.csv/.png go (default: the workdir).')
  flags.mark_flag_as_required('workdir')


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """WORKDIR/config.json; fields added to configs/default.py since the run started get their defaults."""
  from jaxresnet.configs import default  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise CheckpointError(f'{workdir} is not a training workdir: it has no config.json')
  with open(path) as f:
    saved = json.load(f)
  config = default.get_config().to_dict()
  config.update(saved)
  return ml_collections.ConfigDict(config)


def restore_model(workdir: str, step=None, seed=None):
  """(config, metadata, mesh, state) from the checkpoint alone, without reading any data.

  The checkpoint's metadata gives the classes and image shape, its state the
  parameters, BatchNorm statistics and normalization: enough to evaluate or
  predict on images from anywhere. The optimizer state is not read. In the
  workdir of a population, `seed` picks the member; config is then its own.
  """
  config = load_run_config(workdir)
  config_lib.validate(config)
  member = member_index(config, seed)
  mesh = devices.make_mesh()
  manager = checkpoints.create_manager(workdir, read_only=True)
  try:
    metadata = readable_metadata(manager, step)
    image_shape = tuple(metadata['image_shape'])
    model = models.from_config(config, num_classes=len(metadata['class_names']))
    empty = functools.partial(empty_inference_state, model, config.normalization, image_shape)
    state = jax.jit(devices.over_members(empty, config.num_seeds),
                    out_shardings=devices.members_sharding(mesh, config.num_seeds))(jnp.zeros(config.num_seeds))
    if step is None:  # The newest intact one: a damaged checkpoint is skipped with a warning.
      state, _ = checkpoints.restore_newest(manager, state, {}, fields=evaluation.INFERENCE_FIELDS, read_only=True)
    else:
      state = checkpoints.restore(manager, state, step, fields=evaluation.INFERENCE_FIELDS, metadata=metadata)
  finally:
    manager.close()
  if member is None:
    return config, metadata, mesh, state
  state = jax.jit(lambda s: jax.tree_util.tree_map(lambda x: x[member], s), out_shardings=NamedSharding(mesh, P()))(state)
  return train.member_config(config, config.seed + member), metadata, devices.make_mesh(), state


def readable_metadata(manager, step=None):
  """The metadata of checkpoint `step`, or of the newest checkpoint whose metadata can be read; one line if none."""
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    moved = checkpoints.set_aside_earlier(manager)
    raise CheckpointError(f'{manager.directory} holds no checkpoint' +
                          (f' ({len(moved)} unreadable ones are in {checkpoints.unreadable_dir(manager)})'
                           if moved else ''))
  if step is not None and step not in steps:
    raise CheckpointError(f'no checkpoint at step {step}; have {sorted(steps)}')
  for candidate in [step] if step is not None else steps:
    try:
      return checkpoints.read_metadata(manager, candidate)
    except Exception as e:  # pylint: disable=broad-except  # Orbax raises many kinds for a damaged checkpoint.
      checkpoints.log_details(f'reading the metadata of checkpoint {candidate} failed', e)
      reason = checkpoints.short_reason(e)
  raise CheckpointError(f'cannot read checkpoint {step} in {manager.directory}: {reason}' if step is not None else
                        f'no checkpoint in {manager.directory} is readable ({reason})')


def member_index(config, seed) -> Optional[int]:
  """Which member of a population `seed` is (None for a single run); one line if it is not one."""
  if config.num_seeds == 1:
    if seed is not None and seed != config.seed:
      raise CheckpointError(f'this workdir holds one run, of seed {config.seed}, not seed {seed}')
    return None
  seeds = train.seeds(config)
  if seed not in seeds:
    raise CheckpointError(f'this workdir holds a population of seeds {seeds[0]}-{seeds[-1]}; '
                          f'pass --seed=<one of them>' + (f' (not {seed})' if seed is not None else ''))
  return seeds.index(seed)


def empty_inference_state(model, normalization: str, image_shape, unused_member=None) -> evaluation.InferenceState:
  """An InferenceState of the right shapes, all zeros: the restore target (vmapped for a population)."""
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *image_shape), jnp.float32), train=False)
  # Shapes only: the values come from the checkpoint.
  mean, std = jax.eval_shape(lambda: data.input_statistics(np.zeros((1, *image_shape), np.uint8), normalization))
  zeros = lambda tree: jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), tree)
  return evaluation.InferenceState(step=jnp.zeros((), jnp.int32), params=zeros(variables['params']),
                                   batch_stats=zeros(variables.get('batch_stats', {})),
                                   input_mean=zeros(mean), input_std=zeros(std), apply_fn=model.apply)


def restore_run(workdir: str, step=None, seed=None):
  """(config, dataset, mesh, state): the checkpoint (see restore_model) and the run's dataset."""
  config, metadata, mesh, state = restore_model(workdir, step, seed)
  dataset = data.load_dataset(config)
  if dataset.class_names != metadata['class_names']:
    raise CheckpointError(f'the run\'s data now has classes {dataset.class_names}, but its checkpoint was '
                          f'trained on {metadata["class_names"]}')
  return config, dataset, mesh, state


def write_confusion_matrix(confusion, class_names: List[str], output_dir: str, title: str = '') -> List[str]:
  """Writes confusion_matrix.csv (counts) and .png (row-normalized colours, counts written in)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  confusion = np.asarray(confusion, np.int64)
  os.makedirs(output_dir, exist_ok=True)
  csv_path = os.path.join(output_dir, 'confusion_matrix.csv')
  with open(csv_path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['true \\ predicted', *class_names])
    for name, row in zip(class_names, confusion):
      writer.writerow([name, *row.tolist()])

  n = len(class_names)
  rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
  size = max(4.0, 0.55 * n + 2.5)
  fig, ax = plt.subplots(figsize=(size, size * 0.9))
  image = ax.imshow(rates, cmap='Blues', vmin=0.0, vmax=1.0)
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label='fraction of the true class')
  ticks = np.arange(n)
  ax.set_xticks(ticks, class_names, rotation=45, ha='right')
  ax.set_yticks(ticks, class_names)
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  if n <= 30:  # Beyond that the numbers no longer fit in the cells.
    for i in range(n):
      for j in range(n):
        ax.text(j, i, str(confusion[i, j]), ha='center', va='center', fontsize=8,
                color='white' if rates[i, j] > 0.5 else 'black')
  if title:
    ax.set_title(title, fontsize=10)
  fig.tight_layout()
  png_path = os.path.join(output_dir, 'confusion_matrix.png')
  fig.savefig(png_path, dpi=120)
  plt.close(fig)
  return [csv_path, png_path]


def warn_changed(changes, image_shape) -> None:
  if changes:
    path, was = changes[0]
    print(f'warning: {len(changes)} image(s) were not {image_shape[1]}x{image_shape[0]} RGB and were '
          f'resized/converted (e.g. {path}: {was})', file=sys.stderr, flush=True)


def main(argv):
  exit_on_extra_arguments(argv)
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.ERROR)  # Orbax warns about every read-only restore.
    errors.send_library_noise_to(rundir.log_path(FLAGS.workdir))  # And logs its errors' tracebacks.
  with exit_on_user_error():
    if FLAGS.data_dir:
      config, metadata, mesh, state = restore_model(FLAGS.workdir, FLAGS.step, FLAGS.seed)
      class_names = metadata['class_names']
      images, labels, changes = data.read_labelled_folder(FLAGS.data_dir, class_names,
                                                          metadata['image_shape'])
      warn_changed(changes, metadata['image_shape'])
      where = f'{FLAGS.data_dir} ({len(labels)} images)'
    else:
      config, dataset, mesh, state = restore_run(FLAGS.workdir, FLAGS.step, FLAGS.seed)
      class_names, images, labels = dataset.class_names, dataset.test_images, dataset.test_labels
      where = 'test'
    batch_size = config_lib.fitted_eval_batch_size(config, [len(labels)], jax.device_count())
    split = evaluation.EvalSet(mesh, images, labels, batch_size)
    result = evaluation.evaluate(evaluation.make_eval_fn(mesh, batch_size), state, split)
  step = int(devices.to_host(state.step))
  print(f'{config.model} at step {step} on {where}: loss {result["loss"]:.4f}  '
        f'accuracy {100 * result["accuracy"]:.2f}%  error {100 * (1 - result["accuracy"]):.2f}%')
  confusion = np.asarray(result['confusion_matrix'])
  width = max(len(c) for c in class_names)
  for name, accuracy, count in zip(class_names, result['per_class_accuracy'], confusion.sum(axis=1)):
    print(f'  {name:<{width}}  ' + (f'{100 * accuracy:6.2f}%  (of {count})' if count else '    n/a  (no images)'))
  paths = write_confusion_matrix(
      confusion, class_names, FLAGS.output_dir or FLAGS.workdir,
      title=f'{config.model}, step {step}, {os.path.basename(os.path.normpath(FLAGS.data_dir or "test"))}\n'
            f'accuracy {100 * result["accuracy"]:.2f}% on {len(labels)} images')
  print(f'wrote {" and ".join(paths)}')
  sys.stdout.flush()


if __name__ == '__main__':
  define_flags()
  errors.run_cli(main)
