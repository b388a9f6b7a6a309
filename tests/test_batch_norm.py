"""The fused BatchNorm against flax.linen.BatchNorm followed by the same addition and ReLU."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxresnet import models
from jaxresnet.models.batch_norm import BatchNorm, normalize

SETTINGS = dict(momentum=0.9, epsilon=1e-5)


class FlaxReference(nn.Module):
  """What the fused call replaces: relu(flax BatchNorm(x) + residual)."""
  use_running_average: bool = False

  @nn.compact
  def __call__(self, x, residual=None, relu=False):
    y = nn.BatchNorm(use_running_average=self.use_running_average, name='norm', **SETTINGS)(x)
    if residual is not None:
      y = y + residual
    return nn.relu(y) if relu else y


class Fused(nn.Module):
  use_running_average: bool = False

  @nn.compact
  def __call__(self, x, residual=None, relu=False):
    return BatchNorm(use_running_average=self.use_running_average, name='norm', **SETTINGS)(x, residual, relu)


def data(shape=(8, 6, 6, 5), seed=0):
  k = jax.random.split(jax.random.key(seed), 5)
  x = 2. * jax.random.normal(k[0], shape) + 0.5
  residual = jax.random.normal(k[1], shape)
  cotangent = jax.random.normal(k[2], shape)
  params = {'norm': {'scale': 1. + 0.3 * jax.random.normal(k[3], shape[-1:]),
                     'bias': 0.2 * jax.random.normal(k[4], shape[-1:])}}
  stats = {'norm': {'mean': jnp.linspace(-1., 1., shape[-1]), 'var': jnp.linspace(0.5, 2., shape[-1])}}
  return x, residual, cotangent, params, stats


def test_same_variables_as_flax():
  x = jnp.zeros((2, 4, 4, 3))
  ours = jax.eval_shape(lambda: Fused().init(jax.random.key(0), x))
  flax = jax.eval_shape(lambda: FlaxReference().init(jax.random.key(0), x))
  assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(flax)
  assert jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), ours) == \
      jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), flax)
  # Initialization leaves the running averages at their initial values, as Flax does.
  variables = Fused().init(jax.random.key(0), 3. + jnp.arange(96.).reshape(2, 4, 4, 3))
  np.testing.assert_array_equal(variables['batch_stats']['norm']['mean'], np.zeros(3))
  np.testing.assert_array_equal(variables['batch_stats']['norm']['var'], np.ones(3))


@pytest.mark.parametrize('with_residual', [False, True])
@pytest.mark.parametrize('relu', [False, True])
def test_train_mode_output_stats_and_gradients_match_flax(with_residual, relu):
  x, residual, cotangent, params, stats = data()
  residual = residual if with_residual else None

  def run(module):
    def f(params, x, residual):
      out, updates = module.apply({'params': params, 'batch_stats': stats}, x, residual, relu,
                                  mutable=['batch_stats'])
      return out, updates['batch_stats']
    (out, new_stats), vjp = jax.vjp(f, params, x, residual)
    grads = vjp((cotangent, jax.tree_util.tree_map(jnp.zeros_like, new_stats)))
    return out, new_stats, grads

  ours, reference = run(Fused()), run(FlaxReference())
  for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(reference)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  if relu:  # The mask really applies: some outputs are clipped, and their gradient is cut.
    assert float(jnp.mean(ours[0] == 0)) > 0.2


@pytest.mark.parametrize('with_residual', [False, True])
def test_eval_mode_uses_running_averages_like_flax(with_residual):
  x, residual, _, params, stats = data()
  residual = residual if with_residual else None
  variables = {'params': params, 'batch_stats': stats}
  ours = Fused(use_running_average=True).apply(variables, x, residual, True)
  reference = FlaxReference(use_running_average=True).apply(variables, x, residual, True)
  np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


def test_gradients_of_the_statistics_outputs():
  """normalize's batch mean and variance outputs carry gradients too (the model stops them)."""
  x, residual, _, params, _ = data(shape=(4, 3, 3, 2), seed=1)
  scale, bias = params['norm']['scale'], params['norm']['bias']
  weights = jnp.array([0.7, -1.3])

  def objective(stats_of, x):
    out, mean, var = stats_of(x)
    return jnp.sum(out ** 2) + jnp.sum(weights * mean) + jnp.sum(weights[::-1] * var)

  def plain(x):  # The same quantities by ordinary autodiff.
    mean = jnp.mean(x, (0, 1, 2))
    var = jnp.mean(jnp.square(x), (0, 1, 2)) - jnp.square(mean)
    out = jnp.maximum((x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias + residual, 0.)
    return out, mean, var

  fused = lambda x: normalize(x, scale, bias, residual, 1e-5, True)
  np.testing.assert_allclose(jax.grad(lambda x: objective(fused, x))(x),
                             jax.grad(lambda x: objective(plain, x))(x), rtol=1e-4, atol=1e-5)


def test_bfloat16_input_keeps_its_dtype_and_float32_statistics():
  x, residual, cotangent, params, stats = data()
  module = BatchNorm(**SETTINGS)
  x16, r16 = x.astype(jnp.bfloat16), residual.astype(jnp.bfloat16)

  def f(params, x, residual):
    out, updates = module.apply({'params': params['norm'], 'batch_stats': stats['norm']}, x, residual, True,
                                mutable=['batch_stats'])
    return out, updates

  (out, updates), vjp = jax.vjp(f, params, x16, r16)
  assert out.dtype == jnp.bfloat16
  assert updates['batch_stats']['mean'].dtype == jnp.float32
  g_params, g_x, g_residual = vjp((cotangent.astype(jnp.bfloat16), jax.tree_util.tree_map(jnp.zeros_like, updates)))
  assert (g_x.dtype, g_residual.dtype, g_params['norm']['scale'].dtype) == (jnp.bfloat16, jnp.bfloat16, jnp.float32)
  reference, _ = FlaxReference().apply({'params': params, 'batch_stats': stats}, x, residual, True,
                                       mutable=['batch_stats'])
  np.testing.assert_allclose(out.astype(jnp.float32), reference, rtol=0.05, atol=0.05)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['resnet8', 'plain8', 'resnet18_1111', 'cnn_deep'])
