"""Training curves in the style of He et al. 2016, Figure 6: plain nets beside ResNets.

The library behind `python -m jaxresnet.plot` and the reproduction report's
figure: reading a run's metrics.jsonl into a Curve, averaging seeds, and
drawing. As in the paper, thin dashed lines are training error and bold lines
test error, in percent against iterations. Training error at a logged step is
1 - train_accuracy of the steps since the previous log (augmented batches,
train-mode BatchNorm); test error comes from the eval steps.
"""
import dataclasses
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from jaxresnet.infra import rundir
from jaxresnet.infra.errors import DataError

FIGSIZE = (12.0, 4.5)  # inches; the PNG is FIGSIZE * dpi pixels.
DEFAULT_DPI = 100


@dataclasses.dataclass
class Curve:
  """One run's (or the mean of several runs') error curves, as fractions."""
  label: str
  model: str
  train_steps: np.ndarray
  train_error: np.ndarray
  test_steps: np.ndarray
  test_error: np.ndarray


def pretty_name(model: str) -> str:
  """'resnet20' -> 'ResNet-20', 'plain56' -> 'Plain-56', as the paper writes them."""
  for prefix, name in (('resnet', 'ResNet'), ('plain', 'Plain')):
    if model.startswith(prefix) and model[len(prefix):].isdigit():
      return f'{name}-{model[len(prefix):]}'
  return model


def read_metrics(workdir: str) -> List[dict]:
  """The complete lines of WORKDIR/metrics.jsonl (read by rundir, the run files' one owner)."""
  return rundir.read_metrics(workdir)


def read_config(workdir: str) -> dict:
  """WORKDIR/config.json as written, {} without one (rundir.read_config)."""
  return rundir.read_config(workdir)


def load_curve(workdir: str, label: Optional[str] = None) -> Curve:
  """The training and test error curves of one training workdir."""
  records = read_metrics(workdir)
  model = read_config(workdir).get('model', os.path.basename(os.path.normpath(workdir)))
  train = [(r['step'], 1.0 - r['train_accuracy']) for r in records if 'train_accuracy' in r]
  test = [(r['step'], r['test_error']) for r in records if 'test_error' in r]
  as_arrays = lambda pairs: tuple(np.array(c, dtype=float) for c in zip(*pairs)) if pairs else (
      np.zeros(0), np.zeros(0))
  return Curve(label or pretty_name(model), model, *as_arrays(train), *as_arrays(test))


def mean_curve(curves: Sequence[Curve], label: str) -> Curve:
  """The mean of several runs of one model, at the steps every run logged."""
  def mean(steps_of, values_of):
    common = sorted(set.intersection(*(set(steps_of(c).tolist()) for c in curves)))
    values = [[dict(zip(steps_of(c).tolist(), values_of(c).tolist()))[s] for s in common] for c in curves]
    return np.array(common, dtype=float), np.mean(np.array(values).reshape(len(curves), -1), axis=0)
  train_steps, train_error = mean(lambda c: c.train_steps, lambda c: c.train_error)
  test_steps, test_error = mean(lambda c: c.test_steps, lambda c: c.test_error)
  return Curve(label, curves[0].model, train_steps, train_error, test_steps, test_error)


def smoothed(curve: Curve, bins: int) -> Curve:
  """The curve with its training error averaged over `bins` equal spans of its steps, each drawn at the
  span's last logged step: the per-log-line error of a few batches is too noisy to read beside others."""
  if len(curve.train_steps) <= bins:
    return curve
  span = np.minimum(bins - 1, np.ceil(curve.train_steps * bins / curve.train_steps[-1]).astype(int) - 1)
  kept = [i for i in range(bins) if (span == i).any()]
  steps = np.array([curve.train_steps[span == i][-1] for i in kept])
  errors = np.array([curve.train_error[span == i].mean() for i in kept])
  return dataclasses.replace(curve, train_steps=steps, train_error=errors)


def find_workdirs(paths: Sequence[str]) -> List[str]:
  """Training workdirs among `paths`: each path itself, or the runs found below it; each run once."""
  found = []
  for path in paths:
    if not os.path.isdir(path):
      raise DataError(f'{path} is not a directory')
    if os.path.exists(os.path.join(path, 'metrics.jsonl')):
      found.append(path)
      continue
    below = sorted(root for root, _, files in os.walk(path) if 'metrics.jsonl' in files)
    if not below:
      raise DataError(f'no training runs under {path} (no metrics.jsonl found)')
    found += below
  seen = set()  # A run named twice (a dir and its parent) would be two identical lines.
  return [w for w in found if not (os.path.realpath(w) in seen or seen.add(os.path.realpath(w)))]


