"""The PyTorch peer: jaxresnet's nets trained by independent PyTorch code, with the same recipe on the same data.

    python -m jaxresnet.peer.trainer --config=configs/resnet20.py --workdir=DIR [--padding=symmetric]
        [--config.dataset=image_folder --config.data_dir=/data/cifar10_jpeg.tar.gz] [--config.FIELD=VALUE ...]

Why: a jaxresnet run that misses the paper's error can be wrong in its code or
in its data (CIFAR-10-JPEG is lossy). A second, independent implementation
trained on exactly the same images tells the two apart: where the peer misses
the paper by as much, the data is the cause; where it does better, jaxresnet is.
`jaxresnet.reproduce --peer` trains a peer run beside every jaxresnet run, and
`jaxresnet.report` puts both in one table.

Shared with jaxresnet (the inputs, so both see the same problem): the config
file and its overrides; `jaxresnet.data.load_dataset` (the same decoded uint8
arrays, 45k/5k split and test set; with config.max_eval_examples the same
evaluated subset, `evaluation.subset`) and `data.input_statistics` (the per-pixel
mean); `config.validate` and `config.num_train_steps`; the workdir's files
(metrics.jsonl through `MetricWriter`, results.json, config.json), so the report
and `jaxresnet.plot` read a peer run like a jaxresnet one. The files are
written and read through jaxresnet.infra.rundir, which also says whether the
run is finished and whether WORKDIR holds the same run, with jaxresnet's rules.
The peer depends on jaxresnet's libraries only, never on its commands.

Written here or in torch_resnet.py (the code under test, so nothing is shared
by accident): the nets, their initialization and BatchNorm, the loss, the SGD
update, the learning-rate schedule (read from the config's fields; the tests
compare it with jaxresnet.training.optim), the input pipeline (gather, normalize, pad-4
crop and flip on the device) and the evaluation.

Padding (`--padding`, default 'symmetric'): the peer is the paper's and
akamaster's net, whose stride-2 3x3 convs pad (1, 1) (PyTorch's padding=1).
jaxresnet's Flax 'SAME' convs pad those (0, 1); `--padding=same` copies that,
making the peer an exact copy of jaxresnet's net. The default compares
jaxresnet with the reference nets; 'same' isolates the padding's effect.
torch_resnet.py says what each does.

The crop's zero padding is added after normalization, as jaxresnet does (it
pads with the mean image's value, 0 after the per-pixel mean is subtracted).

Randomness: torch.manual_seed(seed) before the net is built seeds its
initialization and then the augmentation draws; the epoch order is
np.random.default_rng([seed, epoch]), a pure function of seed and epoch.

Devices: on a GPU the whole step (gather of the batch from the training set
held on the device, normalization, augmentation, forward, backward, SGD, the
loss and accuracy sums) is captured once in a CUDA graph and replayed, on
channels_last tensors; the host only copies the batch's indices and the
learning rate into the graph's input tensors. On a CPU it runs eagerly (NCHW).
The CUDA path has not been run on a GPU yet.

WORKDIR holds config.json (the config plus `trainer: pytorch`, `peer_padding`
and the data's fingerprint), metrics.jsonl, tensorboard/, results.json (with
`trainer`, `torch_version`, `peer_padding`) and peer_checkpoints/<step>.pt (the
newest config.checkpoints_to_keep, each written atomically with a sha256 of
its fields and the data's fingerprint; runs started before kept one,
peer_checkpoint.pt, which still resumes). The workdir follows jaxresnet's rules,
through rundir and checkpoints: one process at a time (its lock), one run per
workdir (another config, a shorter length than a finished run's, or other data
than its checkpoint's is refused in one line), and a checkpoint that no longer
matches its checksums is moved aside for the previous one. Rerunning a finished
run trains nothing; an unfinished one resumes from its checkpoint, on a CPU exactly.

What the peer does not implement (IMPLEMENTED lists what it does) is refused in
one line when set off its default, for every field of the config's schema.
"""
import contextlib
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np

from jaxresnet.infra import config as config_lib
from jaxresnet import data
from jaxresnet import models
from jaxresnet.infra import checkpoints
from jaxresnet.infra import rundir
from jaxresnet.infra.cli import exit_on_extra_arguments, exit_on_user_error, exit_with_error
from jaxresnet.infra.errors import CheckpointError, ConfigError
from jaxresnet.infra.tensorboard import MetricWriter
from jaxresnet.infra.signals import StopRequest
from jaxresnet.training import evaluation

