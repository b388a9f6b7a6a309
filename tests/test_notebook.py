"""Runs notebooks/colab_tpu.ipynb's code as written, with tiny settings, on CPU.

Shell (`!`) and magic (`%`) lines need IPython and would install from the
network, so they become `pass`; everything else runs unchanged, in order, in
one namespace, with the parameters cell's values replaced after it runs.
"""
import contextlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import zipfile

from PIL import Image
import pytest

from conftest import REPO
from jaxresnet.experiments import curves

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'notebooks',
                        'colab_tpu.ipynb')


def load_notebook():
  with open(NOTEBOOK) as f:
    return json.load(f)


def python_of(cell) -> str:
  """The cell's code with IPython-only lines replaced by `pass` at the same indentation."""
  return ''.join(re.sub(r'^(\s*)[!%].*$', r'\1pass', line.rstrip('\n')) + '\n' for line in cell['source'])


def test_notebook_is_a_clean_nbformat_4_notebook_with_a_parameters_cell():
  notebook = load_notebook()
  assert notebook['nbformat'] == 4 and notebook['metadata']['accelerator'] == 'TPU'
  code = [c for c in notebook['cells'] if c['cell_type'] == 'code']
  assert all(c['outputs'] == [] and c['execution_count'] is None for c in code)  # Committed unexecuted.
  assert [c for c in code if 'parameters' in c['metadata'].get('tags', [])] == [code[1]]
  install = ''.join(code[0]['source'])
  assert '  !pip install -q "{REQUIREMENT}"' in install
  defaults = {}
  exec(python_of(code[1]), defaults)  # pylint: disable=exec-used
  # As written it trains the paper's ResNet-20 on TFDS cifar10 for the full 64k iterations.
  assert (defaults['MODEL'], defaults['DATASET'], defaults['STEPS_SCALE'], defaults['OVERRIDES']) == (
      'resnet20', 'cifar10', 1.0, {})


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_with_tiny_settings(image_folder, tmp_path):
  workdir = str(tmp_path / 'run')
  tiny = {'MODEL': 'resnet8', 'DATASET': 'image_folder', 'DATA_DIR': image_folder, 'STEPS_SCALE': 0.0001,
          'WORKDIR': workdir,
          'OVERRIDES': {'batch_size': 8, 'eval_batch_size': 8, 'num_val_examples': 8, 'eval_every_steps': 3,
                        'checkpoint_every_steps': 3}}
  namespace = {}
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    for cell in load_notebook()['cells']:
      if cell['cell_type'] != 'code':
        continue
      exec(compile(python_of(cell), NOTEBOOK, 'exec'), namespace)  # pylint: disable=exec-used
      if 'parameters' in cell['metadata'].get('tags', []):
        namespace.update(tiny)
  output = stdout.getvalue()

  results = json.load(open(os.path.join(workdir, 'results.json')))
  assert results['model'] == 'resnet8' and results['step'] == 6  # 64000 * 0.0001 steps.
  assert namespace['summary']['test_error'] == results['test_error']
  with Image.open(os.path.join(workdir, 'curves.png')) as image:
    assert image.size == (int(curves.FIGSIZE[0] * curves.DEFAULT_DPI), int(curves.FIGSIZE[1] * curves.DEFAULT_DPI))
  assert f'ResNet-8: test error {100 * results["test_error"]:.2f}%' in output
  assert f'after 6 iterations on {results["devices"]}' in output


BADGE = ('[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]'
         '(https://colab.research.google.com/github/<OWNER>/jaxresnet/blob/main/notebooks/colab_tpu.ipynb)')


def test_notebook_has_a_colab_badge_template_with_its_placeholder_explained():
  intro = ''.join(load_notebook()['cells'][0]['source'])
  first_line = intro.splitlines()[0]  # What to edit, before anyone clicks the badge (issue 35).
  assert first_line.startswith('**Edit one word before the first click: `<OWNER>` in the badge below'), first_line
  assert BADGE in intro.splitlines()
  assert 'replace `<OWNER>` with the GitHub user' in ' '.join(intro.split())
  assert os.path.basename(NOTEBOOK) in BADGE  # The link names this very file.


def install_cell(**values) -> str:
  """The install cell's code, with the marked settings (REPO_URL, REPO_ZIP, ACCELERATOR) set to `values`."""
  code = python_of([c for c in load_notebook()['cells'] if c['cell_type'] == 'code'][0])
  marked = code.split('# ====')[1]  # Between the two marker lines.
  for name, value in values.items():
    line = re.search(rf'^{name} = .*$', marked, flags=re.M)
    assert line, f'{name} is not among the marked settings'
    code = code.replace(line.group(0), f'{name} = {value!r}')
  return code


