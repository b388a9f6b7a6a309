"""Where arrays live: the device mesh, host <-> device copies, the CPU-only XLA options, and the host's CPU."""
import functools
import math
import os
import platform
from typing import Dict, Optional

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import numpy as np


def make_mesh(num_members: int = 1) -> jax.sharding.Mesh:
  """All devices of all processes on a (`members`, `data`) grid.

  A population of `num_members` runs (train.py) splits its members over the
  `members` axis, so members on different devices never exchange data, and each
  member's batch over the `data` axis. The `members` axis takes the largest
  share of the devices that divides the population: 8 seeds on 4 devices are 4 x 1
  (two members per device), 3 seeds on 4 devices are 1 x 4 (data-parallel only).
  """
  members = math.gcd(num_members, jax.device_count())
  # Auto axes: we place data with sharding constraints and let XLA propagate the rest.
  return jax.make_mesh((members, jax.device_count() // members), ('members', 'data'),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)


def over_members(fn, num_members: int, in_axes=0):
  """`fn` vmapped over the leading members axis of a population; `fn` itself for a single run."""
  if num_members == 1:
    return fn
  # spmd_axis_name: sharding constraints inside `fn` keep each member on its share of the `members` axis.
  return jax.vmap(fn, in_axes=in_axes, spmd_axis_name='members')


def members_sharding(mesh, num_members: int) -> NamedSharding:
  """A single run's state is copied on every device; a population's is split over the `members` axis."""
  return NamedSharding(mesh, P() if num_members == 1 else P('members'))


def replicate(mesh, array: np.ndarray) -> jax.Array:
  """A host array as a global array copied on every device (multi-process safe)."""
  array = np.asarray(array)
  return jax.make_array_from_callback(array.shape, NamedSharding(mesh, P()), lambda i: array[i])


def to_host(tree):
  """Fetches global arrays (also across processes) as numpy."""

  def fetch(x):
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    if x.is_fully_addressable:
      return np.asarray(x)
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree_util.tree_map(fetch, tree)


# Which ops XLA:CPU hands to the YNNPACK library (the rest it compiles itself or runs with Eigen).
# ELTWISE: without it, XLA copies each block's relu(bn(conv) + shortcut) into every
# weight-gradient transpose that reads it, so a block recomputes all earlier blocks of its stage:
# work quadratic in depth. Not INDIVIDUAL_CONVOLUTION (on by default): YNNPACK's convolutions,
# and above all its weight gradients, are slower here than XLA's Eigen ones. benchmarks/README.md
# has the measurements (`train` against `train_compiler_options`, and the conv-layer table).
_CPU_LIBRARY_FUSIONS = 'LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_ELTWISE'


@functools.cache
def compiler_options(num_members: int = 1) -> Optional[Dict[str, str]]:
  """XLA options for the train and eval steps: only on CPU, and only where this jaxlib knows them.

  Not for a population on several CPU devices: jaxlib 0.10.2's YNNPACK fusions reject the
  layouts of some of its sharded, vmapped steps ("unsupported layout in YNN fusion", 3 members
  on 4 devices). On one CPU device they stay: without them a population's grouped convolutions
  run several times slower still (ResNet-20, 2 members on the 2-core CPU: 0.16x a single run's
  images/s without them, 0.91x with them; benchmarks.population, two runs on a shared machine).
  """
  if jax.default_backend() != 'cpu' or (num_members > 1 and jax.device_count() > 1):
    return None
  options = {'xla_cpu_experimental_ynn_fusion_type': _CPU_LIBRARY_FUSIONS}
  try:  # An experimental option: another jaxlib may reject it (INVALID_ARGUMENT).
    jax.jit(lambda x: x + 1).lower(jnp.zeros(())).compile(options)
  except Exception:  # pylint: disable=broad-except
    return None
  return options


def cpuinfo_field(field: str) -> Optional[str]:
  """The first value of `field` in /proc/cpuinfo (Linux), or None."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.split(':')[0].strip() == field:
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return None


def cpu_model() -> str:
  return cpuinfo_field('model name') or platform.processor() or platform.machine()


def host_cpu() -> str:
  """The host's CPU and core count, e.g. 'AMD EPYC, 2 cores': on CPU a run's speed depends on it."""
  return f'{cpu_model()}, {os.cpu_count()} cores'
