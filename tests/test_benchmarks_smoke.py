"""Smoke tests of the benchmarks suite: a few steps, the files it writes, no speed thresholds.

They run with or without torch (CI installs only .[test]): without it the suite
must still time jaxresnet and say plainly how to get the PyTorch reference.
"""
import importlib.util
import json
import os

import pytest

from conftest import REPO, run_module, write_image_folder

HAVE_TORCH = importlib.util.find_spec('torch') is not None
INSTALL_HINT = "pip install -e '.[bench]'"


def _timing_ok(summary, windows):
  assert summary['images_per_second'] > 0
  assert summary['min'] <= summary['images_per_second'] <= summary['max']
  assert len(summary['windows']) == windows


@pytest.mark.slow
def test_throughput_writes_results_json_and_readme_table(tmp_path):
  folder = write_image_folder(tmp_path / 'images', train_per_class=8, test_per_class=2)
  out, readme = tmp_path / 'results', tmp_path / 'README.md'
  repo_results = os.path.join(REPO, 'benchmarks', 'results', 'cpu.json')
  before = os.path.getmtime(repo_results) if os.path.exists(repo_results) else None
  # ResNet-8: the code paths of ResNet-20 at a third of the compile and step time.
  result = run_module('benchmarks.throughput', '--models=resnet8', '--batch_size=8', '--steps=2',
                      '--warmup=1', '--repeats=2', '--eval_batches=1', f'--out_dir={out}',
                      f'--readme={readme}', '--update_readme', f'--data_dir={folder}', '--num_val_examples=8',
                      '--epoch_steps=2', '--epoch_model=resnet8', check=True)

  r = json.loads((out / 'cpu.json').read_text())
  assert r['device']['name'] == 'cpu' and r['device']['host_cores'] >= 1
  assert r['command'].startswith('python -m benchmarks.throughput --models=resnet8')
  assert {'python', 'jax', 'jaxlib', 'flax', 'torch'} <= set(r['versions'])
  assert r['settings']['batch_size'] == 8 and r['settings']['steps'] == 2
  m = r['models']['resnet8']
  j = m['jax']
  assert j['params'] == 75_290
  for variant in ('train', 'train_step_only', 'eval'):
    _timing_ok(j[variant], windows=2)
  assert j['compile_seconds']['train'] > 0 and j['compile_seconds']['eval'] > 0
  assert j['executable_bytes']['train'] > 0
  assert m['tflops']['jax_train'] > 0
  if HAVE_TORCH:
    t = m['torch']
    assert t['params'] == 75_290  # The reference has exactly jaxresnet's parameters.
    _timing_ok(t['variants']['eager']['train'], windows=2)
    _timing_ok(t['variants']['eager']['eval'], windows=2)
    ratio = m['ratios']['train_vs_torch_eager']
    assert ratio == j['train']['images_per_second'] / t['variants']['eager']['train']['images_per_second']
    assert len(m['ratios']['train_vs_torch_eager_per_window']) == 2
  else:
    assert INSTALL_HINT in m['torch']['skipped'] and INSTALL_HINT in result.stdout
    assert m['ratios'] == {}

  # End to end on the folder: 24 - 8 validation images = 2 steps of 8, timed whole.
  e = r['end_to_end']
  assert e['steps_per_epoch'] == 2 and e['timed_steps'] == 2 and not e['extrapolated']
  assert e['jax']['seconds_per_epoch'] > 0
  assert ('seconds_per_epoch' in e['torch']) == HAVE_TORCH

  # The README table is rendered from the JSON, and re-rendering replaces it in place.
  text = readme.read_text()
  assert '| resnet8 | 75,290 / ' in text and r['command'] in text
  assert f'{j["train"]["images_per_second"]:,.0f} (' in text
  run_module('benchmarks.report', f'--readme={readme}', f'--results_dir={out}', check=True)
  assert readme.read_text() == text
  # The run wrote only where it was told to.
  after = os.path.getmtime(repo_results) if os.path.exists(repo_results) else None
  assert after == before


@pytest.mark.slow
def test_missing_torch_is_reported_in_one_clear_line(tmp_path):
  # A `torch` that fails to import stands in for an environment without torch.
  shim = tmp_path / 'shim' / 'torch'
  shim.mkdir(parents=True)
  (shim / '__init__.py').write_text("raise ImportError(\"No module named 'torch'\")\n")
  pythonpath = os.pathsep.join(filter(None, [str(shim.parent), os.environ.get('PYTHONPATH')]))
  out = tmp_path / 'results'
  result = run_module('benchmarks.throughput', '--models=resnet8', '--batch_size=4', '--steps=1',
                      '--warmup=1', '--repeats=1', '--eval_batches=1', f'--out_dir={out}', '--readme=',
                      '--epoch_model=', env={'PYTHONPATH': pythonpath}, check=True)
  notes = [line for line in result.stdout.splitlines() if 'torch' in line and 'not installed' in line]
  assert notes == [f'note: torch is not installed, so the PyTorch reference is skipped; '
                   f'install it with: {INSTALL_HINT}']
  r = json.loads((out / 'cpu.json').read_text())
  assert r['versions']['torch'] is None and r['torch_variants'] == []
  assert INSTALL_HINT in r['models']['resnet8']['torch']['skipped']
  assert r['models']['resnet8']['jax']['train']['images_per_second'] > 0


