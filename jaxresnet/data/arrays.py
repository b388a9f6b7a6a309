"""Decoded arrays as a run uses them: the Dataset, the validation split, normalization, augmentation.

normalize and augment are pure JAX and run inside the jitted step: the whole
training set lives on the accelerator, and batches are gathered, cropped and
flipped there.
"""
import dataclasses
import json
from typing import Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxresnet.infra.errors import DataError

SPLIT_SEED = 0  # The train/validation split is the same for every run seed.


@dataclasses.dataclass
class Dataset:
  """uint8 NHWC images and int32 labels for each split, on the host."""
  train_images: np.ndarray
  train_labels: np.ndarray
  val_images: np.ndarray
  val_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  class_names: List[str]
  # What identifies the data: {'train': ..., 'test': ...}, hashes of each split as decoded (cache.split_fingerprints),
  # before the validation split. Recorded with a run's checkpoints and config.json; None where unknown.
  fingerprint: Optional[Dict[str, str]] = None

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def split_validation(images: np.ndarray, labels: np.ndarray, num_val: int):
  """Deterministic train/validation split, independent of the run's seed."""
  if not 0 <= num_val < len(images):
    raise DataError(f'num_val_examples={num_val} must be in [0, {len(images)}) for this dataset')
  order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
  train, val = np.sort(order[num_val:]), np.sort(order[:num_val])
  return images[train], labels[train], images[val], labels[val]


def describe(dataset: Dataset) -> str:
  return json.dumps({'train': len(dataset.train_labels), 'val': len(dataset.val_labels),
                     'test': len(dataset.test_labels), 'classes': dataset.num_classes})


# --------------------------------------------------------------------------
# Normalization and augmentation (pure JAX, run inside jit).


def input_statistics(train_images: np.ndarray, normalization: str):
  """(mean, std) in [0, 1] units, broadcastable against NHWC images."""
  x = train_images.astype(np.float32) / 255.0
  if normalization == 'pixel_mean':  # The paper: subtract the per-pixel mean.
    return x.mean(axis=0), np.ones((x.shape[-1],), np.float32)
  if normalization == 'channel_mean_std':
    return x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))
  raise ValueError(f'unknown normalization {normalization!r}')


def normalize(images: jnp.ndarray, mean: jnp.ndarray, std: jnp.ndarray) -> jnp.ndarray:
  return (images.astype(jnp.float32) / 255.0 - mean) / std


def augment(rng: jax.Array, images: jnp.ndarray, pad: int = 4, mode: str = 'constant',
            flip: bool = True) -> jnp.ndarray:
  """Pads by `pad` (zeros, or `mode='reflect'`), crops back at random and, with `flip`, mirrors half the images."""
  n, h, w, c = images.shape
  crop_rng, flip_rng = jax.random.split(rng)
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode)
  offsets = jax.random.randint(crop_rng, (n, 2), 0, 2 * pad + 1)
  crops = jax.vmap(lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0), (h, w, c)))(
      padded, offsets)
  if not flip:
    return crops
  mirrored = jax.random.bernoulli(flip_rng, 0.5, (n, 1, 1, 1))
  return jnp.where(mirrored, crops[:, :, ::-1, :], crops)
