"""The PyTorch peer (jaxresnet.peer) and how reproduce and report show it beside jaxresnet.

The peer must be the same problem solved by other code: the same parameter
and multiply-add counts, the same learning rate at every step, the same SGD
update, the same augmentation distribution, and files the report reads like
jaxresnet's. Tests that run torch skip without it (CI installs only .[test]);
the report tests write their run files by hand and need no torch.
"""
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_module, tiny_config
from float32_tolerance import sum_atol
from test_rundir import snapshot
from jaxresnet import models
from jaxresnet.training import optim
from jaxresnet.experiments import curves as plot
from jaxresnet.experiments import reproduction
from jaxresnet.experiments import tables
from jaxresnet.infra import config as config_lib
from jaxresnet.infra import rundir
from jaxresnet.infra.errors import ConfigError, DataError, WorkdirBusyError


# One torch thread: on a loaded 2-core machine torch's OpenMP threads slow down several-fold (benchmarks/README.md).
ONE_THREAD = {'OMP_NUM_THREADS': '1'}


@pytest.fixture
def peer():
  torch = pytest.importorskip('torch', reason="the PyTorch peer needs torch: pip install 'jaxresnet[peer]'")
  from jaxresnet.peer import trainer as torch_peer  # pylint: disable=g-import-not-at-top
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield torch_peer
  torch.set_num_threads(threads)


def jax_counts(name, **kwargs):
  model = models.get_model(name, **kwargs)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
  return models.count_params(variables['params']), models.count_macs(model)


# --------------------------------------------------------------------------
# The net.


@pytest.mark.parametrize('name,shortcut,padding', [
    ('resnet20', 'A', 'symmetric'), ('resnet20', 'A', 'same'), ('plain20', 'A', 'symmetric'),
    ('resnet8', 'B', 'same'), ('resnet56', 'A', 'symmetric'),
])
def test_peer_nets_have_jaxresnet_parameter_and_mac_counts(peer, name, shortcut, padding):
  config = reproduction.run_config(name, shortcut=shortcut)
  net = peer.build_net(peer.peer_config(config, padding), num_classes=10)
  assert (peer.count_params(net), peer.count_macs(net, (32, 32, 3))) == jax_counts(name, shortcut=shortcut)
  if (name, shortcut) == ('resnet20', 'A'):
    assert peer.count_params(net) == 269_722


