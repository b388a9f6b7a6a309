"""Evaluates the newest checkpoint of a run without retraining.

    python -m jaxresnet.evaluate --workdir=DIR

Prints test loss, accuracy, error and per-class accuracy, using the run's own
config (WORKDIR/config.json) and the normalization stored in its checkpoint.
"""
import json
import os
import sys

from absl import app
from absl import flags
import jax
import ml_collections

from jaxresnet import checkpoints
from jaxresnet import config as config_lib
from jaxresnet import data
from jaxresnet import train
from jaxresnet.errors import CheckpointError, exit_on_user_error

flags.DEFINE_string('workdir', None, 'The training run\'s workdir (holding config.json and checkpoints/).')
flags.DEFINE_integer('step', None, 'Checkpoint step to evaluate (default: the newest).')
flags.mark_flag_as_required('workdir')
FLAGS = flags.FLAGS


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise CheckpointError(f'{workdir} is not a training workdir: it has no config.json')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def restore_run(workdir: str, step=None):
  """(config, dataset, mesh, state) of a finished or running run's checkpoint."""
  config = load_run_config(workdir)
  mesh = train.make_mesh()
  config_lib.validate(config)
  dataset = data.load_dataset(config)
  total_steps = config_lib.num_train_steps(config, len(dataset.train_labels))
  _, state, _ = train.build(config, dataset, mesh, total_steps)
  manager = checkpoints.create_manager(workdir, read_only=True)
  if manager.latest_step() is None:
    raise CheckpointError(f'{checkpoints.checkpoint_dir(workdir)} holds no checkpoint')
  if step is not None and step not in manager.all_steps():
    raise CheckpointError(f'no checkpoint at step {step}; have {sorted(manager.all_steps())}')
  state = train.restore_checkpoint(manager, state, config, dataset) if step is None else \
      checkpoints.restore(manager, state, step)
  manager.close()
  return config, dataset, mesh, state


def main(argv):
  del argv
  with exit_on_user_error():
    config, dataset, mesh, state = restore_run(FLAGS.workdir, FLAGS.step)
    split = train.EvalSet(mesh, dataset.test_images, dataset.test_labels, config.eval_batch_size)
    result = train.evaluate(train.make_eval_fn(mesh, config.eval_batch_size), state, split)
  step = int(train.to_host(state.step))
  print(f'{config.model} at step {step}: test loss {result["loss"]:.4f}  '
        f'accuracy {100 * result["accuracy"]:.2f}%  error {100 * (1 - result["accuracy"]):.2f}%')
  width = max(len(c) for c in dataset.class_names)
  for name, accuracy in zip(dataset.class_names, result['per_class_accuracy']):
    print(f'  {name:<{width}}  {100 * accuracy:6.2f}%')
  sys.stdout.flush()


if __name__ == '__main__':
  app.run(main)
