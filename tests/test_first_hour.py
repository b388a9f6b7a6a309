"""A new user's first hour (issue 15): fail fast without network, show decoding progress, list the zoo.

Nothing here reaches outside the machine: the TFDS download probe is pointed
at a closed local port, or its connection is replaced by one that never answers.
"""
import io
import os
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import pytest

from conftest import REPO, run_module
from jaxresnet import data, models
from jaxresnet.infra.errors import DataError


def closed_port() -> int:
  """A local TCP port nothing listens on: connecting to it is refused at once."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def assert_names_the_image_folder_fix(message):
  assert '\n' not in message
  assert '--config.dataset=image_folder --config.data_dir=' in message
  assert 'train/<class>/*.jpg' in message and 'test/<class>/*.jpg' in message and '.tar.gz' in message
  assert "README's Data section" in message


def test_tfds_without_network_fails_in_seconds_naming_the_image_folder_fix(tmp_path, monkeypatch):
  pytest.importorskip('tensorflow_datasets')
  monkeypatch.setenv('JAXRESNET_DOWNLOAD_PROBE', f'127.0.0.1:{closed_port()}')
  start = time.monotonic()
  with pytest.raises(DataError) as error:
    data.load_arrays('cifar10', str(tmp_path / 'tfds'), str(tmp_path / 'cache'))
  assert time.monotonic() - start < 8  # ~0.3 s idle; TFDS's own retries took 209 s. Slack for a loaded machine.
  message = str(error.value)
  assert message.startswith("cannot download TFDS dataset 'cifar10'") and 'tfds' in message
  assert_names_the_image_folder_fix(message)
  assert not os.path.exists(tmp_path / 'tfds' / 'downloads')  # TFDS's download never started.


def test_a_prepared_tfds_copy_is_read_without_probing_the_network(tmp_path, monkeypatch):
  tfds = pytest.importorskip('tensorflow_datasets')
  builder = tfds.builder('cifar10', data_dir=str(tmp_path / 'tfds'))
  os.makedirs(builder.data_dir)  # What TFDS itself checks before downloading (here an empty, broken copy).
  monkeypatch.setattr(data.tfds, 'can_connect', lambda *a: pytest.fail('probed although a copy is prepared'))
  with pytest.raises(DataError) as error:
    data.read_tfds('cifar10', str(tmp_path / 'tfds'))
  assert str(error.value).startswith("cannot load TFDS dataset 'cifar10': ")  # TFDS's own complaint.


def test_download_probe_gives_up_after_its_timeout_on_a_host_that_never_answers(monkeypatch):
  def never_answers(address, timeout=None):
    del address, timeout
    time.sleep(30)  # In a daemon thread that the probe stops waiting for.
    raise TimeoutError('timed out')  # What a connection that never opens ends in.
  monkeypatch.setattr(socket, 'create_connection', never_answers)
  start = time.monotonic()
  assert not data.can_connect('192.0.2.1', 443, timeout=0.5)
  assert time.monotonic() - start < 2


def test_download_probe_address_override_proxy_and_dataset_host(monkeypatch):
  for var in ('JAXRESNET_DOWNLOAD_PROBE', 'https_proxy', 'HTTPS_PROXY'):
    monkeypatch.delenv(var, raising=False)
  assert data.download_probe_address('https://www.cs.toronto.edu/~kriz/cifar.html') == ('www.cs.toronto.edu', 443)
  assert data.download_probe_address('') == ('www.cs.toronto.edu', 443)
  monkeypatch.setenv('HTTPS_PROXY', 'http://proxy.internal:3128')
  assert data.download_probe_address('https://example.org/') == ('proxy.internal', 3128)
  monkeypatch.setenv('JAXRESNET_DOWNLOAD_PROBE', '127.0.0.1:9')
  assert data.download_probe_address('https://example.org/') == ('127.0.0.1', 9)


@pytest.mark.slow
def test_main_without_network_is_one_error_line_within_seconds(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  start = time.monotonic()
  result = run_module('jaxresnet.main', '--config=configs/resnet20.py', f'--workdir={tmp_path / "run"}',
                      f'--config.data_dir={tmp_path / "tfds"}',
                      env={'JAXRESNET_DOWNLOAD_PROBE': f'127.0.0.1:{closed_port()}'}, timeout=120)
  elapsed = time.monotonic() - start
  assert result.returncode == 1, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: cannot download TFDS dataset 'cifar10'"), result.stderr
  assert_names_the_image_folder_fix(lines[0])
  assert elapsed < 30  # Python, JAX and TFDS start-up included; TFDS's own retries took 209 s.


def test_decoding_prints_a_progress_line_every_few_seconds_without_a_terminal(image_folder, tmp_path,
                                                                             monkeypatch, capsys):
  monkeypatch.setenv('JAXRESNET_PROGRESS_EVERY_S', '0')  # Every image, so a tiny folder shows lines.
  data.load_arrays('image_folder', image_folder, str(tmp_path / 'cache'))
  lines = capsys.readouterr().err.splitlines()
  assert lines[:2] == ['decoding train: 1/48 images', 'decoding train: 2/48 images']
  assert 'decoding train: 48/48 images' in lines and lines[-1] == 'decoding test: 12/12 images'
  assert not [l for l in lines if not l.startswith(('decoding train: ', 'decoding test: '))]


def test_an_archive_shows_unpacking_and_decoding_progress(image_folder, tmp_path, monkeypatch, capsys):
  import tarfile  # pylint: disable=g-import-not-at-top
  archive = tmp_path / 'images.tar.gz'
  with tarfile.open(archive, 'w:gz') as tar:
    tar.add(image_folder, arcname='images')
  monkeypatch.setenv('JAXRESNET_PROGRESS_EVERY_S', '0')
  data.load_arrays('image_folder', str(archive), str(tmp_path / 'cache'))
  lines = capsys.readouterr().err.splitlines()
  # 60 images, 3 class folders per split, 2 split folders and the root.
  assert lines[0] == 'unpacking images.tar.gz: 1 files' and 'unpacking images.tar.gz: 69 files' in lines
  assert lines[-1] == 'decoding test: 12/12 images'


def test_a_progress_line_is_written_whole_so_ctrl_c_cannot_split_it(monkeypatch):
  # print() writes the text and its newline in two writes: a Ctrl-C between them left
  # "decoding train: 7/48 imagesstopped by SIGINT (Ctrl-C)" on one line (CI, loaded 2-core machine).
  class Writes(io.StringIO):
    def __init__(self):
      super().__init__()
      self.writes = []

    def write(self, text):
      self.writes.append(text)
      return super().write(text)

  monkeypatch.setenv('JAXRESNET_PROGRESS_EVERY_S', '0')
  stream = Writes()
  progress = data.Progress('decoding train', 2, stream=stream)
  progress.update()
  progress.update()
  progress.close()
  assert stream.writes == ['decoding train: 1/2 images\n', 'decoding train: 2/2 images\n',
                           'decoding train: 2/2 images\n']


def test_a_short_decode_prints_nothing_and_a_terminal_gets_a_tqdm_bar(image_folder, tmp_path, capsys):
  data.load_arrays('image_folder', image_folder, str(tmp_path / 'cache'))  # Well under 5 s.
  assert capsys.readouterr().err == ''

  class Terminal(io.StringIO):
    def isatty(self):
      return True

  terminal = Terminal()
  progress = data.Progress('decoding train', 3, stream=terminal)
  for _ in range(3):
    progress.update()
  assert progress.bar is not None and progress.bar.n == 3
  progress.close()
  drawn = terminal.getvalue()
  assert drawn.startswith('\rdecoding train:   0%|') and '0/3' in drawn  # A bar redrawn in place, not lines.
  assert 'decoding train: 3/3 images\n' not in drawn


@pytest.mark.slow
def test_models_command_lists_the_zoo_with_params_macs_and_config():
  result = run_module('jaxresnet.models', check=True, timeout=300)
  lines = result.stdout.splitlines()
  assert lines[0].split() == ['model', 'parameters', 'multiply-adds', 'config']
  rows = {line.split()[0]: line.split()[1:] for line in lines[1:len(models.MODELS) + 1]}
  assert list(rows) == list(models.MODELS)  # Every model, in the zoo's order.
  # The paper's ResNet-20 (0.27M parameters) and ResNet-18's hand-checked counts (tests/test_zoo.py).
  assert rows['resnet20'] == ['269,722', '40.6M', 'configs/resnet20.py']
  assert rows['resnet18'] == ['11,173,962', '555M', 'configs/resnet18.py']
  assert rows['resnet1202'][:2] == ['19,421,274', '2.83G']
  for name, (_, _, config) in rows.items():  # A config is named exactly when the repository has one.
    recipe = models.RECIPE_NAMES.get(name, name)
    assert (config != '-') == os.path.isfile(os.path.join(REPO, 'configs', f'{recipe}.py')), name
  assert rows['whitened_vgg'][2] == 'configs/fast94.py'
  assert rows['resnet8'][2] == '-' and lines[-1].startswith('-: no recipe of its own')
  assert '--config=configs/default.py' in lines[-1]


@pytest.mark.slow
def test_models_command_outside_the_checkout_prints_config_paths_that_exist_there(tmp_path):
  """A wheel user's cwd has no configs/: the paths printed are the installed jaxresnet.configs files."""
  result = subprocess.run([sys.executable, '-m', 'jaxresnet.models', 'resnet20', 'resnet8'], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=True)
  lines = result.stdout.splitlines()
  resnet20_config = lines[1].split()[-1]
  from jaxresnet.configs import resnet20, default  # pylint: disable=g-import-not-at-top
  assert os.path.isfile(os.path.join(tmp_path, resnet20_config))
  assert os.path.samefile(os.path.join(tmp_path, resnet20_config), resnet20.__file__)
  assert lines[-1].startswith('-: no recipe of its own') and f'--config={default.__file__}' in lines[-1]


@pytest.mark.slow
def test_models_command_help_and_unknown_name():
  result = run_module('jaxresnet.models', '--help')
  assert result.returncode == 0 and 'usage: python -m jaxresnet.models' in result.stdout
  result = run_module('jaxresnet.models', 'resnet20', 'resnet7')
  assert result.returncode == 1 and result.stdout == ''
  assert result.stderr.strip().splitlines() == [
      f"error: unknown model 'resnet7'; did you mean 'resnet8'? (known models: {', '.join(sorted(models.MODELS))})"]


def test_one_trace_counts_agree_with_a_separate_init():
  for name in ('resnet8', 'resnet50_5m', 'cnn_small'):
    model = models.get_model(name)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False))
    params, macs = models.count_params_and_macs(model)
    assert params == models.count_params(variables['params'])
    assert macs == models.count_macs(model) > 0
  # A 64x64 image costs four times the multiply-adds of the convs (the dense layer stays the same).
  _, small = models.count_params_and_macs(models.get_model('resnet8'))
  _, large = models.count_params_and_macs(models.get_model('resnet8'), (64, 64, 3))
  assert large - 64 * 10 == 4 * (small - 64 * 10)