def test_same_padding_is_flax_same_and_symmetric_is_pytorchs(peer):
  import torch  # pylint: disable=g-import-not-at-top
  from jaxresnet.peer import nets as torch_resnet  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  x = torch.randn(2, 16, 32, 32)
  same, symmetric = torch_resnet._conv3x3(16, 32, 2, 'same'), torch_resnet._conv3x3(16, 32, 2, 'symmetric')
  symmetric.weight.data.copy_(same.weight.data)
  kernel = jnp.asarray(same.weight.detach().numpy().transpose(2, 3, 1, 0))  # OIHW -> HWIO
  lhs = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
  flax_like = lambda pad: np.asarray(jax.lax.conv_general_dilated(
      lhs, kernel, (2, 2), pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))).transpose(0, 3, 1, 2)
  # Each output sums 3*3*16 products, in torch's order and in XLA's: float32 reassociation bound.
  abs_terms = np.asarray(jax.lax.conv_general_dilated(jnp.abs(lhs), jnp.abs(kernel), (2, 2), ((1, 1), (1, 1)),
                                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
  atol = sum_atol(3 * 3 * 16 + 2, abs_terms)
  with torch.no_grad():
    np.testing.assert_allclose(same(x).numpy(), flax_like('SAME'), rtol=0, atol=atol)
    np.testing.assert_allclose(same(x).numpy(), flax_like(((0, 1), (0, 1))), rtol=0, atol=atol)
    np.testing.assert_allclose(symmetric(x).numpy(), flax_like(((1, 1), (1, 1))), rtol=0, atol=atol)
    assert not np.allclose(symmetric(x).numpy(), flax_like('SAME'), atol=1e-2)
  # Stride 1 pads (1, 1) either way: a plain Conv2d.
  assert type(torch_resnet._conv3x3(16, 16, 1, 'same')) is torch.nn.Conv2d


# --------------------------------------------------------------------------
# The recipe: schedule, SGD, augmentation.


def _schedule_configs():
  cosine = reproduction.run_config('resnet20', num_train_steps=1000)
  cosine.update(schedule='cosine', warmup_steps=100, warmup='linear', warmup_lr=0.01)
  epochs = reproduction.run_config('resnet20', num_train_steps=2000)
  epochs.update(lr_boundaries=('2 epochs', '3.5 epochs', '3.501 epochs'))  # The last two round together.
  fraction = reproduction.run_config('resnet20', num_train_steps=999)
  fraction.update(lr_boundaries=('50%', '75%'), lr_decay_factor=0.2)
  constant = reproduction.run_config('resnet20', num_train_steps=300)
  constant.update(schedule='constant', warmup_steps=50)
  return {'resnet20': reproduction.run_config('resnet20'), 'resnet110': reproduction.run_config('resnet110'),
          'resnet110_scaled': reproduction.run_config('resnet110', steps_scale=0.05), 'cosine': cosine,
          'epochs': epochs, 'fraction': fraction, 'constant': constant}


@pytest.mark.parametrize('name', list(_schedule_configs()))
def test_learning_rates_match_jaxresnet_optim_at_every_step(peer, name):
  config = _schedule_configs()[name]
  steps_per_epoch = 45_000 // config.batch_size
  rates = peer.learning_rates(config, steps_per_epoch, config.num_train_steps)
  schedule = optim.create_learning_rate_schedule(config, steps_per_epoch, config.num_train_steps)
  expected = np.asarray(jax.vmap(schedule)(jnp.arange(config.num_train_steps)))
  # Optax computes in float32: a few roundings (cos, products, 1 + cos) of the peak rate, not of the current one.
  np.testing.assert_allclose(rates, expected, rtol=1e-5, atol=sum_atol(8, np.max(np.abs(expected))))
  if name == 'resnet110':  # The paper's recipe, spelled out at the steps where it changes.
    assert [rates[s] for s in (0, 399, 400, 31999, 32000, 48000, 63999)] == pytest.approx(
        [0.01, 0.01, 0.1, 0.1, 0.01, 0.001, 0.001])


@pytest.mark.parametrize('momentum,nesterov,decay_type', [
    (0.9, False, 'l2'), (0.9, True, 'l2'), (0.9, False, 'decoupled'), (0.0, False, 'l2')])
def test_sgd_update_matches_jaxresnet_optax_optimizer(peer, momentum, nesterov, decay_type):
  import torch  # pylint: disable=g-import-not-at-top
  config = reproduction.run_config('resnet20', momentum=momentum, nesterov=nesterov, weight_decay=1e-2,
                                weight_decay_type=decay_type)
  rates = [0.1, 0.05, 0.02]
  rng = np.random.default_rng(0)
  params = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(5,)).astype(np.float32)]
  grads = [[rng.normal(size=p.shape).astype(np.float32) for p in params] for _ in rates]

  tx = optim.create_optimizer(config, lambda count: jnp.asarray(rates)[count])
  jax_params = [jnp.asarray(p) for p in params]
  state = tx.init(jax_params)
  torch_params = [torch.nn.Parameter(torch.tensor(p)) for p in params]
  sgd = peer.SGD(torch_params, config.momentum, config.nesterov, config.weight_decay,
                 config.weight_decay_type == 'decoupled', torch.device('cpu'))
  for rate, g in zip(rates, grads):
    updates, state = tx.update([jnp.asarray(x) for x in g], state, jax_params)
    jax_params = [p + u for p, u in zip(jax_params, updates)]
    for p, x in zip(torch_params, g):
      p.grad = torch.tensor(x)
    sgd.learning_rate.fill_(rate)
    sgd.step()
  for ours, theirs in zip(torch_params, jax_params):
    np.testing.assert_allclose(ours.detach().numpy(), np.asarray(theirs), rtol=1e-5, atol=1e-6)


