"""ResNet-34 under 5M parameters: BasicBlocks [3, 4, 6, 3], widths 64-96-96-224 (4,352,970 parameters).

One project reported 4,348,082 parameters and 95.1% test accuracy after 200
epochs for its ResNet-34 (widths not published; these land within 0.2%).
Recipe as configs/resnet26_5m.py: SGD Nesterov 0.9, lr 0.1 cosine, batch 64,
weight decay 5e-4, dropout 0.1, AutoAugment + cutout 16, 200 epochs. Ours: not
trained yet (needs a GPU; about 150 TFLOP an epoch).

    python -m jaxresnet.main --config=configs/resnet34_5m.py --workdir=/tmp/resnet34_5m
"""
from jaxresnet.configs import resnet26_5m


def get_config():
  config = resnet26_5m.get_config()
  config.model = 'resnet34_5m'
  config.num_train_steps = '200 epochs'  # That project's ResNet-34 (its ResNet-26: 100).
  return config