try:
  import torch
  from torch import nn
  import torch.nn.functional as F
  from jaxresnet.peer import nets as torch_resnet
except ImportError:  # Reported as one line by require_torch(), where the peer is asked for.
  torch = None

TRAINER = 'pytorch'  # config.json and results.json of a peer run say `"trainer": "pytorch"`.
DEFAULT_PADDING = 'symmetric'
CHECKPOINT_DIR = 'peer_checkpoints'  # <step>.pt: the newest config.checkpoints_to_keep checkpoints.
CHECKPOINT_FILE = 'peer_checkpoint.pt'  # Where runs started before CHECKPOINT_DIR kept their only checkpoint.
CUDA_GRAPH_WARMUP_STEPS = 3  # Eager steps before capture: cuDNN autotuning, autograd and allocator set-up.


MISSING_TORCH = "the PyTorch peer needs torch: pip install 'jaxresnet[peer]' (from a checkout: pip install -e '.[peer]')"


def require_torch() -> None:
  if torch is None:
    raise ConfigError(MISSING_TORCH)


def peer_config(config: ml_collections.ConfigDict, padding: str = DEFAULT_PADDING) -> ml_collections.ConfigDict:
  """A copy of `config` marked as the peer's run: its config.json, compared when a run resumes."""
  require_torch()
  if padding not in torch_resnet.PADDINGS:
    raise ConfigError(f'peer padding {padding!r} is not one of {", ".join(torch_resnet.PADDINGS)}')
  peer = ml_collections.ConfigDict(config.to_dict())
  peer.trainer = TRAINER
  peer.peer_padding = padding
  return peer


# The config's recipe and identity fields the peer implements: None for every value, else the values it
# trains. Every other such field of the schema (config_lib.FIELDS) is refused when off its default, so a
# switch added to jaxresnet is refused here until the peer implements it (unimplemented_fields).
IMPLEMENTED = {
    'model': None, 'shortcut': None,  # Which nets exist: build_net.
    'dataset': None, 'num_val_examples': None, 'augment': None, 'normalization': None, 'batch_size': None,
    'optimizer': ('sgd',), 'momentum': None, 'nesterov': None, 'learning_rate': None, 'weight_decay': None,
    'weight_decay_type': None, 'schedule': ('step', 'cosine', 'constant'), 'lr_boundaries': None,
    'lr_decay_factor': None, 'warmup_steps': None, 'warmup': None, 'warmup_lr': None, 'num_train_steps': None,
    'max_eval_examples': None, 'seed': None,
    'num_seeds': (1,),  # A population of seeds in one jaxresnet run: the peer trains one seed per run.
    # Settings of the other optimizers: SGD reads none of them, in jaxresnet as here.
    'adam_b1': None, 'adam_b2': None, 'rmsprop_decay': None,
}
# Bookkeeping fields (what to do about trouble) the peer does not implement either.
UNIMPLEMENTED_BOOKKEEPING = ('skip_nonfinite_updates',)
# Why a default is the only value, where the field's name does not say.
WHY_ONLY = {'half_precision': 'the peer computes in fp32', 'num_seeds': 'one run per seed'}


def _json(value):
  return json.loads(json.dumps(value, default=str))  # Tuples and lists compare equal.


def unimplemented_fields(config) -> List[str]:
  """'config.FIELD=VALUE' for each field off the values the peer implements (IMPLEMENTED; others: the default)."""
  found = []
  for field in config_lib.FIELDS:
    if field.kind == config_lib.BOOKKEEPING and field.name not in UNIMPLEMENTED_BOOKKEEPING:
      continue
    value = config.get(field.name, field.default)
    supported = IMPLEMENTED.get(field.name, (field.default,)) if field.kind != config_lib.BOOKKEEPING \
        else (field.default,)
    if supported is not None and _json(value) not in [_json(v) for v in supported]:
      only = ' or '.join(f'{field.name}={v!r}' for v in supported)
      why = f', {WHY_ONLY[field.name]}' if field.name in WHY_ONLY else ''
      found.append(f'config.{field.name}={value!r} (it trains only {only}{why})')
  return found


def check_config(config: ml_collections.ConfigDict) -> None:
  """jaxresnet's checks, then one ConfigError naming every field the peer does not implement."""
  config_lib.validate(config)
  unimplemented = unimplemented_fields(config)
  if unimplemented:
    raise ConfigError(f'the PyTorch peer does not implement {"; ".join(unimplemented)}: train this config with '
                      'jaxresnet, or drop these settings')
  build_net(config, num_classes=10)  # The model and shortcut: a ConfigError if the peer has no such net.


