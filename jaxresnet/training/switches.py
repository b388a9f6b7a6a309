"""Training-recipe building blocks: pure JAX functions that run inside the jitted step.

Cutout, label smoothing, mixup/cutmix, RandAugment/AutoAugment, test-time
augmentation, an EMA of the weights and SAM. All randomness comes from the key
passed in, so a step stays a pure function of (state, batch) and a resumed run
is bit-identical. Where each op runs in the input pipeline:

  uint8 batch -> apply_policy (RandAugment / AutoAugment, uint8 in and out)
              -> data.normalize -> data.augment (pad-crop, flip) -> a FLIPS flip (config.flip)
              -> cutout (normalized floats: 0 is the mean)
              -> mix (mixup / cutmix on normalized floats, one-hot labels in, soft labels out)
              -> model -> cross_entropy(logits, soft or integer labels, label_smoothing)

Why these are written here rather than taken from a library: docs/design.md.
"""
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxresnet.infra import config as config_lib
from jaxresnet.infra.errors import ConfigError

# --------------------------------------------------------------------------
# The table of recipe switches: each one's config field, where in the step it acts and the id its random
# key is folded with (train.recipe_key; None: it draws nothing), in the order the start line names them.


class Switch(NamedTuple):
  field: str
  place: str  # 'uint8 batch', 'augment', 'normalized batch', 'mix', 'loss', 'update' or 'evaluation'.
  key: Optional[int]
  label: str  # Its name on the start line.


SWITCHES = (
    Switch('randaugment', 'uint8 batch', 1, 'randaugment'),
    # The flip draws from the run's key (the same every step), the others from the step's.
    Switch('flip', 'augment', 4, 'flip'),
    Switch('cutout', 'normalized batch', 2, 'cutout'),
    Switch('mixup_alpha', 'mix', 3, 'mixup'),
    Switch('cutmix_alpha', 'mix', 3, 'cutmix'),
    Switch('label_smoothing', 'loss', None, 'label_smoothing'),
    Switch('ema_decay', 'update', None, 'ema'),
    Switch('tta', 'evaluation', None, 'tta'),
    Switch('sam_rho', 'update', None, 'sam'),
)
KEYS = {switch.field: switch.key for switch in SWITCHES}


def switched_on(config):
  """(switch, value) of every switch the config sets away from its default, in SWITCHES' order."""
  return [(switch, config[switch.field]) for switch in SWITCHES
          if config[switch.field] != config_lib.SCHEMA[switch.field].default]


def describe(switch: Switch, value) -> str:
  """How the start line names a switch that is on, e.g. 'cutout 16' ('autoaugment' names itself)."""
  return str(value) if value == 'autoaugment' else f'{switch.label} {value}'


# --------------------------------------------------------------------------
# The flip of the training batch (config.flip).


def flip_mask(key: jax.Array, indices: jax.Array, epoch) -> jax.Array:
  """Whether each image (by dataset index) is mirrored in `epoch`: random in epoch 0, then its complement on odd epochs.

  `key` must be the same for the whole run (it fixes the epoch-0 flips); `epoch` may be traced.
  """
  first = jax.vmap(lambda i: jax.random.bernoulli(jax.random.fold_in(key, i)))(indices)
  return jnp.logical_xor(first, epoch % 2 == 1)


def alternating_flip(images: jax.Array, epoch, key: jax.Array, indices=None) -> jax.Array:
  """NHWC images mirrored per flip_mask; `indices`: their dataset indices (default: 0..N-1, the whole set)."""
  if indices is None:
    indices = jnp.arange(images.shape[0])
  mask = flip_mask(key, indices, epoch)
  return jnp.where(mask[:, None, None, None], images[:, :, ::-1], images)


# config.flip -> flip(images, epoch, key, indices) after the crop; None: data.augment's own coin per image and step.
FLIPS: Dict[str, Optional[Callable]] = {'random': None, 'alternating': alternating_flip}


# --------------------------------------------------------------------------
# Cutout (DeVries & Taylor 2017), on normalized images.


