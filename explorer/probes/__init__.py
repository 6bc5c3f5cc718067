"""What the embedding knows, live: linear probes, their metrics and fits, and fine-tuning a classifier."""
