"""The 'fast94' recipe (airbench94_muon, KellerJordan/cifar10-airbench) in JAX: configs/fast94.py plus this module.

The whole recipe, and where each piece lives:

  net            models/whitened_vgg.py: a frozen 2x2 patch-whitening conv (`WhitenedVGG.init_from_data` sets it
                 from the first 5,000 normalized training images), three conv-pool-BN-GELU blocks of
                 64/256/256 channels, BatchNorm momentum 0.6, a head whose logits are scaled by 1/9.
  data           channel mean/std normalization; all 50,000 images train (num_val_examples 0).
  augmentation   reflect-pad by 2 and crop back (config crop_padding, crop_padding_mode: data.augment),
                 and switches.alternating_flip (config flip='alternating'): every image mirrored at random in
                 epoch 0, then exactly the other way round each epoch after, where independent coin
                 flips show half the images the same view two epochs running.
  loss           cross-entropy with label smoothing 0.2 (switches.cross_entropy).
  optimizer      `make_optimizer` (config optimizer='airbench_muon'): Muon (optax.contrib.scale_by_muon)
                 on the 3x3 filters, Nesterov SGD on the BatchNorm biases, the whitening bias (3 epochs
                 only) and the head; the whitening kernel and the BatchNorm scales frozen. Rates decay
                 linearly to 0 (config schedule='linear').
  schedule       batch 2,000, 8 epochs: 200 steps.
  evaluation     test-time augmentation 'flip_translate' (switches.tta_logits): the image and its mirror,
                 each also moved one pixel up-left and down-right, six views.

Why Muon rather than airbench94's Nesterov SGD + Lookahead: docs/design.md.

Learning rates are airbench's, which are for a loss *summed* over the batch; the grads this
optimizer expects are of the batch *mean*, so the SGD rates are multiplied by the batch size
(Muon is invariant to the gradient's scale).
"""
import math
from typing import Optional

import jax
import jax.numpy as jnp
import optax
from optax.contrib import MuonDimensionNumbers, scale_by_muon

from jaxresnet.models import whitened_vgg


# ---------------------------------------------------------------- optimizer

def lr_multiplier(total_steps: int, warmup_fraction: float = 0.0, initial: float = 0.2,
                  final: float = 0.0) -> optax.Schedule:
  """initial -> 1 linearly over warmup_fraction * total_steps, then 1 -> final by total_steps, then final.

  airbench94_muon: (0, -, 0); airbench94 (SGD + Lookahead): (0.23, 0.2, 0.07).
  """
  warmup = int(total_steps * warmup_fraction)
  decay = optax.linear_schedule(1.0, final, max(1, total_steps - warmup))
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(initial, 1.0, warmup), decay], [warmup])


def renormalize_filters() -> optax.GradientTransformation:
  """Adds what rescales each kernel to Frobenius norm sqrt(out channels) before the step, as airbench's Muon does.

  BatchNorm follows every conv, so a kernel's norm does not change the function, only how far a
  fixed-size Muon step turns it: holding the norm fixed holds the effective step size fixed.
  """
  def update_fn(updates, state, params):
    def add(u, p):
      scale = jnp.sqrt(p.shape[-1]) / jnp.linalg.norm(p)
      return u + p * (scale - 1.0)
    return jax.tree.map(add, updates, params), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def nesterov_sgd(learning_rate: optax.Schedule, momentum: float, decay: float) -> optax.GradientTransformation:
  """PyTorch SGD(nesterov=True, weight_decay=decay): decay * params joins the gradient before the momentum."""
  return optax.chain(optax.add_decayed_weights(decay), optax.trace(momentum, nesterov=True),
                     optax.scale_by_learning_rate(learning_rate))


