"""The shared training machinery: a plain PyTorch loop, checkpoints, distributed set-up, logging."""
