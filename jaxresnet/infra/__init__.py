"""Infrastructure: errors and the command line, signals, devices, the config schema, the run directory, checkpoints, TensorBoard files."""