def test_model_gradients_match_the_same_model_with_autodiff_batchnorm(name, monkeypatch):
  """Whole nets: an unfused BatchNorm, a separate add and ReLU, and autodiff give the same loss and gradients."""
  model = models.get_model(name)
  images = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  variables = model.init(jax.random.key(1), images, train=False)

  def loss_and_grads():
    def loss(params):
      logits, updates = model.apply({'params': params, 'batch_stats': variables['batch_stats']}, images,
                                    train=True, mutable=['batch_stats'], rngs={'dropout': jax.random.key(2)})
      return jnp.sum(jax.nn.log_softmax(logits)[:, 0]), updates
    # Jitted (op-by-op it took up to 52 s a net); a new function each call, so the patched BatchNorm is traced
    # anew instead of served from jit's cache of the first trace.
    return jax.jit(lambda params: jax.value_and_grad(loss, has_aux=True)(params))(variables['params'])

  fused = loss_and_grads()

  class BatchNorm(nn.Module):  # pylint: disable=redefined-outer-name  (the name sets Flax's module names)
    """The same variables, computed as Flax does and differentiated by autodiff."""
    use_running_average: bool = False
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: object = None

    @nn.compact
    def __call__(self, x, residual=None, relu=False):
      c = x.shape[-1]
      running_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,)))
      running_var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,)))
      scale = self.param('scale', nn.initializers.ones, (c,))
      bias = self.param('bias', nn.initializers.zeros, (c,))
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x, axes)
      var = jnp.mean(jnp.square(x), axes) - jnp.square(mean)
      running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
      running_var.value = self.momentum * running_var.value + (1 - self.momentum) * var
      y = (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
      y = y if residual is None else y + residual
      return nn.relu(y) if relu else y

  from jaxresnet.models import cnn, resnet  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(resnet, 'BatchNorm', BatchNorm)
  monkeypatch.setattr(cnn, 'BatchNorm', BatchNorm)
  unfused = loss_and_grads()
  for a, b in zip(jax.tree_util.tree_leaves(fused), jax.tree_util.tree_leaves(unfused)):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5)
