"""Runs notebooks/colab_tpu.ipynb's code as written, with tiny settings, on CPU.

Shell (`!`) and magic (`%`) lines need IPython and would install from the
network, so they become `pass`; everything else runs unchanged, in order, in
one namespace, with the parameters cell's values replaced after it runs.
"""
import contextlib
import io
import json
import os
import re

from PIL import Image

from jaxresnet import plot

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
  assert '!pip install -q "jaxresnet[tpu] @ git+{REPO_URL}"' in install
  defaults = {}
  exec(python_of(code[1]), defaults)  # pylint: disable=exec-used
  # As written it trains the paper's ResNet-20 on TFDS cifar10 for the full 64k iterations.
  assert (defaults['MODEL'], defaults['DATASET'], defaults['STEPS_SCALE'], defaults['OVERRIDES']) == (
      'resnet20', 'cifar10', 1.0, {})


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
    assert image.size == (int(plot.FIGSIZE[0] * plot.DEFAULT_DPI), int(plot.FIGSIZE[1] * plot.DEFAULT_DPI))
  assert f'ResNet-8: test error {100 * results["test_error"]:.2f}%' in output
  assert f'after 6 iterations on {results["devices"]}' in output
