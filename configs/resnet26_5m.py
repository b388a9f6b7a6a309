"""ResNet-26 under 5M parameters: BasicBlocks [3, 3, 3, 3], widths 64-80-144-224 (4,200,330 parameters).

One project reported 4,196,906 parameters and 90.29% test accuracy after 100
epochs for its ResNet-26 (its widths are not published; these land within
0.1%). Its recipe, shared by configs/resnet34_5m.py and resnet50_5m.py: SGD with
Nesterov momentum 0.9, lr 0.1 with cosine annealing, batch 64, weight decay
5e-4, dropout before the classifier (rate not reported; 0.1 here). On top, the
augmentations that take nets of this size to 95%+ (that project planned them):
AutoAugment's CIFAR-10 policy and a 16-pixel cutout (Cubuk et al. 2019,
DeVries & Taylor 2017). Drop them with --config.randaugment='' --config.cutout=0.

    python -m jaxresnet.main --config=configs/resnet26_5m.py --workdir=/tmp/resnet26_5m \
        --config.dataset=image_folder --config.data_dir=cifar10_jpeg.tar.gz

Ours: not trained yet. 100 epochs are about 70k steps of batch 64 and need a GPU
(about 6 x 0.42G multiply-adds x 50k images = 127 TFLOP an epoch); on the
2-core CPU of this repository's machines one epoch takes hours.

Squeeze-excitation blocks: add --config.squeeze_excitation=True.
"""
from jaxresnet.configs import default


def get_config():
  config = default.get_config()
  config.model = 'resnet26_5m'
  config.dropout = 0.1
  config.nesterov = True
  config.learning_rate = 0.1
  config.schedule = 'cosine'
  config.weight_decay = 5e-4
  config.batch_size = 64
  config.num_train_steps = '100 epochs'  # The source project's.
  config.normalization = 'channel_mean_std'
  config.randaugment = 'autoaugment'
  config.cutout = 16
  return config
