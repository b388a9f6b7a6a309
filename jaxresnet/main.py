"""Trains and evaluates a net: `python -m jaxresnet.main --config=configs/resnet32.py --workdir=DIR`.

Config fields can be overridden: `--config.num_train_steps=200 --config.model=plain20`.
Every field, with its default and what it means, is declared in jaxresnet/infra/config.py
(`python -m jaxresnet.infra.config` lists them); configs/default.py is that default config.
Durations are steps, '<x> epochs' or '<x>%' of the run (`--config.num_train_steps='30 epochs'`).
`python -m jaxresnet.models` lists the models with their parameters, multiply-adds and
config file; `--config=resnet32` means configs/resnet32.py, also without a checkout.

Rerunning the same command resumes from the newest intact checkpoint in DIR;
SIGTERM or Ctrl-C during training saves one and exits 0. One process at a time
works in a DIR (it holds DIR/.lock); a second one stops at once, naming the first.
For several hosts, launch one process per host with --coordinator_address,
--num_processes and --process_id (or --distributed where JAX detects them itself).
"""
from jaxresnet.infra import signals

if __name__ == '__main__':  # First, before the slow imports: SIGTERM or Ctrl-C while starting up is one line.
  signals.stop_on_signals()

from jaxresnet.infra import host_memory  # pylint: disable=g-import-not-at-top,wrong-import-position

# Before anything starts JAX's threads: see host_memory.
host_memory.keep_freed_memory()

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import logging  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxresnet.infra import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxresnet.infra import errors  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxresnet.infra import rundir  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxresnet.training import train  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
cli.define_run_flags()


def main(argv):
  cli.exit_on_extra_arguments(argv)
  quiet = not FLAGS['verbosity'].present
  if quiet:
    logging.set_verbosity(logging.WARNING)  # Keep JAX's start-up INFO lines out of the run's output.
  if FLAGS.coordinator_address or FLAGS.distributed:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  if quiet:  # Orbax's logged tracebacks and asyncio's reports go to WORKDIR/log.txt.
    errors.send_library_noise_to(rundir.log_path(FLAGS.workdir))
  with cli.exit_on_user_error():
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  cli.run_cli(main, stopped_hint='run the same command to continue')
