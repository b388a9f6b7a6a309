"""ResNet-56 (option A shortcuts, 0.85M parameters) on CIFAR-10, He et al. 2016.

    python -m jaxresnet.main --config=configs/resnet56.py --workdir=/tmp/resnet56

Paper: 6.97% test error (Table 6, 64k iterations, batch 128).
"""
from jaxresnet.configs import default


def get_config():
  config = default.get_config()
  config.model = 'resnet56'
  return config
