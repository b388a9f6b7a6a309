"""Plain-44: ResNet-44's stack without shortcuts, on CIFAR-10, He et al. 2016.

    python -m jaxresnet.main --config=configs/plain44.py --workdir=/tmp/plain44

Paper: about 12% test error, read from Figure 6 (left).
"""
from jaxresnet.configs import default


def get_config():
  config = default.get_config()
  config.model = 'plain44'
  return config