def test_augment_crops_and_flips_the_padded_images_and_is_seeded(peer):
  import torch  # pylint: disable=g-import-not-at-top
  images = torch.rand(2000, 8, 8, 3) + 1.0  # Distinct values, none equal to the padding's 0.
  draw = lambda seed: (torch.manual_seed(seed), peer.augment(images, pad=2))[1]
  out = draw(0)
  assert out.shape == images.shape and out.dtype == images.dtype
  assert torch.equal(out, draw(0)) and not torch.equal(out, draw(1))
  padded = torch.nn.functional.pad(images, (0, 0, 2, 2, 2, 2)).numpy()
  seen = []
  for i in range(len(images)):  # Each output is one of the 5x5 crops of its padded image, flipped or not.
    matches = [(dy, dx, flip) for dy in range(5) for dx in range(5) for flip in (False, True)
               if np.array_equal(out[i].numpy(), padded[i, dy:dy + 8, dx:dx + 8][:, ::-1] if flip
                                 else padded[i, dy:dy + 8, dx:dx + 8])]
    assert len(matches) == 1, (i, matches)
    seen.append(matches[0])
  assert len({(dy, dx) for dy, dx, _ in seen}) == 25  # Every offset occurs,
  assert abs(np.mean([flip for _, _, flip in seen]) - 0.5) < 0.05  # and about half are flipped.
  assert float(out.min()) == 0.0 and float(out.max()) <= 2.0  # Zeros only from the padding.


def test_the_cuda_graph_warm_up_steps_leave_no_trace(peer):
  """The GPU path trains 3 eager steps before capturing its graph, inside state_restored(); on a CPU here."""
  import torch  # pylint: disable=g-import-not-at-top
  config = peer.peer_config(reproduction.run_config('resnet8'))
  torch.manual_seed(0)
  net = peer.build_net(config, num_classes=10)
  optimizer = peer.make_optimizer(config, net, torch.device('cpu'))
  images, labels = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8), torch.randint(0, 10, (64,))
  step = peer.TrainStep(net, optimizer, images, labels, torch.full((32, 32, 3), 0.5), torch.ones(3), 32, True,
                        torch.device('cpu'))
  before = {k: v.clone() for k, v in net.state_dict().items()}
  rng = torch.get_rng_state()
  with step.state_restored():
    for start in (0, 32):
      step(torch.arange(start, start + 32), 0.1)
    assert step.read_sums()[0] > 0 and not torch.equal(net.state_dict()['stem.0.weight'], before['stem.0.weight'])
  assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # BatchNorm statistics too.
  assert all(not b.any() for b in optimizer.buffers) and step.read_sums() == (0.0, 0)
  assert torch.equal(torch.get_rng_state(), rng)


# --------------------------------------------------------------------------
# Runs.


class StopAtStep:
  """Stands in for StopRequest: 'SIGTERM' arrives after the given number of steps."""

  def __init__(self, step):
    self.step, self.calls, self.signal_name = step, 0, 'SIGTERM'

  def __call__(self):
    return self

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False

  def requested(self):
    self.calls += 1
    return self.calls == self.step


def _lines(path):
  with open(path) as f:
    return [{k: v for k, v in json.loads(line).items() if k != 'train_images_per_second'} for line in f]


def test_a_stopped_run_resumes_exactly_and_a_finished_run_is_not_retrained(peer, image_folder, tmp_path,
                                                                          monkeypatch, capsys):
  config = tiny_config(image_folder)
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  expected = peer.train_and_evaluate(config, straight)
  assert expected['step'] == config.num_train_steps and expected['trainer'] == 'pytorch'

  with monkeypatch.context() as patch:
    patch.setattr(peer, 'StopRequest', StopAtStep(4))
    stopped = peer.train_and_evaluate(config, resumed)
  assert stopped == {'model': 'resnet8', 'step': 4, 'stopped': 'SIGTERM'}
  assert not os.path.exists(os.path.join(resumed, 'results.json'))
  summary = peer.train_and_evaluate(config, resumed)
  assert 'resumed from checkpoint at step 4' in capsys.readouterr().out
  assert summary == expected  # The same augmentation draws, batches and updates as without the stop.
  assert _lines(os.path.join(resumed, 'metrics.jsonl')) == _lines(os.path.join(straight, 'metrics.jsonl'))

  before = os.path.getmtime(os.path.join(straight, 'metrics.jsonl'))
  assert peer.train_and_evaluate(config, straight) == expected
  assert 'nothing to train' in capsys.readouterr().out
  assert os.path.getmtime(os.path.join(straight, 'metrics.jsonl')) == before
  # Another config in the same workdir is refused, as reproduce refuses it.
  with pytest.raises(ConfigError, match='different config'):
    peer.train_and_evaluate(peer.peer_config(config, 'same'), straight)


