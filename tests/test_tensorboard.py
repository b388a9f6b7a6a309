"""metrics.jsonl's one reader (tensorboard.read_metric_lines): a line that is no record never stops a resume."""
import json
import os

from jaxresnet.infra.tensorboard import MetricWriter


def write_lines(path, lines):
  with open(path, 'wb') as f:
    f.write(b''.join(lines))


def test_a_resume_skips_lines_that_are_not_utf8_or_not_objects_and_reports_them_once(tmp_path, capsys):
  path = os.path.join(tmp_path, 'metrics.jsonl')
  record = lambda step: (json.dumps({'step': step, 'train_loss': 1.0 / step}) + '\n').encode()
  write_lines(path, [record(1), b'{"step": 2, "train_loss": 0.5\xff}\n', b'[1, 2]\n', record(3),
                     b'"text"\n', record(4), b'{"step": 5, "train_lo'])
  writer = MetricWriter(str(tmp_path))
  assert writer.truncate_after(3) == 3
  err = capsys.readouterr().err
  assert err.count('warning:') == 1 and 'skipped 3 line(s) that are not metric records (line 2, 3, 5)' in err
  with open(path, 'rb') as f:
    assert f.read() == record(1) + record(3)  # The records up to the resumed step, whole.
  writer.write(4, {'train_loss': 0.25})
  assert [json.loads(line)['step'] for line in open(path)] == [1, 3, 4]
