"""Self-supervised encoders for survey cutouts: ResNet backbones, MoCo v2, BYOL, batched augmentations, training.

Arrays and tensors in, modules and arrays out: nothing here reads catalogues or survey files.
"""
import os

# Busy-waiting OpenMP threads collapse throughput when the CPU is shared (measured here: 2 torch threads at
# OMP_WAIT_POLICY=ACTIVE ran MoCo 6x slower than at PASSIVE). libgomp reads this once, when torch is first
# imported, so it only helps if models is imported first (as in `python -m models.train`); an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
