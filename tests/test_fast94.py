"""The fast94 recipe's pure pieces: whitening conv, net, optimizer, flips, translations, TTA.

Tolerances come from float32 arithmetic, not from one machine: a float32 sum of n terms is exact to
about n * 2^-24 of the sum of magnitudes (~6e-8 per term), and each bound below is an order of
magnitude or more above that worst case for the sizes used, and orders of magnitude below what
any of the bugs a test guards against would produce.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxresnet import data
from jaxresnet.training import fast94 as R
from jaxresnet.training import switches
from jaxresnet.models import count_params
from jaxresnet.models import whitened_vgg as W

SMALL = dict(widths=(8, 16, 16))  # Same structure, a fraction of the compute.


def anisotropic_images(n=64, size=16, seed=0):
  """Float images whose 2x2 patches are strongly and asymmetrically correlated (rows != columns, channels mixed).

  A kernel laid out in the wrong axis order (dy/dx swapped, channel last vs first) would not
  whiten these, where it might whiten isotropic images.
  """
  rng = np.random.default_rng(seed)
  noise = rng.normal(size=(n, size, size + 1, 3))
  x = noise[:, :, 1:] + 0.9 * noise[:, :, :-1]  # Strong horizontal correlation only.
  mix = np.array([[1.0, 0.6, 0.2], [0.0, 1.0, 0.5], [0.0, 0.0, 0.3]])
  return x @ mix + 0.5  # Channel correlations, and a mean (airbench's moment is uncentred).


def patches_of(x, p=2):
  windows = np.lib.stride_tricks.sliding_window_view(x, (p, p), axis=(1, 2))
  return windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, p * p * x.shape[-1])


def conv_valid(x, kernel):
  return jax.lax.conv_general_dilated(jnp.asarray(x, jnp.float32), jnp.asarray(kernel), (1, 1), 'VALID',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def init(model, x, seed=0):
  return jax.jit(functools.partial(model.init, train=False))(jax.random.key(seed), x)


# ---------------------------------------------------------------- whitening

def test_whitening_conv_decorrelates_the_patches_it_was_computed_from():
  x = anisotropic_images()
  eps = 5e-4
  kernel = W.whitening_kernel(x, patch_size=2, eps=eps)
  assert kernel.shape == (2, 2, 3, 24) and kernel.dtype == np.float32
  out = np.asarray(conv_valid(x, kernel), np.float64).reshape(-1, 24)
  plus, minus = out[:, :12], out[:, 12:]
  np.testing.assert_array_equal(minus, -plus)  # Negation is exact in floating point.
  cov = plus.T @ plus / len(plus)
  lam = np.linalg.eigvalsh(patches_of(x).T @ patches_of(x) / len(plus))[::-1]
  assert lam[0] / lam[-1] > 50  # The input really is correlated: an identity kernel would fail.
  # Whitened: diag(lam / (lam + eps)), eigenvalues descending. The float32 conv's error on an
  # output is ~12 * 6e-8 * sqrt(cond) relative, ~1e-5 here; the bound is 100 times that.
  np.testing.assert_allclose(cov, np.diag(lam / (lam + eps)), atol=1e-3)
  # Without eps, exactly the identity (up to the same rounding).
  k0 = W.whitening_kernel(x, eps=0.0)
  out0 = np.asarray(conv_valid(x, k0), np.float64).reshape(-1, 24)[:, :12]
  np.testing.assert_allclose(out0.T @ out0 / len(out0), np.eye(12), atol=1e-3)


def test_whitening_kernel_of_uint8_images_normalizes_them_first():
  u8 = np.clip(anisotropic_images(32) * 60 + 40, 0, 255).astype(np.uint8)
  f = u8 / 255.0
  f = (f - f.mean(axis=(0, 1, 2))) / f.std(axis=(0, 1, 2))
  np.testing.assert_allclose(W.whitening_kernel(u8), W.whitening_kernel(f), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_set_whitening_kernel_replaces_only_that_kernel():
  model = W.WhitenedVGG(**SMALL)
  params = init(model, jnp.zeros((2, 32, 32, 3)))['params']
  kernel = W.whitening_kernel(anisotropic_images(8, 32))
  new = W.set_whitening_kernel(params, kernel)
  np.testing.assert_array_equal(new['whiten']['kernel'], kernel)
  same = jax.tree.map(lambda a, b: bool((a == b).all()), params, new)
  assert not same['whiten']['kernel'] and sum(jax.tree.leaves(same)) == len(jax.tree.leaves(same)) - 1
  with pytest.raises(ValueError):
    W.set_whitening_kernel(params, kernel[:1])


# ---------------------------------------------------------------- the net

def expected_params(widths=(64, 256, 256), num_classes=10, c=3, p=2):
  """Counted by hand: whitening conv (kernel + bias), per block two bias-free 3x3 convs each with a BN (scale + bias), head."""
  w0 = 2 * p * p * c
  total = p * p * c * w0 + w0
  cin = w0
  for w in widths:
    total += 9 * cin * w + 2 * w + 9 * w * w + 2 * w
    cin = w
  return total + cin * num_classes


def test_parameter_count_and_shapes():
  model = W.WhitenedVGG()
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False))
  assert count_params(variables['params']) == expected_params() == 1_972_792
  labels = W.param_labels(variables['params'])
  trainable = sum(np.prod(p.shape) for p, l in zip(jax.tree.leaves(variables['params']), jax.tree.leaves(labels))
                  if l != W.FROZEN)
  # airbench's trainable count: no whitening kernel (288), no BN scales (2 * (64 + 256 + 256)).
  assert trainable == 1_972_792 - 288 - 2 * 576
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, jnp.zeros((5, 32, 32, 3)))
  assert out.shape == (5, 10) and out.dtype == jnp.float32


def test_labels_and_mask():
  model = W.WhitenedVGG(**SMALL)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))['params']
  labels = W.param_labels(params)
  assert labels['whiten'] == {'kernel': W.FROZEN, 'bias': W.WHITEN_BIAS}
  assert labels['block2']['norm1'] == {'scale': W.FROZEN, 'bias': W.NORM_BIAS}
  assert labels['block3']['conv2']['kernel'] == W.FILTERS and labels['head']['kernel'] == W.HEAD
  mask = W.trainable_mask(params)
  assert not mask['whiten']['kernel'] and mask['whiten']['bias'] and not mask['block1']['norm1']['scale']


@pytest.mark.slow
def test_dirac_init_starts_convs_as_identity_on_the_first_channels():
  k = np.asarray(W.dirac_init(jax.random.key(0), (3, 3, 4, 6)))
  for i in range(4):
    expected = np.zeros((3, 3, 4))
    expected[1, 1, i] = 1
    np.testing.assert_array_equal(k[:, :, :, i], expected)
  rest = k[:, :, :, 4:]
  assert np.abs(rest).max() <= 1 / 6 and rest.std() > 0.05  # Uniform(+-1/sqrt(36)): std 0.096.


def test_max_pool_2x2_is_flax_max_pool_floored():
  x = jax.random.normal(jax.random.key(0), (2, 7, 5, 3))
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  np.testing.assert_array_equal(W.max_pool_2x2(x), nn.max_pool(x, (2, 2), (2, 2)))  # Max is exact.
  assert W.max_pool_2x2(x).shape == (2, 3, 2, 3)


def test_logits_are_scaled_head_outputs():
  x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  scaled, plain = W.WhitenedVGG(**SMALL), W.WhitenedVGG(**SMALL, logit_scale=1.0)
  variables = init(scaled, x, seed=1)
  apply = lambda model: jax.jit(functools.partial(model.apply, train=False))(variables, x)
  a, b = apply(scaled), apply(plain)
  assert float(jnp.abs(b).max()) > 0
  np.testing.assert_allclose(a, b / 9, rtol=1e-6, atol=0)  # Only the one multiplication differs.


def test_batch_norm_momentum_is_airbench_0_6():
  """Running mean after one train step: 0.6 * 0 + 0.4 * batch mean (airbench's PyTorch momentum 1 - 0.6)."""
  model = W.WhitenedVGG(**SMALL)
  x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3)) + 3.0
  variables = init(model, x, seed=1)
  _, state = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))(variables, x)
  # The first BN's input: whiten -> GELU -> conv1 -> max-pool, recomputed through the submodules.
  params = variables['params']
  h = jax.nn.gelu(conv_valid(x, params['whiten']['kernel']) + params['whiten']['bias'], approximate=True)
  h = jax.lax.conv_general_dilated(h, params['block1']['conv1']['kernel'], (1, 1), 'SAME',
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), 'VALID')
  batch_mean = np.asarray(h, np.float64).mean(axis=(0, 1, 2))
  running = np.asarray(state['batch_stats']['block1']['norm1']['mean'])
  np.testing.assert_allclose(running, 0.4 * batch_mean, rtol=1e-4, atol=1e-5 * np.abs(batch_mean).max())


