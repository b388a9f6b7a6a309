"""Evaluation over a whole split: the pure eval step, the split on the devices, and one jit call per split.

Everything here reads only `apply_fn`, `params`, `batch_stats`, `input_mean` and
`input_std` of a state, so it serves a `train.TrainState` during training and
an `InferenceState` restored without its optimizer (evaluate, predict).
"""
import functools
from typing import Any, Callable, Dict, List

import flax
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import optax

from jaxresnet import data
from jaxresnet.infra import devices
from jaxresnet.training import switches


class InferenceState(flax.struct.PyTreeNode):
  """What a trained net needs to classify images: no optimizer, no training randomness."""
  step: jax.Array
  params: Any
  batch_stats: Any
  input_mean: jax.Array  # The training set's normalization, stored in every checkpoint.
  input_std: jax.Array
  apply_fn: Callable = flax.struct.field(pytree_node=False)


INFERENCE_FIELDS = ('step', 'params', 'batch_stats', 'input_mean', 'input_std')


def logits(state, images_uint8: jnp.ndarray, tta: str = '') -> jnp.ndarray:
  """The net's logits for uint8 images, normalized as in training; `tta` averages over views (switches.tta_logits)."""
  images = data.normalize(images_uint8, state.input_mean, state.input_std)
  apply = lambda x: state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats}, x, train=False)
  return switches.tta_logits(apply, images, tta)


def eval_step(state, images_uint8: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray, tta: str = ''):
  """Sums over the real (mask=1) examples of a batch: loss, correct, count, confusion matrix."""
  batch_logits = logits(state, images_uint8, tta)
  num_classes = batch_logits.shape[-1]
  losses = optax.softmax_cross_entropy_with_integer_labels(batch_logits, labels)
  predictions = jnp.argmax(batch_logits, -1)
  weights = mask.astype(jnp.float32)
  confusion = jnp.einsum('n,ni,nj->ij', weights, jax.nn.one_hot(labels, num_classes),
                         jax.nn.one_hot(predictions, num_classes))
  return {'loss_sum': jnp.sum(losses * weights),
          'correct': jnp.sum((predictions == labels) * weights),
          'count': jnp.sum(weights),
          'confusion': confusion}


class EvalSet:
  """One split on the devices, padded to whole batches with a mask, evaluated in one jit call."""

  def __init__(self, mesh, images: np.ndarray, labels: np.ndarray, batch_size: int):
    self.size = len(labels)
    padded = -len(labels) % batch_size
    self.images = devices.replicate(
        mesh, np.concatenate([images, np.zeros((padded, *images.shape[1:]), images.dtype)]))
    self.labels = devices.replicate(mesh, np.concatenate([labels, np.zeros((padded,), labels.dtype)]))
    self.mask = devices.replicate(mesh, np.concatenate([np.ones(len(labels), bool), np.zeros(padded, bool)]))


def subset(images: np.ndarray, labels: np.ndarray, max_examples: int = 0):
  """(images, labels) of at most `max_examples` examples, evenly spaced through the split (0: all of them).

  Evenly spaced rather than the first ones: a split read from class folders is
  sorted by class, and every k-th image keeps the classes' shares.
  """
  if not max_examples or len(labels) <= max_examples:
    return images, labels
  picked = np.arange(max_examples) * len(labels) // max_examples
  return images[picked], labels[picked]


def eval_splits(mesh, dataset: data.Dataset, batch_size: int, max_examples: int = 0) -> Dict[str, EvalSet]:
  """The run's validation and test splits on the devices (a split without examples is left out); with
  `max_examples`, each split's subset() (config.max_eval_examples)."""
  splits = {'val': (dataset.val_images, dataset.val_labels), 'test': (dataset.test_images, dataset.test_labels)}
  splits = {name: subset(images, labels, max_examples) for name, (images, labels) in splits.items()}
  return {name: EvalSet(mesh, images, labels, batch_size) for name, (images, labels) in splits.items() if len(labels)}


def make_eval_fn(mesh, batch_size: int, num_members: int = 1, tta: str = ''):
  """jit(state, images, labels, mask) -> summed eval_step results over the whole split (per member)."""
  batch = NamedSharding(mesh, P('data'))

  def member_eval_fn(state, images, labels, mask):
    def body(totals, i):
      window = lambda a: jax.lax.dynamic_slice_in_dim(a, i * batch_size, batch_size)
      batch_images = jax.lax.with_sharding_constraint(window(images), batch)
      out = eval_step(state, batch_images, window(labels), window(mask), tta)
      return jax.tree_util.tree_map(jnp.add, totals, out), None

    zeros = jax.eval_shape(functools.partial(eval_step, tta=tta), state, images[:batch_size], labels[:batch_size],
                           mask[:batch_size])
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), zeros)
    totals, _ = jax.lax.scan(body, zeros, jnp.arange(images.shape[0] // batch_size))
    return totals

  eval_fn = devices.over_members(member_eval_fn, num_members, in_axes=(0, None, None, None))
  return jax.jit(eval_fn, out_shardings=NamedSharding(mesh, P()), compiler_options=devices.compiler_options(num_members))


def summarize(totals) -> Dict[str, Any]:
  """Host numbers of one split from eval_fn's sums."""
  confusion = np.asarray(totals['confusion'])
  per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
  return {'loss': float(totals['loss_sum'] / totals['count']),
          'accuracy': float(totals['correct'] / totals['count']),
          'per_class_accuracy': per_class.tolist(),
          'confusion_matrix': confusion.astype(np.int64).tolist()}


def evaluate(eval_fn, state, split: EvalSet) -> Dict[str, Any]:
  """The numbers of one split for a single run's state."""
  return evaluate_members(eval_fn, state, split, num_members=1)[0]


def evaluate_members(eval_fn, state, split: EvalSet, num_members: int) -> List[Dict[str, Any]]:
  """evaluate() of each member of a population (a single run is a population of one)."""
  totals = devices.to_host(eval_fn(state, split.images, split.labels, split.mask))
  return [summarize(member) for member in unstack(totals, num_members)]


def unstack(tree, num_members: int) -> list:
  """The members of a population's (host) tree; [tree] for a single run."""
  if num_members == 1:
    return [tree]
  return [jax.tree_util.tree_map(lambda x: x[k], tree) for k in range(num_members)]
