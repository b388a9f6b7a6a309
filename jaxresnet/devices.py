"""Where arrays live: the device mesh, host <-> device copies, and the CPU-only XLA options."""
import functools
from typing import Dict, Optional

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import numpy as np


def make_mesh() -> jax.sharding.Mesh:
  """All devices of all processes on one `data` axis."""
  # Auto axes: we place data with sharding constraints and let XLA propagate the rest.
  return jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


def replicate(mesh, array: np.ndarray) -> jax.Array:
  """A host array as a global array copied on every device (multi-process safe)."""
  array = np.asarray(array)
  return jax.make_array_from_callback(array.shape, NamedSharding(mesh, P()), lambda i: array[i])


def to_host(tree):
  """Fetches replicated global arrays (also across processes) as numpy."""
  return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0)), tree)


# Which ops XLA:CPU hands to the YNNPACK library (the rest it compiles itself or runs with Eigen).
# ELTWISE: without it, XLA copies each block's relu(bn(conv) + shortcut) into every
# weight-gradient transpose that reads it, so a block recomputes all earlier blocks of its stage:
# work quadratic in depth. Not INDIVIDUAL_CONVOLUTION (on by default): YNNPACK's convolutions,
# and above all its weight gradients, are slower here than XLA's Eigen ones. benchmarks/README.md
# has the measurements (`train` against `train_compiler_options`, and the conv-layer table).
_CPU_LIBRARY_FUSIONS = 'LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_ELTWISE'


@functools.cache
def compiler_options() -> Optional[Dict[str, str]]:
  """XLA options for the train and eval steps: only on CPU, and only where this jaxlib knows them."""
  if jax.default_backend() != 'cpu':
    return None
  options = {'xla_cpu_experimental_ynn_fusion_type': _CPU_LIBRARY_FUSIONS}
  try:  # An experimental option: another jaxlib may reject it (INVALID_ARGUMENT).
    jax.jit(lambda x: x + 1).lower(jnp.zeros(())).compile(options)
  except Exception:  # pylint: disable=broad-except
    return None
  return options
