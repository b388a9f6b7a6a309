"""ResNet-18 widths with three BasicBlocks per stage ([3, 3, 3, 3], 17,444,682 parameters).

Trained with the same recipe as configs/resnet18_1111.py (Adam lr 0.01,
dropout 0.1, batch 64, 200 epochs).

    python -m jaxresnet.main --config=configs/resnet18_3333.py --workdir=/tmp/resnet18_3333
"""
from jaxresnet.configs import resnet18_1111


def get_config():
  config = resnet18_1111.get_config()
  config.model = 'resnet18_3333'
  return config