def test_what_the_peer_does_not_do_is_refused_before_any_work(peer, image_folder, tmp_path):
  for overrides, match in (({'model': 'cnn_small'}, 'no PyTorch reference'), ({'optimizer': 'adam'}, 'sgd'),
                           ({'half_precision': True}, 'fp32'), ({'model': 'resnet21'}, 'unknown model')):
    with pytest.raises(ConfigError, match=match):
      peer.train_and_evaluate(tiny_config(image_folder, **overrides), str(tmp_path / 'run'))
  with pytest.raises(ConfigError, match='padding'):
    peer.peer_config(tiny_config(image_folder), 'valid')
  with pytest.raises(DataError, match='does not exist'):
    peer.train_and_evaluate(tiny_config(str(tmp_path / 'missing')), str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_every_recipe_field_off_its_default_that_the_peer_does_not_implement_is_refused_in_one_line(
    peer, image_folder, tmp_path, monkeypatch):
  switches = dict(cutout=8, mixup_alpha=0.2, cutmix_alpha=1.0, randaugment='2,9', label_smoothing=0.1,
                  ema_decay=0.9, sam_rho=0.05, tta='flip', crop_padding=2, crop_padding_mode='reflect',
                  flip='alternating')
  with pytest.raises(ConfigError) as refused:
    peer.train_and_evaluate(tiny_config(image_folder, cutout=8), str(tmp_path / 'run'))
  assert 'config.cutout=8' in str(refused.value) and '\n' not in str(refused.value)
  with pytest.raises(ConfigError) as refused:
    peer.check_config(peer.peer_config(tiny_config(image_folder, **switches)))
  for field, value in switches.items():
    assert f'config.{field}={value!r}' in str(refused.value)
  # A switch added to the schema later is refused until the peer implements it.
  new = config_lib.Field('a_new_switch', 0, config_lib.RECIPE, config_lib.whole(0), 'Added later.')
  monkeypatch.setattr(config_lib, 'FIELDS', config_lib.FIELDS + (new,))
  config = peer.peer_config(tiny_config(image_folder))
  config.a_new_switch = 0
  peer.check_config(config)  # At its default: the peer trains what it always trained.
  config.a_new_switch = 3
  with pytest.raises(ConfigError, match='config.a_new_switch=3'):
    peer.check_config(config)
  assert not os.path.exists(tmp_path / 'run')


def _hold_workdir(workdir):
  """A process that takes the workdir's lock as a run does and holds it: (process, its PID)."""
  os.makedirs(workdir, exist_ok=True)
  code = ('import sys, time\nfrom jaxresnet.infra import rundir\nlock = rundir.lock_workdir(sys.argv[1])\n'
          'print("held", flush=True)\ntime.sleep(120)')
  holder = subprocess.Popen([sys.executable, '-c', code, str(workdir)], stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == 'held'
  return holder


@pytest.mark.slow
def test_a_second_peer_on_a_workdir_in_use_is_refused_naming_the_first(peer, image_folder, tmp_path):
  workdir = tmp_path / 'run'
  holder = _hold_workdir(workdir)
  try:
    with pytest.raises(WorkdirBusyError, match=f'in use by process {holder.pid}'):
      peer.train_and_evaluate(tiny_config(image_folder), str(workdir))
  finally:
    holder.kill()
    holder.wait()
  assert sorted(os.listdir(workdir)) == ['.lock']  # Nothing of the refused run was written.


def _flip_a_weight_byte(torch, path):
  """Flips one bit of one weight inside a saved checkpoint's tensor data: torch.load still loads it."""
  state = torch.load(path, weights_only=True)
  weight = next(v for k, v in state['net'].items() if k.endswith('weight') and v.numel() > 100)
  data = bytearray(open(path, 'rb').read())
  at = bytes(data).find(weight.numpy().tobytes())
  assert at > 0
  data[at + 41] ^= 0x01  # A low mantissa bit: the weight stays finite.
  open(path, 'wb').write(bytes(data))
  damaged = torch.load(path, weights_only=True)
  assert not all(torch.equal(a, b) for a, b in zip(state['net'].values(), damaged['net'].values()))


def test_a_bit_flipped_peer_checkpoint_is_detected_and_the_previous_one_used(peer, image_folder, tmp_path, capsys):
  import torch  # pylint: disable=g-import-not-at-top
  straight, damaged = str(tmp_path / 'straight'), str(tmp_path / 'damaged')
  expected = peer.train_and_evaluate(tiny_config(image_folder, num_train_steps=8), straight)
  peer.train_and_evaluate(tiny_config(image_folder), damaged)  # Checkpoints at steps 3 and 6.
  newest = peer.checkpoint_paths(damaged)[0]
  assert newest.endswith('6.pt')
  _flip_a_weight_byte(torch, newest)
  summary = peer.train_and_evaluate(tiny_config(image_folder, num_train_steps=8), damaged)
  out = capsys.readouterr()
  assert 'checkpoint 6 is unreadable' in out.err and 'resumed from checkpoint at step 3' in out.out
  assert summary == expected  # Steps 4-8 redone from the intact checkpoint of step 3.
  assert os.listdir(os.path.join(damaged, 'unreadable_checkpoints'))  # Moved aside, never deleted.


def test_a_peer_run_stopped_before_checkpoints_were_kept_by_step_resumes_exactly(peer, image_folder, tmp_path,
                                                                              monkeypatch):
  import torch  # pylint: disable=g-import-not-at-top
  config = tiny_config(image_folder)
  expected = peer.train_and_evaluate(config, str(tmp_path / 'straight'))
  workdir = str(tmp_path / 'old')
  with monkeypatch.context() as patch:
    patch.setattr(peer, 'StopRequest', StopAtStep(4))
    peer.train_and_evaluate(config, workdir)
  # What the code before peer_checkpoints/ left: one peer_checkpoint.pt with the state alone, no data fingerprint.
  path = peer.checkpoint_paths(workdir)[0]  # Step 4, where it stopped.
  state = torch.load(path, weights_only=True)
  torch.save({k: state[k] for k in peer.STATE_FIELDS}, os.path.join(workdir, peer.CHECKPOINT_FILE))
  shutil.rmtree(os.path.join(workdir, peer.CHECKPOINT_DIR))
  saved = json.load(open(os.path.join(workdir, 'config.json')))
  del saved['data_fingerprint']
  json.dump(saved, open(os.path.join(workdir, 'config.json'), 'w'))
  assert peer.train_and_evaluate(config, workdir) == expected


def test_a_finished_peer_run_rerun_shorter_or_with_another_recipe_is_refused_and_unchanged(peer, image_folder,
                                                                                          tmp_path):
  workdir = str(tmp_path / 'run')
  peer.train_and_evaluate(tiny_config(image_folder), workdir)
  before = snapshot(workdir)
  with pytest.raises(ConfigError, match='finished at step 6'):
    peer.train_and_evaluate(tiny_config(image_folder, num_train_steps=3), workdir)
  with pytest.raises(ConfigError, match='different config'):
    peer.train_and_evaluate(tiny_config(image_folder, learning_rate=0.05), workdir)
  assert snapshot(workdir) == before


def test_without_torch_the_peer_is_one_config_error(peer, image_folder, tmp_path, monkeypatch):
  monkeypatch.setattr(peer, 'torch', None)  # What the module holds where `import torch` failed.
  with pytest.raises(ConfigError, match=r"needs torch: pip install 'jaxresnet\[peer\]'"):
    peer.train_and_evaluate(tiny_config(image_folder), str(tmp_path / 'run'))
  with pytest.raises(ConfigError, match='needs torch'):  # Before reproduce trains anything.
    reproduction.reproduce(str(tmp_path / 'he2016'), models=['resnet8'], seeds=1, peer=True,
                        overrides={'dataset': 'image_folder', 'data_dir': image_folder})
  assert not os.path.exists(tmp_path / 'run') and not os.path.exists(tmp_path / 'he2016')


@pytest.mark.slow
def test_cli_trains_and_reports_bad_input_in_one_line(peer, image_folder, tmp_path):
  workdir = tmp_path / 'run'
  common = ['--config=configs/resnet20.py', '--config.model=resnet8', '--config.dataset=image_folder',
            f'--config.data_dir={image_folder}', '--config.batch_size=8', '--config.eval_batch_size=8',
            '--config.num_val_examples=8', '--config.num_train_steps=4', '--config.lr_boundaries=(2,)']
  result = run_module('jaxresnet.peer.trainer', *common, f'--workdir={workdir}', '--padding=same', env=ONE_THREAD,
                      check=True)
  assert 'resnet8 (PyTorch peer, same padding): 74,835 parameters' in result.stdout
  assert json.load(open(workdir / 'config.json'))['peer_padding'] == 'same'
  bad = run_module('jaxresnet.peer.trainer', *common, f'--workdir={tmp_path / "bad"}', '--config.model=resnet21',
                   env=ONE_THREAD)
  assert bad.returncode == 1 and 'Traceback' not in bad.stderr
  assert bad.stderr.strip().splitlines()[-1].startswith("error: unknown model 'resnet21'")


@pytest.mark.slow
def test_a_real_data_peer_run_is_read_by_report_and_plot(peer, cifar10_subset, tmp_path):
  workdir = tmp_path / 'he2016'
  run = tables.peer_run_dir(str(workdir), 'resnet8', 0)
  steps = 60
  run_module('jaxresnet.peer.trainer', '--config=configs/resnet20.py', f'--workdir={run}',
             '--config.model=resnet8', '--config.dataset=image_folder', f'--config.data_dir={cifar10_subset}',
             '--config.batch_size=32', '--config.num_val_examples=50', f'--config.num_train_steps={steps}',
             '--config.log_every_steps=10', '--config.eval_every_steps=30', '--config.lr_boundaries=(45,)',
             env=ONE_THREAD, check=True)

  results = json.load(open(os.path.join(run, 'results.json')))
  jaxresnet_keys = {'model', 'step', 'num_params', 'macs', 'devices', 'val_accuracy', 'test_accuracy',
                    'val_error', 'test_error', 'val_loss', 'test_loss', 'test_per_class_accuracy', 'class_names'}
  assert jaxresnet_keys <= set(results)
  assert (results['trainer'], results['peer_padding'], results['num_params']) == ('pytorch', 'symmetric', 75_290)
  assert results['class_names'] == tables.CIFAR10_CLASSES and results['step'] == steps
  print(f'PyTorch peer ResNet-8, {steps} steps of batch 32 on 350 CIFAR-10-JPEG images: test accuracy '
        f'{results["test_accuracy"]:.4f}')
  assert results['test_accuracy'] > 0.15, results  # Chance is 0.10.
  records = plot.read_metrics(run)
  assert [r['step'] for r in records if 'train_loss' in r] == list(range(10, steps + 1, 10))
  assert {'train_loss', 'train_accuracy', 'learning_rate', 'train_images_per_second'} <= set(records[0])
  assert [r['step'] for r in records if 'test_error' in r] == [30, 60]
  assert records[-1]['learning_rate'] == pytest.approx(0.01)
  curve = plot.load_curve(run)
  assert curve.model == 'resnet8' and curve.test_error[-1] == pytest.approx(results['test_error'])

  data = tables.write_report(str(workdir))
  row = next(row for row in data['models'] if row['model'] == 'resnet8')
  assert (row['num_finished'], row['peer']['num_finished']) == (0, 1)
  assert row['peer']['test_error_mean'] == results['test_error'] and row['peer']['padding'] == ['symmetric']
  assert data['dataset'] == 'CIFAR-10-JPEG' and data['peer_figure'] == tables.PEER_FIGURE_FILE
  markdown = (workdir / 'report.md').read_text()
  assert f'| not run | — | — | {100 * results["test_error"]:.2f} | 1/1 |' in markdown
  assert '- ResNet-8: no comparison yet (jaxresnet has no finished run).' in markdown


@pytest.mark.slow
def test_reproduce_peer_trains_a_peer_run_beside_each_run_and_skips_finished_ones(peer, image_folder, tmp_path,
                                                                                   capsys):
  workdir = str(tmp_path / 'he2016')
  settings = dict(models=['resnet8'], seeds=1, steps_scale=0.0001, peer=True,
                  overrides=dict(dataset='image_folder', data_dir=image_folder, batch_size=8, eval_batch_size=8,
                                 num_val_examples=8, eval_every_steps=3, log_every_steps=2,
                                 checkpoint_every_steps=3))
  data = reproduction.reproduce(workdir, **settings)
  out = capsys.readouterr().out
  assert '[1/2] resnet8 seed 0: training' in out and '[2/2] resnet8 seed 0 peer: training' in out
  ours = json.load(open(os.path.join(tables.run_dir(workdir, 'resnet8', 0), 'config.json')))
  theirs = json.load(open(os.path.join(tables.peer_run_dir(workdir, 'resnet8', 0), 'config.json')))
  assert {k: v for k, v in theirs.items() if k not in ('trainer', 'peer_padding')} == ours  # The same config.
  sessions = json.load(open(os.path.join(tables.peer_run_dir(workdir, 'resnet8', 0), rundir.TIMING_FILE)))
  assert sessions['sessions'][0]['versions']['trainer'] == 'pytorch'
  row = next(row for row in data['models'] if row['model'] == 'resnet8')
  assert (row['num_finished'], row['peer']['num_finished']) == (1, 1)
  assert row['minus_peer']['difference'] == pytest.approx(row['test_error_mean'] - row['peer']['test_error_mean'])
  assert json.load(open(os.path.join(workdir, rundir.PLAN_FILE)))['peer_seeds'] == 1

  reproduction.reproduce(workdir, **settings)
  out = capsys.readouterr().out
  assert '[1/2] resnet8 seed 0: finished, skipped' in out and '[2/2] resnet8 seed 0 peer: finished, skipped' in out
  with pytest.raises(ConfigError, match='add --peer'):
    reproduction.reproduce(workdir, **{**settings, 'peer': False}, peer_padding='same')
  with pytest.raises(ConfigError, match='different config'):  # The peer dir keeps its padding.
    reproduction.reproduce(workdir, **settings, peer_padding='same')


# --------------------------------------------------------------------------
# The report, on run files written by hand (no torch needed).


def write_run(directory, model, seed, test_error, trainer=None, num_train_steps=10):
  """A finished run's files: config.json, metrics.jsonl, results.json, as jaxresnet or the peer writes them."""
  os.makedirs(directory)
  config = json.loads(reproduction.run_config(model, seed, dataset='image_folder').to_json_best_effort())
  config['num_train_steps'] = num_train_steps
  if trainer:
    config.update(trainer=trainer, peer_padding='symmetric')
  json.dump(config, open(os.path.join(directory, 'config.json'), 'w'))
  with open(os.path.join(directory, 'metrics.jsonl'), 'w') as f:
    for step in range(1, num_train_steps + 1):
      f.write(json.dumps({'step': step, 'train_accuracy': 0.9, **({'test_error': test_error} if step % 5 == 0 else {})})
              + '\n')
  json.dump({'step': num_train_steps, 'test_error': test_error, 'val_error': test_error + 0.01, 'num_params': 269_722,
             'macs': 40_550_000, 'devices': '1 x NVIDIA H100', 'class_names': tables.CIFAR10_CLASSES,
             **({'trainer': trainer} if trainer else {})}, open(os.path.join(directory, 'results.json'), 'w'))


def test_report_puts_the_peer_beside_each_row_and_says_what_the_comparison_shows(tmp_path):
  errors = {('resnet20', 'ours'): [0.085, 0.087], ('resnet20', 'peer'): [0.080, 0.082],
            ('plain20', 'ours'): [0.100], ('plain20', 'peer'): [0.102], ('resnet56', 'peer'): [0.070]}
  for (model, who), values in errors.items():
    for seed, error in enumerate(values):
      if who == 'ours':
        write_run(tables.run_dir(str(tmp_path), model, seed), model, seed, error)
      else:
        write_run(tables.peer_run_dir(str(tmp_path), model, seed), model, seed, error, trainer='pytorch')
  data = tables.write_report(str(tmp_path))

  rows = {row['model']: row for row in data['models']}
  resnet20 = rows['resnet20']
  assert resnet20['test_error_mean'] == pytest.approx(0.086)
  assert resnet20['peer']['test_error_mean'] == pytest.approx(0.081)
  assert resnet20['peer']['test_error_std'] == pytest.approx(np.std([0.080, 0.082], ddof=1))
  assert resnet20['minus_peer']['difference'] == pytest.approx(0.005)
  assert resnet20['minus_peer']['standard_error'] == pytest.approx(
      np.sqrt(np.var([0.085, 0.087], ddof=1) / 2 + np.var([0.080, 0.082], ddof=1) / 2))
  assert resnet20['minus_peer']['within_target'] is False
  assert rows['plain20']['minus_peer']['within_target'] is True
  assert rows['resnet56']['minus_peer'] is None and rows['resnet56']['peer']['num_finished'] == 1
  assert data['peer_padding'] == ['symmetric']

  markdown = (tmp_path / 'report.md').read_text()
  assert '| Val error | Peer test error | n | Peer val error | Ours − peer |' in markdown
  assert '| ResNet-20 | 0.27M | 0.27M | 40.55M | 8.75 | 8.60 ± 0.14 | 2/2 | 9.60 ± 0.14 | 8.10 ± 0.14 | 2/2 | ' \
         '9.10 ± 0.14 | +0.50 |' in markdown
  assert '| Plain-20 | 0.27M | — | 40.55M | 9.5* | 10.00 | 1/1 | 11.00 | 10.20 | 1/1 | 11.20 | -0.20 |' in markdown
  assert '| ResNet-56 | — | 0.85M | — | 6.97 | not run | — | — | 7.00 | 1/1 | 8.00 | — |' in markdown
  assert ("- ResNet-20: jaxresnet 8.60 ± 0.14% (n = 2), peer 8.10 ± 0.14% (n = 2): jaxresnet's mean test error "
          "is 0.50 points above the peer's; the standard error of that difference is 0.14 points; outside the "
          "target of at most the peer's + 0.3 points.") in markdown
  assert "- Plain-20: jaxresnet 10.00% (n = 1), peer 10.20% (n = 1): jaxresnet's mean test error is 0.20 points " \
         "below the peer's; within the target" in markdown
  assert '- ResNet-56: no comparison yet (jaxresnet has no finished run).' in markdown
  assert ("Over the 2 models with finished runs of both, jaxresnet's mean test error is above the peer's in 1 and "
          "below it in 1; on average it is 0.15 points above the peer's. Outside the +0.3-point target: "
          "ResNet-20.") in markdown
  # The flag's value names the peer's padding, not jaxresnet's, which the sentence also gives.
  assert ("test set. With `--peer_padding=symmetric` it pads its stride-2 convolutions (1, 1) like the paper's and "
          "akamaster's nets (PyTorch's padding=1), where jaxresnet's Flax 'SAME' convolutions pad (0, 1). Where") \
      in markdown
  assert '| ResNet-20 (peer) | 1 | finished | 10/10 | 8.20 |' in markdown
  assert '![the PyTorch peer: train and test error vs iterations](figure6_peer.png)' in markdown
  assert os.path.exists(tmp_path / 'figure6.png') and os.path.exists(tmp_path / 'figure6_peer.png')

  output = tmp_path / 'results' / 'table.md'
  tables.write_report(str(tmp_path), str(output))
  assert (tmp_path / 'results' / 'table_peer.png').exists()
  assert '![the PyTorch peer: train and test error vs iterations](table_peer.png)' in output.read_text()
