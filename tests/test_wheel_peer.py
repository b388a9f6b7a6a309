"""The product ships what it runs: `reproduce --peer` from the built wheel, outside the checkout.

The wheel is built from a copy of the package's sources (pip wheel, no build
isolation, so nothing is downloaded) and installed without dependencies into a
fresh venv that borrows jax, torch and the rest from this environment. From a
directory outside the checkout, `python -m jaxresnet.reproduce --peer` then
trains a few steps of ResNet-8 on a tiny image folder, jaxresnet's run and the
peer's; with torch hidden it says in one line what to install.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from conftest import REPO, write_image_folder

pytestmark = pytest.mark.slow  # every test here spawns processes

SOURCES = ('pyproject.toml', 'README.md', 'LICENSE', 'jaxresnet', 'configs')
# Hides torch as an environment without it would: `import torch` raises ImportError.
WITHOUT_TORCH = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = ['reproduce'] + sys.argv[1:]; "
                 "runpy.run_module('jaxresnet.reproduce', run_name='__main__', alter_sys=True)")


def run(args, cwd, timeout=300):
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV')}
  env.update(PYTHONUNBUFFERED='1', TF_CPP_MIN_LOG_LEVEL='3', OMP_NUM_THREADS='1')
  return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
  """(python, wheel): a venv's interpreter with only the jaxresnet wheel installed in it, and the wheel."""
  root = tmp_path_factory.mktemp('wheel')
  source = root / 'source'  # A copy: building in the checkout would leave build/ and *.egg-info there.
  os.makedirs(source)
  for name in SOURCES:
    path = os.path.join(REPO, name)
    if os.path.isdir(path):
      shutil.copytree(path, source / name, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    elif os.path.exists(path):
      shutil.copy(path, source / name)
  built = run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w',
               str(root / 'dist'), str(source)], cwd=root)
  assert built.returncode == 0, built.stderr
  (wheel,) = (root / 'dist').glob('jaxresnet-*.whl')
  venv = root / 'venv'
  made = run([sys.executable, '-m', 'venv', '--system-site-packages', '--without-pip', str(venv)], cwd=root)
  assert made.returncode == 0, made.stderr
  python = str(venv / 'bin' / 'python')
  # This pip installs into the new venv (--python): the wheel alone, before the venv can see this environment.
  done = run([sys.executable, '-m', 'pip', '--python', python, 'install', '--no-deps', '-q', str(wheel)], cwd=root)
  assert done.returncode == 0, done.stderr
  if sys.prefix != sys.base_prefix:
    # This environment is itself a venv, whose packages --system-site-packages does not reach: a .pth line
    # puts them after the new venv's own (a path, not a site dir: its editable jaxresnet is not loaded).
    site = run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], cwd=root).stdout.strip()
    with open(os.path.join(site, 'borrowed_packages.pth'), 'w') as f:
      f.write(sysconfig.get_paths()['purelib'] + '\n')
  return python, wheel


def test_the_wheel_holds_the_peer_and_no_benchmarks(installed):
  python, wheel = installed
  names = zipfile.ZipFile(wheel).namelist()
  assert {'jaxresnet/peer/trainer.py', 'jaxresnet/peer/nets.py', 'jaxresnet/experiments/reproduction.py',
          'jaxresnet/infra/rundir.py', 'jaxresnet/configs/resnet20.py'} <= set(names)
  assert not [n for n in names if n.startswith(('benchmarks/', 'tests/'))]
  where = run([python, '-c', 'import jaxresnet; print(jaxresnet.__file__)'], cwd=os.path.dirname(python))
  assert where.returncode == 0, where.stderr
  assert where.stdout.strip().startswith(os.path.dirname(os.path.dirname(python)))  # The wheel's, not the checkout's.


def test_reproduce_peer_from_the_wheel_outside_the_checkout(installed, tmp_path):
  pytest.importorskip('torch', reason="the PyTorch peer needs torch: pip install 'jaxresnet[peer]'")
  python, _ = installed
  folder = write_image_folder(tmp_path / 'images')
  args = ['--models=resnet8', '--seeds=1', '--steps_scale=0.0001', '--dataset=image_folder', f'--data_dir={folder}',
          '--batch_size=8', '--eval_batch_size=8', '--num_val_examples=8', '--eval_every_steps=3',
          '--log_every_steps=2', '--checkpoint_every_steps=3', '--peer']
  workdir = tmp_path / 'he2016'
  result = run([python, '-m', 'jaxresnet.reproduce', f'--workdir={workdir}', *args], cwd=tmp_path)
  assert result.returncode == 0, result.stdout + result.stderr
  assert '[2/2] resnet8 seed 0 peer: training' in result.stdout
  peer = json.load(open(workdir / 'resnet8' / 'peer_seed0' / 'results.json'))
  ours = json.load(open(workdir / 'resnet8' / 'seed0' / 'results.json'))
  assert (peer['trainer'], peer['step'], ours['step']) == ('pytorch', 6, 6)

  hidden = tmp_path / 'without_torch'
  missing = run([python, '-c', WITHOUT_TORCH, f'--workdir={hidden}', *args], cwd=tmp_path)
  assert missing.returncode == 1, missing.stdout + missing.stderr
  assert missing.stderr.strip().splitlines() == [
      "error: the PyTorch peer needs torch: pip install 'jaxresnet[peer]' (from a checkout: pip install -e '.[peer]')"]
  assert not hidden.exists()  # Said before anything was written.


def test_the_license_file_is_the_license_pyproject_declares():
  """pyproject.toml declares Apache-2.0, and the wheel's sources (SOURCES) take LICENSE from the checkout."""
  with open(os.path.join(REPO, 'pyproject.toml')) as f:
    assert 'license = { text = "Apache-2.0" }' in f.read()
  with open(os.path.join(REPO, 'LICENSE')) as f:
    text = f.read()
  assert 'Apache License' in text and 'Version 2.0, January 2004' in text
  assert 'END OF TERMS AND CONDITIONS' in text