def cutout(key: jax.Array, images: jnp.ndarray, size: int) -> jnp.ndarray:
  """Sets one size x size square per image to 0 (the mean, on normalized images).

  The centre is uniform over the image, so the square is clipped at the border
  as in the paper: rows [cy - size//2, cy - size//2 + size), and the same for
  columns, with (cy, cx) = jax.random.randint(key, (n, 2), 0, (h, w)).
  """
  if size <= 0:
    return images
  n, h, w, _ = images.shape
  centres = jax.random.randint(key, (n, 2), 0, jnp.array([h, w]))
  top = centres[:, 0, None] - size // 2
  left = centres[:, 1, None] - size // 2
  rows = jnp.arange(h)[None, :]
  cols = jnp.arange(w)[None, :]
  in_rows = (rows >= top) & (rows < top + size)  # (n, h)
  in_cols = (cols >= left) & (cols < left + size)  # (n, w)
  mask = in_rows[:, :, None, None] & in_cols[:, None, :, None]
  return jnp.where(mask, jnp.zeros((), images.dtype), images)


# --------------------------------------------------------------------------
# Loss with label smoothing; mixup and cutmix.


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray, label_smoothing: float = 0.0) -> jnp.ndarray:
  """Mean softmax cross-entropy against integer labels (n,) or soft labels (n, K).

  Smoothing mixes the targets with the uniform distribution, (1 - e) y + e / K
  (Szegedy et al. 2016). It is affine, so smoothing mixup's soft labels equals
  mixing smoothed one-hot labels, as timm does.
  """
  if jnp.issubdtype(labels.dtype, jnp.integer):
    labels = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  if label_smoothing:
    labels = optax.smooth_labels(labels, label_smoothing)
  return optax.softmax_cross_entropy(logits, labels).mean()


def _partner(x: jnp.ndarray) -> jnp.ndarray:
  """Each example's mixing partner: the batch reversed (timm's choice).

  Batches are already drawn in a random order, so reversing pairs random
  examples without a gather; with an odd batch the middle one meets itself.
  """
  return x[::-1]


def mixup(key: jax.Array, images: jnp.ndarray, labels_onehot: jnp.ndarray, alpha: float):
  """Mixup (Zhang et al. 2018): one lambda ~ Beta(alpha, alpha) per batch.

  Returns the images lam * x + (1 - lam) * partner and the labels mixed alike.
  """
  lam = jax.random.beta(key, alpha, alpha).astype(images.dtype)
  mixed = lam * images + (1 - lam) * _partner(images)
  return mixed, lam * labels_onehot + (1 - lam) * _partner(labels_onehot)


