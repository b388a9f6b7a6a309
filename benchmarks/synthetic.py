"""What the speed benchmarks train on: random CIFAR-shaped data and the default recipe at a batch size."""
import numpy as np

from jaxresnet import data
from jaxresnet.configs import default as default_config


def synthetic_dataset(num_images: int, seed: int = 0) -> data.Dataset:
  """Random uint8 CIFAR-shaped images: the step's cost does not depend on pixel values."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (num_images, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, num_images).astype(np.int32)
  empty_images, empty_labels = images[:0], labels[:0]
  return data.Dataset(images, labels, empty_images, empty_labels, empty_images, empty_labels,
                      [str(i) for i in range(10)])


def benchmark_config(model: str, batch_size: int, precision: str):
  config = default_config.get_config()
  config.model = model
  config.batch_size = batch_size
  config.eval_batch_size = batch_size
  config.half_precision = precision == 'bf16'
  return config