def build_net(config, num_classes: int):
  """The config's net from torch_resnet.py, initialized from torch's current random state."""
  shortcut = config.shortcut if 'shortcut' in models.model_fields(config.model) else None
  try:
    return torch_resnet.get_model(config.model, num_classes, shortcut=shortcut,
                                  padding=config.get('peer_padding', DEFAULT_PADDING))
  except ValueError as e:
    raise ConfigError(f'{e}; the PyTorch peer trains resnet{{6n+2}}, plain{{6n+2}} and resnet18') from None


def software_versions() -> Dict[str, str]:
  """What identifies the peer's software, beside jaxresnet.reproduce's list."""
  require_torch()
  versions = {'trainer': TRAINER, 'torch': torch.__version__}
  if torch.cuda.is_available():
    versions.update(torch_cuda=str(torch.version.cuda), cudnn=str(torch.backends.cudnn.version()))
  return versions


def device_description(device) -> str:
  """'1 x NVIDIA H100 80GB HBM3' or '1 x cpu', as jaxresnet writes its devices."""
  return f'1 x {torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}'


# --------------------------------------------------------------------------
# The recipe: learning rates, SGD, input pipeline.


def learning_rates(config, steps_per_epoch: int, num_train_steps: int) -> np.ndarray:
  """The learning rate of each step 0 .. num_train_steps-1, read from the config's schedule fields.

  The same reading of the fields as jaxresnet.training.optim's Optax schedule, written
  out: boundaries in steps, epochs or fractions of the run (two that round to
  the same step decay once), cosine decay to 0 after the warm-up, and a linear
  or constant (ResNet-110's) warm-up in front.
  """
  steps = np.arange(num_train_steps, dtype=np.float64)
  durations = config_lib.steps_for(config, steps_per_epoch, num_train_steps)  # Steps, epochs or shares, in steps.
  warmup = durations.warmup_steps
  lr = config.learning_rate
  if config.schedule == 'step':
    boundaries = sorted(set(durations.lr_boundaries))
    decays = sum(((steps >= b).astype(np.float64) for b in boundaries), np.zeros_like(steps))
    rates = lr * config.lr_decay_factor ** decays
  elif config.schedule == 'cosine':
    decay_steps = max(1, num_train_steps - warmup)
    since = np.clip(steps - max(warmup, 0), 0, decay_steps)
    rates = lr * 0.5 * (1 + np.cos(np.pi * since / decay_steps))
  elif config.schedule == 'constant':
    rates = np.full_like(steps, lr)
  else:
    raise ConfigError(f'unknown schedule {config.schedule!r}; known: step, cosine, constant')
  if warmup > 0:
    ramp = (config.warmup_lr + (lr - config.warmup_lr) * steps / warmup if config.warmup == 'linear'
            else np.full_like(steps, config.warmup_lr))
    rates = np.where(steps < warmup, ramp, rates)
  return rates


class SGD:
  """SGD with momentum (optionally Nesterov) and weight decay, as jaxresnet.training.optim builds it with Optax.

  'l2' weight decay adds weight_decay * w to the gradient before the momentum
  (PyTorch's weight_decay, the paper's SGD); 'decoupled' adds it after. The
  buffers start at zero, so the first step's momentum is the gradient, as in
  both torch.optim.SGD and optax.trace. The learning rate is a tensor that the
  caller fills before each step: a captured CUDA graph reads the current rate,
  and nothing waits for the host (torch.optim.SGD's foreach path calls .item()
  on a tensor learning rate).
  """

  def __init__(self, params, momentum: float, nesterov: bool, weight_decay: float, decoupled: bool, device):
    self.params = [p for p in params if p.requires_grad]
    self.momentum, self.nesterov = momentum, nesterov
    self.weight_decay, self.decoupled = weight_decay, decoupled
    self.buffers = [torch.zeros_like(p) for p in self.params] if momentum else []
    self.learning_rate = torch.zeros((), device=device)

  def step(self) -> None:
    with torch.no_grad():
      updates = [p.grad for p in self.params]
      if self.weight_decay and not self.decoupled:
        updates = torch._foreach_add(updates, self.params, alpha=self.weight_decay)
      if self.momentum:
        torch._foreach_mul_(self.buffers, self.momentum)
        torch._foreach_add_(self.buffers, updates)
        updates = (torch._foreach_add(updates, self.buffers, alpha=self.momentum) if self.nesterov
                   else self.buffers)
      if self.weight_decay and self.decoupled:
        updates = torch._foreach_add(updates, self.params, alpha=self.weight_decay)
      torch._foreach_sub_(self.params, torch._foreach_mul(updates, self.learning_rate))


