"""What every command shares around absl's flags, and the flags of a training run (--config, --workdir, ...).

Exit status, the same in every command: 0 for success (`--help` too); ERROR_STATUS (1) after
one `error:` line, whatever the mistake or failure (a bad or missing flag, a config field, a model
name, a data path, a busy or foreign workdir, a full disk); 128 + the signal for an interrupt
(Ctrl-C, or SIGTERM before training; during training a signal saves a checkpoint and exits 0).
A command calls `signals.stop_on_signals()` first, then `run_cli(main)`.

The training commands (main, sweep, the PyTorch peer) take `define_run_flags()`:
--config, --workdir and the multi-process flags. --config is an ml_collections
config file, or an installed config's name (`--config=resnet32`); a
`configs/<name>.py` that is not there (a wheel installed outside the checkout)
falls back to the installed one, with a line saying so. A field overridden
twice takes the last value, tuples too.
"""
import contextlib
import importlib.util
import os
import re
import sys
from typing import Callable, List, Optional

from jaxresnet.infra import errors
from jaxresnet.infra import signals
from jaxresnet.infra.errors import ConfigError, JaxresnetError

CONFIG_FLAG = 'config'
ERROR_STATUS = 1  # After an `error:` line, in every command (absl's own status for a bad flag).
CONFIGS_PACKAGE = 'jaxresnet.configs'  # configs/*.py of a checkout, installed under this name.


def exit_with_error(message: str) -> None:
  """`error: <message>` on stderr and exit status ERROR_STATUS."""
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(ERROR_STATUS)


@contextlib.contextmanager
def exit_on_user_error():
  """Turns a JaxresnetError into `error: <message>` and exit status ERROR_STATUS."""
  try:
    yield
  except JaxresnetError as e:
    interrupt = signals.interrupt_in(e)  # E.g. "needs TensorFlow" after Ctrl-C stopped its import: the interrupt.
    if interrupt is not None:
      raise interrupt from None
    exit_with_error(str(e))


def exit_on_extra_arguments(argv) -> None:
  """For commands that take only flags: stray words are one `error:` line."""
  if len(argv) > 1:
    exit_with_error(f'unexpected arguments: {" ".join(argv[1:])}')


_HELP_FLAGS = ('help', 'helpshort', 'helpfull', 'helpxml', '?')


def asks_for_help(argv: List[str]) -> bool:
  """Whether the command line holds one of absl's help flags (before any `--`)."""
  for arg in argv[1:]:
    if arg == '--':
      return False
    if arg.startswith('-') and arg.lstrip('-').split('=')[0] in _HELP_FLAGS:
      return True
  return False


def flag_error_message(error: Exception) -> str:
  """One line for absl's flag errors (their first line is clear); missing required flags are named together."""
  text = str(error)
  missing = re.findall(r'Flag --(\w+) must have a value other than None', text)
  if missing:
    names = ', '.join(f'--{name}' for name in missing)
    return f'missing required flag{"s" if len(missing) > 1 else ""} {names} (see --help)'
  lines = text.strip().splitlines()
  return lines[0] if lines else type(error).__name__


# --------------------------------------------------------------------------
# The flags of a training run.


