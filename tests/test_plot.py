import json
import os

import numpy as np
from PIL import Image
import pytest

from conftest import REPO, run_module
from jaxresnet.experiments import curves as plot
from jaxresnet.infra.errors import DataError


def write_run(workdir, model, seed=0, steps=(2, 4, 6), train_accuracy=(0.5, 0.7, 0.9),
              test_error=(0.6, 0.4), eval_steps=(3, 6)):
  """A workdir with the files a training run writes: config.json and metrics.jsonl."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump({'model': model, 'seed': seed}, f)
  records = {s: {'step': s, 'train_loss': 1.0, 'train_accuracy': a} for s, a in zip(steps, train_accuracy)}
  for s, e in zip(eval_steps, test_error):
    records.setdefault(s, {'step': s}).update(test_error=e, test_accuracy=1 - e, val_error=e)
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    for s in sorted(records):
      f.write(json.dumps(records[s]) + '\n')
  return str(workdir)


def test_load_curve_reads_train_error_and_eval_steps(tmp_path):
  workdir = write_run(tmp_path / 'run', 'resnet20')
  with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
    f.write('{"step": 8, "train_acc')  # A line cut short by a crash is skipped.
  curve = plot.load_curve(workdir)
  assert curve.label == 'ResNet-20' and curve.model == 'resnet20'
  np.testing.assert_allclose(curve.train_steps, [2, 4, 6])
  np.testing.assert_allclose(curve.train_error, [0.5, 0.3, 0.1])
  np.testing.assert_allclose(curve.test_steps, [3, 6])
  np.testing.assert_allclose(curve.test_error, [0.6, 0.4])


@pytest.mark.slow
def test_lines_that_are_not_utf8_or_not_objects_are_skipped_with_one_warning(tmp_path, capsys):
  workdir = write_run(tmp_path / 'run', 'resnet20')
  with open(os.path.join(workdir, 'metrics.jsonl'), 'ab') as f:
    f.write(b'{"step": 7, "train_accuracy": 0.9\xff}\n[1, 2]\n')
  for _ in range(2):
    curve = plot.load_curve(workdir)
    np.testing.assert_allclose(curve.train_steps, [2, 4, 6])
  err = capsys.readouterr().err
  assert err.count('warning:') == 1 and 'skipped 2 line(s) that are not metric records (line 5, 6)' in err
  result = run_module('jaxresnet.plot', f'--workdir={workdir}', f'--output={tmp_path / "figure.png"}')
  assert result.returncode == 0 and 'Traceback' not in result.stderr, result.stderr
  assert os.path.exists(tmp_path / 'figure.png')


@pytest.mark.slow
def test_plot_to_an_unknown_format_or_under_a_file_is_one_error_line_and_writes_nothing(tmp_path):
  workdir = write_run(tmp_path / 'run', 'resnet20')
  (tmp_path / 'a_file').write_text('kept')
  for output, message in ((tmp_path / 'c.txt', '.txt is not an image format matplotlib writes'),
                          (tmp_path / 'a_file' / 'c.png', 'a_file is a file, not a folder')):
    result = run_module('jaxresnet.plot', f'--workdir={workdir}', f'--output={output}')
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith('error: ') and message in line, line
  assert sorted(os.listdir(tmp_path)) == ['a_file', 'run'] and (tmp_path / 'a_file').read_text() == 'kept'


def test_mean_curve_averages_at_steps_every_run_logged(tmp_path):
  a = plot.load_curve(write_run(tmp_path / 'a', 'plain20', train_accuracy=(0.5, 0.7, 0.9)))
  b = plot.load_curve(write_run(tmp_path / 'b', 'plain20', steps=(2, 4), train_accuracy=(0.7, 0.9),
                                test_error=(0.2, 0.2)))
  mean = plot.mean_curve([a, b], 'Plain-20 (2 seeds)')
  np.testing.assert_allclose(mean.train_steps, [2, 4])
  np.testing.assert_allclose(mean.train_error, [0.4, 0.2])
  np.testing.assert_allclose(mean.test_error, [0.4, 0.3])


def test_draw_puts_plain_nets_left_and_resnets_right(tmp_path):
  curves = [plot.load_curve(write_run(tmp_path / m, m)) for m in ('resnet20', 'plain20', 'plain56')]
  fig = plot.draw(curves, str(tmp_path / 'fig.png'), dpi=50)
  left, right = fig.axes
  assert left.get_title() == 'plain networks' and right.get_title() == 'residual networks'
  # Per run one dashed (train) and one solid (test) line.
  assert [l.get_linestyle() for l in left.get_lines()] == ['--', '-', '--', '-']
  assert [l.get_label() for l in right.get_lines() if l.get_linestyle() == '-'] == ['ResNet-20']
  assert left.get_ylabel() == 'error (%)' and left.get_xlabel() == 'iterations'
  np.testing.assert_allclose(left.get_lines()[1].get_ydata(), [60, 40])  # Percent.
  with Image.open(tmp_path / 'fig.png') as image:
    assert image.size == (int(plot.FIGSIZE[0] * 50), int(plot.FIGSIZE[1] * 50))


def test_long_runs_are_drawn_in_units_of_1e4_iterations(tmp_path):
  curve = plot.load_curve(write_run(tmp_path / 'r', 'resnet20', steps=(100, 64000), train_accuracy=(0.2, 0.99),
                                    eval_steps=(2000, 64000), test_error=(0.5, 0.08)))
  ax = plot.draw([curve], str(tmp_path / 'fig.png')).axes[0]
  assert ax.get_xlabel() == 'iter. (1e4)'
  np.testing.assert_allclose(ax.get_lines()[1].get_xdata(), [0.2, 6.4])
  assert ax.get_ylim() == (0, 20)  # The paper's axis, as the final error fits in it.


@pytest.mark.slow
def test_plot_cli_draws_every_run_under_the_dirs_to_a_png_of_the_figure_size(tmp_path):
  plain = write_run(tmp_path / 'plain20', 'plain20')
  reproduction = tmp_path / 'reproduction'  # A reproduce workdir: runs one level further down.
  write_run(reproduction / 'resnet20' / 'seed0', 'resnet20', seed=0)
  write_run(reproduction / 'resnet20' / 'seed1', 'resnet20', seed=1)
  output = tmp_path / 'out' / 'curves.png'
  result = run_module('jaxresnet.plot', f'--workdir={plain}', str(reproduction), f'--output={output}',
                      check=True)
  assert str(output) in result.stdout
  with Image.open(output) as image:
    assert image.format == 'PNG'
    assert image.size == (int(plot.FIGSIZE[0] * plot.DEFAULT_DPI), int(plot.FIGSIZE[1] * plot.DEFAULT_DPI))
  assert plot.find_workdirs([plain, str(reproduction)]) == [
      plain, str(reproduction / 'resnet20' / 'seed0'), str(reproduction / 'resnet20' / 'seed1')]


@pytest.mark.slow
def test_plot_cli_without_runs_is_one_error_line(tmp_path):
  (tmp_path / 'empty').mkdir()
  result = run_module('jaxresnet.plot', f'--workdir={tmp_path / "empty"}', f'--output={tmp_path / "x.png"}')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith('error: no training runs under')
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'x.png').exists()


def test_find_workdirs_rejects_a_missing_dir(tmp_path):
  with pytest.raises(DataError, match='is not a directory'):
    plot.find_workdirs([str(tmp_path / 'nope')])


@pytest.mark.slow
def test_plot_cli_without_output_writes_into_the_first_workdir(tmp_path):
  first = write_run(tmp_path / 'runs' / 'resnet20', 'resnet20')
  second = write_run(tmp_path / 'runs' / 'plain20', 'plain20')
  before = os.path.exists(os.path.join(REPO, 'curves.png'))
  result = run_module('jaxresnet.plot', f'--workdir={first}', second, check=True)
  output = os.path.join(first, 'curves.png')
  assert result.stdout.strip() == f'wrote {output}'
  with Image.open(output) as image:
    assert image.format == 'PNG'
  assert os.path.exists(os.path.join(REPO, 'curves.png')) == before  # Not in the current directory.
  assert not os.path.exists(os.path.join(second, 'curves.png'))


def legend(workdirs):
  return [l.get_label() for l in plot.plot_workdirs(workdirs, dpi=20).axes[0].get_lines() if l.get_linestyle() == '-']


def test_two_runs_of_one_model_get_distinct_labels(tmp_path):
  # Different seeds: the seed tells them apart.
  by_seed = [write_run(tmp_path / 'seeds' / s, 'resnet20', seed=i) for i, s in enumerate(('x', 'y'))]
  assert legend(by_seed) == ['ResNet-20 (seed 0)', 'ResNet-20 (seed 1)']
  # One seed, two settings: the workdirs' names do.
  by_name = [write_run(tmp_path / 'lr' / name, 'resnet20', seed=0) for name in ('lr0.1', 'lr0.05')]
  assert legend(by_name) == ['ResNet-20 (lr0.1)', 'ResNet-20 (lr0.05)']
  # Same last part: as much of the path as it takes.
  by_path = [write_run(tmp_path / 'paths' / parent / 'seed0', 'resnet20', seed=0) for parent in ('a', 'b')]
  assert legend(by_path) == ['ResNet-20 (a/seed0)', 'ResNet-20 (b/seed0)']
  # Other models keep their plain names; a run given twice is drawn once.
  mixed = [by_name[0], write_run(tmp_path / 'other', 'resnet56'), by_name[0], by_name[1]]
  assert legend(mixed) == ['ResNet-20 (lr0.1)', 'ResNet-56', 'ResNet-20 (lr0.05)']
  assert os.path.exists(os.path.join(by_name[0], 'curves.png'))  # The default output: the first dir given.


def test_the_plot_command_is_flags_and_main_and_its_library_imports_no_command():
  """Libraries (report, reproduce, the notebook) import jaxresnet.experiments.curves, never the command."""
  import ast  # pylint: disable=g-import-not-at-top
  command = ast.parse(open(os.path.join(REPO, 'jaxresnet', 'plot.py')).read())
  assert sorted(n.name for n in command.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))) == [
      'define_flags', 'main']
  library = ast.parse(open(os.path.join(REPO, 'jaxresnet', 'experiments', 'curves.py')).read())
  imported = {a.name for n in ast.walk(library) if isinstance(n, ast.Import) for a in n.names}
  imported |= {f'{n.module}.{a.name}' for n in ast.walk(library) if isinstance(n, ast.ImportFrom) for a in n.names}
  assert not [m for m in imported if m.startswith(('absl', 'jaxresnet.plot', 'jaxresnet.report', 'jaxresnet.main'))]


def test_panels_follow_the_family_and_other_nets_get_their_own(tmp_path):
  curves = [plot.load_curve(write_run(tmp_path / m, m)) for m in ('cnn_small', 'resnet20', 'plain20')]
  fig = plot.draw(curves, str(tmp_path / 'fig.png'), dpi=30)
  assert [ax.get_title() for ax in fig.axes] == ['plain networks', 'residual networks', 'other networks']
  assert [l.get_label() for l in fig.axes[2].get_lines() if l.get_linestyle() == '-'] == ['cnn_small']
  assert plot.family('resnet18_1111') == 'residual networks' and plot.family('cnn_deep') == 'other networks'


def test_a_run_evaluated_once_shows_its_test_error_as_a_marker(tmp_path):
  # 200 steps, evaluated once at the end: one test-error point, which a bare line would not show.
  run = write_run(tmp_path / 'short', 'resnet20', steps=(100, 200), train_accuracy=(0.2, 0.3),
                  eval_steps=(200,), test_error=(0.71,))
  ax = plot.draw([plot.load_curve(run)], str(tmp_path / 'fig.png'), dpi=30).axes[0]
  (test_line,) = [l for l in ax.get_lines() if l.get_linestyle() == '-']
  assert len(test_line.get_xdata()) == 1 and test_line.get_marker() not in ('None', '', None)
  assert test_line.get_markersize() >= 4
  # Beside a 64k-step run of another family it keeps its own iterations axis, not a dot at 0.
  long = write_run(tmp_path / 'long', 'plain20', steps=(100, 64000), eval_steps=(64000,), test_error=(0.1,),
                   train_accuracy=(0.2, 0.9))
  short_ax, long_ax = plot.draw([plot.load_curve(run), plot.load_curve(long)], str(tmp_path / 'two.png'), dpi=30).axes[::-1]
  assert short_ax.get_title() == 'residual networks' and 200 <= short_ax.get_xlim()[1] < 300
  assert long_ax.get_xlabel() == 'iter. (1e4)' and short_ax.get_xlabel() == 'iterations'
  # A one-point training curve is drawn as a marker too.
  one = write_run(tmp_path / 'one', 'resnet56', steps=(10,), train_accuracy=(0.2,), eval_steps=(), test_error=())
  ax = plot.draw([plot.load_curve(one)], str(tmp_path / 'one.png'), dpi=30).axes[0]
  (train_line,) = [l for l in ax.get_lines() if l.get_linestyle() == '--']
  assert train_line.get_marker() not in ('None', '', None)


def legend_entries(ax):
  return [t.get_text() for t in ax.get_legend().get_texts()]


def test_legend_has_an_entry_only_for_runs_with_points_and_stays_out_of_the_data(tmp_path):
  ran = plot.load_curve(write_run(tmp_path / 'ran', 'resnet20'))
  nothing = plot.load_curve(write_run(tmp_path / 'empty', 'resnet56', steps=(), train_accuracy=(), eval_steps=(),
                                      test_error=()))
  fig = plot.draw([ran, nothing], str(tmp_path / 'fig.png'), dpi=40)
  (ax,) = fig.axes
  assert legend_entries(ax) == ['ResNet-20', 'training error', 'test error']
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  canvas = FigureCanvasAgg(fig)
  canvas.draw()  # The same constrained layout savefig drew.
  renderer = canvas.get_renderer()
  assert not ax.get_legend().get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
  with pytest.raises(DataError, match='no points to plot'):
    plot.draw([nothing], str(tmp_path / 'none.png'), dpi=40)


def test_a_run_too_short_for_curves_says_so_and_shows_every_logged_step(tmp_path):
  """Issue 35: 30 steps logged at 20 and evaluated at 30 drew one dash and one dot and said nothing."""
  short = write_run(tmp_path / 'short', 'resnet20', steps=(20,), train_accuracy=(0.2,), eval_steps=(30,),
                    test_error=(0.9,))
  ax = plot.draw([plot.load_curve(short)], str(tmp_path / 'short.png'), dpi=30).axes[0]
  [note] = [t.get_text() for t in ax.texts]
  assert note.startswith('too short for curves: 1 logged training-error step, 1 evaluation\n'), note
  assert '--config.log_every_steps' in note
  # A few logged steps: each one a dot on the training-error line, and still the note.
  few = write_run(tmp_path / 'few', 'resnet20', steps=(10, 20), train_accuracy=(0.2, 0.3), eval_steps=(20,),
                  test_error=(0.8,))
  ax = plot.draw([plot.load_curve(few)], str(tmp_path / 'few.png'), dpi=30).axes[0]
  (train_line,) = [l for l in ax.get_lines() if l.get_linestyle() == '--']
  assert len(train_line.get_xdata()) == 2 and train_line.get_marker() not in ('None', '', None)
  assert len(ax.texts) == 1
  # A run with curves to draw gets no note.
  ax = plot.draw([plot.load_curve(write_run(tmp_path / 'long', 'resnet20'))], str(tmp_path / 'long.png'),
                 dpi=30).axes[0]
  assert not ax.texts
