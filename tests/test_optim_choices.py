"""The optimizer choices (sgd, adam, adamw, rmsprop, adagrad) and the two kinds of weight decay."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxresnet.infra import config as config_lib
from jaxresnet.training import optim
from jaxresnet.infra.errors import ConfigError
from conftest import tiny_config

P0, GRADS = np.array([1.0, -2.0, 0.5]), [np.array([0.5, 0.25, -1.0]), np.array([-0.3, 0.8, 0.1])]
LR, WD = 0.1, 0.01


def run(config, steps=2, lr=LR):
  """Parameters after `steps` updates with the fixed gradients GRADS."""
  tx = optim.create_optimizer(config, optax.constant_schedule(lr))
  p = jnp.asarray(P0)
  state = tx.init(p)
  for g in GRADS[:steps]:
    updates, state = tx.update(jnp.asarray(g), state, p)
    p = p + updates
  return np.asarray(p)


def reference(rule, decay_type, lr=LR, wd=WD):
  """The same updates in numpy, written from the papers' formulas (optax's eps conventions)."""
  p, state = P0.copy(), {}
  for t, g in enumerate(GRADS, start=1):
    if decay_type == 'l2':
      g = g + wd * p
    direction = rule(state, g, t)
    if decay_type == 'decoupled':
      direction = direction + wd * p
    p = p - lr * direction
  return p


def adam(state, g, t, b1=0.9, b2=0.999, eps=1e-8):
  state['m'] = b1 * state.get('m', 0) + (1 - b1) * g
  state['v'] = b2 * state.get('v', 0) + (1 - b2) * g * g
  return (state['m'] / (1 - b1 ** t)) / (np.sqrt(state['v'] / (1 - b2 ** t)) + eps)


def rmsprop(state, g, t, decay=0.9, eps=1e-8):
  state['nu'] = decay * state.get('nu', 0) + (1 - decay) * g * g
  return g / np.sqrt(state['nu'] + eps)


def adagrad(state, g, t, initial=0.1, eps=1e-7):
  state['sum'] = state.get('sum', initial) + g * g
  return g / np.sqrt(state['sum'] + eps)


def sgd_momentum(state, g, t, momentum=0.9):
  state['buf'] = momentum * state.get('buf', 0) + g
  return state['buf']


@pytest.mark.parametrize('optimizer,rule', [('adam', adam), ('rmsprop', rmsprop), ('adagrad', adagrad),
                                            ('sgd', sgd_momentum)])
@pytest.mark.parametrize('decay_type', ['l2', 'decoupled'])
def test_each_optimizer_matches_its_formula(optimizer, rule, decay_type):
  config = tiny_config('unused', optimizer=optimizer, weight_decay=WD, weight_decay_type=decay_type)
  np.testing.assert_allclose(run(config), reference(rule, decay_type), rtol=1e-5)


def test_adamw_is_decoupled_and_matches_optax_adamw():
  config = tiny_config('unused', optimizer='adamw', weight_decay=WD)  # weight_decay_type stays 'l2'.
  np.testing.assert_allclose(run(config), reference(adam, 'decoupled'), rtol=1e-5)
  tx = optax.adamw(LR, weight_decay=WD)
  p, state = jnp.asarray(P0), tx.init(jnp.asarray(P0))
  for g in GRADS:
    updates, state = tx.update(jnp.asarray(g), state, p)
    p = p + updates
  np.testing.assert_allclose(run(config), p, rtol=1e-6)


def test_l2_and_decoupled_decay_differ_for_adaptive_optimizers():
  l2 = run(tiny_config('unused', optimizer='adam', weight_decay=0.1))
  decoupled = run(tiny_config('unused', optimizer='adam', weight_decay=0.1, weight_decay_type='decoupled'))
  assert not np.allclose(l2, decoupled)


def test_adam_betas_and_rmsprop_decay_are_used():
  base = run(tiny_config('unused', optimizer='adam'))
  assert not np.allclose(base, run(tiny_config('unused', optimizer='adam', adam_b1=0.5)))
  assert not np.allclose(base, run(tiny_config('unused', optimizer='adam', adam_b2=0.9)))
  np.testing.assert_allclose(run(tiny_config('unused', optimizer='rmsprop', rmsprop_decay=0.5, weight_decay=0.0)),
                             reference(lambda s, g, t: rmsprop(s, g, t, decay=0.5), 'l2', wd=0.0), rtol=1e-5)


def test_paper_sgd_keeps_its_optimizer_state_layout():
  # Checkpoints written before the other optimizers existed must still restore.
  config = tiny_config('unused')
  before = optax.chain(optax.add_decayed_weights(config.weight_decay),
                       optax.sgd(optax.constant_schedule(0.1), momentum=config.momentum))
  now = optim.create_optimizer(config, optax.constant_schedule(0.1))
  p = {'w': jnp.ones(3)}
  assert jax.tree_util.tree_structure(now.init(p)) == jax.tree_util.tree_structure(before.init(p))


def test_the_schedule_scales_every_optimizer():
  for optimizer in ('adam', 'adamw', 'rmsprop', 'adagrad', 'sgd'):
    config = tiny_config('unused', optimizer=optimizer, weight_decay=0.0)
    step = lambda lr: run(config, steps=1, lr=lr) - P0
    np.testing.assert_allclose(step(0.2), 2 * step(0.1), rtol=1e-5)


@pytest.mark.parametrize('overrides,message', [
    ({'optimizer': 'nadam'}, "config.optimizer='nadam' is not one of sgd, adam, adamw, rmsprop, adagrad"),
    ({'weight_decay_type': 'l1'}, "config.weight_decay_type='l1' is not one of l2, decoupled"),
    ({'adam_b1': 1.0}, r'config.adam_b1=1.0 must be in \[0, 1\)'),
    ({'dropout': -0.1}, r'config.dropout=-0.1 must be in \[0, 1\)'),
    ({'model': 'resnet20', 'dropout': 0.2}, "config.dropout=0.2 does not apply to model 'resnet20'; "
                                            'models that have it: resnet18, resnet18_1111'),
    ({'model': 'cnn_small', 'squeeze_excitation': True}, 'config.squeeze_excitation=True does not apply'),
])
def test_bad_choices_are_one_clear_error(overrides, message):
  with pytest.raises(ConfigError, match=message):
    config_lib.validate(tiny_config('unused', **overrides))


def test_dropout_and_squeeze_excitation_validate_on_models_that_have_them():
  config_lib.validate(tiny_config('unused', model='resnet50_5m', dropout=0.3, squeeze_excitation=True))
