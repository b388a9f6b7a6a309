import jax
import jax.numpy as jnp
import pytest

from jaxresnet import models
from jaxresnet.infra.errors import ConfigError

# He et al. 2016, Table 6 (option A; trainable parameters, BatchNorm scale/bias included).
PAPER_PARAMS = {'resnet20': 269_722, 'resnet32': 464_154, 'resnet44': 658_586,
                'resnet56': 853_018, 'resnet110': 1_727_962}


def init(model, batch=2, size=32):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((batch, size, size, 3)), train=False))


def expected_params(n, shortcut_b=False, num_classes=10):
  """Counted by hand: stem, three stages of n two-conv blocks, dense; each conv with a BN (2 params/channel)."""
  conv = lambda cin, cout, k=3: k * k * cin * cout + 2 * cout
  total = conv(3, 16)
  for cin, cout in ((16, 16), (16, 32), (32, 64)):
    total += conv(cin, cout) + conv(cout, cout) + (2 * n - 2) * conv(cout, cout)
    if shortcut_b and cin != cout:
      total += conv(cin, cout, k=1)
  return total + 64 * num_classes + num_classes


@pytest.mark.parametrize('name,count', sorted(PAPER_PARAMS.items()))
def test_paper_parameter_counts(name, count):
  assert models.count_params(init(models.get_model(name))['params']) == count


# ResNet-1202 takes tens of seconds to trace: it runs with the slow tests (test_resnet1202_is_19_4_million too).
@pytest.mark.parametrize('depth', [8, 20, 32, 44, 56, 110, pytest.param(1202, marks=pytest.mark.slow)])
def test_every_resnet_and_plain_net_counts_and_shapes(depth):
  n = (depth - 2) // 6
  resnet = models.get_model(f'resnet{depth}')
  assert models.count_params(init(resnet)['params']) == expected_params(n)
  if depth != 1202:  # Plain nets: the same stack without shortcuts, hence the same count.
    plain = models.get_model(f'plain{depth}')
    assert models.count_params(init(plain)['params']) == expected_params(n)
  out = jax.eval_shape(lambda v, x: resnet.apply(v, x, train=False), init(resnet),
                       jnp.zeros((3, 32, 32, 3)))
  assert out.shape == (3, 10) and out.dtype == jnp.float32


@pytest.mark.slow
def test_resnet1202_is_19_4_million():
  assert round(models.count_params(init(models.get_model('resnet1202'))['params']) / 1e6, 1) == 19.4


def test_option_a_adds_no_parameters_and_option_b_adds_projections():
  a = models.count_params(init(models.get_model('resnet20', shortcut='A'))['params'])
  b_params = init(models.get_model('resnet20', shortcut='B'))['params']
  assert a == expected_params(3)
  assert models.count_params(b_params) == expected_params(3, shortcut_b=True)
  assert sum('projection_conv' in str(k) for k in jax.tree_util.tree_flatten_with_path(b_params)[0]) == 2


def test_option_a_shortcut_subsamples_and_zero_pads():
  x = jnp.arange(2 * 8 * 8 * 16, dtype=jnp.float32).reshape(2, 8, 8, 16)
  y = models.resnet.shortcut_option_a(x, 32, 2)
  assert y.shape == (2, 4, 4, 32)
  assert jnp.all(y[..., :8] == 0) and jnp.all(y[..., 24:] == 0)
  assert jnp.array_equal(y[..., 8:24], x[:, ::2, ::2, :])


def test_plain_net_computes_a_different_function_than_its_resnet():
  # A residual net and its plain twin share parameter shapes but compute different functions.
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  resnet, plain = models.get_model('resnet8'), models.get_model('plain8')
  variables = resnet.init(jax.random.key(0), x, train=False)
  assert not jnp.allclose(resnet.apply(variables, x, train=False), plain.apply(variables, x, train=False))


def test_num_classes_and_bf16():
  model = models.get_model('resnet20', num_classes=100, dtype=jnp.bfloat16)
  variables = model.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False)
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables))  # fp32 master weights
  assert model.apply(variables, jnp.zeros((2, 32, 32, 3)), train=False).shape == (2, 100)
  assert models.count_params(variables['params']) == expected_params(3, num_classes=100)


def test_multiply_adds_match_a_hand_count():
  # ResNet-20: stem 32x32x(3*9*16), stage convs at 32/16/8 pixels, dense 64*10. The paper quotes ~41M.
  hand = 32 * 32 * 27 * 16 + 6 * 32 * 32 * 144 * 16 + (16 * 16 * 144 * 32 + 5 * 16 * 16 * 288 * 32) \
      + (8 * 8 * 288 * 64 + 5 * 8 * 8 * 576 * 64) + 640
  assert models.count_macs(models.get_model('resnet20')) == hand == 40_551_040


def test_unknown_model_is_a_clear_error():
  with pytest.raises(ConfigError, match="unknown model 'resnet21'"):
    models.get_model('resnet21')


def test_kaiming_normal_init_scale():
  params = models.get_model('resnet20').init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)['params']
  kernel = params['BasicBlock_8']['Conv_0']['kernel']  # 3x3x64x64: std sqrt(2 / fan_in)
  assert abs(float(kernel.std()) - (2 / (9 * 64)) ** 0.5) < 0.003


def test_a_plain_net_ignores_the_shortcut_option():
  # A plain net has no shortcut: config.shortcut (which from_config hands every He et al. net) leaves it plain.
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  plain = models.get_model('plain8')
  variables = plain.init(jax.random.key(0), x, train=False)
  for option in ('A', 'B'):
    assert jnp.array_equal(models.get_model('plain8', shortcut=option).apply(variables, x, train=False),
                           plain.apply(variables, x, train=False))
  assert 'shortcut' in models.model_fields('plain8')
