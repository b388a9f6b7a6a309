"""PyTorch reference of the nets jaxresnet benchmarks against (needs torch: pip install -e .[bench]).

The same architectures as jaxresnet.models, with equal parameter counts, so the
throughput ratio compares implementations, not models:

  * He et al. 2016 CIFAR ResNets (depth 6n+2; 16, 32, 64 filters; option A
    shortcut: subsample by 2 and zero-pad the new channels, no parameters),
    written like akamaster/pytorch_resnet_cifar10;
  * the CIFAR ResNet-18 (3x3 stem, [2, 2, 2, 2] BasicBlocks of 64..512 filters,
    1x1 conv + BatchNorm projection where the shape changes), as in
    kuangliu/pytorch-cifar.

BatchNorm matches Flax's: epsilon 1e-5, running averages with momentum 0.9
(PyTorch spells that momentum=0.1). The plain nets of the paper (plain{6n+2})
are the ResNets without their shortcuts.

Padding of the strided 3x3 convs (`padding=`):
  * 'symmetric' (default): PyTorch's padding=1, one zero row/column on each
    side, as the paper's Torch code and akamaster's. The output pixel i is
    centred on input pixel 2i, the pixel the option A shortcut keeps.
  * 'same': Flax/TensorFlow 'SAME', what jaxresnet's nets do: a stride-2 3x3
    conv of an even-sized input pads (0, 1), none before and one after, so its
    output pixel i is centred on input pixel 2i + 1. Stride-1 convs pad (1, 1)
    either way, so only the first conv of stages 2 and 3 differs.
"""
from typing import Optional, Sequence

import torch
from torch import nn
import torch.nn.functional as F

# Parameter counts (BatchNorm scale and bias included), equal to jaxresnet's.
PARAMS = {'resnet8': 75_290, 'resnet20': 269_722, 'resnet56': 853_018,
          'resnet110': 1_727_962, 'resnet18': 11_173_962}
PADDINGS = ('symmetric', 'same')


class SamePaddingConv2d(nn.Conv2d):
  """A bias-free-or-not Conv2d that pads like Flax's 'SAME': total ceil-mode padding, the odd pixel after."""

  def forward(self, x):
    pads = []
    for size, k, s in zip(x.shape[:1:-1], self.kernel_size[::-1], self.stride[::-1]):  # W, then H.
      total = max((-(-size // s) - 1) * s + k - size, 0)
      pads += [total // 2, total - total // 2]
    return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv3x3(cin: int, cout: int, stride: int = 1, padding: str = 'symmetric') -> nn.Conv2d:
  if padding not in PADDINGS:
    raise ValueError(f'unknown padding {padding!r}; known: {", ".join(PADDINGS)}')
  if padding == 'same' and stride > 1:  # Stride 1: 'SAME' pads (1, 1), the same as padding=1.
    return SamePaddingConv2d(cin, cout, 3, stride=stride, padding=0, bias=False)
  return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
  return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


class OptionAShortcut(nn.Module):
  """Subsample spatially, zero-pad the new channels equally on both sides."""

  def __init__(self, cin: int, cout: int, stride: int):
    super().__init__()
    self.stride = stride
    self.pad = ((cout - cin) // 2, cout - cin - (cout - cin) // 2)

  def forward(self, x):
    return F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, *self.pad))


class BasicBlock(nn.Module):
  """Two 3x3 conv-BN layers plus a shortcut: option 'A' (free), 'B' (1x1 projection) or 'none' (plain)."""

  def __init__(self, cin: int, cout: int, stride: int = 1, shortcut: str = 'A', padding: str = 'symmetric'):
    super().__init__()
    self.conv1, self.bn1 = _conv3x3(cin, cout, stride, padding), _bn(cout)
    self.conv2, self.bn2 = _conv3x3(cout, cout), _bn(cout)
    if shortcut == 'none':
      self.shortcut = None
    elif stride == 1 and cin == cout:
      self.shortcut = nn.Identity()
    elif shortcut == 'A':
      self.shortcut = OptionAShortcut(cin, cout, stride)
    else:
      self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), _bn(cout))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y if self.shortcut is None else y + self.shortcut(x))


class ResNet(nn.Module):
  """Stem conv-BN, stages of BasicBlocks (the first of each later stage strided), pool, dense."""

  def __init__(self, widths: Sequence[int], blocks_per_stage: Sequence[int], shortcut: str,
               num_classes: int = 10, padding: str = 'symmetric'):
    super().__init__()
    self.stem = nn.Sequential(_conv3x3(3, widths[0]), _bn(widths[0]), nn.ReLU())
    blocks, cin = [], widths[0]
    for stage, (cout, n) in enumerate(zip(widths, blocks_per_stage)):
      for i in range(n):
        blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1, shortcut, padding))
        cin = cout
    self.blocks = nn.Sequential(*blocks)
    self.fc = nn.Linear(cin, num_classes)
    for m in self.modules():  # Kaiming-normal on fan-in, as jaxresnet and the paper.
      if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight, mode='fan_in', nonlinearity='relu')

  def forward(self, x):
    x = self.blocks(self.stem(x))
    return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def get_model(name: str, num_classes: int = 10, shortcut: Optional[str] = None,
              padding: str = 'symmetric') -> nn.Module:
  """resnet{6n+2} (He et al. CIFAR; `shortcut` 'A' by default, or 'B'), plain{6n+2}, or resnet18.

  resnet18 is the CIFAR variant with projection shortcuts; it takes no `shortcut`.
  """
  if name == 'resnet18':
    if shortcut not in (None, 'B'):
      raise ValueError(f'resnet18 has projection shortcuts (B), not {shortcut!r}')
    return ResNet((64, 128, 256, 512), (2, 2, 2, 2), shortcut='B', num_classes=num_classes, padding=padding)
  family = next((f for f in ('resnet', 'plain') if name.startswith(f) and name[len(f):].isdigit()), None)
  depth = int(name[len(family):]) if family else -1
  if depth < 8 or (depth - 2) % 6:
    raise ValueError(f'no PyTorch reference for model {name!r}')
  if family == 'plain':
    shortcut = 'none'
  elif shortcut not in (None, 'A', 'B'):
    raise ValueError(f'unknown shortcut option {shortcut!r} (expected A or B)')
  return ResNet((16, 32, 64), ((depth - 2) // 6,) * 3, shortcut=shortcut or 'A', num_classes=num_classes,
                padding=padding)


def count_params(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters() if p.requires_grad)
