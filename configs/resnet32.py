"""ResNet-32 (option A shortcuts, 0.46M parameters) on CIFAR-10, He et al. 2016.

    python -m jaxresnet.main --config=configs/resnet32.py --workdir=/tmp/resnet32

Paper: 7.51% test error (Table 6, 64k iterations, batch 128).
"""
from jaxresnet.configs import default


def get_config():
  config = default.get_config()
  config.model = 'resnet32'
  return config
