"""A trained run's checkpoint put to use without training: restored for evaluation or prediction.

The library behind `python -m jaxresnet.evaluate` and `python -m jaxresnet.predict`.
`restore_model` reads a workdir's config.json (infra/rundir.py) and the newest
intact checkpoint of *this* run (one of another run, or one copied under
another step number, is refused with one line, as a resume refuses it), without
the optimizer state and without any data. `evaluate_views` evaluates it the
way the training loop did (train.eval_views): the trained weights, and where
the run's recipe has them, test-time augmentation and the weight EMA, so its
numbers are those of the run's results.json.
"""
import csv
import functools
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from jaxresnet import data
from jaxresnet import models
from jaxresnet.infra import checkpoints
from jaxresnet.infra import config as config_lib
from jaxresnet.infra import devices
from jaxresnet.infra import rundir
from jaxresnet.infra.errors import CheckpointError, DataError
from jaxresnet.training import evaluation
from jaxresnet.training import train


class EmaInferenceState(evaluation.InferenceState):
  """An InferenceState with the weight EMA of a run trained with config.ema_decay > 0 (train.EmaTrainState's)."""
  ema_params: Any
  ema_batch_stats: Any

  def ema(self):
    """The state with the averaged weights in place of the trained ones (train.eval_views' EMA view)."""
    return self.replace(params=self.ema_params, batch_stats=self.ema_batch_stats)


EMA_FIELDS = ('ema_params', 'ema_batch_stats')


def restore_model(workdir: str, step: Optional[int] = None, seed: Optional[int] = None):
  """(config, metadata, mesh, state) from the checkpoint alone, without reading any data.

  The checkpoint's metadata gives the classes and image shape, its state the
  parameters, BatchNorm statistics, normalization (and the weight EMA, if the run
  has one): enough to evaluate or predict on images from anywhere. The optimizer
  state is not read. The checkpoint must be this run's (model, seed, recipe, as
  config.json says; checkpoints.check_same_run). In the workdir of a population,
  `seed` picks the member; config is then its own.
  """
  config = rundir.load_config(workdir)
  config_lib.validate(config)
  member = member_index(config, seed)
  mesh = devices.make_mesh()
  mine = checkpoints.config_metadata(config)
  ema = config.ema_decay > 0
  fields = evaluation.INFERENCE_FIELDS + (EMA_FIELDS if ema else ())
  manager = checkpoints.create_manager(workdir, read_only=True)
  try:
    metadata = readable_metadata(manager, step)
    image_shape = tuple(metadata['image_shape'])
    model = models.from_config(config, num_classes=len(metadata['class_names']))
    empty = functools.partial(empty_inference_state, model, config.normalization, image_shape, ema=ema)
    members = config_lib.seeds(config).count
    state = jax.jit(devices.over_members(empty, members),
                    out_shardings=devices.members_sharding(mesh, members))(jnp.zeros(members))
    if step is None:  # The newest intact one: a damaged checkpoint is skipped with a warning.
      state, _ = checkpoints.restore_newest(manager, state, mine, fields=fields, read_only=True)
    else:
      checkpoints.check_same_run(manager, metadata, mine, step)
      state = checkpoints.restore(manager, state, step, fields=fields, metadata=metadata)
  finally:
    manager.close()
  if member is None:
    return config, metadata, mesh, state
  state = jax.jit(lambda s: jax.tree_util.tree_map(lambda x: x[member], s), out_shardings=NamedSharding(mesh, P()))(state)
  return config_lib.member_config(config, config_lib.seeds(config).all[member]), metadata, devices.make_mesh(), \
      state


