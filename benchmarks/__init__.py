"""Throughput benchmarks: jaxresnet against a PyTorch reference (see benchmarks/README.md)."""
