"""A short real run on CIFAR-10-JPEG through the CLI: it must learn, checkpoint, resume and evaluate."""
import json
import os

import pytest

from conftest import run_module

pytestmark = pytest.mark.slow  # every test here spawns processes

STEPS = 250


def test_a_resnet_learns_cifar10_jpeg(cifar10_jpeg, tmp_path):
  # ResNet-8 with ResNet-20's recipe: the same code path at a third of the cost (ResNet-20 took 4 min here).
  workdir = str(tmp_path / 'resnet8')
  args = ['--config=configs/resnet20.py', '--config.model=resnet8', f'--workdir={workdir}',
          '--config.dataset=image_folder',
          f'--config.data_dir={cifar10_jpeg}', '--config.eval_every_steps=0', '--config.log_every_steps=50',
          '--config.checkpoint_every_steps=100',
          # Decay lr late, so the final BatchNorm statistics and weights settle (the full recipe decays at 32k/48k).
          '--config.lr_boundaries=(150,225)']
  first = run_module('jaxresnet.main', *args, f'--config.num_train_steps={STEPS - 50}', check=True)
  assert 'resnet8: 75,290 parameters' in first.stdout, first.stdout
  # Extending the run resumes from the step-200 checkpoint (the step schedule does not depend on the length).
  second = run_module('jaxresnet.main', *args, f'--config.num_train_steps={STEPS}', check=True)
  assert f'resumed from checkpoint at step {STEPS - 50}' in second.stdout
  results = json.load(open(os.path.join(workdir, 'results.json')))
  print(f'ResNet-8, {STEPS} steps of batch 128 on CIFAR-10-JPEG: test accuracy {results["test_accuracy"]:.4f}, '
        f'val accuracy {results["val_accuracy"]:.4f}')
  assert results['step'] == STEPS
  assert results['test_accuracy'] > 0.35, results  # Chance is 0.10.
  assert results['val_accuracy'] > 0.35, results
  evaluated = run_module('jaxresnet.evaluate', f'--workdir={workdir}', check=True)
  assert f'accuracy {100 * results["test_accuracy"]:.2f}%' in evaluated.stdout
