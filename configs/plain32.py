"""Plain-32: ResNet-32's stack without shortcuts, on CIFAR-10, He et al. 2016.

    python -m jaxresnet.main --config=configs/plain32.py --workdir=/tmp/plain32

Paper: about 10% test error, read from Figure 6 (left).
"""
from jaxresnet.configs import default


def get_config():
  config = default.get_config()
  config.model = 'plain32'
  return config
