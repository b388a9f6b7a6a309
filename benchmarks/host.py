"""Which device and host a benchmark ran on, and with which package versions (for the results files)."""
import os
import platform
import re
from typing import Any, Dict, List, Optional

import jax
import numpy as np

from jaxresnet.infra import devices

# Dense peak TFLOP/s from NVIDIA's datasheets (bf16 tensor cores, fp32 CUDA cores),
# matched against jax's device_kind; the first match wins.
GPU_PEAK_TFLOPS = [
    ('H100 PCIe', {'bf16': 756.0, 'fp32': 51.2}),
    ('H100 NVL', {'bf16': 835.0, 'fp32': 60.0}),
    ('H100', {'bf16': 989.4, 'fp32': 66.9}),
    ('H200', {'bf16': 989.4, 'fp32': 66.9}),
    ('A100', {'bf16': 312.0, 'fp32': 19.5}),
    ('L40S', {'bf16': 362.0, 'fp32': 91.6}),
    ('L4', {'bf16': 121.0, 'fp32': 30.3}),
]


def device_info() -> Dict[str, Any]:
  device = jax.devices()[0]
  info = {'platform': device.platform, 'kind': device.device_kind, 'count': jax.device_count(),
          'host_cpu': devices.cpu_model(), 'host_cores': os.cpu_count(), 'host_cpu_flags': cpu_flags()}
  if device.platform == 'cpu':
    info['name'] = 'cpu'
  else:
    info['name'] = re.sub(r'[^a-z0-9]+', '-', device.device_kind.lower()).strip('-') or device.platform
    info['peak_tflops'] = next((peak for key, peak in GPU_PEAK_TFLOPS if key in device.device_kind), None)
  return info


def cpu_flags() -> List[str]:
  """The vector extensions that decide CPU conv speed (AVX-512, bf16, AMX)."""
  present = set((devices.cpuinfo_field('flags') or '').split())
  return [f for f in ('avx2', 'fma', 'avx512f', 'avx512_bf16', 'amx_bf16') if f in present]


def versions(torch_module) -> Dict[str, Optional[str]]:
  import flax, jaxlib, optax  # pylint: disable=g-import-not-at-top,multiple-imports
  out = {'python': platform.python_version(), 'jax': jax.__version__, 'jaxlib': jaxlib.__version__,
         'flax': flax.__version__, 'optax': optax.__version__, 'numpy': np.__version__, 'torch': None}
  if torch_module is not None:
    out['torch'] = torch_module.__version__
    out['torch_cuda'] = torch_module.version.cuda
  return out
