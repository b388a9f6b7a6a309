"""Small plain CNN baselines: what a first CIFAR-10 course project builds before ResNets.

`SmallCNN` (80,090 parameters) is the classic two-conv LeNet-style net;
`DeepCNN` stacks eight 3x3 convs with a little BatchNorm and dropout. Both use
unpadded ("valid") convs, so the spatial size shrinks with every conv, and
biases everywhere, as the Keras/PyTorch originals do.
"""
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxresnet.models.batch_norm import BatchNorm
from jaxresnet.models.resnet import kaiming_normal


class SmallCNN(nn.Module):
  """conv 5x5 (8), max-pool 2, conv 3x3 (16), avg-pool 2, dense 576-128-32-classes."""
  num_classes: int = 10
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    del train  # No BatchNorm or dropout: the same function in training and evaluation.
    conv = functools.partial(nn.Conv, padding='VALID', kernel_init=kaiming_normal, dtype=self.dtype)
    dense = functools.partial(nn.Dense, kernel_init=kaiming_normal, dtype=self.dtype)
    x = nn.relu(conv(8, (5, 5))(x))  # 32x32 -> 28x28
    x = nn.max_pool(x, (2, 2), (2, 2))  # -> 14x14
    x = nn.relu(conv(16, (3, 3))(x))  # -> 12x12
    x = nn.avg_pool(x, (2, 2), (2, 2))  # -> 6x6x16 = 576
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(dense(128)(x))
    x = nn.relu(dense(32)(x))
    x = dense(self.num_classes)(x)
    return jnp.asarray(x, jnp.float32)


class DeepCNN(nn.Module):
  """Eight 3x3 convs (20-24-32-40, max-pool, 48-56-64-72), then dense 1152-256-64-32-16-classes.

  BatchNorm follows conv1, conv5 and the first two dense layers; dropout
  (0.3, then 0.1) follows those two dense layers.
  """
  num_classes: int = 10
  dropout_rates: tuple = (0.3, 0.1)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    conv = functools.partial(nn.Conv, kernel_size=(3, 3), padding='VALID', kernel_init=kaiming_normal,
                             dtype=self.dtype)
    dense = functools.partial(nn.Dense, kernel_init=kaiming_normal, dtype=self.dtype)
    norm = functools.partial(BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                             dtype=self.dtype)
    for i, filters in enumerate((20, 24, 32, 40, 48, 56, 64, 72)):  # 32x32 -> 30 -> ... -> 4x4
      x = conv(filters)(x)
      x = norm()(x, relu=True) if i in (0, 4) else nn.relu(x)
      if i == 3:
        x = nn.max_pool(x, (2, 2), (2, 2))  # 24x24 -> 12x12
    x = x.reshape((x.shape[0], -1))  # 4x4x72 = 1152
    for features, rate in zip((256, 64), self.dropout_rates):
      x = norm()(dense(features)(x), relu=True)
      x = nn.Dropout(rate, deterministic=not train)(x)
    x = nn.relu(dense(32)(x))
    x = nn.relu(dense(16)(x))
    x = dense(self.num_classes)(x)
    return jnp.asarray(x, jnp.float32)
