"""Similarity search and its gallery, and the stability of a clicked object under rotations, shifts and noise."""
