"""Experiments over many runs: paper-table reproductions, sweeps, their reports and learning curves."""
