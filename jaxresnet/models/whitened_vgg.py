"""airbench's fast CIFAR-10 net: a frozen patch-whitening conv, then a small 3-block VGG.

After KellerJordan/cifar10-airbench (airbench94.py / airbench94_muon.py), written anew for Flax:

    whiten   2x2 conv, 'VALID' (32x32 -> 31x31), 2 * 3 * 2 * 2 = 24 channels, with a bias. Its kernel
             is set once from the training patches' eigenvectors (`whitening_kernel`) and never
             trained; the bias is trained (airbench: for the first 3 epochs only).
    GELU (tanh form by default, see gelu_approximate)
    block k  (widths 64, 256, 256): conv3x3 -> max-pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU
             (31 -> 15 -> 7 -> 3 pixels)
    global max pool over the 3x3 that is left, a bias-free dense head, logits * logit_scale.

BatchNorm is the project's (`batch_norm.BatchNorm`, Flax's momentum convention) with a low
momentum: airbench's BatchNorm(momentum=0.6) hands PyTorch `momentum=1 - 0.6`, so the running
average is 0.6 * running + 0.4 * batch, which is Flax momentum 0.6. airbench freezes the BN scale
at 1 and trains only the bias; here the scale parameter exists (same variables as every other
net in the zoo) and `param_labels` marks it frozen, together with the whitening kernel.

Convs start as PyTorch's default (uniform +-1/sqrt(fan_in)) with the first min(in, out) output
channels overwritten by an identity ("dirac") filter, as airbench does: each block starts close
to passing its input through, which is what lets this net train at very high learning rates.
"""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxresnet.models.batch_norm import BatchNorm

# Parameter labels for an optax.multi_transform (see `param_labels`).
FROZEN, WHITEN_BIAS, NORM_BIAS, FILTERS, HEAD = 'frozen', 'whiten_bias', 'norm_bias', 'filters', 'head'


def torch_default_uniform(key, shape, dtype=jnp.float32):
  """PyTorch's default Conv/Linear init: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = all but the last axis."""
  bound = 1.0 / np.sqrt(np.prod(shape[:-1]))
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def dirac_init(key, shape, dtype=jnp.float32):
  """torch_default_uniform, then output channel i < min(in, out) is the identity on input channel i."""
  h, w, cin, cout = shape
  kernel = torch_default_uniform(key, shape, dtype)
  n = min(cin, cout)
  identity = jnp.zeros((h, w, n, n), dtype).at[h // 2, w // 2].set(jnp.eye(n, dtype=dtype))
  return kernel.at[:, :, :n, :n].set(identity)


def whitening_kernel(images, patch_size: int = 2, eps: float = 5e-4) -> np.ndarray:
  """The whitening conv's HWIO kernel, (p, p, C, 2 * p * p * C), from the patches of `images`.

  images: (N, H, W, C), exactly what the net will be fed. Float images are used as they are.
  uint8 images are first mapped the way the project's 'channel_mean_std' normalization maps
  them, (x / 255 - channel mean) / channel std with the statistics of these same images; pass
  floats if the net sees anything else. airbench uses the first 5,000 normalized training images.

  With C = E[p p^T] over all p x p patches (uncentred, as airbench; the conv has a bias) and
  C = V diag(lam) V^T, output channel k < p*p*C is v_k . patch / sqrt(lam_k + eps): on these
  patches the outputs are uncorrelated with variance lam_k / (lam_k + eps), i.e. whitened. Channels
  p*p*C.. are the same filters negated, so the GELU that follows sees both signs of every component.
  Eigenvalues come in descending order. Computed on the host in float64 (once, at init).
  """
  x = np.asarray(images)
  if x.dtype == np.uint8:
    x = x.astype(np.float64) / 255.0
    x = (x - x.mean(axis=(0, 1, 2))) / x.std(axis=(0, 1, 2))
  n, h, w, c = x.shape
  dim = patch_size * patch_size * c
  second_moment = np.zeros((dim, dim))
  count = 0
  for start in range(0, n, 500):  # In chunks: 5,000 images' patches at once would be ~0.5 GB.
    chunk = x[start:start + 500].astype(np.float64)
    # (n, h-p+1, w-p+1, C, p, p) -> flattened in (dy, dx, c) order, the HWI order of the kernel.
    windows = np.lib.stride_tricks.sliding_window_view(chunk, (patch_size, patch_size), axis=(1, 2))
    patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, dim)
    second_moment += patches.T @ patches
    count += len(patches)
  eigenvalues, eigenvectors = np.linalg.eigh(second_moment / count)  # Ascending.
  eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
  filters = eigenvectors / np.sqrt(np.maximum(eigenvalues, 0.0) + eps)  # Column k: filter k.
  kernel = np.concatenate([filters, -filters], axis=1).reshape(patch_size, patch_size, c, 2 * dim)
  return kernel.astype(np.float32)


WHITENING_IMAGES = 5000  # The whitening conv is computed from the first this-many training images.


