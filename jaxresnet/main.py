"""Trains and evaluates a net: `python -m jaxresnet.main --config=configs/resnet32.py --workdir=DIR`.

Config fields can be overridden: `--config.num_train_steps=200 --config.model=plain20`.
Every field, and what it means, is in configs/default.py; `python -m jaxresnet.models`
lists the models with their parameters, multiply-adds and config file.

Rerunning the same command resumes from the newest intact checkpoint in DIR;
SIGTERM or Ctrl-C during training saves one and exits 0. One process at a time
works in a DIR (it holds DIR/.lock); a second one stops at once, naming the first.
For several hosts, launch one process per host with --coordinator_address,
--num_processes and --process_id (or --distributed where JAX detects them itself).
"""
import ast
import importlib.util
import os

from jaxresnet.infra import signals

if __name__ == '__main__':  # First, before the slow imports: SIGTERM or Ctrl-C while starting up is one line.
  signals.stop_on_signals()

from jaxresnet.infra import host_memory  # pylint: disable=g-import-not-at-top,wrong-import-position

# Before anything starts JAX's threads: see host_memory.
host_memory.keep_freed_memory()

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position,unused-import
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import logging  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import ml_collections  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxresnet.infra import errors  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxresnet.training import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxresnet.infra import rundir  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxresnet.infra.errors import ConfigError, exit_on_extra_arguments, exit_on_user_error  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and logs go.')
config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/resnet32.py; its fields are '
                                'explained in configs/default.py.', lock_config=True)
flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() (auto-detected cluster).')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0, for multi-process runs.')
flags.DEFINE_integer('num_processes', None, 'Number of processes in a multi-process run.')
flags.DEFINE_integer('process_id', None, 'This process\'s index in a multi-process run.')
flags.mark_flags_as_required(['config', 'workdir'])


def config_file_arg(argv):
  """The --config=PATH of a command line (without a `:argument`), or None."""
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith(('--config=', '-config=')):
      return arg.split('=', 1)[1].split(':', 1)[0]
    if arg in ('--config', '-config') and i + 1 < len(argv):
      return argv[i + 1].split(':', 1)[0]
  return None


def config_file_problem(path) -> str:
  """What is wrong with a config file that loads but gives no config ('' if nothing is found)."""
  if not path or not os.path.isfile(path):
    return ''
  try:
    spec = importlib.util.spec_from_file_location('jaxresnet_config_check', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  except Exception:  # pylint: disable=broad-except
    return ''  # Failing to run is reported from ml_collections' own error.
  if not callable(getattr(module, 'get_config', None)):
    return f'config file {path} has no get_config() function (see configs/default.py for one)'
  try:
    config = module.get_config()
  except Exception:  # pylint: disable=broad-except
    return ''
  if config is None:
    return (f'get_config() in {path} returned None (a missing `return config`?); '
            'it must return an ml_collections.ConfigDict')
  if not isinstance(config, ml_collections.ConfigDict):
    return f'get_config() in {path} returned a {type(config).__name__}; it must return an ml_collections.ConfigDict'
  return ''




def parse_flags(argv, flag_values=FLAGS):
  """Parses argv into `flag_values`; a bad flag, config file or override raises ConfigError."""
  try:
    with errors.absl_warnings_off():  # ml_collections' own warning about a None config: ours follows.
      remaining = flag_values(argv)
    config = flag_values.config
    config.keys()  # A config file that could not be read raises its error on first use.
    if not isinstance(config, ml_collections.ConfigDict):
      raise ConfigError(config_file_problem(config_file_arg(argv)) or
                        f'the config file gave a {type(config).__name__}, not an ml_collections.ConfigDict')
    return remaining
  except ConfigError:
    raise
  except flags.Error as e:
    message = config_file_problem(config_file_arg(argv))
    if not message and 'Error whilst parsing config file' in str(e):
      lines = [l.strip() for l in str(e).splitlines() if l.strip()]
      message = f'cannot load the config file {config_file_arg(argv)}: {lines[-1]}'
    message = message or errors.flag_error_message(e)
  except (AttributeError, KeyError) as e:  # An override of a field the config does not have.
    message = config_file_problem(config_file_arg(argv))
    if not message:
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
  """absl's flags parser, but --help exits 0 and bad input is one line on stderr and exit status 2."""
  return errors.parse_flags_or_exit(argv, parse=parse_flags)


def main(argv):
  exit_on_extra_arguments(argv)
  quiet = not FLAGS['verbosity'].present
  if quiet:
    logging.set_verbosity(logging.WARNING)  # Keep JAX's start-up INFO lines out of the run's output.
  if FLAGS.coordinator_address or FLAGS.distributed:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  if quiet:  # Orbax's logged tracebacks and asyncio's reports go to WORKDIR/log.txt.
    errors.send_library_noise_to(rundir.log_path(FLAGS.workdir))
  with exit_on_user_error():
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  errors.run_cli(main, flags_parser=parse_flags_or_exit, stopped_hint='run the same command to continue')