@pytest.mark.slow
def test_bad_flag_is_one_error_line(tmp_path):
  result = run_module('benchmarks.throughput', '--models=resnet8', '--compare_compiler_options=[1]',
                      f'--out_dir={tmp_path}', '--readme=')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith('error: --compare_compiler_options must be')
  assert 'Traceback' not in result.stderr


@pytest.mark.slow
def test_conv_layers_writes_results_json_and_readme_table(tmp_path):
  out, readme = tmp_path / 'layers', tmp_path / 'README.md'
  readme.write_text('# Benchmarks\n\nText kept as it is.\n')
  result = run_module('benchmarks.conv_layers', '--batch_size=2', '--steps=1', '--repeats=1',
                      f'--out_dir={out}', f'--readme={readme}', check=True)
  r = json.loads((out / 'cpu.json').read_text())
  assert r['command'] == f'python -m benchmarks.conv_layers --batch_size=2 --steps=1 --repeats=1 ' \
                         f'--out_dir={out} --readme={readme}'
  # XLA as the product compiles it, and with YNNPACK convolutions switched back on for comparison.
  expected = {'xla (product)', 'xla + YNNPACK convolutions'}
  expected |= {'PyTorch NCHW', 'PyTorch channels_last'} if HAVE_TORCH else set()
  assert set(r['rows']) == expected
  for by_shape in r['rows'].values():
    assert set(by_shape) == {'16 ch, 32x32', '32 ch, 16x16', '64 ch, 8x8', 'x19'}
    for shape in ('16 ch, 32x32', '32 ch, 16x16', '64 ch, 8x8'):
      assert all(by_shape[shape][d] > 0 for d in ('fwd', 'dx', 'dw'))
    # x19 is ResNet-20's 7 + 6 + 6 convs of the three shapes.
    dw = 7 * by_shape['16 ch, 32x32']['dw'] + 6 * by_shape['32 ch, 16x16']['dw'] + 6 * by_shape['64 ch, 8x8']['dw']
    assert abs(by_shape['x19']['dw'] - dw) < 1e-9
  assert '| xla (product) | ' in result.stdout  # The table is printed too.
  text = readme.read_text()
  assert text.startswith('# Benchmarks\n\nText kept as it is.\n') and '## Convolutions alone' in text
  assert '| xla (product) | ' in text and r['command'] in text
  # A second run replaces the table instead of adding another.
  run_module('benchmarks.conv_layers', '--batch_size=2', '--steps=1', '--repeats=1',
             f'--out_dir={out}', f'--readme={readme}', check=True)
  assert readme.read_text().count('## Convolutions alone') == 1


@pytest.mark.slow
def test_end_to_end_row_without_data_dir_is_one_line_at_once(tmp_path):
  env = {'CIFAR10_JPEG_DIR': ''}  # Whatever the machine has: the default comes from it.
  result = run_module('benchmarks.throughput', '--models=resnet8', f'--out_dir={tmp_path}', env=env)
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines() == [
      "error: the end-to-end row needs CIFAR-10-JPEG: pass --data_dir=FOLDER (train/, test/) or set "
      "$CIFAR10_JPEG_DIR, or skip the row with --epoch_model=''"]
  assert not os.listdir(tmp_path)  # Nothing was timed.
  missing = run_module('benchmarks.throughput', '--models=resnet8', f'--out_dir={tmp_path}',
                       env={'CIFAR10_JPEG_DIR': str(tmp_path / 'nowhere')})
  assert missing.returncode == 1
  assert missing.stderr.strip().splitlines()[-1].startswith(f'error: --data_dir={tmp_path / "nowhere"} does not exist')


@pytest.mark.slow
def test_readme_is_rewritten_only_with_update_readme(tmp_path):
  folder = write_image_folder(tmp_path / 'images', train_per_class=8, test_per_class=2)
  readme = tmp_path / 'README.md'
  readme.write_text('# Benchmarks\n\nText kept as it is.\n')
  run_module('benchmarks.throughput', '--models=', '--epoch_steps=1', '--warmup=1', f'--data_dir={folder}',
             '--num_val_examples=8', '--batch_size=8', f'--out_dir={tmp_path / "results"}', f'--readme={readme}',
             check=True)
  assert readme.read_text() == '# Benchmarks\n\nText kept as it is.\n'
  assert (tmp_path / 'results' / 'cpu.json').exists()


