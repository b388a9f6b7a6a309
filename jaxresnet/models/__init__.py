"""The model zoo: every net by name, and the numbers printed at start-up.

    model = get_model('resnet56', num_classes=10, shortcut='A')
    variables = model.init(jax.random.key(0), images, train=False)  # NHWC float
"""
import functools
from typing import Any, Callable, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxresnet.errors import ConfigError
from jaxresnet.models.cifar_resnet import CifarResNet


def _he2016(depth: int, residual: bool) -> Callable[..., nn.Module]:
  assert (depth - 2) % 6 == 0, depth
  return functools.partial(CifarResNet, blocks_per_stage=(depth - 2) // 6, residual=residual)


# He et al. 2016, Section 4.2. Depth 8 is not in the paper: it is the smallest
# member of the family, used by the tests and for smoke runs.
MODELS: Dict[str, Callable[..., nn.Module]] = {
    **{f'resnet{d}': _he2016(d, residual=True) for d in (8, 20, 32, 44, 56, 110, 1202)},
    **{f'plain{d}': _he2016(d, residual=False) for d in (8, 20, 32, 44, 56, 110)},
}


def get_model(name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
  """Returns the Flax module called `name`; kwargs set its other fields."""
  if name not in MODELS:
    raise ConfigError(f'unknown model {name!r}; known models: {", ".join(sorted(MODELS))}')
  return MODELS[name](num_classes=num_classes, **kwargs)


def from_config(config, num_classes: int = 10) -> nn.Module:
  """Returns the module a config describes (`model`, `shortcut`, `half_precision`)."""
  kwargs = {'dtype': jnp.bfloat16 if config.half_precision else jnp.float32}
  if config.model.startswith(('resnet', 'plain')) and config.model in MODELS:
    kwargs['shortcut'] = config.shortcut
  return get_model(config.model, num_classes=num_classes, **kwargs)


def count_params(params) -> int:
  """Trainable parameters (BatchNorm scale and bias included, statistics not)."""
  return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))


def count_macs(model: nn.Module, image_shape=(32, 32, 3)) -> int:
  """Multiply-adds of one forward pass on one image, counted over convs and denses.

  Counted from each layer's kernel and output shape while the model is traced
  abstractly, so it is exact and costs no compute.
  """
  macs = []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name == '__call__' and isinstance(module, (nn.Conv, nn.Dense)):
      kernel = module.variables['params']['kernel']
      # Each output element takes one multiply-add per kernel input element.
      per_output = int(np.prod(kernel.shape[:-1])) // getattr(module, 'feature_group_count', 1)
      macs.append(int(np.prod(out.shape[1:])) * per_output)
    return out

  def forward(x):
    with nn.intercept_methods(interceptor):
      variables = model.init(jax.random.key(0), x, train=False)
      return model.apply(variables, x, train=False)

  macs.clear()
  jax.eval_shape(forward, jnp.zeros((1, *image_shape), jnp.float32))
  # init and apply each run every layer once: keep the apply half.
  return sum(macs[len(macs) // 2:])
