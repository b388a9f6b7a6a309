"""jaxresnet/experiments/depth.py: Figure 6's claims (depth 20 against 56) stated from finished runs."""
import json
import os

import numpy as np
import pytest

from jaxresnet.experiments import curves
from jaxresnet.experiments import depth
from jaxresnet.experiments import reproduction
from jaxresnet.experiments import tables

STEPS = 160  # A run of 160 steps logged every 10: 16 windows of one log line each, as 8,000 steps of 500.


def write_run(workdir, model, seed, train_error, test_error, steps=STEPS, log_every=10):
  """A finished run whose logged training error is train_error(step) and whose final test error is test_error."""
  directory = tables.run_dir(str(workdir), model, seed)
  os.makedirs(directory)
  config = json.loads(reproduction.run_config(model, seed, dataset='image_folder').to_json_best_effort())
  with open(os.path.join(directory, 'config.json'), 'w') as f:
    json.dump({**config, 'num_train_steps': steps}, f)
  with open(os.path.join(directory, 'metrics.jsonl'), 'w') as f:
    for step in range(log_every, steps + 1, log_every):
      f.write(json.dumps({'step': step, 'train_accuracy': 1 - train_error(step), 'train_window_steps': log_every,
                          **({'test_error': test_error} if step == steps else {})}) + '\n')
  with open(os.path.join(directory, 'results.json'), 'w') as f:
    json.dump({'step': steps, 'test_error': test_error, 'val_error': test_error, 'num_params': 1, 'macs': 1,
               'devices': '1 x cpu', 'class_names': tables.CIFAR10_CLASSES}, f)
  return directory


def test_training_error_windows_weigh_each_line_by_the_steps_it_covers(tmp_path):
  directory = tmp_path / 'run'
  os.makedirs(directory)
  lines = [(3, 0.5, 3), (4, 0.9, 1),  # First half: (3 * 0.5 + 1 * 0.1) / 4 = 0.4 error.
           (8, 0.75, 4)]  # Second half.
  (directory / 'metrics.jsonl').write_text(''.join(
      json.dumps({'step': s, 'train_accuracy': a, 'train_window_steps': w}) + '\n' for s, a, w in lines) +
      json.dumps({'step': 8, 'test_error': 0.3}) + '\n')
  np.testing.assert_allclose(depth.train_error_windows(str(directory), 8, windows=2), [0.4, 0.25])
  # A span with nothing logged is NaN, not 0 (which would read as a perfect training error).
  assert np.isnan(depth.train_error_windows(str(directory), 8, windows=4)[2])


def report_of(workdir):
  return tables.collect(str(workdir))


def test_the_claims_hold_when_deeper_plain_nets_train_worse_and_deeper_resnets_better(tmp_path):
  for seed in (0, 1):
    write_run(tmp_path, 'plain20', seed, lambda s: 0.30 - s / 1000, 0.18 + seed / 100)
    write_run(tmp_path, 'plain56', seed, lambda s: 0.35 - s / 1000, 0.21 + seed / 100)
    write_run(tmp_path, 'resnet20', seed, lambda s: 0.28 - s / 1000, 0.16 + seed / 100)
    write_run(tmp_path, 'resnet56', seed, lambda s: 0.26 - s / 1000, 0.15 + seed / 100)
  section = report_of(tmp_path)['depth']
  assert [(r['model'], r['seeds']) for r in section['rows']] == [
      ('plain20', [0, 1]), ('plain56', [0, 1]), ('resnet20', [0, 1]), ('resnet56', [0, 1])]
  plain56 = section['rows'][1]
  assert plain56['train_error']['mean'] == pytest.approx(0.35 - 0.160)  # The last window: the line at step 160.
  assert plain56['test_error'] == {'mean': pytest.approx(0.215), 'std': pytest.approx(np.std([0.21, 0.22], ddof=1)),
                                   'n': 2}
  verdicts = {c['claim']: c['verdict'] for c in section['claims']}
  assert verdicts == {'a': 'supported', 'b': 'supported', 'c': 'supported', 'd': 'supported'}
  evidence = {c['claim']: c['evidence'] for c in section['claims']}
  assert 'in 16 of the 16 spans' in evidence['a'] and '+5.00 points' in evidence['a']
  assert 'Plain-56 21.50 ± 0.71% (n = 2) against Plain-20 18.50 ± 0.71% (n = 2): +3.00 points' in evidence['b']
  assert 'test error +6.00 points' in evidence['d']


