"""Reproduces a paper's CIFAR-10 table: every model and seed, resumable, then the report.

    python -m jaxresnet.reproduce --table=he2016 --workdir=DIR [--seeds=3] [--models=resnet20,resnet110]
        [--dataset=image_folder --data_dir=/data/cifar10_jpeg] [--steps_scale=1] [--output=FILE.md] [--peer]

Trains Plain-20/32/44/56 and ResNet-20/32/44/56/110, each with its config file
(configs/<model>.py: the paper's recipe, ResNet-110's warm-up included), one
run per model and seed in DIR/<model>/seed<k>. By default the seeds of a model
train together as one population (the config's num_seeds; checkpoints in
DIR/<model>/checkpoints), model after model; with --nopopulation runs go seed by
seed, so a table with one seed of every model is complete first. Rerunning the command
skips finished runs and resumes unfinished ones from their newest checkpoint;
each run's wall-clock time, summed over the sessions it took, goes to its
timing.json. SIGTERM or Ctrl-C stops the current run at a checkpoint and ends
the command. After every run DIR/report.md, report.json and figure6.png are
rewritten (see jaxresnet/experiments/tables.py), and FILE.md + FILE.png with
--output. The logic is in jaxresnet.experiments.reproduction.

--peer also trains the PyTorch peer (jaxresnet.peer; needs torch: pip install
'jaxresnet[peer]') with the same config and seed after each jaxresnet run, in
DIR/<model>/peer_seed<k>, skipped when finished and resumed when not, like the
jaxresnet runs; --peer_padding picks its padding (default: the paper's nets,
see jaxresnet/peer/nets.py). The report then puts the peer
beside every row. On a GPU both use it from one process: JAX takes 75% of its
memory when it starts (XLA_PYTHON_CLIENT_MEM_FRACTION sets less); the peer's
CIFAR nets should need much less than the rest.

--steps_scale multiplies the run length and every step count of the schedule
(lr boundaries, warm-up, eval/log/checkpoint intervals): 0.0005 makes 32-step
smoke runs, and the report then says in bold that it is not a reproduction.
Below 1, a new DIR's runs evaluate 1000 evenly spaced images of each split
(--max_eval_examples; 0 evaluates every image), and the report says so.
--batch_size and --num_val_examples change the recipe (the report lists them);
--data_dir, --cache_dir, --eval_batch_size and --*_every_steps do not. A DIR
keeps the settings it was started with: other settings need another DIR.
"""
from jaxresnet.infra import signals

if __name__ == '__main__':  # First, before the slow imports: SIGTERM or Ctrl-C while starting up is one line.
  signals.stop_on_signals()

from jaxresnet.infra import host_memory  # pylint: disable=g-import-not-at-top,wrong-import-position

# Before anything starts JAX's threads: see host_memory.
host_memory.keep_freed_memory()

import shlex
import sys

from absl import flags
from absl import logging

from jaxresnet.experiments import reproduction
from jaxresnet.experiments import tables
from jaxresnet.infra import cli

FLAGS = flags.FLAGS


def define_flags():
  """Only when run as a program, so modules that import this one can define their own."""
  flags.DEFINE_enum('table', 'he2016', list(tables.TABLES), 'The paper table to reproduce.')
  flags.DEFINE_string('workdir', None, 'Where the runs (DIR/<model>/seed<k>) and the report go.')
  flags.DEFINE_integer('seeds', 3, 'Runs per model, with seeds 0, 1, ...')
  flags.DEFINE_list('models', None, 'Models to run (default: all of the table\'s), e.g. resnet20,resnet110.')
  flags.DEFINE_float('steps_scale', 1.0, 'Multiplies the run length and the schedule\'s step counts; '
                     'below 1 for smoke tests only.')
  flags.DEFINE_string('output', None, 'Also write the report to this .md file (figure beside it as .png).')
  flags.DEFINE_string('dataset', None, 'TFDS name or image_folder (default: the configs\' cifar10).')
  flags.DEFINE_string('data_dir', None, 'TFDS data dir, or the image folder (train/, test/).')
  flags.DEFINE_string('cache_dir', None, 'Where decoded arrays are cached.')
  flags.DEFINE_integer('batch_size', None, 'Changes the recipe\'s batch size of 128.')
  flags.DEFINE_integer('num_val_examples', None, 'Changes the recipe\'s 5,000 validation images.')
  flags.DEFINE_integer('eval_batch_size', None, 'Evaluation batch size.')
  flags.DEFINE_integer('eval_every_steps', None, 'Default: the recipe\'s 2,000, times --steps_scale.')
  flags.DEFINE_integer('log_every_steps', None, 'Default: the recipe\'s 100, times --steps_scale.')
  flags.DEFINE_integer('checkpoint_every_steps', None, 'Default: the recipe\'s 2,000, times --steps_scale.')
  flags.DEFINE_integer('max_eval_examples', None, 'Evaluate at most this many images of each split, evenly '
                       'spaced; 0 = all. Default: what DIR was started with; for a new DIR '
                       f'{reproduction.SMOKE_EVAL_EXAMPLES} below --steps_scale=1, else all.', lower_bound=0)
  flags.DEFINE_bool('population', True, 'Train the seeds of each model together, as one population in one '
                    'program (the config\'s num_seeds); --nopopulation trains them one by one.')
  flags.DEFINE_bool('peer', False, 'Also train the PyTorch peer (jaxresnet.peer, needs torch) after '
                    'each run, in DIR/<model>/peer_seed<k>.')
  flags.DEFINE_string('peer_padding', None, 'The peer\'s stride-2 conv padding: symmetric (default, the paper\'s '
                      'nets) or same (jaxresnet\'s).')
  flags.mark_flag_as_required('workdir')


def main(argv):
  cli.exit_on_extra_arguments(argv)
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Keep JAX's and Orbax's INFO lines out of the output.
  if FLAGS.peer:  # A missing dependency, like a missing flag: one line, before any work.
    missing = reproduction.peer_unavailable()
    if missing:
      cli.exit_with_error(missing)
  overrides = {field: FLAGS[field].value for field in reproduction.RECIPE_FIELDS + reproduction.BOOKKEEPING_FIELDS}
  # Training itself stops cleanly on SIGTERM; outside it (loading data, compiling) SIGTERM unwinds
  # like Ctrl-C (signals.stop_on_signals), so the session's time is recorded either way.
  command = ' '.join(['python -m jaxresnet.reproduce'] + [shlex.quote(a) for a in sys.argv[1:]])
  with cli.exit_on_user_error():
    reproduction.reproduce(FLAGS.workdir, FLAGS.table, FLAGS.models, FLAGS.seeds, FLAGS.steps_scale, overrides,
                           FLAGS.output, command, FLAGS.peer, FLAGS.peer_padding, FLAGS.population,
                           FLAGS.max_eval_examples)


if __name__ == '__main__':
  define_flags()
  cli.run_cli(main, stopped_hint='run the same command to continue')
