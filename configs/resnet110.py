"""ResNet-110 (option A shortcuts, 1.7M parameters) on CIFAR-10, He et al. 2016.

    python -m jaxresnet.main --config=configs/resnet110.py --workdir=/tmp/resnet110

Paper: 6.43% test error (Table 6, 64k iterations, batch 128).
"""
from jaxresnet.configs import default


def get_config():
  config = default.get_config()
  config.model = 'resnet110'
  # Paper: lr 0.01 until training error is below 80% (about 400 iterations), then 0.1.
  config.warmup_steps = 400
  config.warmup = 'constant'
  config.warmup_lr = 0.01
  return config
