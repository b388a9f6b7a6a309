"""Trains and evaluates a net: `python -m jaxresnet.main --config=configs/resnet32.py --workdir=DIR`.

Config fields can be overridden: `--config.num_train_steps=200 --config.model=plain20`.
For several hosts, launch one process per host with --coordinator_address,
--num_processes and --process_id (or --distributed where JAX detects them itself).
"""
import ast
import sys

from jaxresnet import host_memory

# Before anything starts JAX's threads: see host_memory.
host_memory.keep_freed_memory()

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from jaxresnet import train
from jaxresnet.errors import ConfigError, exit_on_extra_arguments, exit_on_user_error

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and logs go.')
config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/resnet32.py.',
                                 lock_config=True)
flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() (auto-detected cluster).')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0, for multi-process runs.')
flags.DEFINE_integer('num_processes', None, 'Number of processes in a multi-process run.')
flags.DEFINE_integer('process_id', None, 'This process\'s index in a multi-process run.')
flags.mark_flags_as_required(['config', 'workdir'])


def parse_flags(argv, flag_values=FLAGS):
  """Parses argv into `flag_values`; a bad flag, config file or override raises ConfigError."""
  try:
    remaining = flag_values(argv)
    flag_values.config.keys()  # The config file loads lazily: load it now, so a bad one fails here.
    return remaining
  except flags.Error as e:
    message = str(e).splitlines()[0]
  except (AttributeError, KeyError) as e:  # An override of a field the config does not have.
    text = str(e.args[0]) if e.args else str(e)
    try:  # ml_collections may wrap the repr of an inner KeyError's message.
      text = str(ast.literal_eval(text))
    except (ValueError, SyntaxError):
      pass
    lines = text.splitlines() or ['?']
    suggestion = next((f'; {l[0].lower()}{l[1:]}' for l in lines[1:] if l.startswith('Did you mean')), '')
    message = f"unknown config field '{lines[0].strip(chr(39) + chr(34))}'{suggestion} (see configs/default.py)"
  except Exception as e:  # A config file that is missing or fails to run.
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    message = f'cannot load the config file: {lines[-1] if lines else type(e).__name__}'
  raise ConfigError(message)


def parse_flags_or_exit(argv):
  """absl's flags parser, but bad input is one line on stderr and exit status 2."""
  try:
    return parse_flags(argv)
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


def main(argv):
  exit_on_extra_arguments(argv)
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Keep JAX's start-up INFO lines out of the run's output.
  if FLAGS.coordinator_address or FLAGS.distributed:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  with exit_on_user_error():
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags_or_exit)
