"""Training loop: learns on structured data, checkpoints every epoch and resumes exactly."""
import numpy as np
import pytest
import torch

from models.augment import build_augmentations, compute_mad
from models.synthetic import two_class_blobs
from models.methods import default_queue_size
from models.optim import warmup_cosine
from models.train import Processes, TrainConfig, epoch_batches, train
from tests.ugriz import UGRIZ


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def sdss_like(n, seed=0, size=40):
    images, labels = two_class_blobs(n, size=size, channels=5, seed=seed)
    return images, labels, build_augmentations("reddening_psf_noise", **UGRIZ, mad=compute_mad(images), crop=32, jitter=3)


def fit(images, augment, encoder_cfg, checkpoint_dir=None, knn_monitor=None, **settings):
    """``train`` with the settings spelt as keywords (a TrainConfig made of them)."""
    return train(images, augment, TrainConfig(encoder=encoder_cfg, **settings), checkpoint_dir=checkpoint_dir,
                 knn_monitor=knn_monitor)


def test_moco_run_lowers_the_loss_and_separates_classes():
    images, _, augment = sdss_like(1280)
    val, val_labels = two_class_blobs(200, size=40, channels=5, seed=1)
    encoder, history = fit(images, method="moco", encoder_cfg={"arch": "small", "in_channels": 5, "width": 8},
                             augment=augment, epochs=6, batch_size=64, lr=0.05, queue_size=512, progress=False,
                             knn_monitor=(val, val_labels))
    assert [row["epoch"] for row in history] == list(range(6))
    # the queue is random noise during epoch 0, so compare from epoch 1 (queue full of real keys) on
    assert history[-1]["loss"] < history[1]["loss"]
    majority = max(np.mean(val_labels), 1 - np.mean(val_labels))
    assert history[-1]["knn_acc"] > majority + 0.1
    assert all(row["images_per_s"] > 0 and row["complete"] for row in history)
    assert not encoder.training and next(encoder.parameters()).device.type == "cpu"
    assert encoder(torch.from_numpy(val[:2, :, 4:36, 4:36])).shape == (2, 64)


def test_byol_run_lowers_the_loss():
    images, _, augment = sdss_like(256)
    _, history = fit(images, method="byol", encoder_cfg={"arch": "small", "in_channels": 5, "width": 4},
                       augment=augment, epochs=3, batch_size=64, lr=0.1, progress=False)
    assert history[-1]["loss"] < history[0]["loss"]


@pytest.mark.parametrize("method, optimizer", [("moco", "sgd"), ("byol", "lars")])
def test_resumed_run_gives_exactly_the_weights_of_an_uninterrupted_one(tmp_path, method, optimizer):
    images, _, augment = sdss_like(96, size=36)
    common = dict(method=method, encoder_cfg={"arch": "small", "in_channels": 5, "width": 4}, augment=augment,
                  epochs=3, batch_size=32, optimizer=optimizer, lr=0.05, queue_size=64, progress=False, seed=3)
    straight, straight_history = fit(images, checkpoint_dir=tmp_path / "a", **common)
    # "crash" after the first epoch (its checkpoint is written), then resume from the checkpoint
    _, partial = fit(images, checkpoint_dir=tmp_path / "b", max_steps=3, **common)
    assert len(partial) == 1 and (tmp_path / "b" / "checkpoint.pt").is_file()
    torch.manual_seed(12345)          # resume must not depend on the caller's RNG state
    resumed, resumed_history = fit(images, checkpoint_dir=tmp_path / "b", **common)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert [r["loss"] for r in resumed_history] == [r["loss"] for r in straight_history]
    # a checkpoint from another configuration is refused with a clear message
    with pytest.raises(ValueError, match="different run"):
        fit(images, checkpoint_dir=tmp_path / "b", **{**common, "batch_size": 16})


def test_epoch_batches_depend_only_on_seed_and_epoch_and_split_across_processes():
    single = Processes.__new__(Processes)
    single.world, single.rank = 1, 0
    a = epoch_batches(100, 20, single, seed=1, epoch=2)
    assert len(a) == 5 and all(len(b) == 20 for b in a)
    assert [b.tolist() for b in a] == [b.tolist() for b in epoch_batches(100, 20, single, seed=1, epoch=2)]
    assert [b.tolist() for b in a] != [b.tolist() for b in epoch_batches(100, 20, single, seed=1, epoch=3)]
    ranks = []
    for rank in range(2):
        p = Processes.__new__(Processes)
        p.world, p.rank = 2, rank
        ranks.append(epoch_batches(100, 20, p, seed=1, epoch=2))
    for step in range(5):      # the two processes' halves make up the single-process global batch
        assert sorted(ranks[0][step].tolist() + ranks[1][step].tolist()) == sorted(a[step].tolist())


def test_schedule_and_queue_defaults():
    f = warmup_cosine(total_steps=100, warmup_steps=10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)
    assert default_queue_size(1_300_000, 256) == 65000                # ~5 % of the data (Hayat et al. used 62k)
    assert default_queue_size(1000, 256) == 256                        # at least one global batch
    assert default_queue_size(10**9, 256) == 256 * 2**20 // 512        # capped by memory


def test_bad_inputs_are_refused():
    images, _, augment = sdss_like(40)
    cfg = {"arch": "small", "in_channels": 5, "width": 4}
    with pytest.raises(ValueError, match="method"):
        fit(images, method="dino", encoder_cfg=cfg, augment=augment, epochs=1, batch_size=8)
    with pytest.raises(ValueError, match="fewer than one batch"):
        fit(images, method="moco", encoder_cfg=cfg, augment=augment, epochs=1, batch_size=64)


def test_a_method_registered_from_one_file_trains(toy_plugins):
    _, toy_method = toy_plugins
    images, _, augment = sdss_like(128)
    encoder, history = fit(images, method="toy", encoder_cfg={"arch": "small", "in_channels": 5, "width": 4},
                           augment=augment, epochs=2, batch_size=32, progress=False)
    assert len(history) == 2 and all(np.isfinite(row["loss"]) for row in history)
    assert history[0]["lr"] > 0 and encoder.out_dim == 32
    assert toy_method.STEPS_SEEN == [(step, 8) for step in range(1, 9)]   # after every one of 2 epochs x 4 steps


def test_an_unregistered_method_is_refused():
    images, _, augment = sdss_like(64)
    with pytest.raises(ValueError, match="unknown method 'toy'"):
        fit(images, method="toy", encoder_cfg={"arch": "small", "in_channels": 5, "width": 4}, augment=augment,
            epochs=1, batch_size=32, progress=False)