def make_optimizer(total_steps: int, whiten_bias_steps: int, batch_size: int, *,
                   multiplier: Optional[optax.Schedule] = None,
                   filter_lr: float = 0.24, filter_momentum: float = 0.6, ns_steps: int = 3,
                   bias_lr: float = 0.053, head_lr: float = 0.67, momentum: float = 0.85,
                   weight_decay: float = 2e-6, head_width: int = 256,
                   logit_scale: float = 1 / 9) -> optax.GradientTransformation:
  """airbench94_muon's optimizer, for grads of the batch-mean loss of a WhitenedVGG.

  Rates and weight decay are airbench's (summed loss; weight_decay per example, i.e. airbench's
  2e-6 * batch_size). All rates decay linearly to 0 by total_steps, the whitening bias's by
  whiten_bias_steps, after which it is frozen; `multiplier` replaces the decay of every group but
  the whitening bias (the config's schedule over its peak). head_lr is for airbench94_muon's head (weights of
  std 1, logits / width). Ours is PyTorch-initialized with logits * logit_scale: the same function
  with weights c = 1 / (width * logit_scale) times airbench's (9/256), whose gradients are 1/c
  times larger; the same trajectory then needs the rate times c^2 (weight decay as wd / lr keeps).
  """
  schedule = multiplier or lr_multiplier(total_steps)
  scaled = lambda lr, mult=schedule: (lambda step: lr * mult(step))
  c = 1.0 / (head_width * logit_scale)

  def sgd(lr_sum, mult=schedule):
    lr0 = lr_sum * batch_size  # Summed-loss rate -> mean-loss rate.
    # PyTorch weight_decay = wd / lr with wd = weight_decay * batch_size; in mean-loss terms the
    # decay joining the gradient is wd / (lr_sum * batch_size) = weight_decay / lr_sum.
    return nesterov_sgd(scaled(lr0, mult), momentum, weight_decay / lr_sum)

  conv_dims = lambda tree: jax.tree.map(lambda _: MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3), tree)
  muon = optax.chain(
      scale_by_muon(ns_steps=ns_steps, beta=filter_momentum, nesterov=True, weight_dimension_numbers=conv_dims),
      optax.scale_by_learning_rate(scaled(filter_lr)),
      renormalize_filters())
  L = whitened_vgg
  return optax.multi_transform(
      {L.FILTERS: muon,
       L.NORM_BIAS: sgd(bias_lr),
       L.WHITEN_BIAS: sgd(bias_lr, lr_multiplier(whiten_bias_steps)),
       L.HEAD: sgd(head_lr * c * c),
       L.FROZEN: optax.set_to_zero()},
      whitened_vgg.param_labels)


def steps(num_train: int, batch_size: int, epochs: float) -> int:
  """Training steps for `epochs` epochs, the last partial batch of each epoch dropped (as airbench)."""
  return math.ceil(epochs * (num_train // batch_size))


# ---------------------------------------------------------------- the recipe's settings, from the config

# airbench94_muon's rates and constants; the config's learning_rate (Muon's, 0.24 there) scales them all.
AIRBENCH_FILTER_LR, AIRBENCH_BIAS_LR, AIRBENCH_HEAD_LR = 0.24, 0.053, 0.67
FILTER_MOMENTUM = 0.6  # Muon's momentum (the config's momentum is the SGD groups', 0.85).
WHITEN_BIAS_EPOCHS = 3  # The whitening bias trains for this many epochs, then stays.


def optimizer_from_config(config, learning_rate: optax.Schedule, steps_per_epoch: int,
                          batch_size: int) -> optax.GradientTransformation:
  """make_optimizer with the config's rates, momentum and weight decay, following its schedule `learning_rate`,
  for the run's `batch_size`."""
  scale = config.learning_rate / AIRBENCH_FILTER_LR
  multiplier = (lambda step: learning_rate(step) / config.learning_rate) if config.learning_rate else learning_rate
  return make_optimizer(
      total_steps=0, whiten_bias_steps=WHITEN_BIAS_EPOCHS * steps_per_epoch, batch_size=batch_size,
      multiplier=multiplier,  # The config's schedule, in place of make_optimizer's own decay over total_steps.
      filter_lr=config.learning_rate, filter_momentum=FILTER_MOMENTUM, bias_lr=AIRBENCH_BIAS_LR * scale,
      head_lr=AIRBENCH_HEAD_LR * scale, momentum=config.momentum, weight_decay=config.weight_decay,
      head_width=whitened_vgg.WhitenedVGG.widths[-1], logit_scale=whitened_vgg.WhitenedVGG.logit_scale)


# The optimizers this recipe adds to optim.OPTIMIZERS: name -> factory(config, schedule, steps per epoch, batch size).
OPTIMIZERS = {'airbench_muon': optimizer_from_config}
# The nets whose parameter groups each of them labels: the only nets it can train (optim.check_config).
OPTIMIZER_MODELS = {'airbench_muon': ('whitened_vgg',)}
