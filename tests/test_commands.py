"""The commands are thin: flags, main() and a call into a library. Imports go one way: commands -> libraries.

Read from the source (ast), so the test runs in a second and names the offending import.
"""
import ast
import os

import pytest

from conftest import REPO

PACKAGE = os.path.join(REPO, 'jaxresnet')
COMMANDS = {'jaxresnet.main', 'jaxresnet.evaluate', 'jaxresnet.predict', 'jaxresnet.sweep', 'jaxresnet.reproduce',
            'jaxresnet.plot', 'jaxresnet.report', 'jaxresnet.models.__main__'}


def module_name(path):
  relative = os.path.relpath(path, REPO)[:-len('.py')].replace(os.sep, '.')
  return relative[:-len('.__init__')] if relative.endswith('.__init__') else relative


def modules():
  for root, _, names in os.walk(PACKAGE):
    for name in sorted(names):
      if name.endswith('.py'):
        yield module_name(os.path.join(root, name)), os.path.join(root, name)


def imported(path):
  """Every module `path` imports, at any depth of its code (a function's import counts too)."""
  tree = ast.parse(open(path).read())
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
      names |= {f'{node.module}.{alias.name}' for alias in node.names}
  return names


def test_no_module_imports_a_command_or_the_benchmarks():
  offenders = []
  for name, path in modules():
    for module in sorted(imported(path)):
      if module.startswith('benchmarks') or (module in COMMANDS and module != name):
        offenders.append(f'{name} imports {module}')
  assert offenders == []


def test_the_peer_depends_on_libraries_only():
  peer = [(name, path) for name, path in modules() if name.startswith('jaxresnet.peer')]
  assert {name for name, _ in peer} >= {'jaxresnet.peer', 'jaxresnet.peer.trainer', 'jaxresnet.peer.nets'}
  for name, path in peer:
    jaxresnet_imports = {m for m in imported(path) if m.startswith('jaxresnet.')}
    assert not jaxresnet_imports & COMMANDS, name
    assert all(m.startswith(('jaxresnet.infra', 'jaxresnet.data', 'jaxresnet.models', 'jaxresnet.training',
                             'jaxresnet.peer')) for m in jaxresnet_imports), (name, jaxresnet_imports)


@pytest.mark.parametrize('command,extra', [('evaluate', ()), ('predict', ()), ('report', ()), ('reproduce', ()),
                                           ('sweep', ('parse_flags',))])
def test_a_command_is_its_flags_and_main(command, extra):
  tree = ast.parse(open(os.path.join(PACKAGE, f'{command}.py')).read())
  functions = sorted(n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)))
  assert functions == sorted({'main', *extra} | ({'define_flags'} if command != 'sweep' else set()))


LIBRARIES = ('jaxresnet.data', 'jaxresnet.models', 'jaxresnet.training', 'jaxresnet.experiments', 'jaxresnet.peer')


def test_infra_imports_nothing_above_it():
  """The bottom layer: jaxresnet.infra may import itself and third-party code, no library and no command."""
  offenders = []
  for name, path in modules():
    if name.startswith('jaxresnet.infra'):
      offenders += [f'{name} imports {m}' for m in sorted(imported(path))
                    if m.startswith(LIBRARIES) or m in COMMANDS or m in ('jaxresnet.models', 'jaxresnet.data')]
  assert offenders == []


def test_data_imports_no_model_training_or_experiment_code():
  offenders = []
  for name, path in modules():
    if name.startswith('jaxresnet.data'):
      offenders += [f'{name} imports {m}' for m in sorted(imported(path))
                    if m.startswith(LIBRARIES[1:]) or m in COMMANDS]
  assert offenders == []
