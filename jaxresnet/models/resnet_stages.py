"""Four-stage "ImageNet-style" ResNets adapted to CIFAR (the kuangliu/pytorch-cifar layout).

A 3x3 stem conv (no max-pool: the images are only 32x32), four stages of
blocks (the last three starting with stride 2), global average pooling,
optional dropout and a dense classifier. Every shortcut whose shape changes is
a 1x1 projection conv plus BatchNorm (He et al.'s option B).

Blocks: `BasicBlock` (two 3x3 convs, ResNet-18/34) and `Bottleneck` (1x1, 3x3,
1x1 with 4x expansion, ResNet-50). Either can end in a squeeze-excitation gate
(Hu et al. 2018) before the residual addition.

These are not cifar_resnet.BasicBlock: that block's option A/none shortcuts
have no place here, and it has no squeeze-excitation.
"""
import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxresnet.models.cifar_resnet import conv_and_norm, kaiming_normal

ModuleDef = Any


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


class BasicBlock(nn.Module):
  """Two 3x3 conv-BN layers and a shortcut (a projection where the shape changes)."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  gate: Optional[ModuleDef] = None  # SqueezeExcitation, applied before the addition.
  strides: int = 1

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides))(x)
    y = self.norm()(y, relu=True)
    y = self.conv(self.filters, (3, 3))(y)
    return _norm_gate_add_relu(self, y, x)


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand to 4x filters; a projection where the shape changes."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  gate: Optional[ModuleDef] = None
  strides: int = 1
  expansion: int = 4

  @nn.compact
  def __call__(self, x):
    y = self.norm()(self.conv(self.filters, (1, 1))(x), relu=True)
    # The stride sits on the 3x3 conv, as in kuangliu's code and torchvision's "ResNet v1.5".
    y = self.norm()(self.conv(self.filters, (3, 3), (self.strides, self.strides))(y), relu=True)
    y = self.conv(self.filters * self.expansion, (1, 1))(y)
    return _norm_gate_add_relu(self, y, x)


def _norm_gate_add_relu(block: nn.Module, y, x):
  """A block's end, relu(gate(bn(y)) + shortcut(x)): one fused BatchNorm call where there is no gate."""
  residual = shortcut(block, x, y.shape)
  if block.gate is None:
    return block.norm()(y, residual=residual, relu=True)
  y = block.gate(name='squeeze_excitation')(block.norm()(y))
  return nn.relu(y + residual)


def shortcut(block: nn.Module, x, shape):
  """Identity if the shape stays, else a strided 1x1 projection conv plus BatchNorm."""
  if x.shape == shape:
    return x
  x = block.conv(shape[-1], (1, 1), (block.strides, block.strides), name='projection_conv')(x)
  return block.norm(name='projection_norm')(x)


class StagesResNet(nn.Module):
  """Stem, `len(stage_sizes)` stages of `block`s (widths[i] filters), pool, dropout, dense."""
  stage_sizes: Sequence[int]
  block: Callable[..., nn.Module] = BasicBlock
  widths: Sequence[int] = (64, 128, 256, 512)
  num_classes: int = 10
  dropout_rate: float = 0.0  # Before the classifier.
  squeeze_excitation: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    conv, norm = conv_and_norm(train, self.dtype)
    gate = functools.partial(SqueezeExcitation, dtype=self.dtype) if self.squeeze_excitation else None
    block = functools.partial(self.block, conv=conv, norm=norm, gate=gate)

    x = conv(self.widths[0], (3, 3), name='stem_conv')(x)
    x = norm(name='stem_norm')(x, relu=True)
    for stage, (size, filters) in enumerate(zip(self.stage_sizes, self.widths)):
      for i in range(size):
        strides = 2 if stage > 0 and i == 0 else 1
        x = block(filters, strides=strides)(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, kernel_init=kaiming_normal, dtype=self.dtype)(x)
    return jnp.asarray(x, jnp.float32)
