"""He et al. 2016 (Section 4.2) CIFAR-10 recipe; every other config starts here.

SGD with momentum 0.9, weight decay 1e-4, batch 128, learning rate 0.1 divided
by 10 at 32k and 48k iterations, 64k iterations in all, on a 45k/5k
train/validation split with 4-pixel padding, random 32x32 crops, horizontal
flips and per-pixel mean subtraction.

    python -m jaxresnet.main --config=configs/default.py --workdir=/tmp/run

Every field, with its default, what it means and its kind (recipe, identity or
bookkeeping), is declared once in jaxresnet/infra/config.py (FIELDS; `python -m
jaxresnet.infra.config` prints them); this config is those defaults. Any field
can be overridden on the command line, e.g. `--config.num_train_steps=200`.
Durations are steps, '<x> epochs' or '<x>%' of the run:
`--config.num_train_steps='30 epochs' --config.lr_boundaries="('50%','75%')"`.
"""
from jaxresnet.infra import config as config_lib


def get_config():
  return config_lib.default_config()
