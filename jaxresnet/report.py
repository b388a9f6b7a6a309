"""The reproduction report of a `jaxresnet.reproduce` workdir: report.md, report.json, figure6.png.

    python -m jaxresnet.report --workdir=DIR [--output=results/he2016_cifar10_jpeg.md] [--export_to=FOLDER]

Reads what the runs wrote and DIR/reproduce.json (the commands and settings),
and puts our numbers beside the paper's: per model the final test error as mean
± sample std over the finished seeds, validation error, parameters,
multiply-adds, wall-clock time and hardware, and the PyTorch peer's beside them
where it ran. A run counts only when it is finished (results.json at the run's
last step); unfinished and missing runs are listed as such, never filled in.
`--output=PATH.md` also writes the report there, with its figure beside it as
PATH.png (and the peer's as PATH_peer.png). `--export_to=FOLDER` first copies
what the report reads of every finished run (no checkpoints) to FOLDER and
writes the report there, for committing. The workdir's layout and the
report's contents are described in jaxresnet.experiments.tables.
"""
import os
import sys

from absl import flags

from jaxresnet.experiments import tables
from jaxresnet.infra import cli

FLAGS = flags.FLAGS


def define_flags():
  """Only when run as a program, so modules that import this one can define their own."""
  flags.DEFINE_string('workdir', None, 'A jaxresnet.reproduce workdir.')
  flags.DEFINE_string('output', None, 'Also write the report to this .md file (figure beside it as .png).')
  flags.DEFINE_string('table', None, 'The paper table to compare with (default: the one DIR was run for).')
  flags.DEFINE_string('export_to', None, 'Copy DIR\'s plan and its finished runs\' config, results, metrics and '
                      'timing files (never checkpoints) to this folder and write the report there: a folder '
                      'to commit, from which --workdir=FOLDER writes the same report again.')
  flags.mark_flag_as_required('workdir')


def main(argv):
  cli.exit_on_extra_arguments(argv)
  workdir = FLAGS.workdir
  with cli.exit_on_user_error():
    if FLAGS.export_to:
      copied = tables.export_records(workdir, FLAGS.export_to)
      print(f'copied the records of {len(copied)} finished run{"" if len(copied) == 1 else "s"} to {FLAGS.export_to}')
      workdir = FLAGS.export_to
    tables.write_report(workdir, FLAGS.output, FLAGS.table)
  print(f'wrote {os.path.join(workdir, tables.REPORT_MD)}' + (f' and {FLAGS.output}' if FLAGS.output else ''))
  sys.stdout.flush()


if __name__ == '__main__':
  define_flags()
  cli.run_cli(main)
