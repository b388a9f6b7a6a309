"""Plain-20: ResNet-20's stack without shortcuts, on CIFAR-10, He et al. 2016.

    python -m jaxresnet.main --config=configs/plain20.py --workdir=/tmp/plain20

Paper: about 9.5% test error, read from Figure 6 (left).
"""
from jaxresnet.configs import default


def get_config():
  config = default.get_config()
  config.model = 'plain20'
  return config
