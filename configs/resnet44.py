"""ResNet-44 (option A shortcuts, 0.66M parameters) on CIFAR-10, He et al. 2016.

    python -m jaxresnet.main --config=configs/resnet44.py --workdir=/tmp/resnet44

Paper: 7.17% test error (Table 6, 64k iterations, batch 128).
"""
from jaxresnet.configs import default


def get_config():
  config = default.get_config()
  config.model = 'resnet44'
  return config
