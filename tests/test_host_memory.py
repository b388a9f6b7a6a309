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