def run_install_cell(monkeypatch, **values) -> dict:
  """Runs the install cell as on a fresh runtime (jaxresnet not importable); returns its variables."""
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == 'jaxresnet' else real_find_spec(name, *a))
  namespace = {}
  exec(install_cell(**values), namespace)  # pylint: disable=exec-used
  return namespace


def github_zip(path) -> str:
  """A zip of the repository's tracked files under one top folder, as GitHub's Download ZIP makes it."""
  files = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO, capture_output=True, check=True).stdout
  with zipfile.ZipFile(path, 'w') as archive:
    for name in filter(None, files.decode().split('\0')):
      if os.path.isfile(os.path.join(REPO, name)):
        archive.write(os.path.join(REPO, name), f'jaxresnet-main/{name}')
  return str(path)


@pytest.mark.slow
def test_notebook_install_cell_takes_a_fork_url_or_an_uploaded_zip(tmp_path, monkeypatch):
  # As committed, with the placeholder, it stops with what to set instead of a failing pip.
  with pytest.raises(ValueError, match="Set REPO_URL .*'https://github.com/<user>/jaxresnet'.* or REPO_ZIP"):
    run_install_cell(monkeypatch)
  fork = run_install_cell(monkeypatch, REPO_URL='https://github.com/someone/jaxresnet')
  assert fork['REQUIREMENT'].startswith('jaxresnet[tpu') and fork['REQUIREMENT'].endswith(
      ' @ git+https://github.com/someone/jaxresnet')
  with pytest.raises(FileNotFoundError, match='REPO_ZIP: there is no file'):
    run_install_cell(monkeypatch, REPO_ZIP=str(tmp_path / 'missing.zip'))
  archive = github_zip(tmp_path / 'jaxresnet-main.zip')
  uploaded = run_install_cell(monkeypatch, REPO_ZIP=archive, ACCELERATOR='')
  assert uploaded['REQUIREMENT'].endswith(f' @ file://{archive}')
  # Nothing is installed where jaxresnet can be imported already, whatever the settings.
  monkeypatch.undo()
  namespace = {}
  exec(install_cell(REPO_ZIP=str(tmp_path / 'missing.zip')), namespace)  # pylint: disable=exec-used
  assert namespace['REQUIREMENT'] is None


def requirement_of():
  """The install cell's decision function, from the cell as committed (here jaxresnet is importable: no install)."""
  namespace = {}
  exec(install_cell(), namespace)  # pylint: disable=exec-used
  assert namespace['REQUIREMENT'] is None
  return namespace['jaxresnet_requirement']


def runtime(*modules):
  """A fake runtime in which exactly `modules` can be imported."""
  return lambda name: name in modules


def test_notebook_installs_tfds_only_where_the_runtime_lacks_tensorflow_or_tfds():
  decide, url = requirement_of(), 'https://github.com/someone/jaxresnet'
  colab = runtime('tensorflow', 'tensorflow_datasets')  # What Colab's images have had preinstalled.
  assert decide(url, '', 'tpu', colab) == f'jaxresnet[tpu] @ git+{url}'
  assert decide(url, '', 'tpu', runtime('tensorflow')) == f'jaxresnet[tpu,tfds] @ git+{url}'
  assert decide(url, '', 'cuda12', runtime('tensorflow_datasets')) == f'jaxresnet[cuda12,tfds] @ git+{url}'
  assert decide(url, '', '', runtime()) == f'jaxresnet[tfds] @ git+{url}'
  assert decide(url, '', '', colab) == f'jaxresnet @ git+{url}'
  assert decide(url, '', 'tpu', runtime('jaxresnet')) is None  # A clone, or installed already.
  with pytest.raises(ValueError, match='not on PyPI'):
    decide('https://github.com/OWNER/jaxresnet', '', 'tpu', runtime())
  # That each of these resolves with pip is checked in tests/test_install_lines.py.


@pytest.mark.slow
def test_notebook_zip_route_builds_the_package_pip_would_install(tmp_path, monkeypatch):
  """The uploaded-zip requirement the cell hands to pip, built offline into a wheel."""
  pytest.importorskip('setuptools')
  archive = github_zip(tmp_path / 'jaxresnet-main.zip')
  requirement = run_install_cell(monkeypatch, REPO_ZIP=archive)['REQUIREMENT']
  subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '--no-index',
                  '--wheel-dir', str(tmp_path / 'wheels'), requirement], check=True, capture_output=True)
  (wheel,) = os.listdir(tmp_path / 'wheels')
  names = zipfile.ZipFile(tmp_path / 'wheels' / wheel).namelist()
  assert 'jaxresnet/reproduce.py' in names and 'jaxresnet/models/__main__.py' in names
  assert any(n.endswith('configs/resnet20.py') for n in names)  # The notebook's recipe travels with it.
