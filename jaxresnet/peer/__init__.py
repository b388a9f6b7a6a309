"""The PyTorch peer: the same nets, recipe and data in PyTorch, to compare jaxresnet against (pip install jaxresnet[peer])."""
