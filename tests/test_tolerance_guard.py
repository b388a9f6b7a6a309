"""The numerics tests again, summing in the order another x86-64 processor would: no tolerance tuned to one order.

A float32 sum changes in its last bits when it is taken in another order, and
the order depends on the processor: numpy's OpenBLAS picks its kernels by CPU
(AVX-512 'SkylakeX' kernels on this AMD EPYC, AVX2 'Haswell' ones on an older
EPYC, where the TTA test once failed by relative 1.2e-5 against rtol 1e-5),
XLA:CPU hands dots and reductions to YNNPACK, which also dispatches by CPU, and
torch vectorizes by CPU capability. Here the tests that compare float32 results
with an independent computation run once more with each of these switched to
another choice this CPU can run, so a tolerance that only holds for this
machine's order fails on this machine too. tests/float32_tolerance.py says how
the tolerances are derived instead.
"""
import functools
import os
import subprocess
import sys

import pytest

from conftest import REPO

# Fast tests (seconds each) that compare float32 results against another computation of them.
NUMERICS_TESTS = [
    'tests/test_recipes.py::test_label_smoothing_gives_the_closed_form_loss',
    'tests/test_recipes.py::test_mixup_mixes_images_and_labels_with_one_lambda',
    'tests/test_recipes.py::test_op_values_follow_the_torchvision_ranges',
    'tests/test_recipes.py::test_tta_averages_the_logits_of_flipped_and_translated_images',
    'tests/test_recipes.py::test_ema_equals_its_recurrence',
    'tests/test_recipes.py::test_sam_gradient_equals_the_hand_computation_on_a_quadratic',
    'tests/test_recipes.py::test_sam_step_with_batchnorm_keeps_the_first_pass_statistics',
    'tests/test_batch_norm.py::test_train_mode_output_stats_and_gradients_match_flax',
    'tests/test_batch_norm.py::test_eval_mode_uses_running_averages_like_flax',
    'tests/test_batch_norm.py::test_gradients_of_the_statistics_outputs',
    'tests/test_optim.py::test_sgd_matches_pytorch_semantics_for_two_steps',
    'tests/test_optim_choices.py::test_each_optimizer_matches_its_formula',
    'tests/test_optim_choices.py::test_adamw_is_decoupled_and_matches_optax_adamw',
    'tests/test_data.py::test_pixel_mean_normalization_centres_the_training_set',
    'tests/test_torch_peer.py::test_same_padding_is_flax_same_and_symmetric_is_pytorchs',
    'tests/test_torch_peer.py::test_sgd_update_matches_jaxresnet_optax_optimizer',
]

# Unknown XLA flags abort the process, so this one is used only where this jaxlib knows it.
NO_YNNPACK_FUSIONS = '--xla_cpu_experimental_ynn_fusion_type='


def cpu_flags() -> set:
  try:
    with open('/proc/cpuinfo') as f:
      return {flag for line in f if line.startswith('flags') for flag in line.split(':', 1)[1].split()}
  except OSError:
    return set()


def other_kernels(flags: set) -> dict:
  """Environment that makes OpenBLAS, oneDNN and torch use an older x86-64 instruction set than they would here.

  Each choice is one this CPU can run, and one step below what the library picks on its own.
  """
  if 'avx512f' in flags:
    return {'OPENBLAS_CORETYPE': 'Haswell', 'ATEN_CPU_CAPABILITY': 'avx2', 'ONEDNN_MAX_CPU_ISA': 'AVX2'}
  if 'avx2' in flags:
    return {'OPENBLAS_CORETYPE': 'Sandybridge', 'ATEN_CPU_CAPABILITY': 'default', 'ONEDNN_MAX_CPU_ISA': 'SSE41'}
  if 'sse4_2' in flags or 'sse3' in flags or 'pni' in flags:
    return {'OPENBLAS_CORETYPE': 'Prescott', 'ATEN_CPU_CAPABILITY': 'default'}
  return {}  # Not x86-64: only XLA's choice changes.


@functools.cache
def xla_knows(flag: str) -> bool:
  probe = subprocess.run([sys.executable, '-c', 'import jax.numpy as jnp; jnp.ones(2).sum().block_until_ready()'],
                         env={**os.environ, 'XLA_FLAGS': flag, 'JAX_PLATFORMS': 'cpu'}, capture_output=True,
                         text=True, timeout=120)
  return probe.returncode == 0


def test_other_kernels_are_ones_the_cpu_has():
  assert other_kernels({'avx512f', 'avx2', 'sse4_2'})['OPENBLAS_CORETYPE'] == 'Haswell'
  assert other_kernels({'avx2', 'fma', 'sse4_2'})['OPENBLAS_CORETYPE'] == 'Sandybridge'
  assert other_kernels({'pni', 'sse4_2'})['OPENBLAS_CORETYPE'] == 'Prescott'
  assert other_kernels(set()) == {}


def other_xla(flags: str) -> dict:
  """XLA:CPU without YNNPACK's dot, reduce and elementwise fusions: its own loops and Eigen sum in other orders."""
  if not xla_knows(NO_YNNPACK_FUSIONS):
    return {}
  return {'XLA_FLAGS': ' '.join(filter(None, [flags, NO_YNNPACK_FUSIONS]))}


# One setting at a time: changing both at once can line the two sides of a comparison up again
# (XLA's Eigen dot sums as OpenBLAS's Haswell kernel does, which hid the TTA failure).
SETTINGS = {'other_blas_and_torch_kernels': lambda: other_kernels(cpu_flags()),
            'xla_without_ynnpack_fusions': lambda: other_xla(os.environ.get('XLA_FLAGS', ''))}


@pytest.mark.slow
@pytest.mark.parametrize('setting', list(SETTINGS))
def test_numerics_tests_pass_with_another_processors_summation_order(setting):
  changed = SETTINGS[setting]()
  if not changed:
    pytest.skip(f'{setting}: no other choice known for this CPU and jaxlib')
  env = {**os.environ, **changed, 'JAX_PLATFORMS': 'cpu'}
  env.pop('PYTEST_XDIST_WORKER', None)
  result = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-n', '0', '-p', 'no:cacheprovider', *NUMERICS_TESTS],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, f'with {changed}:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}'