def make_optimizer(config, net, device) -> SGD:
  return SGD(net.parameters(), config.momentum, config.nesterov, config.weight_decay,
             config.weight_decay_type == 'decoupled', device)


def normalize(images, mean, std):
  """uint8 NHWC images to float: /255, minus the per-pixel (or channel) mean, over the std."""
  return (images.float() / 255.0 - mean) / std


def augment(images, pad: int = 4):
  """Pads float NHWC images with `pad` zeros, crops them back at a random offset and flips half.

  Draws from torch's default generator of the images' device (seeded by torch.manual_seed).
  """
  n, h, w, _ = images.shape
  device = images.device
  padded = F.pad(images, (0, 0, pad, pad, pad, pad))
  offsets = torch.randint(0, 2 * pad + 1, (n, 2), device=device)
  rows = offsets[:, :1] + torch.arange(h, device=device)  # (n, h): the source row of each crop row.
  cols = offsets[:, 1:] + torch.arange(w, device=device)
  crops = padded[torch.arange(n, device=device)[:, None, None], rows[:, :, None], cols[:, None, :]]
  flip = torch.rand(n, device=device) < 0.5
  return torch.where(flip[:, None, None, None], crops.flip(2), crops)


def epoch_order(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The training examples' order in an epoch: a pure function of seed and epoch, so a resume repeats it."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def count_params(net) -> int:
  return torch_resnet.count_params(net)


def count_macs(net, image_shape) -> int:
  """Multiply-adds of one forward pass on one image, over convs and linear layers, as jaxresnet counts them."""
  macs = []

  def hook(module, inputs, output):
    del inputs
    per_output = (module.in_channels // module.groups * math.prod(module.kernel_size)
                  if isinstance(module, nn.Conv2d) else module.in_features)
    macs.append(output.numel() * per_output)

  layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
  handles = [m.register_forward_hook(hook) for m in layers]
  was_training = net.training
  try:
    net.eval()
    with torch.no_grad():
      height, width, channels = image_shape
      net(torch.zeros(1, channels, height, width, device=next(net.parameters()).device))
  finally:
    for handle in handles:
      handle.remove()
    net.train(was_training)
  return sum(macs)


# --------------------------------------------------------------------------
# The step, eager or replayed from a CUDA graph.


def _rng_state(device):
  """The state of torch's default generator on `device` (CPU or CUDA), as a CPU byte tensor."""
  return torch.cuda.get_rng_state(device) if device.type == 'cuda' else torch.get_rng_state()


def _set_rng_state(state, device) -> None:
  if device.type == 'cuda':
    torch.cuda.set_rng_state(state, device)
  else:
    torch.set_rng_state(state)


class TrainStep:
  """One SGD step on a batch of the training set held on the device.

  Its inputs are tensors filled before each call (the batch's indices and the
  learning rate); its outputs are running sums (loss, correct predictions) that
  the loop reads and zeroes when it logs. So the same code runs eagerly on a
  CPU and, on a GPU, is captured once in a CUDA graph and replayed.
  """

  def __init__(self, net, optimizer: SGD, train_images, train_labels, mean, std, batch_size: int,
               augment_images: bool, device):
    self.net, self.optimizer = net, optimizer
    self.train_images, self.train_labels = train_images, train_labels  # uint8 NHWC, int64: on the device.
    self.mean, self.std = mean, std
    self.augment_images = augment_images
    self.memory_format = torch.channels_last if device.type == 'cuda' else torch.contiguous_format
    self.indices = torch.zeros(batch_size, dtype=torch.int64, device=device)
    self.loss_sum = torch.zeros((), device=device)
    self.correct = torch.zeros((), dtype=torch.int64, device=device)
    self.graph = self._capture() if device.type == 'cuda' else None

  def _step(self) -> None:
    images = normalize(self.train_images.index_select(0, self.indices), self.mean, self.std)
    if self.augment_images:
      images = augment(images)
    images = images.permute(0, 3, 1, 2).contiguous(memory_format=self.memory_format)
    labels = self.train_labels.index_select(0, self.indices)
    logits = self.net(images)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    self.optimizer.step()
    with torch.no_grad():
      self.loss_sum += loss.detach()
      self.correct += (logits.argmax(1) == labels).sum()

  def _clear_grads(self) -> None:
    for p in self.optimizer.params:
      p.grad = None  # backward() then writes fresh gradients instead of adding to old ones.

  @contextlib.contextmanager
  def state_restored(self):
    """Undoes, on exit, what steps inside did: weights, BatchNorm statistics, momentum, sums, random state."""
    state = [*self.net.parameters(), *self.net.buffers(), *self.optimizer.buffers, self.loss_sum, self.correct]
    saved = [t.detach().clone() for t in state]
    rng = _rng_state(self.indices.device)
    yield
    with torch.no_grad():
      for tensor, value in zip(state, saved):
        tensor.copy_(value)
    _set_rng_state(rng, self.indices.device)

  def _capture(self):
    """Captures `_step` in a CUDA graph, after eager warm-up steps whose effects are undone.

    Replays then draw their random numbers from the default CUDA generator,
    continuing from its state, which checkpoints save and restore.
    """
    with self.state_restored():
      stream = torch.cuda.Stream()  # Warm-up and capture on one side stream, as torch's docs ask.
      stream.wait_stream(torch.cuda.current_stream())
      with torch.cuda.stream(stream):
        for _ in range(CUDA_GRAPH_WARMUP_STEPS):
          self._clear_grads()
          self._step()
      torch.cuda.current_stream().wait_stream(stream)
      self._clear_grads()  # Captured with no gradients: the graph's backward writes them, never adds to them.
      graph = torch.cuda.CUDAGraph()
      with torch.cuda.graph(graph, stream=stream):
        self._step()
      torch.cuda.synchronize()
    return graph

  def __call__(self, indices, learning_rate: float) -> None:
    self.indices.copy_(indices)
    self.optimizer.learning_rate.fill_(learning_rate)
    if self.graph is not None:
      self.graph.replay()
    else:
      self._clear_grads()
      self._step()

  def read_sums(self):
    """(loss sum, correct predictions) since the last `reset_sums`, as Python numbers (waits for the device)."""
    return float(self.loss_sum), int(self.correct)

  def reset_sums(self) -> None:
    self.loss_sum.zero_()
    self.correct.zero_()


def evaluate(net, images, labels, batch_size: int, mean, std, num_classes: int, memory_format) -> Dict[str, Any]:
  """Loss, accuracy, per-class accuracy and confusion matrix of a split (uint8 NHWC images on the device)."""
  net.eval()
  loss_sum = torch.zeros((), dtype=torch.float64, device=images.device)
  confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=images.device)
  with torch.no_grad():
    for start in range(0, len(labels), batch_size):
      batch = normalize(images[start:start + batch_size], mean, std).permute(0, 3, 1, 2)
      logits = net(batch.contiguous(memory_format=memory_format)).float()
      batch_labels = labels[start:start + batch_size]
      loss_sum += F.cross_entropy(logits, batch_labels, reduction='sum')
      confusion += torch.bincount(batch_labels * num_classes + logits.argmax(1), minlength=num_classes ** 2)
  net.train()
  confusion = confusion.view(num_classes, num_classes).cpu().numpy()
  count = int(confusion.sum())
  return {'loss': float(loss_sum) / count, 'accuracy': float(np.trace(confusion)) / count,
          'per_class_accuracy': (np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)).tolist(),
          'confusion_matrix': confusion.tolist()}


