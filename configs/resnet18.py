"""ResNet-18 for CIFAR (BasicBlocks [2, 2, 2, 2], 11,173,962 parameters), kuangliu/pytorch-cifar layout.

Trained with the same recipe as configs/resnet18_1111.py (Adam lr 0.01,
dropout 0.1, batch 64, 200 epochs).

    python -m jaxresnet.main --config=configs/resnet18.py --workdir=/tmp/resnet18
"""
from jaxresnet.configs import resnet18_1111


def get_config():
  config = resnet18_1111.get_config()
  config.model = 'resnet18'
  return config