def readable_metadata(manager, step: Optional[int] = None) -> Dict[str, Any]:
  """The metadata of checkpoint `step`, or of the newest checkpoint whose metadata can be read; one line if none."""
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    moved = checkpoints.set_aside_earlier(manager)
    raise CheckpointError(f'{manager.directory} holds no checkpoint' +
                          (f' ({len(moved)} unreadable ones are in {checkpoints.unreadable_dir(manager)})'
                           if moved else ''))
  if step is not None and step not in steps:
    raise CheckpointError(f'no checkpoint at step {step}; have {sorted(steps)}')
  reason = 'it vanished while being read'
  for candidate in [step] if step is not None else checkpoints.newest_first(manager):
    try:
      return checkpoints.read_metadata(manager, candidate)
    except Exception as e:  # pylint: disable=broad-except  # Orbax raises many kinds for a damaged checkpoint.
      if step is None and checkpoints.vanished(manager, candidate):
        continue  # Rotated away by the run still training: the newer ones are listed again.
      checkpoints.log_details(f'reading the metadata of checkpoint {candidate} failed', e)
      reason = checkpoints.short_reason(e)
  raise CheckpointError(f'cannot read checkpoint {step} in {manager.directory}: {reason}' if step is not None else
                        f'no checkpoint in {manager.directory} is readable ({reason})')


def member_index(config, seed: Optional[int]) -> Optional[int]:
  """Which member of a population `seed` is (None for a single run); one line if it is not one."""
  seeds = config_lib.seeds(config)
  if not seeds.is_population:
    if seed is not None and seed != seeds.first:
      raise CheckpointError(f'this workdir holds one run, of seed {seeds.first}, not seed {seed}')
    return None
  seeds = list(seeds.all)
  if seed not in seeds:
    raise CheckpointError(f'this workdir holds a population of seeds {seeds[0]}-{seeds[-1]}; '
                          f'pass --seed=<one of them>' + (f' (not {seed})' if seed is not None else ''))
  return seeds.index(seed)


def empty_inference_state(model, normalization: str, image_shape, unused_member=None,
                          ema: bool = False) -> evaluation.InferenceState:
  """An InferenceState of the right shapes, all zeros: the restore target (vmapped for a population).

  With `ema`, an EmaInferenceState: the run's weight EMA is restored too.
  """
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *image_shape), jnp.float32), train=False)
  # Shapes only: the values come from the checkpoint.
  mean, std = jax.eval_shape(lambda: data.input_statistics(np.zeros((1, *image_shape), np.uint8), normalization))
  zeros = lambda tree: jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), tree)
  fields = dict(step=jnp.zeros((), jnp.int32), params=zeros(variables['params']),
                batch_stats=zeros(variables.get('batch_stats', {})), input_mean=zeros(mean), input_std=zeros(std),
                apply_fn=model.apply)
  if ema:
    return EmaInferenceState(**fields, ema_params=fields['params'], ema_batch_stats=fields['batch_stats'])
  return evaluation.InferenceState(**fields)


def restore_run(workdir: str, step: Optional[int] = None, seed: Optional[int] = None):
  """(config, dataset, mesh, state): the checkpoint (see restore_model) and the run's dataset."""
  config, metadata, mesh, state = restore_model(workdir, step, seed)
  dataset = data.load_dataset(config)
  if dataset.class_names != metadata['class_names']:
    raise CheckpointError(f'the run\'s data now has classes {dataset.class_names}, but its checkpoint was '
                          f'trained on {metadata["class_names"]}')
  return config, dataset, mesh, state


# --------------------------------------------------------------------------
# Evaluation, in the training loop's views.


def run_test_split(config, dataset: data.Dataset) -> Tuple[np.ndarray, np.ndarray, str]:
  """(images, labels, name) of the test split as the run evaluated it: with config.max_eval_examples, the
  same subset (evaluation.subset), and a name that says so."""
  images, labels = evaluation.subset(dataset.test_images, dataset.test_labels, config.get('max_eval_examples', 0))
  if len(labels) == len(dataset.test_labels):
    return images, labels, 'test'
  return images, labels, (f'test ({len(labels):,} of {len(dataset.test_labels):,} images: the run\'s '
                          'config.max_eval_examples)')


