"""Plain-110: ResNet-110's stack without shortcuts, on CIFAR-10, He et al. 2016.

    python -m jaxresnet.main --config=configs/plain110.py --workdir=/tmp/plain110

Paper: not in the paper (which shows plain nets up to 56 layers).
"""
from jaxresnet.configs import default


def get_config():
  config = default.get_config()
  config.model = 'plain110'
  return config
