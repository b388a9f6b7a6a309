"""fast94: airbench94_muon's recipe (KellerJordan/cifar10-airbench) in JAX, 8 epochs of batch 2,000.

    python -m jaxresnet.main --config=configs/fast94.py --workdir=/tmp/fast94 \
        --config.dataset=image_folder --config.data_dir=PATH/cifar10_jpeg.tar.gz

airbench94_muon reports 94.01% on CIFAR-10 in 2.59 s on an A100 (its README). Not yet run on a GPU.
Runs as written on a CPU: its step's 8.2 GB of temporaries make the run return freed memory to the
system (jaxresnet/infra/host_memory.py), as JAXRESNET_KEEP_FREED_MEMORY=0 did by hand before.
Measured here (results/fast94/README.md), CIFAR-10-JPEG on 2 CPU cores: as written (batch 2,000),
9.5 GB at most and 90.58% with TTA, seed 0, on an Intel Xeon; at batch 500, 90.12% +- 0.14 test accuracy
with TTA over seeds 0-2 (89.32% without), the whole command 30.9 minutes alone on an Intel Xeon and
72.6 minutes alone on an AMD EPYC.

The net (whitened_vgg), the whitening initialisation, the alternating flip and the Muon/SGD
parameter groups are described on one page in jaxresnet/training/fast94.py.
"""
from jaxresnet.configs import default


def get_config():
  config = default.get_config()
  config.model = 'whitened_vgg'
  config.num_val_examples = 0  # airbench trains on all 50,000 images.
  config.normalization = 'channel_mean_std'
  config.crop_padding = 2
  config.crop_padding_mode = 'reflect'
  config.flip = 'alternating'
  config.label_smoothing = 0.2
  config.tta = 'flip_translate'
  config.batch_size = 2000
  config.optimizer = 'airbench_muon'
  config.learning_rate = 0.24  # Muon's, on the 3x3 filters; the SGD groups' rates follow it (fast94.py).
  config.momentum = 0.85  # The SGD groups'; Muon's is 0.6.
  config.nesterov = True
  config.weight_decay = 2e-6  # airbench's, per example of the summed loss.
  config.schedule = 'linear'
  config.num_train_steps = '8 epochs'
  config.log_every_steps = '1 epochs'
  config.eval_every_steps = 0  # Only at the end, as airbench.
  config.checkpoint_every_steps = '1 epochs'
  config.eval_batch_size = 2000
  return config
