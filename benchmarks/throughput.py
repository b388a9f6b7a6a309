"""Images/second of jaxresnet's train and eval steps against a PyTorch reference, on one device.

    python -m benchmarks.throughput --models=resnet20,resnet56,resnet110,resnet18 --batch_size=128 \
        [--precision=fp32|bf16] [--steps=N] [--repeats=3]

For each model, in one process and on the same device:

  * jaxresnet's own code path: `train.build` for the state, `train.make_train_fn`
    (on-device gather by the epoch's permutation, normalization, random crop and
    flip, the train step, BatchNorm update, SGD) and `evaluation.make_eval_fn`, on
    synthetic uint8 images of CIFAR shape kept on the device, as in a real run.
    Also timed: `train.train_step` alone on a ready float batch (what the input
    pipeline costs), and optionally several steps per jit call (`--scan_steps`)
    and the train step compiled with extra XLA options (`--compare_compiler_options`).
  * the PyTorch reference of jaxresnet/peer/nets.py (same architectures and
    parameter counts, SGD with momentum and weight decay), eager; on GPU also
    channels_last and torch.compile; with --precision=bf16 under autocast (AMP).

Timing: compile and warm-up excluded; each window runs `--steps` steps and
waits for the results (jax.block_until_ready, torch.cuda.synchronize); JAX and
PyTorch windows alternate, `--repeats` times, so both see the same machine load;
the median window counts and the spread is kept.

Then an end-to-end figure: seconds per epoch of real training on CIFAR-10-JPEG
(--data_dir, default $CIFAR10_JPEG_DIR; --epoch_model='' skips it) with each framework's input pipeline (jaxresnet: the whole training
set on the device; PyTorch: a DataLoader with host-side crop and flip), measured
over `--epoch_steps` steps and extrapolated to an epoch when that is fewer.

Results go to --out_dir/<device>.json; with --update_readme the table in
benchmarks/README.md (--readme) is rendered again from all results files
(benchmarks/report.py). Without it the tracked README is left alone. torch is optional
(pip install -e '.[bench]'); without it the JAX side still runs and the report
says why the reference is missing.
"""
import functools
import gc
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from absl import flags
from absl import logging

# Both frameworks share the GPU: JAX must not grab most of its memory up front (read at backend start).
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
# The product's host-memory setting, as `python -m jaxresnet.main` applies it (before JAX starts).
from jaxresnet.infra import host_memory  # pylint: disable=g-import-not-at-top,wrong-import-position
host_memory.keep_freed_memory()

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np

from benchmarks import host
from benchmarks.synthetic import benchmark_config, synthetic_dataset
from jaxresnet.configs import default as default_config
from jaxresnet import data
from jaxresnet.infra import cli
from jaxresnet.infra import devices
from jaxresnet.training import evaluation
from jaxresnet import models
from jaxresnet.training import train
from jaxresnet.infra.errors import JaxresnetError

FLAGS = flags.FLAGS
flags.DEFINE_list('models', ['resnet20', 'resnet56', 'resnet110', 'resnet18'], 'Models to time.')
flags.DEFINE_integer('batch_size', 128, 'Global batch size of the train and eval steps.')
flags.DEFINE_enum('precision', 'fp32', ['fp32', 'bf16'],
                  'fp32, or bf16 compute (jaxresnet half_precision; PyTorch autocast).')
flags.DEFINE_integer('steps', 0, 'Timed steps per window (0: 10 on CPU, 50 on GPU).')
flags.DEFINE_integer('warmup', 0, 'Untimed steps after compiling (0: 2 on CPU, 10 on GPU).')
flags.DEFINE_integer('repeats', 3, 'Timed windows per variant; the median counts.')
flags.DEFINE_integer('eval_batches', 0, 'Batches in the timed eval split (0: same as --steps).')
flags.DEFINE_integer('scan_steps', -1, 'Also time K train steps per jit call (lax.scan); '
                     '0: no, -1: 10 on GPU, no on CPU.')
flags.DEFINE_enum('scan_unroll', 'auto', ['auto', 'yes', 'no'],
                  'Unroll the --scan_steps loop; auto: on CPU only, where XLA runs the backward '
                  'convolutions inside a while loop with a slow generic kernel.')
flags.DEFINE_string('compare_compiler_options', '',
                    'JSON dict of XLA options, e.g. {"xla_cpu_enable_fast_math": true}: also time the '
                    'train step compiled with them (an experiment; the headline uses the product as is).')
flags.DEFINE_bool('torch', True, 'Run the PyTorch reference (needs torch).')
flags.DEFINE_list('torch_variants', [], 'PyTorch variants: eager, channels_last, compile '
                  '(default: eager on CPU; all three on GPU).')