# ---------------------------------------------------------------- optimizer

@functools.lru_cache()
def small_setup(seed=0):
  """(params, grads of the mean loss) of a small net on 8 random images; shared by the tests."""
  model = W.WhitenedVGG(**SMALL)
  x = jax.random.normal(jax.random.key(seed), (8, 32, 32, 3))
  y = jnp.arange(8) % 10
  variables = init(model, x, seed=seed + 1)
  params = W.set_whitening_kernel(variables['params'], W.whitening_kernel(np.asarray(x)))

  def loss(p):
    logits, _ = model.apply({'params': p, 'batch_stats': variables['batch_stats']}, x, train=True,
                            mutable=['batch_stats'])
    return switches.cross_entropy(logits, y, 0.2)
  return params, jax.jit(jax.grad(loss))(params)


@pytest.mark.slow
def test_frozen_parameters_do_not_move_and_the_others_do():
  params, grads = small_setup()
  tx = R.make_optimizer(total_steps=10, whiten_bias_steps=3, batch_size=8, head_width=16)
  state, update = tx.init(params), jax.jit(tx.update)
  labels = W.param_labels(params)
  for _ in range(2):
    updates, state = update(grads, state, params)
    new = optax.apply_updates(params, updates)
    for path_label, old, cur in zip(jax.tree.leaves(labels), jax.tree.leaves(params), jax.tree.leaves(new)):
      if path_label == W.FROZEN:
        np.testing.assert_array_equal(old, cur)
      else:
        assert float(jnp.abs(old - cur).max()) > 0, path_label
    params = new