def set_whitening_kernel(params, kernel):
  """`params` (a Flax params dict) with the whitening conv's kernel replaced by `kernel`."""
  kernel = jnp.asarray(kernel, params['whiten']['kernel'].dtype)
  if kernel.shape != params['whiten']['kernel'].shape:
    raise ValueError(f'whitening kernel of shape {kernel.shape}, expected {params["whiten"]["kernel"].shape}')
  return {**params, 'whiten': {**params['whiten'], 'kernel': kernel}}


def param_labels(params):
  """One label per parameter leaf, for optax.multi_transform / masks.

  FROZEN: the whitening kernel and the BatchNorm scales (airbench never trains them);
  WHITEN_BIAS: the whitening conv's bias; NORM_BIAS: BatchNorm biases; FILTERS: the 3x3 conv
  kernels (4-D, what Muon orthogonalizes); HEAD: the dense head's kernel.
  """
  def label(path, _):
    names = [getattr(k, 'key', str(k)) for k in path]
    if names[0] == 'whiten':
      return WHITEN_BIAS if names[-1] == 'bias' else FROZEN
    if names[0] == 'head':
      return HEAD
    if names[-2].startswith('norm'):
      return FROZEN if names[-1] == 'scale' else NORM_BIAS
    return FILTERS
  return jax.tree_util.tree_map_with_path(label, params)


def trainable_mask(params):
  """True for the parameters the optimizer may change (an optax.masked mask)."""
  return jax.tree_util.tree_map(lambda l: l != FROZEN, param_labels(params))


def max_pool_2x2(x):
  """2x2 max-pool, stride 2, odd sizes floored (nn.MaxPool2d(2)), as a reshape and a max.

  The same values as nn.max_pool(x, (2, 2), (2, 2)); its gradient is an elementwise mask, where
  nn.max_pool's is a select-and-scatter, which XLA:CPU runs slowly (~5% of this net's step).
  """
  n, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class ConvGroup(nn.Module):
  """conv3x3 -> max-pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU."""
  features: int
  conv: Any
  norm: Any
  gelu: Any

  @nn.compact
  def __call__(self, x):
    x = self.conv(self.features, name='conv1')(x)
    x = self.gelu(self.norm(name='norm1')(max_pool_2x2(x)))
    x = self.conv(self.features, name='conv2')(x)
    return self.gelu(self.norm(name='norm2')(x))


class WhitenedVGG(nn.Module):
  """airbench's net; `model.apply(variables, x, train=...)` on NHWC normalized float images.

  Call `set_whitening_kernel(params, whitening_kernel(train_images))` after init: until then
  the whitening conv is an ordinary (lecun-normal) conv, so the module also works on its own.
  """
  num_classes: int = 10
  widths: Sequence[int] = (64, 256, 256)
  whiten_patch_size: int = 2
  batch_norm_momentum: float = 0.6  # Flax convention: running = 0.6 * running + 0.4 * batch.
  batch_norm_epsilon: float = 1e-5  # airbench: 1e-12; no difference for unit-scale activations.
  logit_scale: float = 1 / 9  # airbench94: logits = head(features) / 9.
  # airbench (PyTorch nn.GELU) uses the exact erf form; the tanh form differs by < 1e-3 and
  # makes the XLA:CPU train step ~10% faster.
  gelu_approximate: bool = True
  dtype: Any = jnp.float32

  @staticmethod
  def init_from_data(train_images, normalize):
    """The model's init hook (train.build): params -> params with the whitening kernel of the first
    WHITENING_IMAGES training images, `normalize`d as in training."""
    kernel = whitening_kernel(jax.device_get(normalize(train_images[:WHITENING_IMAGES])))
    return lambda params: set_whitening_kernel(params, kernel)

  @nn.compact
  def __call__(self, x, train: bool = True):
    p = self.whiten_patch_size
    x = nn.Conv(2 * p * p * x.shape[-1], (p, p), padding='VALID', use_bias=True, dtype=self.dtype,
                name='whiten')(x)
    gelu = functools.partial(nn.gelu, approximate=self.gelu_approximate)
    x = gelu(x)
    conv = functools.partial(nn.Conv, kernel_size=(3, 3), padding='SAME', use_bias=False,
                             kernel_init=dirac_init, dtype=self.dtype)
    norm = functools.partial(BatchNorm, use_running_average=not train, momentum=self.batch_norm_momentum,
                             epsilon=self.batch_norm_epsilon, dtype=self.dtype)
    for i, features in enumerate(self.widths):
      x = ConvGroup(features, conv, norm, gelu, name=f'block{i + 1}')(x)
    x = jnp.max(x, axis=(1, 2))  # Global max pool (airbench: MaxPool2d(3) on the last 3x3).
    x = nn.Dense(self.num_classes, use_bias=False, kernel_init=torch_default_uniform, dtype=self.dtype,
                 name='head')(x)
    return jnp.asarray(x, jnp.float32) * self.logit_scale
