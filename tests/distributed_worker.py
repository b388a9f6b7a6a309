"""One process of a multi-process CPU run (launched by test_distributed.py).

argv: coordinator_address num_processes process_id image_folder workdir output [sigterm_at]

Without sigterm_at, it trains 4 steps and writes its parameters to output (.npz).
With it, it trains a longer run in which process 1 gets SIGTERM while it takes
step `sigterm_at`, and writes the summary of the run (the step it stopped at) to
output (.json).
"""
import json
import os
import signal
import sys

import jax


def main(coordinator, num_processes, process_id, image_folder, workdir, output, sigterm_at=None):
  num_processes, process_id = int(num_processes), int(process_id)
  # Gloo gives up after a fixed 30 s when one process reaches a collective that long before the other, as happens
  # when a busy machine slows one process's compilation (issue 34). Unoptimised programs compile in a fraction of
  # the time, which shrinks that gap; what is tested (the processes agree, and stop together) does not depend on it.
  jax.config.update('jax_disable_most_optimizations', True)
  if num_processes > 1:
    jax.distributed.initialize(coordinator, num_processes, process_id)
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxresnet.infra import devices  # pylint: disable=g-import-not-at-top
  from jaxresnet.training import inference  # pylint: disable=g-import-not-at-top
  from jaxresnet.training import jobs  # pylint: disable=g-import-not-at-top
  from jaxresnet.training import train  # pylint: disable=g-import-not-at-top
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  if sigterm_at is not None:
    add = jobs.MetricWindow.add

    def add_and_signal(self, step, metrics):  # The loop adds each step's metrics right after taking it.
      if step == int(sigterm_at) and jax.process_index() == 1:
        os.kill(os.getpid(), signal.SIGTERM)
      add(self, step, metrics)

    jobs.MetricWindow.add = add_and_signal
    config = tiny_config(image_folder, batch_size=8, num_train_steps=40, log_every_steps=10,
                         eval_every_steps=0, checkpoint_every_steps=0)
    summary = train.train_and_evaluate(config, workdir)
    with open(output, 'w') as f:
      json.dump({'step': summary['step'], 'stopped': summary.get('stopped')}, f)
    return
  summary = train.train_and_evaluate(tiny_config(image_folder, batch_size=8, num_train_steps=4), workdir)
  _, _, _, state = inference.restore_run(workdir)
  leaves = jax.tree_util.tree_leaves(devices.to_host((state.params, state.batch_stats)))
  np.savez(output, *leaves, devices=jax.device_count(), processes=jax.process_count(),
           test_accuracy=summary['test_accuracy'])


if __name__ == '__main__':
  main(*sys.argv[1:])