flags.DEFINE_integer('torch_threads', 0, 'torch.set_num_threads (0: torch\'s default).')
flags.DEFINE_string('epoch_model', 'resnet20', 'Model of the end-to-end epoch figure (\'\': skip it).')
flags.DEFINE_integer('epoch_steps', 0, 'Steps timed end to end (0: 10 on CPU, a whole epoch on GPU); '
                     'fewer than an epoch are extrapolated to one.')
flags.DEFINE_string('data_dir', os.environ.get('CIFAR10_JPEG_DIR', ''),
                    'CIFAR-10-JPEG image folder (train/, test/) of the end-to-end row '
                    '(default: $CIFAR10_JPEG_DIR; required unless --epoch_model=\'\').')
flags.DEFINE_integer('num_val_examples', 5000, 'Held out of the training split, as in configs/default.py.')
flags.DEFINE_integer('torch_workers', -1, 'DataLoader workers of the PyTorch end-to-end run '
                     '(-1: 0 on CPU, min(8, cores) on GPU).')
flags.DEFINE_string('out_dir', os.path.join(os.path.dirname(__file__), 'results'),
                    'Where <device>.json goes.')
flags.DEFINE_string('readme', os.path.join(os.path.dirname(__file__), 'README.md'),
                    'README whose results table --update_readme re-renders from --out_dir.')
flags.DEFINE_bool('update_readme', False, 'Re-render the results table in --readme (a tracked file: '
                  'off by default).')
flags.DEFINE_float('pause', 0.2, 'Seconds of rest between timed windows, so one framework\'s '
                   'spinning threads do not run into the next window.')

# Environment variables that change the timings; a run records those that are set.
ENVIRONMENT = ('XLA_FLAGS', 'JAX_PLATFORMS', 'JAX_ENABLE_X64', 'GLIBC_TUNABLES', 'MALLOC_ARENA_MAX',
               'OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OMP_WAIT_POLICY', 'LD_PRELOAD',
               'CUDA_VISIBLE_DEVICES', 'TF_GPU_ALLOCATOR', 'XLA_PYTHON_CLIENT_MEM_FRACTION')

TORCH_MISSING = ('torch is not installed, so the PyTorch reference is skipped; '
                 "install it with: pip install -e '.[bench]'")

PRINTED_NOTES: Dict[str, str] = {}  # Reasons already printed once, so per-model lines can refer to them.


def log(message: str) -> None:
  print(message, flush=True)


def import_torch():
  """(torch, None), or (None, why not) when the reference cannot run."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None, TORCH_MISSING
  return torch, None


# --------------------------------------------------------------------------
# Timing.


class Timed:
  """A variant to time: `run(n)` does about n steps, waits for them and returns how many images it did."""

  def __init__(self, name: str, run: Callable[[int], int]):
    self.name, self.run = name, run
    self.images_per_second: List[float] = []
    self.cpu_ms_per_step: List[float] = []


def time_interleaved(variants: List[Timed], steps: int, repeats: int, batch_size: int, pause: float):
  """Runs the variants' windows in turn, `repeats` rounds, so they share the machine's state."""
  for _ in range(repeats):
    for v in variants:
      time.sleep(pause)
      wall, cpu = time.perf_counter(), time.process_time()
      images = v.run(steps)
      wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
      v.images_per_second.append(images / wall)
      v.cpu_ms_per_step.append(1e3 * cpu * batch_size / images)


def summary(v: Timed) -> Dict[str, Any]:
  ips = v.images_per_second
  return {'images_per_second': statistics.median(ips), 'min': min(ips), 'max': max(ips),
          'windows': [round(x, 2) for x in ips],
          'cpu_ms_per_step': statistics.median(v.cpu_ms_per_step)}


# --------------------------------------------------------------------------
# jaxresnet.


def executable_memory(compiled) -> Optional[int]:
  """XLA's own account of the bytes one call needs: arguments + outputs - aliased + temporaries."""
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
               + m.temp_size_in_bytes)
  except Exception:  # Not every backend/version reports it.
    return None


def device_peak_memory() -> Optional[int]:
  stats = jax.devices()[0].memory_stats()
  return int(stats['peak_bytes_in_use']) if stats and 'peak_bytes_in_use' in stats else None


def copy_state(state):
  return jax.tree_util.tree_map(lambda x: x.copy(), state)


