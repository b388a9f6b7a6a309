"""Trains a grid of configs, each in its own sub-workdir, and tabulates their final accuracies.

    python -m jaxresnet.sweep --config=configs/resnet18_1111.py --workdir=/tmp/sweep \\
        --sweep.optimizer=adam,sgd,rmsprop,adagrad --sweep.learning_rate=0.5,0.1,0.01

The grid is the product of the --sweep.<field>=v1,v2,... lists (values parsed
to the field's type; a tuple value is written in parentheses, e.g.
--sweep.lr_boundaries="(100,150),(200,)"). Each point trains with
train.train_and_evaluate in WORKDIR/<field>=<value>,<field>=<value>;
--config.<field> overrides apply to every point. A rerun skips the points that
have finished (results.json at the final step) and resumes the others.

WORKDIR/sweep.md and WORKDIR/sweep.csv hold one row per point: its values, the
steps trained and the final validation and test accuracy; sweep.md also names
the best point by validation accuracy and, for a two-field grid, lays the test
accuracies out as a table of one field against the other.

One sweep at a time works in a WORKDIR (it holds WORKDIR/.lock), and each
point's run holds its own sub-workdir: a second sweep, or a `main` on a point
being trained, stops at once with one line naming the process at work. The
logic is in jaxresnet.experiments.sweeps.
"""
from jaxresnet.infra import signals

if __name__ == '__main__':  # First, before the slow imports: Ctrl-C or SIGTERM while starting up is one line.
  signals.stop_on_signals()

from jaxresnet.infra import host_memory  # pylint: disable=g-import-not-at-top,wrong-import-position

# Before anything starts JAX's threads: see host_memory.
host_memory.keep_freed_memory()

from absl import flags
from absl import logging
import jax

from jaxresnet.experiments import sweeps
from jaxresnet.infra import cli
from jaxresnet.infra import errors
from jaxresnet.infra import rundir

FLAGS = flags.FLAGS


def parse_flags(argv):
  """A training run's flag parsing (cli), with the --sweep.<field>=... flags set aside for main()."""
  sweep_args = [a for a in argv[1:] if a.startswith(sweeps.PREFIX)]
  rest = [a for a in argv if not a.startswith(sweeps.PREFIX)]
  return cli.parse_flags_or_exit(rest) + sweep_args


def main(argv):
  unexpected = [a for a in argv[1:] if not a.startswith(sweeps.PREFIX)]
  if unexpected:
    cli.exit_with_error(f'unexpected arguments: {" ".join(unexpected)}')
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # As main: keep JAX's start-up INFO lines out.
  if FLAGS.coordinator_address or FLAGS.distributed:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  if not FLAGS['verbosity'].present:  # Orbax's logged tracebacks and asyncio's reports go to WORKDIR/log.txt.
    errors.send_library_noise_to(rundir.log_path(FLAGS.workdir))
  with cli.exit_on_user_error():
    grid = sweeps.parse_grid(argv[1:], FLAGS.config)
    sweeps.run_sweep(FLAGS.config, FLAGS.workdir, grid)


if __name__ == '__main__':
  cli.define_run_flags()
  cli.run_cli(main, flags_parser=parse_flags, stopped_hint='run the same command to continue')