# --------------------------------------------------------------------------
# Checkpoints and workdir files.




def checkpoint_paths(workdir: str) -> List[str]:
  """The peer's checkpoint files in `workdir`, newest first: CHECKPOINT_DIR/<step>.pt, then the single
  peer_checkpoint.pt of runs started before checkpoints were kept by step (older than any of those)."""
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  try:
    steps = sorted((int(name[:-3]) for name in os.listdir(directory)
                    if name.endswith('.pt') and name[:-3].isdigit()), reverse=True)
  except OSError:
    steps = []
  legacy = os.path.join(workdir, CHECKPOINT_FILE)
  return [os.path.join(directory, f'{step}.pt') for step in steps] + ([legacy] if os.path.exists(legacy) else [])


def _host_copy(state):
  """The checkpoint's tensors on the CPU: what is saved, and what its checksums are computed on."""
  return jax.tree_util.tree_map(lambda t: t.detach().cpu() if torch.is_tensor(t) else t, state)


def save_checkpoint(workdir: str, step: int, net, optimizer: SGD, device, metadata: Dict[str, Any],
                    keep: int) -> None:
  """The run's state at `step` in CHECKPOINT_DIR/<step>.pt, with the sha256 of each field (checkpoints.checksums)
  and `metadata` (the data's fingerprint); written to a temporary file and renamed, so a crash never leaves half
  of one. The `keep` newest are kept."""
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  path = os.path.join(directory, f'{step}.pt')
  tmp = f'{path}.tmp{os.getpid()}'
  state = _host_copy({'step': step, 'net': net.state_dict(), 'momentum': optimizer.buffers,
                      'rng': _rng_state(device)})
  try:
    os.makedirs(directory, exist_ok=True)
    torch.save({**state, **metadata, 'checksums': checkpoints.checksums(state)}, tmp)
    os.replace(tmp, path)
  except (OSError, RuntimeError) as e:  # Disk full, permissions (torch wraps some OSErrors).
    raise CheckpointError(f'cannot write checkpoint {step} to {path}: {str(e).splitlines()[0]}; the '
                          'previous checkpoint is intact') from None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  for old in [p for p in checkpoint_paths(workdir) if os.path.dirname(p) == directory][keep:]:
    os.remove(old)