def view_name(prefix: str, config) -> str:
  """How a view of train.eval_views is named in a line: '', ', tta (flip)', ', ema', ', ema + tta (flip)'."""
  parts = (['ema'] if prefix.startswith('ema_') else []) + ([f'tta ({config.tta})'] if 'tta_' in prefix else [])
  return (', ' + ' + '.join(parts)) if parts else ''


def evaluate_views(config, mesh, state, images: np.ndarray, labels: np.ndarray) -> List[Tuple[str, Dict[str, Any]]]:
  """(prefix, evaluation.summarize's numbers) of every view the training loop evaluates (train.eval_views).

  The trained weights ('' prefix) first; then, where the run's recipe has them,
  test-time augmentation ('tta_') and the weight EMA ('ema_', 'ema_tta_'). The
  prefixes are those of results.json's fields, e.g. ema_test_accuracy.
  """
  batch_size = config_lib.fitted_eval_batch_size(config, [len(labels)], jax.device_count())
  views_config = ml_collections.ConfigDict(config.to_dict())
  views_config.eval_batch_size = batch_size
  split = evaluation.EvalSet(mesh, images, labels, batch_size)
  return [(prefix, evaluation.evaluate(eval_fn, view(state), split))
          for prefix, eval_fn, view in train.eval_views(mesh, views_config)]


def changed_images_warning(changes, image_shape) -> Optional[str]:
  """One line for the images data.read_labelled_folder resized or converted (None if none was)."""
  if not changes:
    return None
  path, was = changes[0]
  return (f'warning: {len(changes)} image(s) were not {image_shape[1]}x{image_shape[0]} RGB and were '
          f'resized/converted (e.g. {path}: {was})')


def write_confusion_matrix(confusion, class_names: List[str], output_dir: str, title: str = '') -> List[str]:
  """Writes confusion_matrix.csv (counts) and .png (row-normalized colours, counts written in), both or neither
  (rundir.write_files: one line if they cannot be written)."""
  # A Figure without pyplot: no global state and no GUI backend, so it works headless and in notebooks.
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  confusion = np.asarray(confusion, np.int64)
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise CheckpointError(f'cannot write the confusion matrix into {output_dir}: it is a file, not a folder')
  csv_path = os.path.join(output_dir, 'confusion_matrix.csv')

  def write_csv(path):
    with open(path, 'w', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(['true \\ predicted', *class_names])
      for name, row in zip(class_names, confusion):
        writer.writerow([name, *row.tolist()])

  n = len(class_names)
  rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
  size = max(4.0, 0.55 * n + 2.5)
  fig = Figure(figsize=(size, size * 0.9))
  ax = fig.subplots()
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
  rundir.write_files({csv_path: write_csv, png_path: lambda path: fig.savefig(path, dpi=120, format='png')})
  return [csv_path, png_path]


# --------------------------------------------------------------------------
# Prediction.


def find_images(paths: Sequence[str]) -> List[str]:
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


def classify_files(state, files: Sequence[str], image_shape, batch_size: int):
  """Yields (path, probabilities, changed, error) for each file in order, classified `batch_size` at a time.

  A file that cannot be read has error set (data.read_image_as's message) and no
  probabilities; `changed` says how an image of another size or mode was
  resized/converted. Every batch is padded to one size: one compile.
  """
  predict_fn = make_predict_fn()
  batch_size = max(1, min(batch_size, len(files)))
  for start in range(0, len(files), batch_size):
    read = []
    for path in files[start:start + batch_size]:
      try:
        image, changed = data.read_image_as(path, image_shape)
      except DataError as e:
        yield path, None, None, str(e)
        continue
      read.append((path, image, changed))
    if not read:
      continue
    padded = np.zeros((batch_size, *image_shape), np.uint8)
    padded[:len(read)] = np.stack([image for _, image, _ in read])
    probabilities = np.asarray(predict_fn(state, padded))[:len(read)]
    for (path, _, changed), p in zip(read, probabilities):
      yield path, p, changed, None
