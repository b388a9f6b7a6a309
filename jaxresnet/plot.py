"""Training curves in the style of He et al. 2016, Figure 6: plain nets beside ResNets.

    python -m jaxresnet.plot --workdir=DIR [DIR...] [--output=FILE.png]

Each DIR is a training workdir (it holds metrics.jsonl) or a folder of them,
such as a `jaxresnet.reproduce` workdir; every run found is one line, labelled
by its model, plus its seed or its workdir's name where that is needed to tell
runs apart. The PNG goes to --output, by default curves.png in the first DIR. As in
the paper, thin dashed lines are training error and bold lines test error, in
percent against iterations, a dot at every evaluation; one panel per family:
plain nets, ResNets, and other nets (such as cnn_small), each with its legend
below it. The reading and drawing live in jaxresnet.experiments.curves.
"""
import sys

from absl import flags

from jaxresnet.experiments import curves
from jaxresnet.infra import cli
from jaxresnet.infra.cli import exit_on_user_error

FLAGS = flags.FLAGS


def define_flags():
  """Only when run as a program, so modules that import this one can define their own."""
  flags.DEFINE_multi_string('workdir', None, 'Training workdir(s), or folders holding them; more may '
                            'follow as arguments.')
  flags.DEFINE_string('output', None, 'Where the PNG goes (default: curves.png in the first --workdir).')
  flags.DEFINE_integer('dpi', curves.DEFAULT_DPI,
                       f'Resolution: the PNG is {curves.FIGSIZE[0]:g}x{curves.FIGSIZE[1]:g} inches.')
  flags.DEFINE_float('ymax', None, 'Top of the error axis in percent (default: 20, widened to fit).')
  flags.mark_flag_as_required('workdir')


def main(argv):
  paths = FLAGS.workdir + argv[1:]
  output = FLAGS.output or curves.default_output(paths)
  with exit_on_user_error():
    curves.plot_workdirs(paths, output, dpi=FLAGS.dpi, ymax=FLAGS.ymax)
  print(f'wrote {output}')
  sys.stdout.flush()


if __name__ == '__main__':
  define_flags()
  cli.run_cli(main)