def cutmix(key: jax.Array, images: jnp.ndarray, labels_onehot: jnp.ndarray, alpha: float):
  """CutMix (Yun et al. 2019): one box per batch pasted from the partner image.

  lambda ~ Beta(alpha, alpha) sets the box's side to sqrt(1 - lambda) of the
  image's (truncated to whole pixels), its centre is uniform over the image and
  it is clipped at the border; the labels use the kept fraction of pixels, so
  they match the image exactly whatever the clipping did.
  """
  n, h, w, _ = images.shape
  lam_key, y_key, x_key = jax.random.split(key, 3)
  lam = jax.random.beta(lam_key, alpha, alpha)
  cut = jnp.sqrt(1.0 - lam)
  cut_h = (h * cut).astype(jnp.int32)
  cut_w = (w * cut).astype(jnp.int32)
  cy = jax.random.randint(y_key, (), 0, h)
  cx = jax.random.randint(x_key, (), 0, w)
  top, bottom = jnp.clip(cy - cut_h // 2, 0, h), jnp.clip(cy - cut_h // 2 + cut_h, 0, h)
  left, right = jnp.clip(cx - cut_w // 2, 0, w), jnp.clip(cx - cut_w // 2 + cut_w, 0, w)
  rows, cols = jnp.arange(h), jnp.arange(w)
  box = (((rows >= top) & (rows < bottom))[:, None] & ((cols >= left) & (cols < right))[None, :])
  mixed = jnp.where(box[None, :, :, None], _partner(images), images)
  kept = (1.0 - (bottom - top) * (right - left) / (h * w)).astype(labels_onehot.dtype)
  return mixed, kept * labels_onehot + (1 - kept) * _partner(labels_onehot)


def mix(key: jax.Array, images: jnp.ndarray, labels_onehot: jnp.ndarray,
        mixup_alpha: float, cutmix_alpha: float):
  """Mixup, cutmix, or (both alphas > 0) one of them per batch with probability 0.5.

  The 0.5 switch is timm's default. Alphas are Python floats; 0 is off.
  """
  if mixup_alpha > 0 and cutmix_alpha > 0:
    switch_key, key = jax.random.split(key)
    return jax.lax.cond(jax.random.bernoulli(switch_key, 0.5),
                        lambda: cutmix(key, images, labels_onehot, cutmix_alpha),
                        lambda: mixup(key, images, labels_onehot, mixup_alpha))
  if cutmix_alpha > 0:
    return cutmix(key, images, labels_onehot, cutmix_alpha)
  if mixup_alpha > 0:
    return mixup(key, images, labels_onehot, mixup_alpha)
  return images, labels_onehot


# --------------------------------------------------------------------------
# PIL-style image ops on one uint8 HWC image (RandAugment / AutoAugment).
#
# Each takes the image and one value in the op's own units. Colour ops follow
# PIL's ImageOps/ImageEnhance (degenerate image + blend, truncated to uint8);
# geometric ops resample nearest-neighbour, as torchvision's defaults do, around
# PIL's pixel-centre convention, and fill the uncovered area with grey 128
# (TF's and timm's fill; about the CIFAR mean, so close to 0 after normalize).

FILL = 128


def _blend(degenerate: jnp.ndarray, image: jnp.ndarray, factor) -> jnp.ndarray:
  """PIL's Image.blend: degenerate + factor * (image - degenerate), clipped and truncated.

  In 16-bit fixed point on integers, so that every compiled program rounds
  alike (a float multiply-add fused or not can land an ulp under a whole
  number and truncate one lower); the +2^-9 bias keeps the whole numbers that
  PIL's exact factors give whole. For factors up to ~100 (int32 range).
  """
  factor = jnp.round(jnp.asarray(factor, jnp.float32) * 65536.0).astype(jnp.int32)
  degenerate = jnp.asarray(degenerate, jnp.int32)
  out = degenerate + (((image.astype(jnp.int32) - degenerate) * factor + 128) >> 16)
  return jnp.clip(out, 0, 255).astype(jnp.uint8)


def _grayscale(image: jnp.ndarray) -> jnp.ndarray:
  """PIL's RGB -> L conversion (ITU-R 601-2 luma, fixed-point, rounded), as int32 HxW."""
  x = image.astype(jnp.int32)
  return (x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000) >> 16


def identity(image, _=None):
  return image


def invert(image, _=None):
  return 255 - image


def autocontrast(image, _=None):
  """Stretches each channel's [min, max] to [0, 255] (a flat channel is kept)."""
  x = image.astype(jnp.int32)
  lo = x.min(axis=(0, 1), keepdims=True)
  hi = x.max(axis=(0, 1), keepdims=True)
  stretched = (x - lo) * 255 // jnp.maximum(hi - lo, 1)
  return jnp.where(hi > lo, stretched, x).astype(jnp.uint8)


def _equalize_channel(channel: jnp.ndarray) -> jnp.ndarray:
  """PIL's ImageOps.equalize of one uint8 channel (its lookup table, exactly)."""
  flat = channel.reshape(-1).astype(jnp.int32)
  hist = jnp.bincount(flat, length=256)
  last_nonzero = hist[255 - jnp.argmax(hist[::-1] > 0)]
  step = (flat.size - last_nonzero) // 255
  safe_step = jnp.maximum(step, 1)
  lut = (safe_step // 2 + jnp.cumsum(hist) - hist) // safe_step
  lut = jnp.clip(lut, 0, 255)
  return jnp.where(step > 0, lut[flat], flat).reshape(channel.shape).astype(jnp.uint8)


def equalize(image, _=None):
  return jnp.stack([_equalize_channel(image[..., c]) for c in range(image.shape[-1])], axis=-1)


def solarize(image, threshold):
  """Inverts the pixels at or above `threshold` (256: none, 0: all)."""
  return jnp.where(image >= threshold, 255 - image, image)


def posterize(image, bits):
  """Keeps the top `bits` (rounded, 1..8) bits of each value."""
  bits = jnp.clip(jnp.round(bits), 1, 8).astype(jnp.uint32)
  mask = (jnp.uint32(0xFF) << (8 - bits)) & 0xFF
  return (image.astype(jnp.uint32) & mask).astype(jnp.uint8)


def color(image, factor):
  """PIL's ImageEnhance.Color: blend with the grayscale image (0: gray, 1: unchanged)."""
  return _blend(_grayscale(image)[..., None], image, factor)


def contrast(image, factor):
  """PIL's ImageEnhance.Contrast: blend with the image's mean gray level."""
  gray = _grayscale(image)
  mean = (2 * gray.sum() + gray.size) // (2 * gray.size)  # Rounded half up, as PIL's int(mean + 0.5).
  return _blend(mean, image, factor)


def brightness(image, factor):
  """PIL's ImageEnhance.Brightness: blend with black."""
  return _blend(0, image, factor)


def sharpness(image, factor):
  """PIL's ImageEnhance.Sharpness: blend with the SMOOTH-filtered image (borders kept)."""
  x = image.astype(jnp.int32)
  h, w = x.shape[:2]
  total = sum(x[dy:h - 2 + dy, dx:w - 2 + dx] for dy in range(3) for dx in range(3)) + 4 * x[1:-1, 1:-1]
  smooth = (2 * total + 13) // 26  # Kernel 1 1 1 / 1 5 1 / 1 1 1 over its sum 13, rounded.
  degenerate = x.at[1:-1, 1:-1].set(smooth)
  return _blend(degenerate, image, factor)


def _affine(image: jnp.ndarray, a, b, c, d, e, f) -> jnp.ndarray:
  """PIL's Image.transform(AFFINE, (a, b, c, d, e, f)), nearest neighbour, FILL outside.

  The output pixel centred at (x, y) (pixel centres at +0.5) takes the input
  pixel nearest to (a x + b y + c, d x + e y + f).
  """
  h, w, ch = image.shape
  y, x = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) + 0.5,
                      jnp.arange(w, dtype=jnp.float32) + 0.5, indexing='ij')
  src_x = a * x + b * y + c - 0.5
  src_y = d * x + e * y + f - 0.5
  coords = [jnp.broadcast_to(src_y[..., None], (h, w, ch)), jnp.broadcast_to(src_x[..., None], (h, w, ch)),
            jnp.broadcast_to(jnp.arange(ch, dtype=jnp.float32), (h, w, ch))]
  return jax.scipy.ndimage.map_coordinates(image, coords, order=0, mode='constant', cval=FILL)


def rotate(image, degrees):
  """Counter-clockwise rotation about the image centre (PIL's Image.rotate)."""
  h, w = image.shape[:2]
  theta = jnp.deg2rad(jnp.asarray(degrees, jnp.float32))
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  cx, cy = w / 2.0, h / 2.0
  return _affine(image, cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy)


def shear_x(image, shear):
  """x_in = x + shear * y, about the top-left corner (PIL's affine, as in AutoAugment)."""
  return _affine(image, 1.0, shear, 0.0, 0.0, 1.0, 0.0)


def shear_y(image, shear):
  return _affine(image, 1.0, 0.0, 0.0, shear, 1.0, 0.0)


def translate_x(image, fraction):
  """Shifts content left by `fraction` of the width, truncated to whole pixels (negative: right)."""
  pixels = jnp.trunc(fraction * image.shape[1])
  return _affine(image, 1.0, 0.0, pixels, 0.0, 1.0, 0.0)


def translate_y(image, fraction):
  pixels = jnp.trunc(fraction * image.shape[0])
  return _affine(image, 1.0, 0.0, 0.0, 0.0, 1.0, pixels)


class _Op(NamedTuple):
  fn: Callable
  base: float  # The op's value at magnitude 0 ...
  scale: float  # ... and its change at full magnitude,
  signed: bool  # with a random sign.


# Value = base + scale * fraction * (random sign if signed), `fraction` in [0, 1]
# being the magnitude over its maximum. The ranges are torchvision's, for both
# RandAugment and AutoAugment: shear 0.3, translate 150/331 of the side, rotate
# 30 degrees, enhance factors 1 +- 0.9, posterize 8..4 bits, solarize 256..0.
OPS = {
    'Identity': _Op(identity, 0.0, 0.0, False),
    'AutoContrast': _Op(autocontrast, 0.0, 0.0, False),
    'Equalize': _Op(equalize, 0.0, 0.0, False),
    'Rotate': _Op(rotate, 0.0, 30.0, True),
    'Solarize': _Op(solarize, 256.0, -256.0, False),
    'Color': _Op(color, 1.0, 0.9, True),
    'Posterize': _Op(posterize, 8.0, -4.0, False),
    'Contrast': _Op(contrast, 1.0, 0.9, True),
    'Brightness': _Op(brightness, 1.0, 0.9, True),
    'Sharpness': _Op(sharpness, 1.0, 0.9, True),
    'ShearX': _Op(shear_x, 0.0, 0.3, True),
    'ShearY': _Op(shear_y, 0.0, 0.3, True),
    'TranslateX': _Op(translate_x, 0.0, 150.0 / 331.0, True),
    'TranslateY': _Op(translate_y, 0.0, 150.0 / 331.0, True),
    'Invert': _Op(invert, 0.0, 0.0, False),  # AutoAugment only.
}
OP_NAMES = tuple(OPS)
RANDAUGMENT_OPS = OP_NAMES[:14]  # Cubuk et al. 2020's 14 transformations.
# numpy, not jnp: a jnp constant would start the JAX backend at import, before
# main.py's jax.distributed.initialize().
_BASE = np.array([op.base for op in OPS.values()], np.float32)
_SCALE = np.array([op.scale for op in OPS.values()], np.float32)
_SIGNED = np.array([op.signed for op in OPS.values()])


def op_values(ops: jnp.ndarray, fractions: jnp.ndarray, signs: jnp.ndarray) -> jnp.ndarray:
  """Each op's value in its own units, from its magnitude fraction and a +-1 sign."""
  signs = jnp.where(jnp.asarray(_SIGNED)[ops], signs, 1.0)
  return jnp.asarray(_BASE)[ops] + jnp.asarray(_SCALE)[ops] * fractions * signs


def apply_ops(images: jnp.ndarray, ops: jnp.ndarray, values: jnp.ndarray) -> jnp.ndarray:
  """Applies op `ops[i]` (an index into OP_NAMES) with value `values[i]` to image i."""
  branches = [lambda image, v, fn=op.fn: fn(image, v) for op in OPS.values()]
  return jax.vmap(lambda image, op, v: jax.lax.switch(op, branches, image, v))(images, ops, values)


def _random_signs(key, n):
  return jnp.where(jax.random.bernoulli(key, 0.5, (n,)), 1.0, -1.0)


RANDAUGMENT_MAX_MAGNITUDE = 10.0


def randaugment(key: jax.Array, images: jnp.ndarray, num_ops: int, magnitude: float) -> jnp.ndarray:
  """RandAugment (Cubuk et al. 2020) on a uint8 NHWC batch; uint8 out.

  Each image gets `num_ops` ops drawn uniformly (with replacement) from the 14 of
  the paper, each always applied, at the shared `magnitude` M on the paper's/TF
  reference scale 0..10 (M=10 is the full range; torchvision's M runs to 30, so
  its M=9 is our 3), with a random sign for the signed ops.
  """
  n = images.shape[0]
  fractions = jnp.full((n,), magnitude / RANDAUGMENT_MAX_MAGNITUDE, jnp.float32)

  def layer(images, layer_key):
    op_key, sign_key = jax.random.split(layer_key)
    ops = jax.random.randint(op_key, (n,), 0, len(RANDAUGMENT_OPS))
    return apply_ops(images, ops, op_values(ops, fractions, _random_signs(sign_key, n))), None

  return jax.lax.scan(layer, images, jax.random.split(key, num_ops))[0]


# AutoAugment's CIFAR-10 policy (Cubuk et al. 2019, appendix; torchvision's list):
# 25 sub-policies of two (op, probability, magnitude bin 0..9) each.
CIFAR10_POLICY = (
    (('Invert', 0.1, 0), ('Contrast', 0.2, 6)),
    (('Rotate', 0.7, 2), ('TranslateX', 0.3, 9)),
    (('Sharpness', 0.8, 1), ('Sharpness', 0.9, 3)),
    (('ShearY', 0.5, 8), ('TranslateY', 0.7, 9)),
    (('AutoContrast', 0.5, 0), ('Equalize', 0.9, 0)),
    (('ShearY', 0.2, 7), ('Posterize', 0.3, 7)),
    (('Color', 0.4, 3), ('Brightness', 0.6, 7)),
    (('Sharpness', 0.3, 9), ('Brightness', 0.7, 9)),
    (('Equalize', 0.6, 0), ('Equalize', 0.5, 0)),
    (('Contrast', 0.6, 7), ('Sharpness', 0.6, 5)),
    (('Color', 0.7, 7), ('TranslateX', 0.5, 8)),
    (('Equalize', 0.3, 0), ('AutoContrast', 0.4, 0)),
    (('TranslateY', 0.4, 3), ('Sharpness', 0.2, 6)),
    (('Brightness', 0.9, 6), ('Color', 0.2, 8)),
    (('Solarize', 0.5, 2), ('Invert', 0.0, 0)),
    (('Equalize', 0.2, 0), ('AutoContrast', 0.6, 0)),
    (('Equalize', 0.2, 0), ('Equalize', 0.6, 0)),
    (('Color', 0.9, 9), ('Equalize', 0.6, 0)),
    (('AutoContrast', 0.8, 0), ('Solarize', 0.2, 8)),
    (('Brightness', 0.1, 3), ('Color', 0.7, 0)),
    (('Solarize', 0.4, 5), ('AutoContrast', 0.9, 0)),
    (('TranslateY', 0.9, 9), ('TranslateY', 0.7, 9)),
    (('AutoContrast', 0.9, 0), ('Solarize', 0.8, 3)),
    (('Equalize', 0.8, 0), ('Invert', 0.1, 0)),
    (('TranslateY', 0.7, 9), ('AutoContrast', 0.9, 0)),
)
_AA_OPS = np.array([[OP_NAMES.index(name) for name, _, _ in sub] for sub in CIFAR10_POLICY], np.int32)
_AA_PROBS = np.array([[p for _, p, _ in sub] for sub in CIFAR10_POLICY], np.float32)
_AA_FRACTIONS = np.array([[m / 9.0 for _, _, m in sub] for sub in CIFAR10_POLICY], np.float32)


def autoaugment(key: jax.Array, images: jnp.ndarray) -> jnp.ndarray:
  """AutoAugment's CIFAR-10 policy on a uint8 NHWC batch; uint8 out.

  Each image draws one of the 25 sub-policies and applies each of its two ops
  with the op's probability, in order.
  """
  n = images.shape[0]
  policy_key, key = jax.random.split(key)
  chosen = jax.random.randint(policy_key, (n,), 0, len(CIFAR10_POLICY))
  for slot, slot_key in enumerate(jax.random.split(key, 2)):
    apply_key, sign_key = jax.random.split(slot_key)
    applied = jax.random.uniform(apply_key, (n,)) < jnp.asarray(_AA_PROBS[:, slot])[chosen]
    ops = jnp.where(applied, jnp.asarray(_AA_OPS[:, slot])[chosen], OP_NAMES.index('Identity'))
    fractions = jnp.asarray(_AA_FRACTIONS[:, slot])[chosen]
    images = apply_ops(images, ops, op_values(ops, fractions, _random_signs(sign_key, n)))
  return images


class ImagePolicy(NamedTuple):
  """A parsed `randaugment` config value."""
  name: str  # 'randaugment' or 'autoaugment'.
  num_ops: int = 0
  magnitude: float = 0.0


def parse_policy(spec: str) -> Optional[ImagePolicy]:
  """'' -> None (off); 'N,M' -> RandAugment, N ops at magnitude M (0..10); 'autoaugment'."""
  text = (spec or '').strip()
  if not text:
    return None
  if text == 'autoaugment':
    return ImagePolicy('autoaugment')
  error = ConfigError(
      f'randaugment={spec!r}: expected \'\' (off), \'N,M\' (RandAugment: N ops per image, an integer '
      f'>= 1, at magnitude M in [0, {RANDAUGMENT_MAX_MAGNITUDE:g}], e.g. \'2,9\') or \'autoaugment\' '
      '(the CIFAR-10 policy)')
  parts = text.split(',')
  if len(parts) != 2:
    raise error
  try:
    num_ops, magnitude = int(parts[0]), float(parts[1])
  except ValueError:
    raise error from None
  if num_ops < 1 or not 0.0 <= magnitude <= RANDAUGMENT_MAX_MAGNITUDE:
    raise error
  return ImagePolicy('randaugment', num_ops, magnitude)


@config_lib.library_check
def check_config(config) -> None:
  """The switches' part of config validation: config.randaugment parses."""
  parse_policy(config.randaugment)


def apply_policy(key: jax.Array, images: jnp.ndarray, policy: Optional[ImagePolicy]) -> jnp.ndarray:
  """The parsed policy on a uint8 batch (before normalization); None is a no-op."""
  if policy is None:
    return images
  if policy.name == 'autoaugment':
    return autoaugment(key, images)
  return randaugment(key, images, policy.num_ops, policy.magnitude)


# --------------------------------------------------------------------------
# Test-time augmentation.

TTA_MODES = ('', 'flip', 'flip_translate')


def _flip_average(apply_fn, images):
  return 0.5 * apply_fn(images) + 0.5 * apply_fn(images[:, :, ::-1, :])


def tta_logits(apply_fn: Callable[[jnp.ndarray], jnp.ndarray], images: jnp.ndarray, mode: str) -> jnp.ndarray:
  """Logits averaged over views of the (normalized) images.

  Logits, not probabilities, are averaged, as airbench does. 'flip': the image and its mirror, 1/2 each. 'flip_translate':
  airbench's tta_level=2: half the weight on 'flip', the other half on 'flip' of
  the image shifted one pixel up-left and one pixel down-right (reflect padding
  of 1, crops at (0, 0) and (2, 2)): 6 views, weights 1/4, 1/4 and 1/8 x 4.
  """
  if mode == '':
    return apply_fn(images)
  if mode == 'flip':
    return _flip_average(apply_fn, images)
  if mode == 'flip_translate':
    h, w = images.shape[1:3]
    padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='reflect')
    shifted = [padded[:, :h, :w], padded[:, 2:h + 2, 2:w + 2]]
    translated = 0.5 * sum(_flip_average(apply_fn, view) for view in shifted)
    return 0.5 * _flip_average(apply_fn, images) + 0.5 * translated
  raise ConfigError(f'tta={mode!r}: expected one of {", ".join(repr(m) for m in TTA_MODES)}')