def benchmark_commands():
  """Every module of benchmarks/ that runs as a command (`python -m benchmarks.NAME`)."""
  folder = os.path.join(REPO, 'benchmarks')
  return sorted(name[:-3] for name in os.listdir(folder)
                if name.endswith('.py') and "if __name__ == '__main__':" in open(os.path.join(folder, name)).read())


@pytest.mark.slow
def test_every_benchmarks_command_answers_help_with_exit_0():
  commands = benchmark_commands()
  assert {'throughput', 'population', 'report', 'conv_layers'} <= set(commands)
  for command in commands:
    result = run_module(f'benchmarks.{command}', '--help')
    assert result.returncode == 0, (command, result.stderr[-2000:])
    assert 'usage' in (result.stdout + result.stderr).lower() or 'python -m benchmarks.' in result.stdout, command


@pytest.mark.slow
def test_report_renders_every_results_file_or_names_the_one_it_skips(tmp_path):
  committed = os.path.join(REPO, 'benchmarks', 'results')
  results = tmp_path / 'results'
  (results / 'layers').mkdir(parents=True)
  for name in ('cpu.json', 'population_cpu.json', os.path.join('layers', 'cpu.json')):
    (results / name).write_text(open(os.path.join(committed, name)).read())
  (results / 'notes.json').write_text('{"comment": "not a results file"}')
  (results / 'broken.json').write_text('{"device": ')
  readme = tmp_path / 'README.md'
  readme.write_text('# Benchmarks\n')
  result = run_module('benchmarks.report', f'--readme={readme}', f'--results_dir={results}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  text = readme.read_text()
  for name in ('cpu.json', 'population_cpu.json', 'layers/cpu.json'):
    assert f'(`results/{name}`)' in text, name
  assert '| resnet20 | fp32 | ' in text  # The population table.
  skipped = [line for line in result.stderr.splitlines() if line.startswith('skipped')]
  assert skipped[0].startswith('skipped broken.json: not readable as JSON (')
  assert skipped[1:] == ['skipped notes.json: not a benchmarks.throughput or benchmarks.population results file']
  assert result.stdout.strip().endswith('(2 files skipped)')


@pytest.mark.slow
def test_the_committed_readme_is_what_report_renders_from_the_committed_results(tmp_path):
  readme = tmp_path / 'README.md'
  readme.write_text(open(os.path.join(REPO, 'benchmarks', 'README.md')).read())
  result = run_module('benchmarks.report', f'--readme={readme}', check=True)
  assert 'skipped' not in result.stderr
  assert readme.read_text() == open(os.path.join(REPO, 'benchmarks', 'README.md')).read()


def module_names(name):
  """The names a jaxresnet module defines or imports at its top level, read from its source, not imported:
  jaxresnet.peer needs torch, which the suite's environment may lack."""
  import ast  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec(name)
  names = set()
  for node in ast.parse(open(spec.origin).read()).body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      names.add(node.name)
    elif isinstance(node, (ast.Assign, ast.AnnAssign)):
      for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
        names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      names.update((alias.asname or alias.name).split('.')[0] for alias in node.names)
  if spec.submodule_search_locations:  # A package: its submodules are names too.
    for folder in spec.submodule_search_locations:
      names.update(entry[:-3] if entry.endswith('.py') else entry for entry in os.listdir(folder)
                   if entry.endswith('.py') or os.path.exists(os.path.join(folder, entry, '__init__.py')))
  return names


def is_package(name):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec(name)
  return spec is not None and spec.submodule_search_locations is not None


def test_benchmarks_use_only_public_names_of_jaxresnet():
  """benchmarks/ sits outside the package: it may use what jaxresnet's modules export, nothing private."""
  import ast  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  problems = []
  for command in sorted(os.listdir(os.path.join(REPO, 'benchmarks'))):
    if not command.endswith('.py'):
      continue
    path = os.path.join(REPO, 'benchmarks', command)
    tree = ast.parse(open(path).read())
    aliases = {}  # Local name -> jaxresnet module name.
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('jaxresnet'):
        names = module_names(node.module)
        for alias in node.names:
          submodule = f'{node.module}.{alias.name}'
          if (is_package(node.module) and not alias.name.startswith('_')
              and importlib.util.find_spec(submodule) is not None):
            aliases[alias.asname or alias.name] = submodule
          elif alias.name.startswith('_') or alias.name not in names:
            problems.append(f'{command}: from {node.module} import {alias.name}')
      elif isinstance(node, ast.Import):
        for alias in node.names:
          if alias.name.startswith('jaxresnet') and alias.asname:
            aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
      if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
        module = aliases[node.value.id]
        if node.attr.startswith('_') or node.attr not in module_names(module):
          problems.append(f'{command}: {module}.{node.attr}')
  assert not problems