STATE_FIELDS = ('step', 'net', 'momentum', 'rng')  # A checkpoint's state; the rest is its metadata.


def restore_checkpoint(workdir: str, net, optimizer: SGD, device,
                       allow_fresh_start: bool = False) -> Tuple[int, Dict[str, Any]]:
  """(step, the checkpoint's saved fields) of the newest intact checkpoint, loaded into the net and optimizer;
  (0, {}) without one.

  jaxresnet's rules (checkpoints.restore_newest): a checkpoint that cannot be
  loaded, or whose content no longer matches its checksums, is moved to
  WORKDIR/unreadable_checkpoints/ with one warning line and the previous one
  is tried; when there were checkpoints but none is intact the run stops,
  unless `allow_fresh_start`.
  """
  unusable = []
  for path in checkpoint_paths(workdir):
    name = os.path.basename(path)
    try:
      state = torch.load(path, map_location='cpu', weights_only=True)
      step = int(state['step'])
      checkpoints.verify(step, {k: state[k] for k in STATE_FIELDS}, state)
    except Exception as e:  # pylint: disable=broad-except  # torch raises many kinds for a damaged file.
      step = int(name[:-3]) if name[:-3].isdigit() else name
      reason = e.reason if isinstance(e, checkpoints.UnreadableCheckpoint) else checkpoints.short_reason(e)
      checkpoints.move_path_aside(path, os.path.join(workdir, checkpoints.UNREADABLE_DIR), f'peer_{name}', step,
                                  reason)
      unusable.append(name)
      continue
    net.load_state_dict(state['net'])
    with torch.no_grad():
      for buffer, value in zip(optimizer.buffers, state['momentum']):
        buffer.copy_(value)
    _set_rng_state(state['rng'], device)
    return step, state
  if unusable and not allow_fresh_start:
    raise CheckpointError(f'no peer checkpoint in {workdir} is intact (the unreadable ones are in '
                          f'{os.path.join(workdir, checkpoints.UNREADABLE_DIR)}); rerun with '
                          '--config.allow_fresh_start=True to start over from step 0')
  return 0, {}


class NonFiniteLossError(CheckpointError):
  pass


def _log_line(step: int, total: int, record: Dict[str, Any]) -> str:
  parts = [f'step {step}/{total}']
  for key, fmt in (('train_loss', '{:.4f}'), ('train_accuracy', '{:.4f}'), ('learning_rate', '{:.4g}'),
                   ('train_images_per_second', '{:.0f}'), ('val_accuracy', '{:.4f}'),
                   ('test_accuracy', '{:.4f}')):
    if key in record:
      parts.append(f'{key} {fmt.format(record[key])}')
  return '  '.join(parts)


