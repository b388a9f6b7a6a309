"""Recipe building blocks: each checked against an independent computation, under jit."""
import functools

import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image, ImageEnhance, ImageOps
import pytest

from float32_tolerance import U, sum_atol
from jaxresnet.training import switches
from jaxresnet.infra.errors import ConfigError

# --------------------------------------------------------------------------
# Cutout.


def _expected_cutout_mask(centres, h, w, size):
  mask = np.zeros((len(centres), h, w), bool)
  for i, (cy, cx) in enumerate(centres):
    for y in range(cy - size // 2, cy - size // 2 + size):
      for x in range(cx - size // 2, cx - size // 2 + size):
        if 0 <= y < h and 0 <= x < w:
          mask[i, y, x] = True
  return mask


@pytest.mark.parametrize('size', [5, 6])
def test_cutout_masks_exactly_the_clipped_squares(size):
  n, h, w = 64, 10, 12
  key = jax.random.key(3)
  images = jnp.asarray(np.random.default_rng(0).normal(size=(n, h, w, 2)).astype(np.float32)) + 10.0
  out = np.asarray(jax.jit(switches.cutout, static_argnums=2)(key, images, size))
  # The documented draw of the centres, turned into a mask by plain loops.
  centres = np.asarray(jax.random.randint(key, (n, 2), 0, jnp.array([h, w])))
  mask = _expected_cutout_mask(centres, h, w, size)
  np.testing.assert_array_equal(out, np.where(mask[..., None], 0.0, np.asarray(images)))
  # Independently of the draw: each zeroed region is one rectangle, size x size unless cut by a border.
  areas = []
  for i in range(n):
    ys, xs = np.nonzero((out[i] == 0).all(-1))
    rows, cols = np.unique(ys), np.unique(xs)
    assert len(ys) == len(rows) * len(cols) and np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)
    assert len(rows) == size or rows[0] == 0 or rows[-1] == h - 1
    assert len(cols) == size or cols[0] == 0 or cols[-1] == w - 1
    areas.append(len(ys))
  assert max(areas) == size * size and min(areas) < size * size  # Both whole and clipped squares.
  assert switches.cutout(key, images, 0) is images


# --------------------------------------------------------------------------
# Label smoothing.


def test_label_smoothing_gives_the_closed_form_loss():
  rng = np.random.default_rng(1)
  n, k, eps = 16, 10, 0.1
  logits = rng.normal(size=(n, k)).astype(np.float32) * 3
  labels = rng.integers(0, k, n)
  lse = np.log(np.exp(logits.astype(np.float64)).sum(-1, keepdims=True))
  log_p = logits - lse  # float64: the exact values, up to float64's own rounding.

  def assert_loss(loss, targets):
    """A float32 loss against the float64 mean over examples of -sum(targets * log_p).

    Bound: log-sum-exp of k terms (each exp, and the log, a few ulps off) gives lse within
    gamma(k + 8) * (1 + |lse|); the weighted sum over the classes and the mean over the n examples
    add their roundings on top, relative to sum(targets * |log_p|).
    """
    expected = np.mean(-(targets * log_p).sum(-1))
    abs_terms = 1 + np.abs(lse[:, 0]) + (np.abs(targets) * np.abs(log_p)).sum(-1)
    np.testing.assert_allclose(loss, expected, rtol=0, atol=sum_atol(k + n + 8, abs_terms, evaluations=1))

  onehot = np.eye(k)[labels]
  loss = jax.jit(switches.cross_entropy, static_argnums=2)(logits, jnp.asarray(labels, jnp.int32), eps)
  assert_loss(loss, (1 - eps) * onehot + eps / k)
  # Soft one-hot labels give the same loss; without smoothing it is the plain cross-entropy.
  assert_loss(switches.cross_entropy(logits, jax.nn.one_hot(labels, k), eps), (1 - eps) * onehot + eps / k)
  assert_loss(switches.cross_entropy(logits, jnp.asarray(labels)), onehot)
  # Mixed labels: smoothing the mixture is the mixture of the smoothed targets.
  mixed = 0.3 * onehot + 0.7 * onehot[::-1]
  assert_loss(switches.cross_entropy(logits, jnp.asarray(mixed, jnp.float32), eps), (1 - eps) * mixed + eps / k)


# --------------------------------------------------------------------------
# Mixup and cutmix.


def test_mixup_mixes_images_and_labels_with_one_lambda():
  n, k = 8, 8
  rng = np.random.default_rng(2)
  images = jnp.asarray(rng.normal(size=(n, 4, 4, 3)).astype(np.float32))
  labels = jax.nn.one_hot(jnp.arange(n), k)
  lams = []
  for seed in range(5):
    out, soft = jax.jit(switches.mixup, static_argnums=3)(jax.random.key(seed), images, labels, 0.4)
    lam = float(soft[0, 0])
    assert 0.0 < lam < 1.0
    lams.append(lam)
    partner = np.arange(n)[::-1]
    expected_labels = lam * np.eye(k) + (1 - lam) * np.eye(k)[partner]
    np.testing.assert_allclose(soft, expected_labels, atol=1e-6)  # Convex, and sums to 1 (values <= 1: ~2 ulp).
    # Two products and a sum (maybe one FMA), and 1 - lam rounded: a few ulps of |lam*a| + |(1-lam)*b|.
    mixed = lam * np.asarray(images, np.float64) + (1 - lam) * np.asarray(images, np.float64)[partner]
    abs_terms = lam * np.abs(np.asarray(images)) + (1 - lam) * np.abs(np.asarray(images))[partner]
    np.testing.assert_allclose(out, mixed, rtol=0, atol=sum_atol(4, abs_terms))
  assert len(set(np.round(lams, 6))) == len(lams)


def test_cutmix_labels_equal_the_fraction_of_pixels_kept():
  n, k, h, w = 6, 6, 16, 16
  images = jnp.broadcast_to(jnp.arange(n, dtype=jnp.float32)[:, None, None, None], (n, h, w, 1))
  labels = jax.nn.one_hot(jnp.arange(n), k)
  partner = np.arange(n)[::-1]
  kept_fractions = []
  for seed in range(20):
    out, soft = jax.jit(switches.cutmix, static_argnums=3)(jax.random.key(seed), images, labels, 1.0)
    out, soft = np.asarray(out)[..., 0], np.asarray(soft)
    for i in range(n):
      own = out[i] == i
      assert np.all(own | (out[i] == partner[i]))  # Only the image and its partner's pixels.
      np.testing.assert_allclose(soft[i, i], own.mean(), atol=1e-6)
      np.testing.assert_allclose(soft[i, partner[i]], 1 - own.mean(), atol=1e-6)
      np.testing.assert_allclose(soft[i].sum(), 1.0, atol=1e-6)
      ys, xs = np.nonzero(~own)  # The pasted pixels form one rectangle.
      assert len(ys) == len(np.unique(ys)) * len(np.unique(xs))
    kept_fractions.append(soft[0, 0])
  assert min(kept_fractions) < 0.9 and max(kept_fractions) > 0.5 and len(set(kept_fractions)) > 5


@pytest.mark.slow
def test_mix_switches_between_mixup_and_cutmix_per_batch():
  n, h, w = 4, 8, 8
  images = jnp.broadcast_to(jnp.arange(n, dtype=jnp.float32)[:, None, None, None], (n, h, w, 1))
  labels = jax.nn.one_hot(jnp.arange(n), n)
  mix = jax.jit(switches.mix, static_argnums=(3, 4))
  kinds = set()
  for seed in range(20):
    out, _ = mix(jax.random.key(seed), images, labels, 0.5, 1.0)
    blended = np.any(np.asarray(out) != np.round(np.asarray(out)))  # Mixup makes fractional pixels.
    kinds.add('mixup' if blended else 'cutmix')
  assert kinds == {'mixup', 'cutmix'}
  out, soft = switches.mix(jax.random.key(0), images, labels, 0.0, 0.0)
  assert out is images and soft is labels


# --------------------------------------------------------------------------
# RandAugment / AutoAugment ops.


def _image(seed=0, h=32, w=32, low_contrast=False):
  x = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
  return (x // 4 + 60).astype(np.uint8) if low_contrast else x


def _pil_affine(x, coefficients):
  pil = Image.fromarray(x)
  return np.asarray(pil.transform(pil.size, Image.AFFINE, coefficients, fillcolor=(switches.FILL,) * 3))


@pytest.mark.parametrize('low_contrast', [False, True])
def test_image_ops_equal_pil(low_contrast):
  x = _image(1, low_contrast=low_contrast)
  pil = Image.fromarray(x)
  cases = [
      (switches.equalize, None, ImageOps.equalize(pil)),
      (switches.autocontrast, None, ImageOps.autocontrast(pil)),
      (switches.invert, None, ImageOps.invert(pil)),
      (switches.solarize, 100, ImageOps.solarize(pil, 100)),
      (switches.posterize, 3, ImageOps.posterize(pil, 3)),
      (switches.rotate, 17.0, pil.rotate(17.0, fillcolor=(switches.FILL,) * 3)),
      (switches.shear_x, 0.25, _pil_affine(x, (1, 0.25, 0, 0, 1, 0))),
      (switches.shear_y, -0.3, _pil_affine(x, (1, 0, 0, -0.3, 1, 0))),
  ]
  for factor in (0.1, 0.6, 1.7):
    cases += [(switches.color, factor, ImageEnhance.Color(pil).enhance(factor)),
              (switches.contrast, factor, ImageEnhance.Contrast(pil).enhance(factor)),
              (switches.brightness, factor, ImageEnhance.Brightness(pil).enhance(factor)),
              (switches.sharpness, factor, ImageEnhance.Sharpness(pil).enhance(factor))]
  blends = (switches.color, switches.contrast, switches.brightness, switches.sharpness)
  for fn, value, expected in cases:
    out = np.asarray(jax.jit(fn)(jnp.asarray(x), value))
    assert out.dtype == np.uint8
    expected = np.asarray(expected)
    if fn in blends:
      # PIL blends with the float32 factor (0.6 is 0.60000002) and truncates, so where the
      # exact value is whole it can come out one lower; ours is the exact value's floor.
      diff = np.abs(out.astype(int) - expected)
      assert diff.max() <= 1 and diff.mean() < 0.03, f'{fn.__name__}({value})'
    else:
      np.testing.assert_array_equal(out, expected, err_msg=f'{fn.__name__}({value})')


def test_image_ops_on_small_arrays_give_known_values():
  x = jnp.asarray(np.arange(0, 256, 17, dtype=np.uint8).reshape(4, 4, 1).repeat(3, -1))
  v = np.asarray(x)
  np.testing.assert_array_equal(switches.solarize(x, 128.0), np.where(v >= 128, 255 - v, v))
  np.testing.assert_array_equal(switches.solarize(x, 256.0), v)  # Magnitude 0: unchanged.
  np.testing.assert_array_equal(switches.posterize(x, 2.0), v & 0b11000000)
  np.testing.assert_array_equal(switches.posterize(x, 8.0), v)
  np.testing.assert_array_equal(switches.rotate(x, 90.0), np.rot90(v))  # Counter-clockwise.
  np.testing.assert_array_equal(switches.rotate(x, 0.0), v)
  fill = switches.FILL
  expected = np.full_like(v, fill)
  expected[:, :3] = v[:, 1:]  # +1/4 of 4 pixels: content moves 1 left, grey enters on the right.
  np.testing.assert_array_equal(switches.translate_x(x, 0.25), expected)
  expected = np.full_like(v, fill)
  expected[2:] = v[:2]  # -1/2: content moves 2 down.
  np.testing.assert_array_equal(switches.translate_y(x, -0.5), expected)
  np.testing.assert_array_equal(switches.translate_x(x, 0.2), v)  # 0.8 pixel truncates to none.
  for op in (switches.color, switches.contrast, switches.brightness, switches.sharpness):
    np.testing.assert_array_equal(op(x, 1.0), v)
  np.testing.assert_array_equal(switches.brightness(x, 0.0), np.zeros_like(v))


def test_op_values_follow_the_torchvision_ranges():
  names = ['Rotate', 'Solarize', 'Posterize', 'Color', 'ShearX', 'TranslateY', 'Equalize']
  ops = jnp.array([switches.OP_NAMES.index(n) for n in names])
  full = switches.op_values(ops, jnp.ones(len(ops)), -jnp.ones(len(ops)))
  np.testing.assert_allclose(full, [-30.0, 0.0, 4.0, 0.1, -0.3, -150 / 331, 0.0], rtol=1e-6)
  zero = switches.op_values(ops, jnp.zeros(len(ops)), jnp.ones(len(ops)))
  np.testing.assert_allclose(zero, [0.0, 256.0, 8.0, 1.0, 0.0, 0.0, 0.0])


def test_randaugment_is_deterministic_per_key_and_stays_uint8():
  images = jnp.asarray(np.stack([_image(s, 16, 16) for s in range(8)]))
  ra = jax.jit(switches.randaugment, static_argnums=2)
  a = ra(jax.random.key(0), images, 2, 9.0)
  assert a.dtype == jnp.uint8 and a.shape == images.shape
  np.testing.assert_array_equal(a, ra(jax.random.key(0), images, 2, 9.0))
  assert np.any(np.asarray(a) != np.asarray(ra(jax.random.key(1), images, 2, 9.0)))
  assert np.any(np.asarray(a) != np.asarray(images))
  # Ops are drawn per image: copies of one image come out different.
  same = jnp.broadcast_to(images[:1], images.shape)
  outs = np.asarray(ra(jax.random.key(2), same, 2, 9.0)).reshape(8, -1)
  assert len({o.tobytes() for o in outs}) > 3


def test_randaugment_applies_one_of_its_ops_at_the_magnitude():
  n, magnitude = 24, 5.0
  images = jnp.asarray(np.stack([_image(s, 12, 12) for s in range(n)]))
  out = np.asarray(jax.jit(switches.randaugment, static_argnums=2)(jax.random.key(4), images, 1, magnitude))
  fraction = magnitude / switches.RANDAUGMENT_MAX_MAGNITUDE
  one_op = jax.jit(lambda op, value: switches.apply_ops(images, jnp.full(n, op), jnp.full(n, value)))
  candidates = {}  # Every op of the paper's list, at this magnitude with either sign, on every image.
  for name in switches.RANDAUGMENT_OPS:
    op = switches.OPS[name]
    for sign in ((1, -1) if op.signed else (1,)):
      value = op.base + op.scale * fraction * sign
      candidates[name, sign] = np.asarray(one_op(switches.OP_NAMES.index(name), value))
  used = set()
  for i in range(n):
    matches = [name for (name, _), c in candidates.items() if np.array_equal(c[i], out[i])]
    assert matches, f'image {i} is no single RandAugment op of it'
    used.update(matches)
  assert len(used) >= 8


def test_autoaugment_is_deterministic_per_key_and_stays_uint8():
  assert len(switches.CIFAR10_POLICY) == 25
  for sub in switches.CIFAR10_POLICY:
    for name, p, m in sub:
      assert name in switches.OPS and 0 <= p <= 1 and 0 <= m <= 9
  images = jnp.asarray(np.stack([_image(s, 16, 16) for s in range(16)]))
  aa = jax.jit(switches.autoaugment)
  a = aa(jax.random.key(0), images)
  assert a.dtype == jnp.uint8 and a.shape == images.shape
  np.testing.assert_array_equal(a, aa(jax.random.key(0), images))
  assert np.any(np.asarray(a) != np.asarray(aa(jax.random.key(1), images)))
  # Each op of a sub-policy applies with its probability: some images come out untouched.
  changed = (np.asarray(a) != np.asarray(images)).reshape(16, -1).any(-1)
  assert 0 < changed.sum() < 16


@pytest.mark.slow
def test_parse_policy():
  assert switches.parse_policy('') is None
  assert switches.parse_policy('autoaugment') == switches.ImagePolicy('autoaugment')
  assert switches.parse_policy('2,9') == switches.ImagePolicy('randaugment', 2, 9.0)
  assert switches.parse_policy(' 3, 4.5 ') == switches.ImagePolicy('randaugment', 3, 4.5)
  for bad in ('x', '2', '0,5', '2,11', '2,-1', 'a,b', '1,2,3', 'AutoAugment,'):
    with pytest.raises(ConfigError, match=r"randaugment=.*expected '' \(off\), 'N,M'"):
      switches.parse_policy(bad)
  images = jnp.asarray(np.stack([_image(s, 16, 16) for s in range(8)]))
  key = jax.random.key(0)
  assert switches.apply_policy(key, images, None) is images
  apply = jax.jit(switches.apply_policy, static_argnums=2)
  np.testing.assert_array_equal(apply(key, images, switches.parse_policy('2,9')),
                                jax.jit(switches.randaugment, static_argnums=2)(key, images, 2, 9.0))
  np.testing.assert_array_equal(apply(key, images, switches.parse_policy('autoaugment')),
                                jax.jit(switches.autoaugment)(key, images))


# --------------------------------------------------------------------------
# Test-time augmentation.


def test_tta_averages_the_logits_of_flipped_and_translated_images():
  n, h, w, c, k = 3, 6, 5, 2, 4
  rng = np.random.default_rng(5)
  images = rng.normal(size=(n, h, w, c)).astype(np.float32)
  weights = rng.normal(size=(h * w * c, k)).astype(np.float32)
  model = lambda x: x.reshape(x.shape[0], -1) @ weights  # Linear: position-dependent, not flip-invariant.
  flip = lambda x: x[:, :, ::-1]
  tta = jax.jit(switches.tta_logits, static_argnums=(0, 2))

  def assert_mean_of_views(mode, view_weights, views):
    """tta's float32 logits against the float64 weighted mean of the views' logits.

    Each logit sums h*w*c products, then the views' weighted sum adds a few roundings; the bound
    scales with the sum of |products|, so logits near zero (cancellation) are judged fairly.
    """
    flat = lambda v: v.reshape(n, -1).astype(np.float64)
    expected = sum(wt * (flat(v) @ weights.astype(np.float64)) for wt, v in zip(view_weights, views))
    abs_terms = sum(wt * (np.abs(flat(v)) @ np.abs(weights.astype(np.float64))) for wt, v in zip(view_weights, views))
    atol = sum_atol(h * w * c + len(views) + 2, abs_terms, evaluations=1)
    np.testing.assert_allclose(tta(model, images, mode), expected, rtol=0, atol=atol)

  assert_mean_of_views('', [1], [images])
  assert_mean_of_views('flip', [1 / 2, 1 / 2], [images, flip(images)])
  assert not np.allclose(model(images), model(flip(images)))
  padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='reflect')
  views = [images, flip(images)] + [v for s in (padded[:, :h, :w], padded[:, 2:, 2:]) for v in (s, flip(s))]
  assert_mean_of_views('flip_translate', [1 / 4, 1 / 4, 1 / 8, 1 / 8, 1 / 8, 1 / 8], views)
  with pytest.raises(ConfigError, match="tta='rotate'"):
    switches.tta_logits(model, images, 'rotate')


# --------------------------------------------------------------------------
# EMA.


def test_ema_equals_its_recurrence():
  rng = np.random.default_rng(6)
  tree = lambda: {'params': {'w': rng.normal(size=(3, 2)).astype(np.float32)},
                  'batch_stats': {'mean': rng.normal(size=(2,)).astype(np.float32)}}
  ema = tree()
  expected = jax.tree.map(np.copy, ema)
  update = jax.jit(switches.ema_update)
  expected = jax.tree.map(lambda e: e.astype(np.float64), expected)
  magnitude = jax.tree.map(np.abs, expected)  # The recurrence on |values|: what each step's roundings scale with.
  atol = jax.tree.map(lambda e: 0.0, expected)
  for decay in (0.9, 0.99, 0.5, 0.9):
    new = tree()
    ema = update(ema, new, decay)
    expected = jax.tree.map(lambda e, x: decay * e + (1 - decay) * x, expected, new)
    magnitude = jax.tree.map(lambda m, x: decay * m + (1 - decay) * np.abs(x), magnitude, new)
    # This step: decay and 1 - decay rounded to float32, two products and a sum (4 roundings) of at
    # most `magnitude`; the error carried from earlier steps is scaled by decay. Against float64.
    atol = jax.tree.map(lambda t, m: decay * t + sum_atol(4, m, evaluations=1), atol, magnitude)
  jax.tree.map(lambda a, b, t: np.testing.assert_allclose(a, b, rtol=0, atol=t), ema, expected, atol)


# --------------------------------------------------------------------------
# SAM.


def test_sam_gradient_equals_the_hand_computation_on_a_quadratic():
  rng = np.random.default_rng(7)
  m = rng.normal(size=(5, 5))
  a = (m @ m.T + np.eye(5)).astype(np.float32)
  b = rng.normal(size=5).astype(np.float32)
  flat = lambda p: jnp.concatenate([p['u'], p['v'].reshape(-1)])
  unflat = lambda x: {'u': x[:1], 'v': x[1:].reshape(2, 2)}

  def loss_fn(params):
    x = flat(params)
    return 0.5 * x @ a @ x + b @ x, {'aux': x.sum()}

  lr, rho, momentum = 0.1, 0.05, 0.9
  tx = switches.sam(optax.sgd(lr, momentum=momentum), rho)
  params = unflat(jnp.asarray(rng.normal(size=5).astype(np.float32)))
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    grads = jax.grad(loss_fn, has_aux=True)(params)[0]
    updates, state = tx.update(grads, state, params, grad_fn=switches.sam_grad_fn(loss_fn))
    return optax.apply_updates(params, updates), state

  x = np.asarray(flat(params), np.float64)
  trace = np.zeros(5)
  for _ in range(3):
    g = a @ x + b
    sam_g = a @ (x + rho * g / np.linalg.norm(g)) + b  # The gradient at the ascent point.
    trace = momentum * trace + sam_g
    x = x - lr * trace
    params, state = step(params, state)
    # float32 against float64: per step 5-term products of |a x| <= ~20, so gamma(8) * 20 ~ 1e-5 in g, times
    # lr into x, carried on by momentum (|1 - lr * eig(a)| <= 0.9 here: errors do not grow); 3 steps stay
    # well inside atol 1e-5 + rtol 1e-4, while any wrong term is off by ~1e-2.
    np.testing.assert_allclose(flat(params), x, rtol=1e-4, atol=1e-5)


class _TinyNet(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Dense(4)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
    return nn.Dense(3)(nn.relu(x))


class _State(train_state.TrainState):
  batch_stats: dict


@pytest.mark.slow
def test_sam_step_with_batchnorm_keeps_the_first_pass_statistics():
  model = _TinyNet()
  rng = np.random.default_rng(8)
  x = jnp.asarray(rng.normal(size=(16, 5)).astype(np.float32))
  y = jnp.asarray(rng.integers(0, 3, 16))
  variables = model.init(jax.random.key(0), x, train=False)
  lr, rho = 0.1, 0.1
  state = _State.create(apply_fn=model.apply, params=variables['params'], tx=switches.sam(optax.sgd(lr), rho),
                        batch_stats=variables['batch_stats'])

  def make_loss(state):
    def loss_fn(params):
      logits, updates = state.apply_fn({'params': params, 'batch_stats': state.batch_stats}, x, train=True,
                                       mutable=['batch_stats'])
      return switches.cross_entropy(logits, y), updates['batch_stats']
    return loss_fn

  @jax.jit
  def step(state):
    loss_fn = make_loss(state)
    grads, stats = jax.grad(loss_fn, has_aux=True)(state.params)
    return switches.apply_gradients(state, grads, switches.sam_grad_fn(loss_fn), batch_stats=stats)

  new = step(state)
  loss_fn = make_loss(state)
  grads, first_stats = jax.grad(loss_fn, has_aux=True)(state.params)
  norm = np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grads)))
  perturbed = jax.tree.map(lambda p, g: p + rho * g / norm, state.params, grads)
  sam_grads, second_stats = jax.grad(loss_fn, has_aux=True)(perturbed)
  expected = jax.tree.map(lambda p, g: p - lr * g, state.params, sam_grads)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), new.params, expected)
  # The jitted step and these eager calls may sum in other orders: the statistics agree to the
  # rounding of a batch mean of the first Dense's outputs (5-term dots, then 16 examples) and of
  # their squares, scaled by |outputs|; the second pass's statistics are further off than that.
  dense = state.params['Dense_0']
  abs_outputs = np.abs(np.asarray(x)) @ np.abs(np.asarray(dense['kernel'])) + np.abs(np.asarray(dense['bias']))
  atol = sum_atol(2 * (5 + 2) + 16 + 4, np.mean(abs_outputs ** 2, axis=0) + np.mean(abs_outputs, axis=0))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=atol), new.batch_stats, first_stats)
  assert not np.allclose(second_stats['BatchNorm_0']['mean'], first_stats['BatchNorm_0']['mean'], rtol=0, atol=atol)
  assert int(new.step) == 1
  # Without grad_fn it is flax's own apply_gradients.
  plain = state.replace(tx=optax.sgd(lr), opt_state=optax.sgd(lr).init(state.params))
  jax.tree.map(np.testing.assert_array_equal, switches.apply_gradients(plain, grads).params,
               plain.apply_gradients(grads=grads).params)
