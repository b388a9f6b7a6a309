"""BatchNorm fused with the residual addition and ReLU that follow it, with a hand-written gradient.

`BatchNorm` is a drop-in for `flax.linen.BatchNorm` as the models use it (normalization over all
axes but the last; the same variables: params `scale`, `bias`; batch_stats `mean`, `var`; Flax's
momentum convention), so checkpoints and parameter counts do not change. Two optional arguments
fold in what comes next in a residual block: `residual` is added after the affine transform and
`relu=True` applies a ReLU, `relu(bn(x) + residual)` in one call.

Why write the gradient by hand: autodiff of the BatchNorm formula, followed by a separate add and
ReLU, leaves XLA more elementwise passes over every activation than it needs. The backward pass
here is two per-channel sums over (g, x), where g is the incoming gradient masked by the ReLU,
and one elementwise pass, dx = g * a + (x - mean) * b + c with per-channel a, b, c. The statistics are
taken over the whole (global) batch, so under jit over a sharded batch they are synced across
devices.
"""
import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


def _reduce_axes(x):
  return tuple(range(x.ndim - 1))


def _affine_add_relu(x, mean, gain, bias, residual, relu):
  """(x - mean) * gain + bias (+ residual), then ReLU if `relu`: in float32, returned in x's dtype."""
  # Centred first: x * gain - mean * gain cancels badly where |mean| >> std.
  out = (x.astype(jnp.float32) - mean) * gain + bias
  if residual is not None:
    out = out + residual.astype(jnp.float32)
  if relu:
    out = jnp.maximum(out, 0.)
  return out.astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def normalize(x, scale, bias, residual, epsilon: float, relu: bool):
  """Train-mode BatchNorm (+ residual, then ReLU): returns (output, batch mean, batch variance).

  `residual` may be None. Statistics and arithmetic are float32 whatever the dtype of `x`; the
  output has the dtype of `x`. The variance is E[x^2] - E[x]^2, as Flax's default computes it.
  """
  return _normalize_fwd(x, scale, bias, residual, epsilon, relu)[0]


def _normalize_fwd(x, scale, bias, residual, epsilon, relu):
  axes = _reduce_axes(x)
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axes)
  var = jnp.maximum(jnp.mean(jnp.square(x32), axes) - jnp.square(mean), 0.)
  inv = jax.lax.rsqrt(var + epsilon)
  out = _affine_add_relu(x, mean, inv * scale, bias, residual, relu)
  saved = (x, out, mean, inv, scale, None if residual is None else jnp.zeros((0,), residual.dtype))
  return (out, mean, var), saved


def _normalize_bwd(epsilon, relu, saved, cotangents):
  del epsilon
  x, out, mean, inv, scale, residual_dtype_carrier = saved
  g, g_mean, g_var = (c.astype(jnp.float32) for c in cotangents)
  if relu:
    g = jnp.where(out > 0, g, 0.)
  axes = _reduce_axes(x)
  count = x.size // x.shape[-1]
  centered = x.astype(jnp.float32) - mean
  # d/dbias and d/dscale of out = (x - mean) * inv * scale + bias.
  g_bias = jnp.sum(g, axes)
  g_scale = inv * jnp.sum(g * centered, axes)
  # dx = gain * (g - mean(g) - xhat * mean(g * xhat)), plus the terms of the mean and variance
  # outputs, written as g * gain + (x - mean) * centered_coef + const with per-channel coefficients.
  gain = inv * scale
  centered_coef = -gain * inv * g_scale / count + 2. * g_var / count
  const = -gain * g_bias / count + g_mean / count
  g_x = (g * gain + centered * centered_coef + const).astype(x.dtype)
  g_residual = None if residual_dtype_carrier is None else g.astype(residual_dtype_carrier.dtype)
  return g_x, g_scale, g_bias, g_residual


normalize.defvjp(_normalize_fwd, _normalize_bwd)


class BatchNorm(nn.Module):
  """BatchNorm over all axes but the last, optionally followed by `+ residual` and a ReLU."""
  use_running_average: bool = False
  momentum: float = 0.99  # Running average = momentum * running average + (1 - momentum) * batch.
  epsilon: float = 1e-5
  dtype: Optional[Any] = None  # Output dtype; None: that of the input.

  @nn.compact
  def __call__(self, x, residual=None, relu: bool = False):
    channels = x.shape[-1]
    running_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((channels,), jnp.float32))
    running_var = self.variable('batch_stats', 'var', lambda: jnp.ones((channels,), jnp.float32))
    scale = self.param('scale', nn.initializers.ones, (channels,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (channels,), jnp.float32)
    x = x.astype(self.dtype or x.dtype)

    if self.use_running_average:
      gain = jax.lax.rsqrt(running_var.value + self.epsilon) * scale
      return _affine_add_relu(x, running_mean.value, gain, bias, residual, relu)

    out, mean, var = normalize(x, scale, bias, residual, self.epsilon, relu)
    if not self.is_initializing():  # As Flax: initialization leaves the running averages alone.
      mean, var = jax.lax.stop_gradient((mean, var))
      running_mean.value = self.momentum * running_mean.value + (1. - self.momentum) * mean
      running_var.value = self.momentum * running_var.value + (1. - self.momentum) * var
    return out
