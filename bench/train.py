"""Training crops per second (resnet18, resnet50) and the attribute process's crops per second, FP32 vs INT8.

Training: Adam steps of the shared-backbone AttributeNet on person crops of the default
calibration set (real crops; labels drawn at random, since only the speed is measured),
each step loading, preparing and augmenting its batch as ``edge train`` does. The
attribute process: the real :class:`~edge.runtime.worker.AttributeWorker` of a bundle
(its own process, batches of 8), crops submitted all at once and timed until every one
is answered, after a warm-up.

    .venv/bin/python bench/train.py [--crops calibration/default] [--size 224] [--batch 32] [--steps 3] \
        [--fp32 models/default/cpu] [--int8 models/default/cpu-int8]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from edge import schema
from edge.bundle import load_bundle
from edge.convert.attribute_net import AttributeNet
from edge.runtime.models import start_attribute_worker
from edge.training.loss import HeadsLoss
from edge.training.samples import CropSet, Sample
from edge.training.transforms import train_transform


def crop_files(calibration: Path) -> list[Path]:
    return sorted((calibration / "attributes").rglob("*.png"))


def training_rate(arch: str, files: list[Path], size: int, batch: int, steps: int) -> float:
    rng = np.random.default_rng(0)
    items = [Sample(f, tuple(int(rng.integers(len(v))) for v in schema.ATTRIBUTES.values())) for f in files]
    net = AttributeNet(arch, True, size).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.001, weight_decay=0.0001)
    loss = HeadsLoss()
    loader = DataLoader(CropSet(items, train_transform(size)), batch_size=batch, shuffle=True, drop_last=True)
    timed = crops = 0.0
    for step, (x, y) in enumerate(loader):
        if step > steps:
            break
        start = time.perf_counter()
        optimizer.zero_grad()
        loss(net(x), y).backward()
        optimizer.step()
        if step:  # the first step warms up
            timed, crops = timed + time.perf_counter() - start, crops + len(x)
    return crops / timed


def process_rate(bundle: Path, crops: list[np.ndarray]) -> float:
    with start_attribute_worker(load_bundle(bundle), {"threads": os.cpu_count() or 1}) as worker:
        for _ in range(2):  # the first round warms up (the model loads in the child)
            start = time.perf_counter()
            for i, crop in enumerate(crops):
                worker.submit(i, crop)
            answered = 0
            while answered < len(crops):
                answered += len(worker.poll())
                time.sleep(0.002)
            seconds = time.perf_counter() - start
    return len(crops) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=Path, default=Path("calibration/default"), help="calibration set")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps after a warm-up step")
    parser.add_argument("--fp32", type=Path, default=Path("models/default/cpu"))
    parser.add_argument("--int8", type=Path, default=Path("models/default/cpu-int8"))
    args = parser.parse_args()
    files = crop_files(args.crops)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(files)} crops, "
          f"input {args.size}, batch {args.batch}")
    for arch in ("resnet18", "resnet50"):
        rate = training_rate(arch, files, args.size, args.batch, args.steps)
        print(f"train {arch}: {rate:.2f} crops/s")
    crops = [cv2.imread(str(f)) for f in files[:48]]
    for name, bundle in (("FP32", args.fp32), ("INT8", args.int8)):
        if not (bundle / "manifest.json").exists():
            print(f"attribute process {name}: {bundle} missing (make convert TARGET=cpu)")
            continue
        print(f"attribute process {name} ({bundle}): {process_rate(bundle, crops):.1f} crops/s")


if __name__ == "__main__":
    main()
