"""Training throughput of the demo configuration: MoCo v2 + SDSS augmentations, 5 bands, 107 px -> 64 px crops.

Reports images/s (one image = one pair of augmented views) for
  - the augmentations alone (two views per image),
  - one optimiser step alone on pre-augmented views (query fwd+bwd, key fwd, queue),
  - the full ``models.train.train`` loop (both),
for the "small" encoder at a few widths and torch thread counts, and ResNet-50 with the Hayat stem when a GPU is
present. Measure all configurations in one run and compare ratios: on a shared machine absolute figures move.

    .venv/bin/python benchmarks/bench_train.py                 # CPU, 1-4 min depending on load
    .venv/bin/python benchmarks/bench_train.py --widths 16 --threads 1 --steps 10
"""
from __future__ import annotations

import argparse
import json
import time

import models  # noqa: F401  (first: sets OMP_WAIT_POLICY=PASSIVE before torch loads OpenMP)
import numpy as np
import torch
from models.augment import build_augmentations
from models.encoders import build_encoder, use_channels_last
from models.moco import MoCo
from models.synthetic import two_class_blobs
from models.train import TrainConfig, train
from core.surveys.sdss import SDSS
from benchmarks.quick import add_quick, parse_quick


def time_it(fn, repeats: int) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) per call. On a shared, oversubscribed machine the wall figure
    depends on the neighbours; images per CPU-second is the steadier one to compare configurations."""
    fn()                                         # warm-up (oneDNN primitive creation, allocator)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats


def rates(n: int, seconds: tuple[float, float]) -> tuple[int, int]:
    return round(n / seconds[0]), round(n / seconds[1])


def bench_augment(images: torch.Tensor, augment, repeats: int):
    return rates(len(images), time_it(lambda: (augment(images), augment(images)), repeats))


def bench_step(encoder_cfg: dict, views: tuple, device, repeats: int, bf16: bool) -> float:
    model = MoCo(build_encoder(**encoder_cfg), queue_size=4096).to(device)
    layout = torch.channels_last if use_channels_last(model, device) else torch.contiguous_format
    model = model.to(memory_format=layout)
    v1, v2 = (v.to(device).contiguous(memory_format=layout) for v in views)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(v1, v2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return rates(len(v1), time_it(step, repeats))


def bench_train(images: np.ndarray, encoder_cfg: dict, augment, batch: int, steps: int, device):
    """(images/s of the training loop as it reports it, images per CPU-second including set-up)."""
    cpu = time.process_time()
    _, history = train(images, augment, TrainConfig(method="moco", encoder=encoder_cfg, epochs=1, batch_size=batch,
                                                    max_steps=steps, progress=False, device=device))
    return round(history[-1]["images_per_s"]), round(steps * batch / (time.process_time() - cpu))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--json", default=None, help="also write the results here")
    add_quick(p, widths=[8], threads=[1], batch=16, steps=1)
    args = parse_quick(p, argv)

    images, _ = two_class_blobs(args.batch * (args.steps + 1), size=107, channels=5, seed=0)
    augment = build_augmentations("reddening_psf_noise", **SDSS().augmentation_params(images, crop=64))
    batch = torch.from_numpy(images[: args.batch])
    results = []
    cpu = torch.device("cpu")
    for threads in args.threads:
        torch.set_num_threads(threads)
        aug_rate = bench_augment(batch, augment, args.steps)
        views = (augment(batch), augment(batch))
        for width in args.widths:
            cfg = {"arch": "small", "in_channels": 5, "stem": "standard", "width": width}
            row = {"device": "cpu", "threads": threads, "encoder": f"small/w{width}/standard", "crop": 64,
                   "batch": args.batch, "augment_img_s|per_cpu_s": aug_rate,
                   "step_img_s|per_cpu_s": bench_step(cfg, views, cpu, args.steps, bf16=False),
                   "train_img_s|per_cpu_s": bench_train(images, cfg, augment, args.batch, args.steps, cpu)}
            results.append(row)
            print(json.dumps(row), flush=True)
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        gpu_batch = 256
        big, _ = two_class_blobs(gpu_batch * (args.steps + 1), size=107, channels=5, seed=0)
        on_gpu = torch.from_numpy(big[:gpu_batch]).to(gpu)
        augment = augment.to(gpu)
        views = (augment(on_gpu), augment(on_gpu))
        for cfg in ({"arch": "resnet50", "in_channels": 5, "stem": "hayat", "width": None},
                    {"arch": "small", "in_channels": 5, "stem": "standard", "width": 32}):
            row = {"device": torch.cuda.get_device_name(), "encoder": f"{cfg['arch']}/{cfg['stem']}", "crop": 64,
                   "batch": gpu_batch, "augment_img_s": bench_augment(on_gpu, augment, args.steps)[0],
                   "step_img_s_bf16": bench_step(cfg, views, gpu, args.steps, bf16=True)[0],
                   "train_img_s": bench_train(big, cfg, augment, gpu_batch, args.steps, gpu)[0]}
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