def test_whitening_bias_freezes_after_its_steps():
  params, grads = small_setup()
  tx = R.make_optimizer(total_steps=10, whiten_bias_steps=2, batch_size=8, head_width=16)
  state, update = tx.init(params), jax.jit(tx.update)
  history = []
  for _ in range(4):
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    history.append(np.asarray(params['whiten']['bias']))
  assert np.abs(history[1] - history[0]).max() > 0  # Step 1: rate 1/2 of the initial.
  np.testing.assert_array_equal(history[3], history[2])  # Steps 2, 3: rate 0.
  np.testing.assert_array_equal(history[2], history[1])


def newton_schulz_reference(g, steps=3):
  """airbench's zeropower_via_newtonschulz5, in float64 numpy, on a (rows, cols) matrix."""
  a, b, c = 3.4445, -4.7750, 2.0315
  x = g / (np.linalg.norm(g) + 1e-8)
  transpose = x.shape[0] > x.shape[1]
  if transpose:
    x = x.T
  for _ in range(steps):
    m = x @ x.T
    x = a * x + (b * m + c * m @ m) @ x
  return x.T if transpose else x


def test_first_muon_step_is_renormalize_then_orthogonalized_gradient():
  """p1 = p0 * sqrt(out) / |p0| - lr * NS(g), NS over the (3*3*in, out) matrix of each kernel."""
  params, grads = small_setup()
  lr = 0.24
  tx = R.make_optimizer(total_steps=10, whiten_bias_steps=3, batch_size=8, head_width=16, filter_lr=lr)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  for name in ('block1', 'block3'):
    p0 = np.asarray(params[name]['conv2']['kernel'], np.float64)
    g = np.asarray(grads[name]['conv2']['kernel'], np.float64)
    # Step 1 of Nesterov momentum (bias-corrected): the direction is g itself.
    direction = newton_schulz_reference(g.reshape(-1, g.shape[-1])).reshape(g.shape)
    expected = p0 * np.sqrt(p0.shape[-1]) / np.linalg.norm(p0) - lr * direction
    got = p0 + np.asarray(updates[name]['conv2']['kernel'], np.float64)
    # Three float32 Newton-Schulz iterations of reductions over <= 144 terms: ~1e-5 of max |NS|.
    np.testing.assert_allclose(got, expected, atol=1e-4 * max(1.0, np.abs(expected).max()), rtol=0)
    assert np.abs(direction).max() > 0.05  # Not a vacuous comparison.