def define_run_flags(flag_values=None, sys_argv=None) -> None:
  """--workdir, --config and the multi-process flags, each defined once however often this is called.

  ml_collections defines a flag for each --config.<field> override it finds in
  `sys_argv` (sys.argv by default: what absl's app.run parses).
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flag_values = flag_values if flag_values is not None else flags.FLAGS
  definitions = {
      'workdir': lambda: flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and logs go.',
                                             flag_values=flag_values),
      CONFIG_FLAG: lambda: config_flags.DEFINE_config_file(
          CONFIG_FLAG, None, 'Config file, e.g. configs/resnet32.py, or an installed config\'s name, e.g. '
          'resnet32. Every field, its default and meaning: jaxresnet/infra/config.py (python -m '
          'jaxresnet.infra.config lists them).',
          flag_values=flag_values, lock_config=True, sys_argv=sys_argv),
      'distributed': lambda: flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() '
                                               '(auto-detected cluster).', flag_values=flag_values),
      'coordinator_address': lambda: flags.DEFINE_string('coordinator_address', None, 'host:port of process 0, '
                                                         'for multi-process runs.', flag_values=flag_values),
      'num_processes': lambda: flags.DEFINE_integer('num_processes', None, 'Number of processes in a '
                                                    'multi-process run.', flag_values=flag_values),
      'process_id': lambda: flags.DEFINE_integer('process_id', None, 'This process\'s index in a multi-process '
                                                 'run.', flag_values=flag_values),
  }
  for name, define in definitions.items():
    if name not in flag_values:
      define()
    # Key flags of the program (absl's name for __main__ is sys.argv[0]): `--help` lists only those, and
    # these are defined here and in ml_collections, not in the program's module.
    flag_values.register_key_flag_for_module(sys.argv[0], flag_values[name])
  flags.mark_flags_as_required(['config', 'workdir'], flag_values=flag_values)


def _config_arg_index(argv) -> Optional[int]:
  """Where argv holds the (last, as absl takes it) --config value: i for `--config=PATH` at i, i + 1 for
  `--config PATH`; None without one."""
  index = None
  for i, arg in enumerate(argv[1:], 1):
    if arg == '--':
      break
    if arg.startswith((f'--{CONFIG_FLAG}=', f'-{CONFIG_FLAG}=')):
      index = i
    elif arg in (f'--{CONFIG_FLAG}', f'-{CONFIG_FLAG}') and i + 1 < len(argv):
      index = i + 1
  return index


def _config_value(argv, index: int) -> str:
  arg = argv[index]
  return arg.split('=', 1)[1] if arg.startswith('-') else arg


def config_file_arg(argv) -> Optional[str]:
  """The --config=PATH of a command line (without a `:argument`), or None."""
  index = _config_arg_index(argv)
  return None if index is None else _config_value(argv, index).split(':', 1)[0]


def installed_config(name: str) -> Optional[str]:
  """The file of the installed config `name` (jaxresnet.configs.<name>), or None."""
  if not name.isidentifier():
    return None
  try:
    spec = importlib.util.find_spec(f'{CONFIGS_PACKAGE}.{name}')
  except ImportError:
    return None
  return spec.origin if spec is not None and spec.origin and spec.origin.endswith('.py') else None


def with_installed_config(argv) -> List[str]:
  """argv with a --config that names no file replaced by the installed config it means, if any.

  `--config=resnet32` is the installed jaxresnet.configs.resnet32. The README's
  `--config=configs/resnet32.py` names a file of the checkout: where there is
  none (a wheel installed elsewhere) it means the installed one too, and a line
  on stderr says so.
  """
  index = _config_arg_index(argv)
  if index is None:
    return list(argv)
  value = _config_value(argv, index)
  path, colon, argument = value.partition(':')
  if not path or os.path.exists(path):
    return list(argv)
  parts = os.path.normpath(path).split(os.sep)
  bare = len(parts) == 1 and not path.endswith('.py')
  in_configs = len(parts) >= 2 and parts[-2] == 'configs' and parts[-1].endswith('.py')
  if not bare and not in_configs:
    return list(argv)
  name = parts[-1][:-3] if in_configs else parts[-1]
  installed = installed_config(name)
  if installed is None:
    return list(argv)
  if in_configs:
    print(f'note: no {path} here; using the installed {CONFIGS_PACKAGE}.{name} ({installed})', file=sys.stderr,
          flush=True)
  argv = list(argv)
  flag = argv[index].split('=', 1)[0] + '=' if argv[index].startswith('-') else ''  # `--config=` or nothing.
  argv[index] = flag + installed + colon + argument
  return argv


_OVERRIDE = re.compile(rf'^--?(no)?{CONFIG_FLAG}\.([^=]+)(=.*)?$', re.DOTALL)


def last_overrides_only(argv) -> List[str]:
  """argv without the earlier ones of a repeated --config.<field> override: the last one replaces the value.

  ml_collections joins the values of a repeated tuple field's override (its
  way to spell a tuple one element at a time): `--config.lr_boundaries=(100,200)
  --config.lr_boundaries=(300,400)` would train with (100, 200, 300, 400).
  Every other field already takes the last value; now tuples do too.
  """
  items = []  # (field path or None, its tokens)
  i = 1
  while i < len(argv):
    arg = argv[i]
    if arg == '--':
      items.append((None, argv[i:]))
      break
    match = _OVERRIDE.match(arg)
    tokens = [arg]
    if match and match.group(3) is None and not match.group(1) and i + 1 < len(argv) \
        and not argv[i + 1].startswith('-'):
      tokens.append(argv[i + 1])  # `--config.field value`; only dropped together when a later one replaces it.
      i += 1
    items.append((match.group(2) if match else None, tokens))
    i += 1
  last = {path: k for k, (path, _) in enumerate(items) if path is not None}
  return list(argv[:1]) + [token for k, (path, tokens) in enumerate(items)
                           if path is None or last[path] == k for token in tokens]


def override_paths(argv) -> List[str]:
  """The field paths of argv's --config.<path> overrides, in order."""
  paths = []
  for arg in argv[1:]:
    if arg == '--':
      break
    match = _OVERRIDE.match(arg)
    if match:
      paths.append(match.group(2))
  return paths


