"""Milliseconds per 3x3 convolution of a CIFAR ResNet, by direction, in XLA and in PyTorch, on one device.

    python -m benchmarks.conv_layers [--batch_size=128] [--repeats=5]

The ResNet-20 train step is mostly its 19 3x3 convolutions, each run three ways:
forward, the input gradient (dx) and the weight gradient (dw). This times each
direction alone for the three layer shapes of the CIFAR ResNets (16 channels at
32x32, 32 at 16x16, 64 at 8x8; NHWC), with

  * XLA as the product compiles it (`devices.compiler_options()`), and, on CPU,
    with YNNPACK convolutions switched on (`LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION`,
    jaxlib's default, which the product turns off);
  * PyTorch (oneDNN on CPU), NCHW as its eager default, and channels_last.

Each figure is the median of `--repeats` windows of `--steps` calls, results
blocked on. "x19" is the sum over ResNet-20's 19 convolutions (7, 6 and 6 of the
three shapes). Results go to benchmarks/results/layers/<device>.json and the table
in benchmarks/README.md between the conv-layers markers. torch is optional.
"""
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict

from absl import flags

from jaxresnet.infra import host_memory  # pylint: disable=g-import-not-at-top
host_memory.keep_freed_memory()

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import host  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import report  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxresnet.infra import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxresnet.infra import devices  # pylint: disable=g-import-not-at-top,wrong-import-position

HERE = os.path.dirname(os.path.abspath(__file__))
FLAGS = flags.FLAGS
flags.DEFINE_integer('batch_size', 128, 'Images per call.')
flags.DEFINE_integer('steps', 10, 'Calls per timed window.')
flags.DEFINE_integer('repeats', 5, 'Timed windows; the median counts.')
flags.DEFINE_string('out_dir', os.path.join(HERE, 'results', 'layers'), 'Where <device>.json goes.')
flags.DEFINE_string('readme', os.path.join(HERE, 'README.md'), "README whose conv-layers table is re-rendered ('': none).")

# (channels, height = width, how many of ResNet-20's 3x3 convs have this shape).
SHAPES = ((16, 32, 7), (32, 16, 6), (64, 8, 6))
DIRECTIONS = ('fwd', 'dx', 'dw')
YNNPACK_CONVOLUTIONS = 'LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION'


def median_ms(run: Callable[[], Any], steps: int, repeats: int) -> float:
  run()  # Warm-up (and, for JAX, the first call after compiling).
  windows = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      out = run()
    jax.block_until_ready(out)
    windows.append((time.perf_counter() - start) / steps * 1e3)
  return statistics.median(windows)


def xla_directions(x, w, dy, options) -> Dict[str, Callable[[], Any]]:
  def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  fns = {'fwd': (lambda x, w, dy: conv(x, w)),
         'dx': (lambda x, w, dy: jax.vjp(lambda x: conv(x, w), x)[1](dy)[0]),
         'dw': (lambda x, w, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0])}
  compiled = {k: jax.jit(f).lower(x, w, dy).compile(options) for k, f in fns.items()}
  return {k: (lambda c=c: c(x, w, dy)) for k, c in compiled.items()}


def torch_directions(torch, c: int, h: int, batch: int, channels_last: bool) -> Dict[str, Callable[[], Any]]:
  fmt = torch.channels_last if channels_last else torch.contiguous_format
  x = torch.randn(batch, c, h, h).contiguous(memory_format=fmt)
  dy = torch.randn(batch, c, h, h).contiguous(memory_format=fmt)
  w = (0.1 * torch.randn(c, c, 3, 3)).contiguous(memory_format=fmt)
  backward = lambda mask: torch.ops.aten.convolution_backward(
      dy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)
  return {'fwd': lambda: torch.nn.functional.conv2d(x, w, padding=1),
          'dx': lambda: backward([True, False, False]),
          'dw': lambda: backward([False, True, False])}


def measure() -> Dict[str, Any]:
  on_cpu = jax.default_backend() == 'cpu'
  product = devices.compiler_options() or {}
  implementations = {'xla (product)': product}
  if on_cpu and product:
    libraries = product['xla_cpu_experimental_ynn_fusion_type']
    implementations['xla + YNNPACK convolutions'] = dict(
        product, xla_cpu_experimental_ynn_fusion_type=f'{libraries},{YNNPACK_CONVOLUTIONS}')
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    torch = None
  rows = {}
  for c, h, count in SHAPES:
    key = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(key[0], (FLAGS.batch_size, h, h, c))
    w = 0.1 * jax.random.normal(key[1], (3, 3, c, c))
    dy = jax.random.normal(key[2], (FLAGS.batch_size, h, h, c))
    shape = f'{c} ch, {h}x{h}'
    for name, options in implementations.items():
      runs = xla_directions(x, w, dy, options)
      rows.setdefault(name, {})[shape] = {d: median_ms(runs[d], FLAGS.steps, FLAGS.repeats) for d in DIRECTIONS}
    if torch is not None and on_cpu:  # On GPU this tool times JAX only (the step benchmark has torch's GPU variants).
      for layout, channels_last in (('NCHW', False), ('channels_last', True)):
        runs = torch_directions(torch, c, h, FLAGS.batch_size, channels_last)
        rows.setdefault(f'PyTorch {layout}', {})[shape] = {
            d: median_ms(runs[d], FLAGS.steps, FLAGS.repeats) for d in DIRECTIONS}
  counts = {f'{c} ch, {h}x{h}': n for c, h, n in SHAPES}
  for by_shape in rows.values():
    by_shape['x19'] = {d: sum(counts[s] * v[d] for s, v in by_shape.items() if s in counts) for d in DIRECTIONS}
  return {'rows': rows, 'shapes': list(counts), 'torch': None if torch is None else torch.__version__,
          'compiler_options': {k: json.dumps(v) for k, v in implementations.items()}}


def main(argv):
  cli.exit_on_extra_arguments(argv)
  load_start = os.getloadavg()[0]
  result = measure()
  info = host.device_info()
  versions = host.versions(None)
  result.update(command=' '.join(['python -m benchmarks.conv_layers'] + sys.argv[1:]),
                hardware=f'{info["count"]} x {info["kind"]}; host: {info["host_cpu"]}, {info["host_cores"]} cores '
                         f'({", ".join(info["host_cpu_flags"])})',
                versions=f'jax {versions["jax"]}, jaxlib {versions["jaxlib"]}, torch {result["torch"] or "not installed"}',
                time=time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()),
                load_start=load_start, load_end=os.getloadavg()[0])
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  path = os.path.join(FLAGS.out_dir, f'{jax.default_backend()}.json')
  with open(path, 'w') as f:
    json.dump(result, f, indent=1)
  table = report.conv_layers_section(os.path.basename(path), result)
  print(table)
  if FLAGS.readme:
    report.replace_block(FLAGS.readme, report.CONV_BEGIN, report.CONV_END, table, heading='## Convolutions alone')
    print(f'updated the conv-layers table in {FLAGS.readme}')
  print(f'wrote {path}')


if __name__ == '__main__':
  cli.run_cli(main)
