"""He et al. 2016 (Section 4.2) CIFAR-10 recipe; every other config starts here.

SGD with momentum 0.9, weight decay 1e-4, batch 128, learning rate 0.1 divided
by 10 at 32k and 48k iterations, 64k iterations in all, on a 45k/5k
train/validation split with 4-pixel padding, random 32x32 crops, horizontal
flips and per-pixel mean subtraction.

    python -m jaxresnet.main --config=configs/default.py --workdir=/tmp/run

Any field can be overridden on the command line, e.g. `--config.num_train_steps=200`.
"""
import ml_collections


def get_config():
  config = ml_collections.ConfigDict()

  # Model: a name from jaxresnet.models.MODELS, e.g. 'resnet20' or 'plain56'.
  config.model = 'resnet20'
  config.shortcut = 'A'  # 'A': zero-padded identity (paper, CIFAR); 'B': 1x1 projection.
  config.half_precision = False  # bf16 compute; parameters and BN statistics stay fp32.
  config.dropout = 0.0  # Dropout before the classifier (resnet18*, *_5m nets only).
  config.squeeze_excitation = False  # Squeeze-excitation in every block (resnet18*, *_5m nets only).

  # Data.
  config.dataset = 'cifar10'  # a TFDS name ('cifar10', 'cifar100') or 'image_folder'.
  config.data_dir = ''  # TFDS data dir, or the image folder holding train/ and test/.
  # Where the decoded arrays are cached, as <dataset>-<fingerprint>.npz (the fingerprint follows the
  # source's files). '' = $JAXRESNET_CACHE_DIR, else $XDG_CACHE_HOME/jaxresnet, else ~/.cache/jaxresnet.
  config.cache_dir = ''
  config.num_val_examples = 5000  # held out of the training split (45k/5k in the paper).
  config.augment = True  # 4-pixel pad, random crop, horizontal flip.
  config.normalization = 'pixel_mean'  # 'pixel_mean' (paper) or 'channel_mean_std'.

  # Recipe switches (jaxresnet/recipes.py), all off here: the paper's recipe is crop + flip only.
  # Each runs inside the jitted step from the step's keys, so a resumed run stays bit-identical.
  config.randaugment = ''  # '' off; 'N,M': RandAugment, N ops at magnitude M (0-10); 'autoaugment': CIFAR-10 policy.
  config.cutout = 0  # Side in pixels of the square set to the mean (DeVries & Taylor 2017); 0 is off.
  config.mixup_alpha = 0.0  # Mixup's Beta(alpha, alpha) (Zhang et al. 2018); 0 is off.
  config.cutmix_alpha = 0.0  # CutMix's Beta(alpha, alpha) (Yun et al. 2019); both > 0: one per batch at random.
  config.label_smoothing = 0.0  # Targets (1 - e) y + e / K (Szegedy et al. 2016).
  config.sam_rho = 0.0  # SAM's neighbourhood radius (Foret et al. 2021) around the optimizer; 0 is off.
  # EMA of the weights and BatchNorm statistics, decay per step; 0 is off. The EMA model is
  # evaluated and checkpointed beside the trained one (ema_* fields in metrics and results).
  config.ema_decay = 0.0
  # Test-time augmentation of evaluation: '' off, 'flip' (logits of image and mirror averaged),
  # 'flip_translate' (airbench's: also 1-pixel shifts). Reported as *_tta_* beside the plain numbers.
  config.tta = ''

  # Optimization.
  config.batch_size = 128  # global batch, split over all devices.
  config.optimizer = 'sgd'  # 'sgd', 'adam', 'adamw', 'rmsprop' or 'adagrad'.
  config.momentum = 0.9  # sgd only.
  config.nesterov = False  # sgd only.
  config.adam_b1 = 0.9  # adam and adamw.
  config.adam_b2 = 0.999
  config.rmsprop_decay = 0.9  # rmsprop: decay of the squared-gradient average.
  config.learning_rate = 0.1
  config.weight_decay = 1e-4
  # 'l2': weight_decay * params added to the gradient (the paper's SGD; equals L2
  # in the loss); 'decoupled': added after the optimizer, scaled by the learning
  # rate (AdamW, SGDW). adamw is always decoupled.
  config.weight_decay_type = 'l2'
  config.schedule = 'step'  # 'step', 'cosine' or 'constant'.
  config.lr_boundaries = (32000, 48000)  # 'step' schedule: where lr is divided ...
  config.lr_boundaries_unit = 'steps'  # ... counted in 'steps', 'epochs' or 'fraction' of training.
  config.lr_decay_factor = 0.1
  config.warmup_steps = 0
  config.warmup = 'linear'  # 'linear' ramp from warmup_lr, or 'constant' warmup_lr (ResNet-110).
  config.warmup_lr = 0.0

  # Length: num_train_steps wins unless it is -1, then num_epochs sets it.
  config.num_train_steps = 64000
  config.num_epochs = -1

  # Logging, evaluation and checkpoints (in steps).
  config.log_every_steps = 100  # metrics.jsonl; without a terminal a step line also comes every 30 s (jobs.HEARTBEAT_SECONDS).
  config.eval_every_steps = 2000  # 0 = only at the end.
  config.eval_batch_size = 1000  # capped at the largest evaluated split (bigger would only add padding).
  # Evaluate at most this many images of each split (validation, test): a fixed, evenly spaced subset, for
  # quick smoke runs (reproduce evaluates 1000 when --steps_scale < 1). 0 = every image. Its numbers are
  # not comparable with a whole split's; a resumed run keeps it.
  config.max_eval_examples = 0
  config.checkpoint_every_steps = 2000  # 0 = only at the end.
  config.checkpoints_to_keep = 3
  # When every checkpoint in the workdir is unreadable (moved to WORKDIR/unreadable_checkpoints/):
  # False stops the run with one line; True starts it over from step 0.
  config.allow_fresh_start = False

  # What to do when the loss turns NaN/inf: False stops the run (the last good checkpoint stays);
  # True drops such updates and counts them (skipped_updates in the log).
  config.skip_nonfinite_updates = False

  config.seed = 0
  # A population: train the runs of seeds seed, seed+1, ..., seed+num_seeds-1 together, in one
  # compiled step (a members axis on the train state; batch_size is per member). Each member
  # computes what its seed computes alone, and writes WORKDIR/seed<k>/{metrics.jsonl,results.json};
  # a member that diverges is frozen and the others go on. 1 = a single run in WORKDIR.
  config.num_seeds = 1
  return config