def test_sgd_groups_follow_pytorch_nesterov_with_coupled_weight_decay():
  """One norm-bias step from zero momentum: -lr_sum * B * (1 + m) * (g + wd / lr_sum * p) (PyTorch's nesterov)."""
  params, grads = small_setup()
  params = jax.tree.map(lambda p: p + 0.5, params)  # Non-zero biases, so weight decay shows.
  b, lr_sum, m, wd = 8, 0.053, 0.85, 1e-3
  tx = R.make_optimizer(total_steps=10, whiten_bias_steps=3, batch_size=b, bias_lr=lr_sum, momentum=m,
                        weight_decay=wd, head_width=16)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  p, g = np.asarray(params['block2']['norm1']['bias']), np.asarray(grads['block2']['norm1']['bias'])
  expected = -lr_sum * b * (1 + m) * (g + wd / lr_sum * p)
  np.testing.assert_allclose(updates['block2']['norm1']['bias'], expected, rtol=1e-5, atol=1e-7)


def test_lr_multiplier():
  s = R.lr_multiplier(100)
  np.testing.assert_allclose([s(0), s(50), s(100), s(150)], [1.0, 0.5, 0.0, 0.0], atol=1e-6)
  w = R.lr_multiplier(100, warmup_fraction=0.2, initial=0.2, final=0.1)
  np.testing.assert_allclose([w(0), w(10), w(20), w(60), w(100), w(120)], [0.2, 0.6, 1.0, 0.55, 0.1, 0.1], atol=1e-6)
  assert R.steps(50_000, 2000, 8) == 200 and R.steps(50_000, 1024, 9.9) == 476


def test_cross_entropy_label_smoothing_matches_pytorch_definition():
  logits = jax.random.normal(jax.random.key(0), (6, 10))
  labels = jnp.array([0, 1, 2, 3, 4, 9])
  logp = np.asarray(jax.nn.log_softmax(logits), np.float64)
  s = 0.2
  expected = np.mean([-(1 - s) * logp[i, l] - s / 10 * logp[i].sum() for i, l in enumerate(labels)])
  np.testing.assert_allclose(switches.cross_entropy(logits, labels, s), expected, rtol=1e-5)


# ---------------------------------------------------------------- augmentation

def test_alternating_flip_flips_exactly_the_complement_each_epoch():
  images = jnp.arange(64 * 4 * 5 * 3, dtype=jnp.float32).reshape(64, 4, 5, 3)
  key = jax.random.key(0)
  flip = jax.jit(switches.alternating_flip)
  mirrored = images[:, :, ::-1]
  masks = []
  for epoch in range(4):
    out = flip(images, epoch, key)
    is_flipped = np.array([bool((out[i] == mirrored[i]).all()) for i in range(64)])
    is_plain = np.array([bool((out[i] == images[i]).all()) for i in range(64)])
    assert (is_flipped ^ is_plain).all()  # Every image either mirrored or untouched.
    masks.append(is_flipped)
  assert 10 < masks[0].sum() < 54  # Random in epoch 0 (P(fail) < 1e-7 for a fair coin).
  for e in range(1, 4):
    np.testing.assert_array_equal(masks[e], ~masks[e - 1])
  # A batch by dataset indices sees the same flips as the whole set.
  idx = jnp.array([5, 17, 3, 60])
  np.testing.assert_array_equal(flip(images[idx], 1, key, idx), flip(images, 1, key)[idx])


