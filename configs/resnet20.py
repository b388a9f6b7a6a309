"""ResNet-20 (option A shortcuts, 0.27M parameters) on CIFAR-10, He et al. 2016.

    python -m jaxresnet.main --config=configs/resnet20.py --workdir=/tmp/resnet20

Paper: 8.75% test error (Table 6, 64k iterations, batch 128).
"""
from jaxresnet.configs import default


def get_config():
  config = default.get_config()
  config.model = 'resnet20'
  return config