class JaxModel:
  """The product's train/eval functions for one model, compiled and ready to time."""

  def __init__(self, name: str, batch_size: int, precision: str, eval_batches: int,
               scan_steps: int, scan_unroll: bool, compiler_options: Dict[str, Any]):
    self.name, self.batch_size = name, batch_size
    config = benchmark_config(name, batch_size, precision)
    steps_per_epoch = 8
    dataset = synthetic_dataset(batch_size * steps_per_epoch)
    mesh = devices.make_mesh()
    model, state, _ = train.build(config, dataset, mesh)
    self.num_params = models.count_params(state.params)
    self.macs = models.count_macs(model, dataset.train_images.shape[1:])
    images = devices.replicate(mesh, dataset.train_images)
    labels = devices.replicate(mesh, dataset.train_labels)
    permutation = train.make_permutation_fn(mesh, config, len(dataset.train_labels))(jax.random.PRNGKey(0), 0)
    self.compile_seconds: Dict[str, float] = {}
    self.memory_bytes: Dict[str, Optional[int]] = {}

    train_fn = train.make_train_fn(mesh, config, steps_per_epoch, dataset.num_classes)
    args = (images, labels, permutation)
    self.variants = [self._stepper('train', train_fn, copy_state(state), args)]
    # The pure step on a ready batch: the difference to 'train' is the on-device input pipeline.
    # Compiled with the product's XLA options, as make_train_fn compiles 'train'.
    batch = (train.prepare_images(state, images[:batch_size], augment=False), labels[:batch_size])
    step_only = jax.jit(train.train_step, donate_argnums=(0,), compiler_options=devices.compiler_options())
    self.variants.append(self._stepper('train_step_only', step_only, copy_state(state), batch))
    if scan_steps > 1:
      name = f'train_scan{scan_steps}' + ('_unrolled' if scan_unroll else '')
      pure_train_fn = train.make_train_fn(mesh, config, steps_per_epoch, dataset.num_classes, jit=False)
      self.variants.append(self._stepper(name, scan(pure_train_fn, scan_steps, scan_unroll),
                                         copy_state(state), args, scan_steps))
    if compiler_options:
      self.variants.append(self._stepper('train_compiler_options', train_fn, copy_state(state), args,
                                         compiler_options=compiler_options))

    # One eval call runs the product's eval over a whole split of `eval_batches` batches.
    index = np.arange(batch_size * eval_batches) % len(dataset.train_labels)
    split = evaluation.EvalSet(mesh, dataset.train_images[index], dataset.train_labels[index], batch_size)
    eval_args = (split.images, split.labels, split.mask)
    eval_fn = self._compile('eval', evaluation.make_eval_fn(mesh, batch_size), state, *eval_args)

    def run_eval(n):
      done = 0
      while done < n * batch_size:
        jax.block_until_ready(eval_fn(state, *eval_args))
        done += split.size
      return done

    self.eval_variant = Timed('eval', run_eval)

  def _compile(self, name, fn, *args, compiler_options=None):
    start = time.perf_counter()
    lowered = fn.lower(*args)
    compiled = lowered.compile(compiler_options) if compiler_options else lowered.compile()
    self.compile_seconds[name] = time.perf_counter() - start
    self.memory_bytes[name] = executable_memory(compiled)
    return compiled

  def _stepper(self, name, fn, state, args, steps_per_call=1, compiler_options=None) -> Timed:
    """A Timed that owns `state` (donated at every call) and runs `fn` on it."""
    compiled = self._compile(name, fn, state, *args, compiler_options=compiler_options)
    holder = {'state': state}

    def run(n):
      calls = max(1, -(-n // steps_per_call))
      for _ in range(calls):
        holder['state'], metrics = compiled(holder['state'], *args)
      jax.block_until_ready((holder['state'], metrics))
      return calls * steps_per_call * self.batch_size

    timed = Timed(name, run)
    timed.steps_per_call = steps_per_call
    return timed


def scan(pure_train_fn, steps: int, unroll: bool = False):
  """`steps` calls of the product's (unjitted) train function inside one jit call (lax.scan)."""

  def multi(state, images, labels, permutation):
    def body(s, _):
      return pure_train_fn(s, images, labels, permutation)
    return jax.lax.scan(body, state, None, length=steps, unroll=unroll)

  return jax.jit(multi, donate_argnums=(0,), compiler_options=devices.compiler_options())


# --------------------------------------------------------------------------
# PyTorch reference.


class TorchModel:
  """The reference net with its optimizer, and one Timed per variant (train and eval)."""

  def __init__(self, torch, name: str, batch_size: int, precision: str, variants: List[str]):
    from jaxresnet.peer import nets as torch_resnet  # pylint: disable=g-import-not-at-top
    self.torch = torch
    self.cuda = torch.cuda.is_available() and jax.devices()[0].platform == 'gpu'
    self.device = torch.device('cuda' if self.cuda else 'cpu')
    if self.cuda:
      torch.backends.cudnn.benchmark = True  # Fixed shapes: let cuDNN pick its fastest kernels.
    self.num_params = torch_resnet.count_params(torch_resnet.get_model(name))
    self.train_variants: List[Timed] = []
    self.eval_variants: List[Timed] = []
    self.first_step_seconds: Dict[str, float] = {}
    self.peak_memory: Dict[str, Optional[int]] = {}
    self.skipped: Dict[str, str] = {}
    images = torch.randint(0, 256, (batch_size, 3, 32, 32), dtype=torch.uint8)
    self.images = ((images.float() / 255 - 0.5) / 0.25).to(self.device)
    self.labels = torch.randint(0, 10, (batch_size,)).to(self.device)
    self.batch_size = batch_size
    self.autocast = precision == 'bf16'
    for variant in variants:
      try:
        self._add(name, variant)
      except Exception as e:  # pylint: disable=broad-except
        # torch.compile needs a working compiler toolchain; report, don't crash.
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        self.skipped[variant] = f'{type(e).__name__}: {reason}'[:300]
        log(f'  torch {variant}: skipped ({self.skipped[variant]})')

  def sync(self):
    if self.cuda:
      self.torch.cuda.synchronize()

  def _add(self, name: str, variant: str):
    from jaxresnet.peer import nets as torch_resnet  # pylint: disable=g-import-not-at-top
    torch = self.torch
    torch.manual_seed(0)
    net = torch_resnet.get_model(name).to(self.device)
    images = self.images
    if variant in ('channels_last', 'compile'):
      net = net.to(memory_format=torch.channels_last)
      images = images.contiguous(memory_format=torch.channels_last)
    forward = torch.compile(net) if variant == 'compile' else net
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    autocast = functools.partial(torch.autocast, self.device.type, dtype=torch.bfloat16,
                                 enabled=self.autocast)

    def train_step():
      optimizer.zero_grad(set_to_none=True)
      with autocast():
        loss = torch.nn.functional.cross_entropy(forward(images), self.labels)
      loss.backward()
      optimizer.step()

    def eval_step():
      with torch.inference_mode(), autocast():
        forward(images)

    def loop(step):
      def run(n):
        for _ in range(n):
          step()
        self.sync()
        return n * self.batch_size
      return run

    if self.cuda:
      torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    net.train()
    loop(train_step)(1)  # The first call initializes kernels (and compiles, for 'compile').
    self.first_step_seconds[variant] = time.perf_counter() - start
    self.peak_memory[variant] = int(torch.cuda.max_memory_allocated()) if self.cuda else None
    net.eval()
    loop(eval_step)(1)

    def in_mode(training, run):  # BatchNorm: batch statistics to train, running ones to evaluate.
      def wrapped(n):
        net.train(training)
        return run(n)
      return wrapped

    self.train_variants.append(Timed(variant, in_mode(True, loop(train_step))))
    self.eval_variants.append(Timed(variant, in_mode(False, loop(eval_step))))


# --------------------------------------------------------------------------
# One model, both frameworks.


def benchmark_model(name: str, torch, torch_variants: List[str], settings: Dict[str, Any]) -> Dict[str, Any]:
  batch_size, steps, warmup, repeats = (settings[k] for k in ('batch_size', 'steps', 'warmup', 'repeats'))
  result: Dict[str, Any] = {}
  jax_model = torch_model = None
  if name not in models.MODELS:
    result['jax'] = {'skipped': f'{name} is not in jaxresnet.models.MODELS'}
  else:
    log(f'{name}: compiling the jaxresnet steps ...')
    jax_model = JaxModel(name, batch_size, settings['precision'], settings['eval_batches'],
                         settings['scan_steps'], settings['scan_unroll'], settings['compiler_options'])
  if torch is None:
    result['torch'] = {'skipped': settings['torch_skipped']}
  else:
    try:
      torch_model = TorchModel(torch, name, batch_size, settings['precision'], torch_variants)
    except ValueError as e:  # No reference for this model.
      result['torch'] = {'skipped': str(e)}
  if jax_model is not None:
    for v in jax_model.variants:
      v.run(warmup)
  if torch_model is not None:
    for v in torch_model.train_variants:
      v.run(warmup)

  jax_train = jax_model.variants if jax_model else []
  torch_train = torch_model.train_variants if torch_model else []
  train_variants = jax_train + torch_train
  eval_variants = ([jax_model.eval_variant] if jax_model else []) + (torch_model.eval_variants if torch_model else [])
  log(f'{name}: timing {repeats} x {steps} train steps, interleaved: ' +
      ', '.join([f'jax {v.name}' for v in jax_train] + [f'torch {v.name}' for v in torch_train]))
  time_interleaved(train_variants, steps, repeats, batch_size, settings['pause'])
  time_interleaved(eval_variants, settings['eval_batches'], repeats, batch_size, settings['pause'])

  flops_per_image = {'train': 6 * jax_model.macs if jax_model else None,
                     'eval': 2 * jax_model.macs if jax_model else None}
  if jax_model is not None:
    result['jax'] = {
        'params': jax_model.num_params, 'macs_per_image': jax_model.macs,
        **{v.name: {**summary(v), 'steps_per_call': v.steps_per_call} for v in jax_model.variants},
        'eval': summary(jax_model.eval_variant),
        'compile_seconds': jax_model.compile_seconds,
        'executable_bytes': jax_model.memory_bytes,
        'device_peak_bytes_so_far': device_peak_memory(),  # Process-wide (GPU); None on CPU.
    }
  if torch_model is not None:
    result['torch'] = {
        'params': torch_model.num_params, 'threads': torch.get_num_threads(),
        'device': str(torch_model.device),
        'variants': {v.name: {'train': summary(v), 'eval': summary(e),
                              'first_step_seconds': torch_model.first_step_seconds[v.name],
                              'peak_bytes': torch_model.peak_memory[v.name]}
                     for v, e in zip(torch_model.train_variants, torch_model.eval_variants)},
        'skipped_variants': torch_model.skipped,
    }
  result['ratios'] = ratios(result)
  result['tflops'] = tflops(result, flops_per_image)
  _print_model(name, result)
  del jax_model, torch_model
  gc.collect()
  if torch is not None and torch.cuda.is_available():
    torch.cuda.empty_cache()
  return result


def ratios(result) -> Dict[str, Any]:
  """JAX images/s over PyTorch images/s: > 1 means jaxresnet is faster."""
  jax_r, torch_r = result.get('jax', {}), result.get('torch', {})
  variants = torch_r.get('variants') or {}
  if 'train' not in jax_r or not variants:
    return {}
  out = {}
  best = max(variants, key=lambda k: variants[k]['train']['images_per_second'])
  best_eval = max(variants, key=lambda k: variants[k]['eval']['images_per_second'])
  out['best_torch_train_variant'], out['best_torch_eval_variant'] = best, best_eval
  for phase, jax_key, torch_variant in (('train', 'train', best), ('eval', 'eval', best_eval)):
    jax_ips = jax_r[jax_key]['images_per_second']
    if 'eager' in variants:
      out[f'{phase}_vs_torch_eager'] = jax_ips / variants['eager'][phase]['images_per_second']
    out[f'{phase}_vs_torch_best'] = jax_ips / variants[torch_variant][phase]['images_per_second']
  # The same ratio window by window: JAX and PyTorch windows ran back to back.
  if 'eager' in variants:
    pairs = zip(jax_r['train']['windows'], variants['eager']['train']['windows'])
    out['train_vs_torch_eager_per_window'] = [round(j / t, 3) for j, t in pairs]
  for key in jax_r:
    if key.startswith('train_') and isinstance(jax_r[key], dict) and 'images_per_second' in jax_r[key]:
      out[f'{key}_vs_torch_best'] = jax_r[key]['images_per_second'] / variants[best]['train']['images_per_second']
  return out


def tflops(result, flops_per_image) -> Dict[str, Any]:
  """Achieved model TFLOP/s (forward = 2 x multiply-adds, train = 3 x forward)."""
  out = {}
  if flops_per_image['train'] is None:
    return out
  if 'train' in result.get('jax', {}):
    out['jax_train'] = flops_per_image['train'] * result['jax']['train']['images_per_second'] / 1e12
    out['jax_eval'] = flops_per_image['eval'] * result['jax']['eval']['images_per_second'] / 1e12
  variants = result.get('torch', {}).get('variants') or {}
  if variants:
    best = max(v['train']['images_per_second'] for v in variants.values())
    out['torch_best_train'] = flops_per_image['train'] * best / 1e12
  return out


def _print_model(name, result):
  parts = [name]
  jax_r = result.get('jax', {})
  if 'train' in jax_r:
    parts.append(f'jax train {jax_r["train"]["images_per_second"]:.0f} img/s '
                 f'(step only {jax_r["train_step_only"]["images_per_second"]:.0f}), '
                 f'eval {jax_r["eval"]["images_per_second"]:.0f}')
  else:
    parts.append(f'jax skipped: {jax_r.get("skipped")}')
  for variant, r in (result.get('torch', {}).get('variants') or {}).items():
    parts.append(f'torch {variant} train {r["train"]["images_per_second"]:.0f}, '
                 f'eval {r["eval"]["images_per_second"]:.0f}')
  if 'skipped' in result.get('torch', {}):
    reason = result['torch']['skipped']
    parts.append('torch: skipped (see the note above)' if reason == PRINTED_NOTES.get('torch') else
                 f'torch skipped: {reason}')
  r = result.get('ratios', {})
  if 'train_vs_torch_best' in r:
    parts.append(f'JAX/PyTorch train {r.get("train_vs_torch_eager", float("nan")):.2f} (eager), '
                 f'{r["train_vs_torch_best"]:.2f} (best: {r["best_torch_train_variant"]}); '
                 f'eval {r.get("eval_vs_torch_eager", float("nan")):.2f} (eager)')
  log('  ' + '\n  '.join(parts))


# --------------------------------------------------------------------------
# End to end: an epoch of real training, input pipeline included.


def end_to_end(name: str, torch, settings: Dict[str, Any]) -> Dict[str, Any]:
  batch_size, warmup = settings['batch_size'], settings['warmup']
  config = benchmark_config(name, batch_size, settings['precision'])
  config.dataset, config.data_dir = 'image_folder', settings['data_dir']
  config.num_val_examples = settings['num_val_examples']
  if name not in models.MODELS:
    return {'model': name, 'skipped': f'{name} is not in jaxresnet.models.MODELS'}
  if not os.path.isdir(config.data_dir):
    return {'model': name, 'skipped': f'no CIFAR-10-JPEG folder at {config.data_dir!r} (--data_dir)'}
  start = time.perf_counter()
  dataset = data.load_dataset(config)  # Decodes once, then reads the cache.
  load_seconds = time.perf_counter() - start
  steps_per_epoch = len(dataset.train_labels) // batch_size
  steps = settings['epoch_steps'] or steps_per_epoch
  steps = min(steps, steps_per_epoch)
  out = {'model': name, 'dataset': config.data_dir, 'train_examples': len(dataset.train_labels),
         'steps_per_epoch': steps_per_epoch, 'timed_steps': steps,
         'extrapolated': steps < steps_per_epoch, 'load_seconds': load_seconds}
  log(f'end to end: {name} on {out["train_examples"]} images, {steps} of {steps_per_epoch} '
      'steps per epoch timed')
  out['jax'] = _jax_epoch(config, dataset, steps, warmup)
  if torch is None:
    out['torch'] = {'skipped': settings['torch_skipped']}
  else:
    out['torch'] = _torch_epoch(torch, config, dataset, steps, warmup, settings['torch_workers'])
  if 'seconds_per_epoch' in out['torch']:
    out['jax_over_torch_throughput'] = out['torch']['seconds_per_epoch'] / out['jax']['seconds_per_epoch']
  log(f'  seconds per epoch: jax {out["jax"]["seconds_per_epoch"]:.1f}' +
      (f', torch {out["torch"]["seconds_per_epoch"]:.1f}' if 'seconds_per_epoch' in out['torch'] else '') +
      (' (extrapolated)' if out['extrapolated'] else ''))
  return out


def _jax_epoch(config, dataset, steps, warmup) -> Dict[str, Any]:
  """The product's training loop body: permutation per epoch, on-device gather and augment, step."""
  mesh = devices.make_mesh()
  steps_per_epoch = len(dataset.train_labels) // config.batch_size
  _, state, _ = train.build(config, dataset, mesh)
  start = time.perf_counter()
  images, labels = devices.replicate(mesh, dataset.train_images), devices.replicate(mesh, dataset.train_labels)
  jax.block_until_ready((images, labels))
  to_device = time.perf_counter() - start
  train_fn = train.make_train_fn(mesh, config, steps_per_epoch, dataset.num_classes)
  permutation_fn = train.make_permutation_fn(mesh, config, len(dataset.train_labels))
  key = jax.random.PRNGKey(config.seed)
  permutation = permutation_fn(key, 0)
  for _ in range(max(1, warmup)):  # Compiles; the timed steps then start a fresh epoch.
    state, metrics = train_fn(state, images, labels, permutation)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  permutation = permutation_fn(key, 1)
  for _ in range(steps):
    state, metrics = train_fn(state, images, labels, permutation)
  jax.block_until_ready((state, metrics))
  seconds = time.perf_counter() - start
  return {'seconds_per_step': seconds / steps, 'seconds_per_epoch': seconds / steps * steps_per_epoch,
          'to_device_seconds': to_device, 'pipeline': 'whole training set on the device; gather, '
          'crop and flip inside the jitted step'}


def _torch_epoch(torch, config, dataset, steps, warmup, workers) -> Dict[str, Any]:
  """A standard PyTorch loop: DataLoader with host-side random crop and flip, then the step."""
  from jaxresnet.peer import nets as torch_resnet  # pylint: disable=g-import-not-at-top
  try:
    net = torch_resnet.get_model(config.model)
  except ValueError as e:
    return {'skipped': str(e)}
  cuda = torch.cuda.is_available() and jax.devices()[0].platform == 'gpu'
  device = torch.device('cuda' if cuda else 'cpu')
  if workers < 0:
    workers = min(8, os.cpu_count() or 1) if cuda else 0
  # The same normalization as the JAX run (per-pixel mean by default), in NCHW.
  mean, std = (np.asarray(a, np.float32) for a in data.input_statistics(dataset.train_images,
                                                                        config.normalization))
  mean = torch.as_tensor(mean.transpose(2, 0, 1)[None] if mean.ndim == 3 else mean.reshape(1, -1, 1, 1))
  mean, std = mean.to(device), torch.as_tensor(std.reshape(1, -1, 1, 1)).to(device)
  loader = torch.utils.data.DataLoader(
      CropFlipDataset(torch, dataset.train_images, dataset.train_labels), batch_size=config.batch_size,
      shuffle=True, drop_last=True, num_workers=workers, pin_memory=cuda,
      persistent_workers=workers > 0)
  torch.manual_seed(config.seed)
  net = net.to(device)
  optimizer = torch.optim.SGD(net.parameters(), lr=config.learning_rate, momentum=config.momentum,
                              weight_decay=config.weight_decay)
  autocast = functools.partial(torch.autocast, device.type, dtype=torch.bfloat16,
                               enabled=config.half_precision)
  net.train()

  def step(images, labels):
    images = (images.to(device, non_blocking=True).float() / 255 - mean) / std
    labels = labels.to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with autocast():
      loss = torch.nn.functional.cross_entropy(net(images), labels)
    loss.backward()
    optimizer.step()

  batches = iter(loader)
  for _ in range(max(1, warmup)):
    step(*next(batches))
  if cuda:
    torch.cuda.synchronize()
  start, done = time.perf_counter(), 0
  while done < steps:  # A new epoch (a new iterator) where the first runs out.
    for images, labels in batches:
      step(images, labels)
      done += 1
      if done == steps:
        break
    batches = iter(loader)
  if cuda:
    torch.cuda.synchronize()
  seconds = time.perf_counter() - start
  steps_per_epoch = len(dataset.train_labels) // config.batch_size
  return {'seconds_per_step': seconds / steps, 'seconds_per_epoch': seconds / steps * steps_per_epoch,
          'workers': workers, 'pipeline': 'torch DataLoader over the decoded uint8 arrays, random '
          'crop (pad 4) and flip per image on the host, normalized on the device'}


class CropFlipDataset:
  """Map-style dataset: uint8 HWC images, padded by 4, randomly cropped and flipped, as CHW tensors."""

  def __init__(self, torch, images: np.ndarray, labels: np.ndarray, pad: int = 4):
    self.torch, self.images, self.labels, self.pad = torch, images, labels, pad

  def __len__(self):
    return len(self.labels)

  def __getitem__(self, i):
    h, w = self.images.shape[1:3]
    padded = np.pad(self.images[i], ((self.pad, self.pad), (self.pad, self.pad), (0, 0)))
    y, x = (int(v) for v in self.torch.randint(0, 2 * self.pad + 1, (2,)))
    crop = padded[y:y + h, x:x + w]
    if self.torch.rand(()) < 0.5:
      crop = crop[:, ::-1]
    return self.torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))), int(self.labels[i])