def _path_tails(workdirs: Sequence[str]) -> List[str]:
  """The shortest trailing parts of the paths that tell them apart: 'lr0.1', or 'a/seed0' beside 'b/seed0'."""
  parts = [os.path.normpath(os.path.abspath(w)).strip(os.sep).split(os.sep) for w in workdirs]
  for k in range(1, max(len(p) for p in parts) + 1):
    tails = ['/'.join(p[-k:]) for p in parts]
    if len(set(tails)) == len(tails):
      return tails
  return ['/'.join(p) for p in parts]


def run_labels(workdirs: Sequence[str], curves: Sequence[Curve]) -> List[str]:
  """One legend label per run, distinct where the runs are.

  The model's name alone while it is unique; runs of one model add their seed;
  runs that still look alike (same model and seed, e.g. two learning rates)
  add the end of their workdir's path instead.
  """
  labels = [c.label for c in curves]
  seeds = [read_config(w).get('seed') for w in workdirs]
  for label in set(labels):
    same = [i for i, l in enumerate(labels) if l == label]
    if len(same) < 2:
      continue
    group_seeds = [seeds[i] for i in same]
    if None not in group_seeds and len(set(map(str, group_seeds))) == len(same):
      for i in same:
        labels[i] = f'{label} (seed {seeds[i]})'
    else:
      for i, tail in zip(same, _path_tails([workdirs[i] for i in same])):
        labels[i] = f'{label} ({tail})'
  return labels


def default_ymax(curves: Sequence[Curve]) -> float:
  """The paper's 0-20% axis, widened (in 5% steps) when the runs end with higher errors."""
  finals = [100 * c.test_error[-1] for c in curves if len(c.test_error)]
  top = max([20.0] + [1.5 * f for f in finals])
  return float(min(100.0, 5 * np.ceil(top / 5)))


# Panels, in order: a model goes in the first whose prefixes it starts with, else in OTHER_FAMILY.
FAMILIES = (('plain networks', ('plain',)), ('residual networks', ('resnet',)))
OTHER_FAMILY = 'other networks'
MARKER_SIZE = 4.5  # points; every evaluation is a dot, so a run evaluated once still shows.
# A training-error line of at most this many logged steps gets a dot at each: two or three dashes show little.
FEW_POINTS = 10
# A panel where no run has this many points on a curve says that its runs are too short to draw curves.
CURVE_POINTS = 3


def family(model: str) -> str:
  """The panel a model is drawn in: 'plain networks', 'residual networks' or 'other networks' (e.g. cnn_small)."""
  return next((name for name, prefixes in FAMILIES if model.startswith(prefixes)), OTHER_FAMILY)


def _has_points(curve: Curve) -> bool:
  return bool(len(curve.train_steps) or len(curve.test_steps))


def too_short_note(group: Sequence[Curve]) -> str:
  """The note of a panel whose runs logged too few steps for a curve ('' if some run has one), with the fix."""
  most_train = max(len(c.train_steps) for c in group)
  most_test = max(len(c.test_steps) for c in group)
  if max(most_train, most_test) >= CURVE_POINTS:
    return ''
  return (f'too short for curves: {most_train} logged training-error step{"s" if most_train != 1 else ""}, '
          f'{most_test} evaluation{"s" if most_test != 1 else ""}\n'
          'a longer run, or smaller --config.log_every_steps and --config.eval_every_steps, draws them')


