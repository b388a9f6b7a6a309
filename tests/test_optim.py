import jax.numpy as jnp
import numpy as np
import pytest

from jaxresnet.training import optim
from conftest import tiny_config


def schedule(**overrides):
  config = tiny_config('unused', **overrides)
  return optim.create_learning_rate_schedule(config, steps_per_epoch=100, num_train_steps=1000)


def test_step_schedule_divides_by_ten_at_the_boundaries():
  lr = schedule(learning_rate=0.1, lr_boundaries=(500, 750))
  assert [float(lr(s)) for s in (0, 499, 500, 749, 750, 999)] == pytest.approx(
      [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


@pytest.mark.parametrize('bounds', [('5 epochs', '7.5 epochs'), ('50%', '75%'), (500, '7.5 epochs')])
def test_step_boundaries_in_epochs_or_shares_of_the_run(bounds):
  lr = schedule(lr_boundaries=bounds)
  assert [float(lr(s)) for s in (499, 500, 749, 750)] == pytest.approx([0.1, 0.01, 0.01, 0.001])


@pytest.mark.parametrize('warmup', [100, '1 epochs', '10%'])
def test_a_warm_up_in_any_unit(warmup):
  lr = schedule(warmup_steps=warmup, warmup='constant', warmup_lr=0.01, lr_boundaries=(500,))
  assert [float(lr(s)) for s in (99, 100, 500)] == pytest.approx([0.01, 0.1, 0.01])


def test_paper_resnet110_constant_warmup_then_steps():
  lr = schedule(warmup_steps=400, warmup='constant', warmup_lr=0.01, lr_boundaries=(500, 750))
  assert [float(lr(s)) for s in (0, 399, 400, 499, 500, 750)] == pytest.approx(
      [0.01, 0.01, 0.1, 0.1, 0.01, 0.001])


def test_linear_warmup_then_cosine():
  lr = schedule(schedule='cosine', warmup_steps=100, warmup='linear', warmup_lr=0.0)
  assert float(lr(0)) == 0.0 and float(lr(50)) == pytest.approx(0.05)
  assert float(lr(100)) == pytest.approx(0.1) and float(lr(550)) == pytest.approx(0.05, abs=1e-3)
  assert float(lr(1000)) == pytest.approx(0.0, abs=1e-6)


def test_sgd_matches_pytorch_semantics_for_two_steps():
  # torch.optim.SGD(momentum=0.9, weight_decay=wd): g += wd*p; buf = 0.9*buf + g; p -= lr*buf.
  config = tiny_config('unused', weight_decay=0.01, momentum=0.9, nesterov=False)
  tx = optim.create_optimizer(config, 0.1)
  p = jnp.array([1.0, -2.0])
  g = jnp.array([0.5, 0.25])
  state = tx.init(p)
  buf, expected = np.zeros(2), np.array([1.0, -2.0])
  for _ in range(2):
    updates, state = tx.update(g, state, p)
    p = p + updates
    buf = 0.9 * buf + (np.asarray(g) + 0.01 * expected)
    expected = expected - 0.1 * buf
  np.testing.assert_allclose(p, expected, rtol=1e-6)


def test_nesterov_differs_from_plain_momentum():
  p, g = jnp.ones(3), jnp.full(3, 0.5)
  results = []
  for nesterov in (False, True):
    tx = optim.create_optimizer(tiny_config('unused', nesterov=nesterov), 0.1)
    state = tx.init(p)
    q = p
    for _ in range(2):
      updates, state = tx.update(g, state, q)
      q = q + updates
    results.append(q)
  assert not jnp.allclose(*results)