# --------------------------------------------------------------------------


def resolve_settings(on_gpu: bool) -> Dict[str, Any]:
  compiler_options = {}
  if FLAGS.compare_compiler_options:
    try:
      compiler_options = json.loads(FLAGS.compare_compiler_options)
      assert isinstance(compiler_options, dict)
    except (ValueError, AssertionError):
      raise JaxresnetError('--compare_compiler_options must be a JSON object, e.g. '
                           '\'{"xla_cpu_enable_fast_math": true}\'') from None
  for name in ('batch_size', 'repeats'):
    if FLAGS[name].value < 1:
      raise JaxresnetError(f'--{name}={FLAGS[name].value} must be positive')
  if FLAGS.epoch_model and not FLAGS.data_dir:
    raise JaxresnetError('the end-to-end row needs CIFAR-10-JPEG: pass --data_dir=FOLDER (train/, test/) or '
                         "set $CIFAR10_JPEG_DIR, or skip the row with --epoch_model=''")
  if FLAGS.epoch_model and not os.path.exists(FLAGS.data_dir):
    raise JaxresnetError(f'--data_dir={FLAGS.data_dir} does not exist (the CIFAR-10-JPEG folder of the '
                         "end-to-end row; --epoch_model='' skips the row)")
  if FLAGS.update_readme and not FLAGS.readme:
    raise JaxresnetError('--update_readme needs --readme (the README whose table to render)')
  steps = FLAGS.steps or (50 if on_gpu else 10)
  return {
      'batch_size': FLAGS.batch_size, 'precision': FLAGS.precision, 'steps': steps,
      'warmup': FLAGS.warmup or (10 if on_gpu else 2), 'repeats': FLAGS.repeats,
      'eval_batches': FLAGS.eval_batches or steps,
      'scan_steps': FLAGS.scan_steps if FLAGS.scan_steps >= 0 else (10 if on_gpu else 0),
      'scan_unroll': FLAGS.scan_unroll == 'yes' or (FLAGS.scan_unroll == 'auto' and not on_gpu),
      'compiler_options': compiler_options, 'epoch_steps': FLAGS.epoch_steps or (0 if on_gpu else 10),
      'data_dir': FLAGS.data_dir, 'num_val_examples': FLAGS.num_val_examples,
      'torch_workers': FLAGS.torch_workers, 'pause': FLAGS.pause,
      'data': 'synthetic uint8 32x32x3 images and labels on the device (step timings); '
              'CIFAR-10-JPEG (end to end)',
      'timing': 'compile and warm-up excluded; each window waits for its results; JAX and PyTorch '
                'windows alternate; median window (min, max kept)',
  }


