"""ResNet-18 with one BasicBlock per stage ("ResNet-10"; 4,903,242 parameters) on CIFAR-10.

The four-stage ImageNet-style layout of kuangliu/pytorch-cifar (3x3 stem, no
max-pool, widths 64-128-256-512, projection shortcuts), with the recipe one
project reported at about 91% test accuracy: Adam at a constant lr 0.01,
dropout 0.1 before the classifier, batch 64, 200 epochs. Ours: only 3 epochs so
far (--config.num_train_steps='3 epochs'), 68.37% test accuracy on CIFAR-10-JPEG, 26.5 minutes on
2 Intel Xeon CPU cores (results/cpu_baselines/); the 200 epochs need a GPU.

    python -m jaxresnet.main --config=configs/resnet18_1111.py --workdir=/tmp/resnet18_1111
"""
from jaxresnet.configs import default


def get_config():
  config = default.get_config()
  config.model = 'resnet18_1111'
  config.dropout = 0.1
  config.optimizer = 'adam'
  config.learning_rate = 0.01
  config.schedule = 'constant'
  config.weight_decay = 0.0
  config.batch_size = 64
  config.num_train_steps = '200 epochs'
  config.normalization = 'channel_mean_std'  # Per-channel mean/std, as torchvision's Normalize.
  return config
