"""One process of a multi-process CPU run (launched by test_distributed.py).

argv: coordinator_address num_processes process_id image_folder workdir output.npz
"""
import sys

import jax


def main(coordinator, num_processes, process_id, image_folder, workdir, output):
  num_processes, process_id = int(num_processes), int(process_id)
  if num_processes > 1:
    jax.distributed.initialize(coordinator, num_processes, process_id)
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxresnet import evaluate  # pylint: disable=g-import-not-at-top
  from jaxresnet.infra import devices  # pylint: disable=g-import-not-at-top
  from jaxresnet.training import train  # pylint: disable=g-import-not-at-top
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  summary = train.train_and_evaluate(tiny_config(image_folder, batch_size=8, num_train_steps=4), workdir)
  _, _, _, state = evaluate.restore_run(workdir)
  leaves = jax.tree_util.tree_leaves(devices.to_host((state.params, state.batch_stats)))
  np.savez(output, *leaves, devices=jax.device_count(), processes=jax.process_count(),
           test_accuracy=summary['test_accuracy'])


if __name__ == '__main__':
  main(*sys.argv[1:])