def run(argv) -> Dict[str, Any]:
  info = host.device_info()
  on_gpu = info['platform'] == 'gpu'
  settings = resolve_settings(on_gpu)
  torch, why_not = (None, 'disabled with --notorch') if not FLAGS.torch else import_torch()
  if torch is not None and on_gpu and not torch.cuda.is_available():
    torch, why_not = None, ('the installed torch has no CUDA support, so it cannot run on the same '
                            'device as JAX; install a CUDA build of torch')
  if torch is not None and FLAGS.torch_threads:
    torch.set_num_threads(FLAGS.torch_threads)
  if why_not:
    log(f'note: {why_not}')
    PRINTED_NOTES['torch'] = why_not
  settings['torch_skipped'] = why_not
  torch_variants = FLAGS.torch_variants or (['eager', 'channels_last', 'compile'] if on_gpu else ['eager'])
  unknown = set(torch_variants) - {'eager', 'channels_last', 'compile'}
  if unknown:
    raise JaxresnetError(f'unknown --torch_variants {sorted(unknown)}; known: eager, channels_last, compile')
  log(f'device: {jax.device_count()} x {info["kind"]} ({info["host_cpu"]}, {info["host_cores"]} cores); '
      f'batch {settings["batch_size"]}, {settings["precision"]}')
  results = {
      'schema': 1,
      'device': info,
      'versions': host.versions(torch),
      'command': 'python -m benchmarks.throughput ' + ' '.join(argv[1:]),
      'environment': {k: os.environ[k] for k in ENVIRONMENT if k in os.environ},
      'date': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
      'settings': {k: v for k, v in settings.items() if k != 'torch_skipped'},
      'torch_variants': torch_variants if torch is not None else [],
      'torch_skipped': why_not,
      'load_average': {'start': list(os.getloadavg())},
      'models': {},
  }
  if FLAGS.epoch_model:
    # First, while the process heap is fresh, as in a training run: after the bigger models' steps
    # (hundreds of MiB to GiB of temporaries each) the same epoch measured markedly slower on CPU.
    results['end_to_end'] = end_to_end(FLAGS.epoch_model, torch, settings)
  for name in FLAGS.models:
    results['models'][name] = benchmark_model(name, torch, torch_variants, settings)
  results['load_average']['end'] = list(os.getloadavg())
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  suffix = '' if settings['precision'] == 'fp32' else f'-{settings["precision"]}'
  path = os.path.join(FLAGS.out_dir, f'{info["name"]}{suffix}.json')
  with open(path, 'w') as f:
    json.dump(results, f, indent=1)
  log(f'wrote {path}')
  if FLAGS.update_readme:
    from benchmarks import report  # pylint: disable=g-import-not-at-top
    report.update_readme(FLAGS.readme, FLAGS.out_dir)
    log(f'updated the results table in {FLAGS.readme}')
  return results


def main(argv):
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Keep JAX's start-up INFO lines out of the report.
  cli.exit_on_extra_arguments(argv)
  with cli.exit_on_user_error():
    run(sys.argv)


if __name__ == '__main__':
  cli.run_cli(main)
