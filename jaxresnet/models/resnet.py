"""One ResNet for every residual and plain net of the zoo (the Flax ImageNet example's layout).

A 3x3 stem conv (no max-pool: the images are only 32x32), stages of blocks (`stage_sizes[i]` blocks of
`widths[i]` filters, every stage after the first starting with stride 2), global average pooling,
optional dropout and a dense classifier. The zoo (models/__init__.py) fixes stage sizes, widths, block
and shortcut per net:

  He et al. 2016, Section 4.2: three stages of 16/32/64 filters of `BasicBlock`s; `shortcut` 'A'
  (identity; where the shape changes, subsample by 2 and zero-pad the new channels: no parameters,
  the paper's choice on CIFAR-10), 'B' (where the shape changes, a 1x1 stride-2 conv plus BatchNorm),
  or 'none' (the plain nets: `residual=False`).
  kuangliu/pytorch-cifar's four-stage nets: shortcut 'B', `BasicBlock` (ResNet-18/34) or `Bottleneck`
  (ResNet-50), optionally a squeeze-excitation gate (Hu et al. 2018) before each residual addition.
"""
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxresnet.models.batch_norm import BatchNorm

ModuleDef = Any
SHORTCUTS = ('A', 'B', 'none')

# Kaiming-normal (He et al. 2015) on fan-in: what the paper cites and what
# PyTorch's kaiming_normal_ does, so runs compare with akamaster's code.
kaiming_normal = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


def conv_and_norm(train: bool, dtype: Any):
  """The ResNets' layer partials: bias-free 'SAME' Kaiming-normal convs, and BatchNorm.

  The BatchNorm takes the residual and the ReLU that follow it (batch_norm.py). Under jit
  over a sharded batch the batch mean is a global mean, so the statistics are synced across
  devices without an axis_name.
  """
  conv = functools.partial(nn.Conv, use_bias=False, padding='SAME', kernel_init=kaiming_normal, dtype=dtype)
  norm = functools.partial(BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype)
  return conv, norm


def shortcut_option_a(x: jnp.ndarray, filters: int, strides: int) -> jnp.ndarray:
  """Parameter-free shortcut: subsample spatially, zero-pad the new channels."""
  if strides > 1:
    x = x[:, ::strides, ::strides, :]
  missing = filters - x.shape[-1]
  if missing > 0:
    # Pad equally on both sides, as the reference implementations do.
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (missing // 2, missing - missing // 2)))
  return x


class SqueezeExcitation(nn.Module):
  """Rescales each channel by a gate computed from the global average of all channels."""
  reduction: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = nn.relu(nn.Dense(max(1, channels // self.reduction), dtype=self.dtype, name='squeeze')(s))
    s = nn.sigmoid(nn.Dense(channels, dtype=self.dtype, name='excite')(s))
    return x * s


class Block(nn.Module):
  """What every block shares: its layers' partials, stride, shortcut option and gate; and its end."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1
  shortcut: str = 'A'
  gate: ModuleDef = None  # SqueezeExcitation, applied before the addition.

  def residual(self, x, shape):
    """The shortcut's output: identity where the shape stays (or None, 'none'), else option A or B."""
    if self.shortcut not in SHORTCUTS:
      raise ValueError(f'unknown shortcut option {self.shortcut!r} (expected A, B or none)')
    if self.shortcut == 'none' or x.shape == shape:
      return None if self.shortcut == 'none' else x
    if self.shortcut == 'A':
      return shortcut_option_a(x, shape[-1], self.strides)
    x = self.conv(shape[-1], (1, 1), (self.strides, self.strides), name='projection_conv')(x)
    return self.norm(name='projection_norm')(x)

  def end(self, y, x):
    """relu(gate(bn(y)) + shortcut(x)): one fused BatchNorm call where there is no gate."""
    residual = self.residual(x, y.shape)
    if self.gate is None:
      return self.norm()(y, residual=residual, relu=True)
    y = self.gate(name='squeeze_excitation')(self.norm()(y))
    return nn.relu(y if residual is None else y + residual)


class BasicBlock(Block):
  """Two 3x3 conv-BN layers (the first strided) and the shortcut."""

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides))(x)
    y = self.norm()(y, relu=True)
    y = self.conv(self.filters, (3, 3))(y)
    return self.end(y, x)


class Bottleneck(Block):
  """1x1 reduce, 3x3 (strided), 1x1 expand to 4x filters, and the shortcut."""
  expansion: int = 4

  @nn.compact
  def __call__(self, x):
    y = self.norm()(self.conv(self.filters, (1, 1))(x), relu=True)
    # The stride sits on the 3x3 conv, as in kuangliu's code and torchvision's "ResNet v1.5".
    y = self.norm()(self.conv(self.filters, (3, 3), (self.strides, self.strides))(y), relu=True)
    y = self.conv(self.filters * self.expansion, (1, 1))(y)
    return self.end(y, x)


class ResNet(nn.Module):
  """Stem, `len(stage_sizes)` stages of `block_cls`es (widths[i] filters), pool, dropout, dense."""
  stage_sizes: Sequence[int]
  widths: Sequence[int]
  block_cls: Callable[..., nn.Module] = BasicBlock
  shortcut: str = 'A'
  residual: bool = True  # False: the plain net, whatever `shortcut` says (a config's shortcut applies to both).
  num_classes: int = 10
  dropout_rate: float = 0.0  # Before the classifier.
  squeeze_excitation: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    conv, norm = conv_and_norm(train, self.dtype)
    gate = functools.partial(SqueezeExcitation, dtype=self.dtype) if self.squeeze_excitation else None
    block = functools.partial(self.block_cls, conv=conv, norm=norm, gate=gate,
                              shortcut=self.shortcut if self.residual else 'none')

    x = conv(self.widths[0], (3, 3), name='stem_conv')(x)
    x = norm(name='stem_norm')(x, relu=True)
    for stage, (size, filters) in enumerate(zip(self.stage_sizes, self.widths)):
      for i in range(size):
        x = block(filters, strides=2 if stage > 0 and i == 0 else 1)(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, kernel_init=kaiming_normal, dtype=self.dtype)(x)
    return jnp.asarray(x, jnp.float32)
