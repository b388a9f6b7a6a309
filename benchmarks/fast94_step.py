"""How fast is one fast94 training step (airbench's net, Muon) on this machine?

    python -m benchmarks.fast94_step                       # batch 1024, fp32, widths 64,256,256
    python -m benchmarks.fast94_step --widths=32,128,128 --batch_size=2000 --optimizer=sgd

Times the jitted train step (forward, backward, BatchNorm statistics, optimizer update, and with
--augment the on-device flip + translate of a uint8 batch) on random data, and prints images/s and
what --epochs epochs of --num_train images would take. Compilation and --warmup steps are excluded;
the median of --repeats windows of --steps steps is reported, with the slowest and fastest, and the
process CPU time per step (the least load-sensitive number on a shared machine). Compiled with the
product's XLA:CPU options (devices.compiler_options: Eigen convolutions, not YNNPACK's) and with
freed memory kept in the heap (host_memory), as training runs; --ynnpack_convolutions puts
jaxlib's default YNNPACK convolutions back.
"""
import argparse
import os
import statistics
import time

from jaxresnet.infra import host_memory  # pylint: disable=g-import-not-at-top
host_memory.keep_freed_memory()  # Before JAX starts its threads (see benchmarks/README.md).

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp
import numpy as np
import optax  # pylint: disable=wrong-import-position

from jaxresnet import data  # pylint: disable=wrong-import-position
from jaxresnet.training import fast94  # pylint: disable=wrong-import-position
from jaxresnet.training import switches  # pylint: disable=wrong-import-position
from jaxresnet.infra import devices  # pylint: disable=wrong-import-position
from jaxresnet.models import count_params, count_macs
from jaxresnet.models.whitened_vgg import WhitenedVGG, set_whitening_kernel, whitening_kernel


def make_step(model, tx, augment: bool):
  def step(params, batch_stats, opt_state, images, labels, epoch, key):
    if augment:  # uint8 in, as the training set lives on the device.
      images = switches.alternating_flip(images, epoch, key)
      images = data.augment(jax.random.fold_in(key, epoch), images, 2, 'reflect', flip=False)
      images = (images.astype(jnp.float32) / 255.0 - 0.5) / 0.25

    def loss_fn(p):
      logits, new = model.apply({'params': p, 'batch_stats': batch_stats}, images, train=True,
                                mutable=['batch_stats'])
      return switches.cross_entropy(logits, labels, 0.2), new['batch_stats']

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss
  return jax.jit(step, donate_argnums=(0, 1, 2))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch_size', type=int, default=1024)
  parser.add_argument('--widths', default='64,256,256')
  parser.add_argument('--optimizer', choices=('muon', 'sgd'), default='muon',
                      help='sgd: plain Nesterov SGD on every parameter, to see what Muon costs')
  parser.add_argument('--augment', action='store_true', help='include flip + translate of uint8 images')
  parser.add_argument('--precision', choices=('fp32', 'bf16'), default='fp32')
  parser.add_argument('--ynnpack_convolutions', action='store_true', help="jaxlib's default convolutions")
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--epochs', type=float, default=10)
  parser.add_argument('--num_train', type=int, default=50_000)
  args = parser.parse_args()

  widths = tuple(int(w) for w in args.widths.split(','))
  dtype = jnp.bfloat16 if args.precision == 'bf16' else jnp.float32
  model = WhitenedVGG(widths=widths, dtype=dtype)
  rng = np.random.default_rng(0)
  images_u8 = rng.integers(0, 256, (args.batch_size, 32, 32, 3), dtype=np.uint8)
  images = jnp.asarray(images_u8) if args.augment else jnp.asarray((images_u8 / 255.0 - 0.5) / 0.25, jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, args.batch_size), jnp.int32)

  variables = model.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False)
  params = set_whitening_kernel(variables['params'], whitening_kernel(images_u8[:256]))
  batch_stats = variables['batch_stats']
  total = fast94.steps(args.num_train, args.batch_size, args.epochs)
  if args.optimizer == 'muon':
    tx = fast94.make_optimizer(total, total // 3, args.batch_size, head_width=widths[-1])
  else:
    tx = optax.sgd(0.01, momentum=0.85, nesterov=True)
  opt_state = tx.init(params)
  step = make_step(model, tx, args.augment)

  key = jax.random.key(1)
  t0 = time.perf_counter()
  options = None if args.ynnpack_convolutions else devices.compiler_options()
  compiled = step.lower(params, batch_stats, opt_state, images, labels, 0, key).compile(options)
  compile_s = time.perf_counter() - t0
  state = (params, batch_stats, opt_state)
  for i in range(args.warmup):
    *state, loss = compiled(*state, images, labels, i, key)
  jax.block_until_ready(state)
  windows, cpu = [], []
  load_start = os.getloadavg()[0]
  for _ in range(args.repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(args.steps):
      *state, loss = compiled(*state, images, labels, i, key)
    jax.block_until_ready((state, loss))
    windows.append((time.perf_counter() - t0) / args.steps)
    cpu.append((time.process_time() - c0) / args.steps)

  per_step = statistics.median(windows)
  ips = args.batch_size / per_step
  n_params, macs = count_params(params), count_macs(model)
  run_s = total * per_step
  print(f'fast94 step: widths={widths} batch={args.batch_size} {args.precision} optimizer={args.optimizer} '
        f'augment={args.augment} on {jax.devices()[0].device_kind} ({jax.device_count()} device)')
  print(f'  params {n_params:,}, forward {macs / 1e6:.1f} M multiply-adds/image; compile {compile_s:.1f} s')
  print(f'  step {per_step * 1e3:.0f} ms (slowest {max(windows) * 1e3:.0f}, fastest {min(windows) * 1e3:.0f}) '
        f'= {ips:.0f} img/s = {3 * 2 * macs * ips / 1e9:.0f} GFLOP/s (3x forward)')
  print(f'  process CPU {statistics.median(cpu):.1f} s/step ({os.cpu_count()} cores: '
        f'{statistics.median(cpu) / os.cpu_count() * 1e3:.0f} ms/step if the cores were ours alone); '
        f'load average {load_start:.1f} -> {os.getloadavg()[0]:.1f}; XLA options {options}')
  print(f'  {args.epochs:g} epochs of {args.num_train:,} images ({total} steps): {run_s / 60:.1f} min')


if __name__ == '__main__':
  main()