# --------------------------------------------------------------------------
# EMA of the weights.


def ema_update(ema: Any, new: Any, decay) -> Any:
  """ema <- decay * ema + (1 - decay) * new, leaf by leaf (optax.incremental_update).

  Works on any pytree; the step passes (ema_params, ema_batch_stats) and the
  freshly updated (params, batch_stats). Start the EMA as a copy of the initial
  weights (not zeros: there is no debiasing). `decay` may be a traced scalar,
  e.g. warmed up with the step.
  """
  return optax.incremental_update(new, ema, 1.0 - decay)


# --------------------------------------------------------------------------
# SAM (Foret et al. 2021) around any optax optimizer.


def _normalize(eps: float = 1e-12) -> optax.GradientTransformation:
  """g / ||g|| over the whole tree; eps keeps a zero gradient finite (optax.contrib.normalize has none)."""
  def scale(updates, params=None):
    del params
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(updates)))
    return jax.tree.map(lambda g: g / (norm + eps), updates)
  return optax.stateless(scale)


def sam(optimizer: optax.GradientTransformation, rho: float) -> optax.GradientTransformationExtraArgs:
  """`optimizer` fed SAM's gradient: the gradient at params + rho * g / ||g||.

  optax.contrib.sam in opaque mode: its `update` must be given
  `grad_fn=(params, i) -> gradient` (see `sam_grad_fn`) and calls it once at
  the perturbed weights, so one optimizer step per train step, as any other
  optimizer. The outer optimizer (weight decay included) sees the unperturbed
  params.
  """
  return optax.contrib.sam(optimizer, optax.chain(_normalize(), optax.sgd(rho)),
                           sync_period=2, opaque_mode=True)


def sam_grad_fn(loss_fn: Callable[[Any], Tuple[jnp.ndarray, Any]]) -> Callable[[Any, int], Any]:
  """The `grad_fn` SAM wants, from the step's `loss_fn(params) -> (loss, aux)`.

  The aux (new BatchNorm statistics, logits) of this second pass is dropped:
  the step keeps the first pass's, at the unperturbed weights, as common SAM
  implementations do. The same batch, labels and dropout key are used.
  """
  return lambda params, _: jax.grad(loss_fn, has_aux=True)(params)[0]


def apply_gradients(state, grads, grad_fn: Optional[Callable] = None, **changes):
  """flax TrainState.apply_gradients, passing `grad_fn` through to a SAM optimizer.

  Without grad_fn this is exactly `state.apply_gradients(grads=grads, **changes)`.
  """
  if grad_fn is None:
    return state.apply_gradients(grads=grads, **changes)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params, grad_fn=grad_fn)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       opt_state=opt_state, **changes)