def draw(curves: Sequence[Curve], output: str, dpi: int = DEFAULT_DPI, ymax: Optional[float] = None,
         title: Optional[str] = None, colors: Optional[Dict[str, str]] = None):
  """Draws the curves, one panel per family (plain, residual, other), to a PNG; returns the Figure.

  Test error is a bold line with a dot at every evaluation; training error a thin dashed line (a dot
  where a run logged it once). Runs with no points at all are left out, legend included. Each
  panel's legend sits below it, off the data. `colors` maps a label to its color (one depth one
  color in both panels, as in the paper); by default each panel's lines take C0, C1, ... in order.
  """
  # Figure without pyplot: no global state and no GUI backend, so it works headless and in notebooks.
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  from matplotlib.lines import Line2D  # pylint: disable=g-import-not-at-top
  image_format = output_format(output)  # Before the drawing: a wrong extension is known at once.
  if not curves:
    raise DataError('no curves to plot')
  drawable = [c for c in curves if _has_points(c)]
  if not drawable:
    raise DataError(f'no points to plot: none of the {len(curves)} runs has logged a step yet')
  names = [name for name, _ in FAMILIES] + [OTHER_FAMILY]
  groups = [(name, [c for c in drawable if family(c.model) == name]) for name in names]
  groups = [(name, group) for name, group in groups if group]
  ymax = ymax or default_ymax(drawable)

  fig = Figure(figsize=FIGSIZE, dpi=dpi, layout='constrained')
  axes = fig.subplots(1, len(groups), squeeze=False)[0]
  for ax, (name, group) in zip(axes, groups):
    # Each panel its own iterations axis: a 20-step run beside a 64k-step one would be a dot at 0.
    max_step = max([0.0] + [float(s[-1]) for c in group for s in (c.train_steps, c.test_steps) if len(s)])
    scale, xlabel = (1e4, 'iter. (1e4)') if max_step >= 1e4 else (1.0, 'iterations')
    handles = []
    for i, curve in enumerate(group):
      color = (colors or {}).get(curve.label, f'C{i % 10}')
      ax.plot(curve.train_steps / scale, 100 * curve.train_error, '--', color=color, linewidth=0.8,
              marker='.' if len(curve.train_steps) <= FEW_POINTS else None, markersize=MARKER_SIZE)
      ax.plot(curve.test_steps / scale, 100 * curve.test_error, '-', color=color, linewidth=2.2,
              marker='o', markersize=MARKER_SIZE, label=curve.label)
      handles.append(Line2D([], [], color=color, linewidth=2.2, marker='o', markersize=MARKER_SIZE,
                            label=curve.label))
    handles += [Line2D([], [], color='gray', linestyle='--', linewidth=0.8, label='training error'),
                Line2D([], [], color='gray', linestyle='-', linewidth=2.2, marker='o', markersize=MARKER_SIZE,
                       label='test error')]
    # Below the panel: constrained layout shrinks the axes to make room, so no line hides behind it.
    ax.legend(handles=handles, fontsize='small', loc='upper center', bbox_to_anchor=(0.5, -0.14),
              ncol=min(3, len(handles)), frameon=False)
    ax.set_xlim(0, 1.02 * max_step / scale if max_step else 1)  # Room for the last evaluation's dot.
    ax.set_ylim(0, ymax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel('error (%)')
    ax.set_title(name)
    ax.grid(alpha=0.3)
    note = too_short_note(group)
    if note:
      ax.text(0.5, 0.55, note, transform=ax.transAxes, ha='center', va='center', fontsize='small', color='dimgray',
              bbox=dict(facecolor='white', edgecolor='lightgray', alpha=0.9))
  if title:
    fig.suptitle(title)
  rundir.write_files({output: lambda path: fig.savefig(path, dpi=dpi, format=image_format)})
  return fig


def output_format(output: str) -> str:
  """The image format an output path's extension names; one line (DataError) if matplotlib cannot write it."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  extension = os.path.splitext(output)[1].lstrip('.').lower()
  supported = Figure().canvas.get_supported_filetypes()
  if extension not in supported:
    raise DataError(f'cannot draw to {output}: {"." + extension if extension else "no extension"} is not an image '
                    f'format matplotlib writes; use one of {", ".join("." + e for e in sorted(supported))}')
  return extension


def default_output(paths: Sequence[str]) -> str:
  """curves.png in the first dir given: beside the runs, not wherever the command happened to start."""
  return os.path.join(paths[0], 'curves.png')


def plot_workdirs(paths: Sequence[str], output: Optional[str] = None, dpi: int = DEFAULT_DPI,
                  ymax: Optional[float] = None):
  """One line per run found under `paths`, labelled by run_labels; draws to `output` or default_output."""
  output_format(output or default_output(paths))  # A wrong --output is one line before any run is read.
  workdirs = find_workdirs(paths)
  curves = [load_curve(w) for w in workdirs]
  for curve, label in zip(curves, run_labels(workdirs, curves)):
    curve.label = label
  return draw(curves, output or default_output(paths), dpi=dpi, ymax=ymax)
