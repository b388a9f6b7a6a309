"""The model zoo: every net by name, and the numbers printed at start-up.

    model = get_model('resnet56', num_classes=10, shortcut='A')
    variables = model.init(jax.random.key(0), images, train=False)  # NHWC float
"""
import dataclasses
import functools
from typing import Any, Callable, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxresnet.infra import config as config_lib
from jaxresnet.infra.errors import ConfigError, did_you_mean
from jaxresnet.models import cnn
from jaxresnet.models import resnet
from jaxresnet.models import whitened_vgg


def _he2016(depth: int, residual: bool) -> Callable[..., nn.Module]:
  """The paper's net of `depth`: the config picks the shortcut option (a plain net ignores it, as it always did);
  dropout and gate stay off."""
  assert (depth - 2) % 6 == 0, depth
  return functools.partial(resnet.ResNet, stage_sizes=((depth - 2) // 6,) * 3, widths=(16, 32, 64),
                           residual=residual, dropout_rate=0.0, squeeze_excitation=False)


# He et al. 2016, Section 4.2. Depth 8 is not in the paper: it is the smallest
# member of the family, used by the tests and for smoke runs.
MODELS: Dict[str, Callable[..., nn.Module]] = {
    **{f'resnet{d}': _he2016(d, residual=True) for d in (8, 20, 32, 44, 56, 110, 1202)},
    **{f'plain{d}': _he2016(d, residual=False) for d in (8, 20, 32, 44, 56, 110)},
}


def _stages(stage_sizes, widths, block_cls=resnet.BasicBlock) -> Callable[..., nn.Module]:
  """A four-stage net: projection shortcuts (option B) always; the config may add dropout and a gate."""
  return functools.partial(resnet.ResNet, stage_sizes=stage_sizes, widths=widths, block_cls=block_cls, shortcut='B')


# Four-stage "ImageNet-style" ResNets for CIFAR (kuangliu/pytorch-cifar layout,
# projection shortcuts). The ResNet-18 family keeps the 64-128-256-512 widths;
# the *_5m nets narrow them to stay under 5M parameters (widths chosen to land
# within 0.2% of one project's counts: 4,196,906 / 4,348,082 / 4,815,794).
MODELS.update({
    'resnet18_1111': _stages((1, 1, 1, 1), (64, 128, 256, 512)),
    'resnet18': _stages((2, 2, 2, 2), (64, 128, 256, 512)),
    'resnet18_3333': _stages((3, 3, 3, 3), (64, 128, 256, 512)),
    'resnet26_5m': _stages((3, 3, 3, 3), (64, 80, 144, 224)),
    'resnet34_5m': _stages((3, 4, 6, 3), (64, 96, 96, 224)),
    'resnet50_5m': _stages((3, 4, 6, 3), (64, 64, 80, 256), block_cls=resnet.Bottleneck),
    # Plain CNN baselines.
    'cnn_small': cnn.SmallCNN,
    'cnn_deep': cnn.DeepCNN,
    # airbench94's net, for the fast94 recipe (configs/fast94.py).
    'whitened_vgg': whitened_vgg.WhitenedVGG,
})

# The config of a model whose recipe is named otherwise than configs/<model>.py.
RECIPE_NAMES = {'whitened_vgg': 'fast94'}


def model_fields(name: str) -> frozenset:
  """The fields of model `name` that a config may set (e.g. 'shortcut', 'dropout_rate'): those its zoo entry
  leaves open (a functools.partial's keywords fix the others)."""
  factory = MODELS[name]
  if not isinstance(factory, functools.partial):
    return frozenset(f.name for f in dataclasses.fields(factory))
  return frozenset(f.name for f in dataclasses.fields(factory.func)) - set(factory.keywords)


def unknown_model_message(name: str) -> str:
  """The line for a model name that is not one of MODELS: the closest one, and all of them."""
  return f'unknown model {name!r}{did_you_mean(name, MODELS)} (known models: {", ".join(sorted(MODELS))})'


def check_known(name: str) -> None:
  """One line (ConfigError) naming the known models if `name` is not one of them."""
  if name not in MODELS:
    raise ConfigError(unknown_model_message(name))


def get_model(name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
  """Returns the Flax module called `name`; kwargs set its other fields."""
  check_known(name)
  return MODELS[name](num_classes=num_classes, **kwargs)


# Config field -> model field, for the models that have that field (the schema's model_field).
CONFIG_TO_MODEL_FIELD = config_lib.MODEL_FIELDS


@config_lib.library_check
def check_config(config) -> None:
  """The zoo's part of config validation: the model exists, and a model field set away from its default
  (config_lib.MODEL_FIELDS) is one the model has."""
  check_known(config.model)
  fields = model_fields(config.model)
  for name, model_field in CONFIG_TO_MODEL_FIELD.items():
    value = config[name]
    if value != config_lib.SCHEMA[name].default and model_field not in fields:
      having = sorted(m for m in MODELS if model_field in model_fields(m))
      raise ConfigError(f'config.{name}={value!r} does not apply to model {config.model!r}; '
                        f'models that have it: {", ".join(having)}')


def from_config(config, num_classes: int = 10) -> nn.Module:
  """Returns the module a config describes (`model`, `half_precision` and CONFIG_TO_MODEL_FIELD)."""
  kwargs = {'dtype': jnp.bfloat16 if config.half_precision else jnp.float32}
  if config.model in MODELS:
    fields = model_fields(config.model)
    for config_field, model_field in CONFIG_TO_MODEL_FIELD.items():
      # `in config`: a workdir's config.json from before a field existed still loads.
      if model_field in fields and config_field in config:
        kwargs[model_field] = config[config_field]
  return get_model(config.model, num_classes=num_classes, **kwargs)


def count_params(params) -> int:
  """Trainable parameters (BatchNorm scale and bias included, statistics not)."""
  return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))


def count_params_and_macs(model: nn.Module, image_shape=(32, 32, 3)) -> Tuple[int, int]:
  """Trainable parameters, and multiply-adds of one forward pass on one image over convs and denses.

  Both come from one abstract trace of `init` (jax.eval_shape): each layer's
  kernel and output shape give its multiply-adds, so the counts are exact and
  cost no compute, which keeps listing the whole zoo fast.
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

  def init(x):
    with nn.intercept_methods(interceptor):
      return model.init(jax.random.key(0), x, train=False)  # init runs the forward pass once.

  variables = jax.eval_shape(init, jnp.zeros((1, *image_shape), jnp.float32))
  return count_params(variables['params']), sum(macs)


def count_macs(model: nn.Module, image_shape=(32, 32, 3)) -> int:
  """Multiply-adds of one forward pass on one image, counted over convs and denses."""
  return count_params_and_macs(model, image_shape)[1]
