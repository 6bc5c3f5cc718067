"""Two processes under torchrun (gloo on CPU) train a few steps and end with identical weights."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.synthetic import two_class_blobs

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("method", ["moco", "byol"])
def test_two_process_torchrun_ends_with_identical_weights(tmp_path, method):
    images, _ = two_class_blobs(64, size=40, channels=5, seed=0)
    data = tmp_path / "images.npy"
    np.save(data, images)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "precompute", "train-array", "--method", method, "--images", str(data), "--survey", "sdss",
           "--crop", "32", "--arch", "small", "--width", "8", "--epochs", "2", "--batch-size", "16", "--max-steps",
           "6", "--queue-size", "64", "--device", "cpu", "--checkpoint-dir", str(tmp_path / "ckpt"), "--out",
           str(out), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    digests = [(out / f"rank{r}.sha256").read_text() for r in range(2)]
    assert digests[0] == digests[1]
    assert (out / "weights.pt").is_file() and (out / "config.json").is_file()
    assert (tmp_path / "ckpt" / "checkpoint.pt").is_file()      # 64 images / 16 = 4 steps: epoch 1 completed
