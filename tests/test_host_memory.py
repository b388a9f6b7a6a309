"""host_memory.keep_freed_memory: every training command keeps glibc from mapping each step's temporaries afresh."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Prints how many new mmap'ed blocks one 256 MiB malloc makes after the imports: 1 with glibc's defaults
# (blocks that large are mapped, and page-faulted in again on every use), 0 once mmap is turned off.
PROBE = '''
import ctypes
{imports}
class MallInfo(ctypes.Structure):
  _fields_ = [(name, ctypes.c_int) for name in
              ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks', 'uordblks', 'fordblks', 'keepcost')]
libc = ctypes.CDLL('libc.so.6')
libc.mallinfo.restype = MallInfo
libc.malloc.restype = ctypes.c_void_p
before = libc.mallinfo().hblks
block = libc.malloc(256 << 20)
print(libc.mallinfo().hblks - before)
'''

pytestmark = [pytest.mark.slow,  # Every test here spawns processes.
              pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc settings: Linux only')]


def mapped_blocks(imports: str, **env) -> int:
  result = subprocess.run([sys.executable, '-c', PROBE.format(imports=imports)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, 'JAX_PLATFORMS': 'cpu', **env}, check=True)
  return int(result.stdout.split()[-1])


def test_the_probe_sees_a_large_block_mapped_with_glibcs_defaults():
  assert mapped_blocks('') == 1


@pytest.mark.parametrize('command', ['jaxresnet.main', 'jaxresnet.reproduce', 'jaxresnet.sweep'])
def test_each_training_command_keeps_freed_memory_in_the_heap(command):
  assert mapped_blocks(f'import {command}') == 0


def test_the_environment_variable_turns_it_off():
  assert mapped_blocks('import jaxresnet.main', JAXRESNET_KEEP_FREED_MEMORY='0') == 1


FIT = '''
import jaxresnet.main
from jaxresnet.infra import host_memory
class Analysis:
  temp_size_in_bytes = {temp}
class Compiled:
  def memory_analysis(self):
    return Analysis()
host_memory.fit_to_step(Compiled())
'''


@pytest.mark.parametrize('temp,mapped', [(0, 0), ('host_memory.RETURN_FREED_ABOVE_BYTES', 0),
                                         ('host_memory.RETURN_FREED_ABOVE_BYTES + 1', 1)])
def test_a_step_with_more_temporaries_than_the_threshold_returns_freed_memory(temp, mapped):
  """fit_to_step: up to RETURN_FREED_ABOVE_BYTES of temporaries the heap keeps freed memory; above, glibc maps
  large blocks again (and unmaps them when freed), as without keep_freed_memory (issue 35: fast94 at batch 2,000)."""
  assert mapped_blocks(FIT.format(temp=temp)) == mapped


def test_a_later_run_with_a_small_step_keeps_freed_memory_again():
  """A sweep or reproduce trains several runs in one process: each decides for itself."""
  big_then_small = (FIT.format(temp='host_memory.RETURN_FREED_ABOVE_BYTES + 1') +
                    'Analysis.temp_size_in_bytes = 1\nhost_memory.fit_to_step(Compiled())\n')
  assert mapped_blocks(big_then_small) == 0


def test_training_decides_from_its_compiled_train_step(image_folder, tmp_path, monkeypatch):
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  from jaxresnet.infra import host_memory  # pylint: disable=g-import-not-at-top
  from jaxresnet.training import train  # pylint: disable=g-import-not-at-top
  seen = []
  monkeypatch.setattr(host_memory, 'fit_to_step', lambda compiled: seen.append(
      compiled.memory_analysis().temp_size_in_bytes))
  train.train_and_evaluate(tiny_config(image_folder, num_train_steps=2, eval_every_steps=2,
                                       checkpoint_every_steps=2, lr_boundaries=(1,)), str(tmp_path / 'run'))
  assert len(seen) == 1 and seen[0] > 0
