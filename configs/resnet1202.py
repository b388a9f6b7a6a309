"""ResNet-1202 (option A shortcuts, 19.4M parameters) on CIFAR-10, He et al. 2016.

    python -m jaxresnet.main --config=configs/resnet1202.py --workdir=/tmp/resnet1202

Paper: 7.93% test error (Table 6, 64k iterations, batch 128).

The paper reports overfitting at this depth; it needs a large-memory GPU.
"""
from jaxresnet.configs import default


def get_config():
  config = default.get_config()
  config.model = 'resnet1202'
  return config
