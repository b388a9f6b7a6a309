"""The CIFAR-10 plain nets and ResNets of He et al. 2016, Section 4.2.

A net of depth 6n+2 is a 3x3 stem conv, three stages of n blocks each (16, 32
and 64 filters, the last two starting with stride 2), global average pooling
and a dense classifier. A block is two 3x3 convs with BatchNorm; a residual
block adds a shortcut, a plain block does not.

Shortcut options (paper, Section 3.3):
  A: identity; where the shape changes, subsample by 2 and zero-pad the new
     channels. Adds no parameters. This is what the paper uses on CIFAR-10.
  B: identity; where the shape changes, a 1x1 conv with stride 2 plus BatchNorm.
"""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxresnet.models.batch_norm import BatchNorm

ModuleDef = Any

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


class BasicBlock(nn.Module):
  """Two 3x3 conv-BN layers, with a shortcut unless `shortcut == 'none'`."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1
  shortcut: str = 'A'

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides))(x)
    y = self.norm()(y, relu=True)
    y = self.conv(self.filters, (3, 3))(y)
    if self.shortcut == 'none':
      residual = None
    elif x.shape == y.shape:
      residual = x
    elif self.shortcut == 'A':
      residual = shortcut_option_a(x, self.filters, self.strides)
    elif self.shortcut == 'B':
      residual = self.conv(self.filters, (1, 1), (self.strides, self.strides),
                           name='projection_conv')(x)
      residual = self.norm(name='projection_norm')(residual)
    else:
      raise ValueError(f'unknown shortcut option {self.shortcut!r} (expected A, B or none)')
    return self.norm()(y, residual=residual, relu=True)  # relu(bn(y) + residual)


class CifarResNet(nn.Module):
  """He et al.'s CIFAR net: `residual=False` gives the matching plain net."""
  blocks_per_stage: int
  num_classes: int = 10
  widths: Sequence[int] = (16, 32, 64)
  residual: bool = True
  shortcut: str = 'A'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    conv, norm = conv_and_norm(train, self.dtype)
    block = functools.partial(BasicBlock, conv=conv, norm=norm,
                              shortcut=self.shortcut if self.residual else 'none')

    x = conv(self.widths[0], (3, 3), name='stem_conv')(x)
    x = norm(name='stem_norm')(x, relu=True)
    for stage, filters in enumerate(self.widths):
      for i in range(self.blocks_per_stage):
        strides = 2 if stage > 0 and i == 0 else 1
        x = block(filters, strides=strides)(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, kernel_init=kaiming_normal, dtype=self.dtype)(x)
    return jnp.asarray(x, jnp.float32)