@pytest.mark.slow
def test_translate_shapes_identity_and_bounded_shifts():
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (200, 12, 12, 3), dtype=np.uint8))
  key = jax.random.key(3)
  translate = lambda images, key, pad: data.augment(key, images, pad, 'reflect', flip=False)
  np.testing.assert_array_equal(translate(images, key, pad=0), images)
  out = jax.jit(translate, static_argnames='pad')(images, key, pad=2)
  assert out.shape == images.shape and out.dtype == images.dtype
  padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)), mode='reflect')
  shifts = set()
  for i in range(200):
    # Each output is exactly one 12x12 window of the reflect-padded image: a shift of at most 2.
    hits = [(dy, dx) for dy in range(5) for dx in range(5)
            if (padded[i, dy:dy + 12, dx:dx + 12] == np.asarray(out[i])).all()]
    assert hits, i
    shifts.add(hits[0])
  assert len(shifts) == 25  # All 25 shifts occur over 200 images (P(miss one) < 1e-9).


# ---------------------------------------------------------------- test-time augmentation

def reference_views(x):
  """The six TTA views and their weights, written out with numpy."""
  x = np.asarray(x)
  p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='reflect')
  h, w = x.shape[1:3]
  base = [x, p[:, :h, :w], p[:, 2:, 2:]]
  weights = [0.25, 0.125, 0.125]
  return [(v, wt) for v, wt in zip(base, weights)] + [(v[:, :, ::-1], wt) for v, wt in zip(base, weights)]


def test_tta_levels():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 8, 8, 2)), jnp.float32)
  weight = jnp.asarray(rng.normal(size=(8, 8, 2, 4)), jnp.float32)
  linear = lambda images: jnp.einsum('nhwc,hwck->nk', images, weight)  # Not flip-invariant.
  symmetric = lambda images: linear(images) + linear(images[:, :, ::-1])  # Flip-invariant.
  tol = dict(rtol=1e-5, atol=1e-5 * float(jnp.abs(linear(x)).max()))  # Sums of 128 float32 terms.

  np.testing.assert_array_equal(switches.tta_logits(linear, x, ''), linear(x))
  np.testing.assert_allclose(switches.tta_logits(symmetric, x, 'flip'), symmetric(x), **tol)
  assert float(jnp.abs(switches.tta_logits(linear, x, 'flip') - linear(x)).max()) > 0.1
  expected = sum(wt * np.asarray(linear(jnp.asarray(v)), np.float64) for v, wt in reference_views(x))
  np.testing.assert_allclose(switches.tta_logits(linear, x, 'flip_translate'), expected, **tol)
  assert float(jnp.abs(switches.tta_logits(symmetric, x, 'flip_translate') - symmetric(x)).max()) > 0.1  # Translations count.
  # Weights sum to 1: on constant images every view is the same image.
  const = jnp.ones((2, 8, 8, 2)) * jnp.arange(1.0, 3.0)
  np.testing.assert_allclose(switches.tta_logits(linear, const, 'flip_translate'), linear(const), **tol)


@pytest.mark.slow
def test_tta_of_the_net_under_jit():
  model = W.WhitenedVGG(**SMALL)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  variables = init(model, x, seed=1)
  apply = lambda images: model.apply(variables, images, train=False)
  out = jax.jit(lambda images: switches.tta_logits(apply, images, 'flip_translate'))(x)
  assert out.shape == (2, 10) and bool(jnp.isfinite(out).all())