def test_a_claim_that_does_not_hold_is_said_plainly_with_the_spans_where_it_failed(tmp_path):
  # Plain-56 trains worse only late (its error above Plain-20's from step 90 on), and tests better;
  # ResNet-56 trains better but tests worse.
  write_run(tmp_path, 'plain20', 0, lambda s: 0.30, 0.20)
  write_run(tmp_path, 'plain56', 0, lambda s: 0.25 if s < 90 else 0.35, 0.19)
  write_run(tmp_path, 'resnet20', 0, lambda s: 0.30, 0.17)
  write_run(tmp_path, 'resnet56', 0, lambda s: 0.20, 0.18)
  claims = {c['claim']: c for c in report_of(tmp_path)['depth']['claims']}
  assert claims['a']['verdict'] == 'not supported'
  assert 'in 8 of the 16 spans of the schedule (not in span 1, 2, 3, 4, 5, 6, 7, 8)' in claims['a']['evidence']
  assert claims['b']['verdict'] == 'not supported' and '-1.00 points' in claims['b']['evidence']
  assert claims['c']['verdict'] == 'not supported' and 'test error: 18.00% (n = 1) against 17.00% (n = 1): ' \
      '+1.00 points' in claims['c']['evidence']
  markdown = tables.render_markdown(report_of(tmp_path), None)
  assert '- (b) Plain-56\'s test error is above Plain-20\'s. **Not supported**: ' in markdown


def test_claims_wait_for_finished_runs_of_both_depths(tmp_path):
  write_run(tmp_path, 'plain20', 0, lambda s: 0.3, 0.2)
  write_run(tmp_path, 'resnet20', 0, lambda s: 0.3, 0.2)
  os.makedirs(tables.run_dir(str(tmp_path), 'plain56', 0))  # Started, not finished: not counted.
  claims = report_of(tmp_path)['depth']['claims']
  assert [c['verdict'] for c in claims] == ['not yet'] * 4
  assert claims[0]['evidence'] == 'no finished run of Plain-56 yet.'
  assert claims[3]['evidence'] == 'no finished run of Plain-56 or ResNet-56 yet.'


def test_the_figure_gives_one_depth_one_color_in_both_panels_and_smooths_training_error(tmp_path):
  for model in ('plain20', 'plain56', 'resnet56'):
    write_run(tmp_path, model, 0, lambda s: 0.3 + 0.05 * (-1) ** (s // 10), 0.2, steps=1600)
  report = tables.write_report(str(tmp_path), dpi=20)
  assert report['figure'] == tables.FIGURE_FILE
  these = tables.figure_curves(report)
  assert tables.depth_colors(these) == {'Plain-20': 'C0', 'Plain-56': 'C1', 'ResNet-56': 'C1'}
  # 160 log lines alternating 0.25 / 0.35, averaged over 80 spans of 20 steps: 0.3 each.
  assert len(these[0].train_steps) == tables.FIGURE_TRAIN_SPANS
  np.testing.assert_allclose(these[0].train_error, 0.3)
  raw = curves.load_curve(tables.run_dir(str(tmp_path), 'plain20', 0))
  assert curves.smoothed(raw, 1000) is raw  # Fewer points than spans: drawn as logged.


COMMITTED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'results', 'he2016_eighth_cpu')
README_ROW = '| Figure 6 at 1/8 of the paper\'s schedule'


def readme_row_quotes(section, line):
  """What the README's Figure 6 row must say: every depth row's training and test error, every claim's verdict."""
  numbers = [(row['name'], f'{100 * row[k]["mean"]:.2f}%') for row in section['rows']
             for k in ('train_error', 'test_error')]
  verdicts = [f'({c["claim"]}) {c["verdict"]}' for c in section['claims']]
  missing = [f'{name} {number}' for name, number in numbers if number not in line]
  return missing + [verdict for verdict in verdicts if verdict not in line]


def test_the_readme_figure6_row_quotes_the_committed_report_once_a_claim_is_decided():
  # The committed report itself is checked against its run files in test_reproduce.py; this checks the README.
  with open(os.path.join(COMMITTED, 'report.json')) as f:
    section = json.load(f)['depth']
  with open(os.path.join(COMMITTED, '..', '..', 'README.md')) as f:
    rows = [line for line in f if line.startswith(README_ROW)]
  if all(c['verdict'] == 'not yet' for c in section['claims']):
    assert not rows, 'the README quotes a Figure 6 result the committed runs do not decide yet'
  else:
    assert len(rows) == 1 and readme_row_quotes(section, rows[0]) == []


def test_the_readme_row_check_names_what_a_row_leaves_out():
  section = {'rows': [{'name': 'Plain-56', 'train_error': {'mean': 0.2}, 'test_error': {'mean': 0.25}}],
             'claims': [{'claim': 'a', 'verdict': 'supported'}]}
  assert readme_row_quotes(section, 'Plain-56: training 20.00%, test 25.00%; (a) supported') == []
  assert readme_row_quotes(section, 'Plain-56: training 20.10%, test 25.00%; (a) not supported') == [
      'Plain-56 20.00%', '(a) supported']
