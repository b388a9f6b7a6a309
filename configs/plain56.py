"""Plain-56: ResNet-56's stack without shortcuts, on CIFAR-10, He et al. 2016.

    python -m jaxresnet.main --config=configs/plain56.py --workdir=/tmp/plain56

Paper: about 13.5% test error, read from Figure 6 (left).
"""
from jaxresnet.configs import default


def get_config():
  config = default.get_config()
  config.model = 'plain56'
  return config