def _first_line(error: BaseException) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return f'{type(error).__name__}: {lines[0]}' if lines else type(error).__name__


def _line_in(error: BaseException, path: str) -> str:
  """' (line N)' of the last frame of `error`'s traceback inside the file `path`, or ''."""
  line, traceback = None, error.__traceback__
  while traceback is not None:
    if os.path.abspath(traceback.tb_frame.f_code.co_filename) == os.path.abspath(path):
      line = traceback.tb_lineno
    traceback = traceback.tb_next
  if line is None and isinstance(error, SyntaxError) and error.lineno:
    line = error.lineno
  return f' (line {line})' if line else ''


def _load_config_file(path):
  """(get_config's result, '') or (None, what is wrong with the config file at `path`)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    return None, (f'cannot load the config file {path}: there is no such file (give a config file, or an '
                  'installed config\'s name such as resnet32; python -m jaxresnet.models lists them)')
  try:
    spec = importlib.util.spec_from_file_location('jaxresnet_config_check', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except
    return None, f'cannot load the config file {path}: {_first_line(e)}{_line_in(e, path)}'
  if not callable(getattr(module, 'get_config', None)):
    return None, f'config file {path} has no get_config() function (see configs/default.py for one)'
  try:
    config = module.get_config()
  except Exception as e:  # pylint: disable=broad-except
    return None, f'get_config() in {path} failed: {_first_line(e)}{_line_in(e, path)}'
  if config is None:
    return None, (f'get_config() in {path} returned None (a missing `return config`?); '
                  'it must return an ml_collections.ConfigDict')
  if not isinstance(config, ml_collections.ConfigDict):
    return None, (f'get_config() in {path} returned a {type(config).__name__}; '
                  'it must return an ml_collections.ConfigDict')
  return config, ''


def config_file_problem(path) -> str:
  """What is wrong with a config file: missing, failing to run, or giving no ConfigDict ('' if nothing)."""
  return _load_config_file(path)[1] if path else ''


def unknown_field_message(config, paths) -> str:
  """One line for the first override path that names no field of `config` ('' if all do)."""
  from jaxresnet.infra import config as config_lib  # pylint: disable=g-import-not-at-top
  for path in paths:
    node, done = config, []
    for part in path.split('.'):
      if not hasattr(node, 'keys'):
        # Names come from argv as typed: repr() keeps a stray newline or tab from splitting the one line.
        return (f"config field {'.'.join(done)!r} has no fields, so {'--config.' + path!r} overrides nothing "
                '(see jaxresnet/infra/config.py)')
      if part not in node:
        if not done and part in config_lib.RETIRED_FIELDS:
          return f"unknown config field {part!r}: {config_lib.RETIRED_FIELDS[part]}"
        return (f"unknown config field {'.'.join(done + [part])!r}{errors.did_you_mean(part, node.keys())} "
                '(see jaxresnet/infra/config.py)')
      node, done = node[part], done + [part]
  return ''


def parse_flags(argv, flag_values=None):
  """Parses argv into `flag_values` (absl's FLAGS); a bad flag, config file or override raises ConfigError.

  Where there is a --config flag: a --config that names no file may mean an
  installed config (with_installed_config), and a repeated override replaces
  the value (last_overrides_only). The config file's own problems and unknown
  fields are named from the file and the command line, not from the libraries'
  messages; absl's are clear enough to pass on.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  flag_values = flag_values if flag_values is not None else flags.FLAGS
  if CONFIG_FLAG not in flag_values:
    try:
      return flag_values(argv)
    except flags.Error as e:
      raise ConfigError(flag_error_message(e)) from None
  import ml_collections  # pylint: disable=g-import-not-at-top
  argv = last_overrides_only(with_installed_config(argv))
  path = config_file_arg(argv)
  try:
    with errors.absl_warnings_off():  # ml_collections' own warning about a config file that fails: ours follows.
      remaining = flag_values(argv)
    config = flag_values[CONFIG_FLAG].value
    if isinstance(config, ml_collections.ConfigDict):
      config.keys()  # A config file that could not be read raises its error on first use.
  except Exception as e:  # pylint: disable=broad-except
    config, problem = _load_config_file(path) if path else (None, '')
    if not problem and config is not None:
      problem = unknown_field_message(config, override_paths(argv))
    if not problem:
      problem = flag_error_message(e) if isinstance(e, flags.Error) else f'cannot parse the flags: {_first_line(e)}'
    raise ConfigError(problem) from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(config_file_problem(path) or
                      f'the config file gave a {type(config).__name__}, not an ml_collections.ConfigDict')
  return remaining


def parse_flags_or_exit(argv: List[str], parse: Optional[Callable] = None):
  """absl's flag parsing (`parse_flags`, or `parse`), but `--help` exits 0 and bad input is one `error:` line.

  absl itself exits 1 after printing the help, and prints a bad flag as a
  `FATAL Flags parsing error` with exit status 1.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  parse = parse or parse_flags
  try:
    return parse(argv)
  except SystemExit as e:
    if e.code == 1 and asks_for_help(argv):
      sys.exit(0)  # The help was printed: that is success.
    raise
  except flags.Error as e:
    message = flag_error_message(e)
  except ConfigError as e:
    message = str(e)
  exit_with_error(message)


def run_cli(main: Callable, flags_parser: Optional[Callable] = None, stopped_hint: str = '') -> None:
  """app.run(main) for a jaxresnet command: the flag behaviour above, and an interrupt in one line.

  Call `signals.stop_on_signals()` first, before the slow imports, so that
  SIGTERM is an interrupt too. `stopped_hint` follows the interrupt line, e.g.
  'run the same command to continue'.
  """
  from absl import app  # pylint: disable=g-import-not-at-top
  try:
    signals.raise_if_swallowed()  # An interrupt an optional import caught while the command was imported.
    app.run(main, flags_parser=flags_parser or parse_flags_or_exit)
  except BaseException as e:  # pylint: disable=broad-except
    interrupt = signals.interrupt_in(e)  # Also inside the ImportError of a C extension it stopped.
    if interrupt is None:
      raise
    signals.exit_interrupted(interrupt, stopped_hint)  # The `finally` blocks have run: temporary files are gone.
