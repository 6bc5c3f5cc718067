"""Precompute: simulate or read survey cutouts, train an encoder, and write a bundle for the explorer."""
import os

# Set before torch is first imported (see models/__init__.py): busy-waiting OpenMP threads collapse throughput on a
# shared CPU. An explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