# --------------------------------------------------------------------------
# The run.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains (or resumes) the peer run of `config` in `workdir`; returns the final metrics.

  `config` is a jaxresnet config, or peer_config()'s copy of one (which sets the
  padding). On SIGTERM/SIGINT it saves a checkpoint and returns early
  (summary['stopped'] names the signal); rerunning resumes.
  """
  require_torch()
  config = peer_config(config, config.get('peer_padding', DEFAULT_PADDING))
  check_config(config)
  with contextlib.ExitStack() as held:
    # jaxresnet's checks of a workdir, before the data is read: a file, another process at work in it (its
    # lock, held from here to the end), another run's config, or a run that went further than this one.
    lock = rundir.check_before_run(workdir, config, one_process=True)
    if lock is not None:
      held.callback(lock.release)
    return _train_and_evaluate(config, workdir, lock, held)


def _already_finished(workdir: str, total_steps: int) -> Dict[str, Any]:
  summary = rundir.read_results(workdir)
  print(f'{workdir} holds this peer run, finished at step {total_steps} (test error '
        f'{100 * summary["test_error"]:.2f}%): nothing to train', flush=True)
  return summary


def _train_and_evaluate(config, workdir: str, lock, held: contextlib.ExitStack) -> Dict[str, Any]:
  """train_and_evaluate once the workdir passed its checks; a lock taken here is released by `held`."""
  known_length = config_lib.known_num_train_steps(config)
  if known_length is not None and rundir.finished(config, workdir, known_length):
    return _already_finished(workdir, known_length)
  dataset = data.load_dataset(config)
  durations = config_lib.steps(config, len(dataset.train_labels))  # Every duration of the config, in steps.
  total_steps, steps_per_epoch = durations.num_train_steps, durations.steps_per_epoch
  rates = learning_rates(config, steps_per_epoch, total_steps)
  rundir.check_not_beyond(workdir, config, total_steps)  # A run set in epochs: its length needed the data.
  if rundir.finished(config, workdir, total_steps):
    return _already_finished(workdir, total_steps)

  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  if device.type == 'cuda':
    torch.backends.cudnn.benchmark = True  # Fixed shapes: let cuDNN pick its fastest kernels once.
  seed = config_lib.seeds(config).first
  torch.manual_seed(seed)
  net = build_net(config, dataset.num_classes)
  image_shape = dataset.train_images.shape[1:]
  num_params, macs = count_params(net), count_macs(net, image_shape)
  memory_format = torch.channels_last if device.type == 'cuda' else torch.contiguous_format
  net = net.to(device, memory_format=memory_format)
  optimizer = make_optimizer(config, net, device)
  mean, std = (torch.as_tensor(a, dtype=torch.float32, device=device)
               for a in data.input_statistics(dataset.train_images, config.normalization))
  on_device = lambda images, labels: (torch.as_tensor(images, device=device),
                                      torch.as_tensor(labels, dtype=torch.int64, device=device))
  # With config.max_eval_examples, the subset of each split that jaxresnet's run of this config evaluates.
  eval_sets = {name: on_device(*evaluation.subset(images, labels, config.get('max_eval_examples', 0)))
               for name, (images, labels) in (('val', (dataset.val_images, dataset.val_labels)),
                                              ('test', (dataset.test_images, dataset.test_labels)))}
  eval_sets = {name: split for name, split in eval_sets.items() if len(split[1])}
  devices = device_description(device)

  if lock is None:  # A new workdir is created only now that the data has loaded.
    lock = rundir.take_workdir(workdir, one_process=True)
    held.callback(lock.release)
  start_step, saved = restore_checkpoint(workdir, net, optimizer, device, config.allow_fresh_start)
  rundir.check_not_beyond(workdir, config, total_steps, start_step)
  metadata = ({checkpoints.DATA_FINGERPRINT: dataset.fingerprint, 'data_dir': config.data_dir}
              if dataset.fingerprint else {})
  if start_step:  # The data a run trained on is part of the run: going on with other data needs a yes.
    checkpoints.check_same_data(workdir, start_step, saved, metadata, config.allow_data_change)
    rundir.record_data_change(workdir, start_step, saved, metadata)
  train_step = TrainStep(net, optimizer, *on_device(dataset.train_images, dataset.train_labels), mean, std,
                         config.batch_size, config.augment, device)
  writer = MetricWriter(workdir)
  writer.truncate_after(start_step)
  rundir.write_config(workdir, config, dataset.fingerprint)
  print(f'{config.model} (PyTorch peer, {config.peer_padding} padding): {num_params:,} parameters, '
        f'{macs / 1e6:.1f}M multiply-adds per image; data {data.describe(dataset)}; {devices}'
        f'{", CUDA graph" if train_step.graph is not None else ""}; {total_steps} steps of batch '
        f'{config.batch_size}', flush=True)
  if start_step:
    print(f'resumed from checkpoint at step {start_step}', flush=True)

  evaluate_all = lambda: {name: evaluate(net, images, labels, config.eval_batch_size, mean, std,
                                         dataset.num_classes, memory_format)
                          for name, (images, labels) in eval_sets.items()}
  step, epoch, order = start_step, None, None
  window_steps, timed_steps, window_start = 0, 0, None
  results, stopped = None, None
  try:
    with StopRequest() as stop:
      while step < total_steps:
        if step // steps_per_epoch != epoch:
          epoch = step // steps_per_epoch
          order = torch.as_tensor(epoch_order(seed, epoch, len(dataset.train_labels)), device=device)
        start = (step % steps_per_epoch) * config.batch_size
        train_step(order[start:start + config.batch_size], float(rates[step]))
        step += 1
        window_steps += 1
        if window_start is None:  # Throughput is timed from the end of the first step (and the capture).
          train_step.read_sums()
          window_start = time.perf_counter()
        else:
          timed_steps += 1

        is_last = step == total_steps
        stop_now = stop.requested()
        log_now = step % durations.log_every_steps == 0 or is_last or stop_now
        eval_now = (durations.eval_every_steps and step % durations.eval_every_steps == 0) or is_last
        save_now = (durations.checkpoint_every_steps and step % durations.checkpoint_every_steps == 0) or is_last \
            or stop_now
        record = {}
        if log_now or eval_now or save_now:
          # Every checkpoint is preceded by this check, so none ever holds a diverged model.
          loss_sum, correct = train_step.read_sums()
          weights_finite = bool(torch.stack([torch.isfinite(p).all() for p in optimizer.params]).all())
          if not math.isfinite(loss_sum) or not weights_finite:
            raise NonFiniteLossError(f'the peer diverged by step {step} (loss or weights not finite) and '
                                     'stopped without saving it; lower the learning rate')
          if log_now:
            elapsed = time.perf_counter() - window_start
            record.update(train_loss=loss_sum / window_steps,
                          train_accuracy=correct / (window_steps * config.batch_size),
                          learning_rate=float(rates[step - 1]))
            if timed_steps:
              record['train_images_per_second'] = timed_steps * config.batch_size / max(elapsed, 1e-9)
            train_step.reset_sums()
            window_steps, timed_steps, window_start = 0, 0, time.perf_counter()
        if eval_now:
          results = evaluate_all()
          for name, result in results.items():
            record.update({f'{name}_loss': result['loss'], f'{name}_accuracy': result['accuracy'],
                           f'{name}_error': 1.0 - result['accuracy']})
          timed_steps, window_start = 0, time.perf_counter()  # Evaluation time is not training throughput.
        if record:
          writer.write(step, record)
          print(_log_line(step, total_steps, record), flush=True)
        if save_now:
          save_checkpoint(workdir, step, net, optimizer, device, metadata, config.checkpoints_to_keep)
        if stop_now:
          stopped = stop.signal_name
          break
  finally:
    writer.close()

  if stopped:
    print(f'stopped by {stopped} at step {step}: checkpoint saved; run the same command to resume', flush=True)
    return {'model': config.model, 'step': step, 'stopped': stopped}
  if results is None:  # Resumed at the end: the last evaluation was not kept.
    results = evaluate_all()
  summary = {'model': config.model, 'step': step, 'num_params': num_params, 'macs': macs, 'devices': devices,
             'trainer': TRAINER, 'torch_version': torch.__version__, 'peer_padding': config.peer_padding,
             'cuda_graph': train_step.graph is not None,
             **{f'{name}_accuracy': r['accuracy'] for name, r in results.items()},
             **{f'{name}_error': 1.0 - r['accuracy'] for name, r in results.items()},
             **{f'{name}_loss': r['loss'] for name, r in results.items()},
             'test_per_class_accuracy': results['test']['per_class_accuracy'],
             'class_names': dataset.class_names}
  rundir.write_results(workdir, summary)
  print(f'final test error {100 * summary["test_error"]:.2f}% (accuracy {100 * summary["test_accuracy"]:.2f}%) '
        f'at step {step}', flush=True)
  return summary


FLAGS = flags.FLAGS


def define_flags():
  """--padding; --config and --workdir come from jaxresnet.infra.cli, with its one-line errors for bad ones."""
  flags.DEFINE_string('padding', DEFAULT_PADDING,
                      "Stride-2 convs: 'symmetric' pads (1, 1) like the paper's and akamaster's nets; 'same' "
                      "pads (0, 1) like jaxresnet's Flax 'SAME' convs.")


def main(argv):
  exit_on_extra_arguments(argv)
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  if FLAGS.distributed or FLAGS.coordinator_address:
    exit_with_error('the PyTorch peer trains on one device; drop --distributed/--coordinator_address')
  with exit_on_user_error():
    require_torch()
    summary = train_and_evaluate(peer_config(FLAGS.config, FLAGS.padding), FLAGS.workdir)
  if summary.get('stopped'):
    sys.exit(0)


if __name__ == '__main__':
  from jaxresnet.infra import cli  # pylint: disable=g-import-not-at-top
  cli.define_run_flags()
  define_flags()
  app.run(main, flags_parser=cli.parse_flags_or_exit)
