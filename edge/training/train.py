"""``edge train``: the original system's training of the attribute classifier (docs/training.md).

The :class:`~edge.convert.attribute_net.AttributeNet` (one shared backbone or the
nine-network ensemble; resnet18/34/50/101), optionally started from a backbone file,
trained on the ``train`` crops of one or more datasets with the original augmentations
(:mod:`edge.training.transforms`) and the loss over all heads
(:mod:`edge.training.loss`); Adam (or SGD), lr 0.001, weight decay 0.0001, batch 32,
up to 100 epochs. Every epoch is validated on the ``val`` crops (loss, accuracy and mA
per attribute, their means; :mod:`edge.training.evaluate`), and training stops early
once the watched score (mA by default) has not improved for ``patience`` epochs.

What lands in the output folder, as the original saved it:

- ``epoch_NNN.pt`` every fifth epoch, at an early stop and at the last epoch: the
  weights, the network's description, the optimizer (name, parameters, state), train
  and validation loss, the mean scores and per-attribute figures, the settings, the
  datasets' fingerprints, the history of every epoch so far and the random state;
- ``best.pt``, the same at the epoch of the best watched score (what ships);
- ``metrics.json``, every epoch so far, rewritten each epoch;
- ``plots.pdf`` (:mod:`edge.training.plots`).

``resume`` goes on from a checkpoint at its next epoch, with its settings, optimizer
state and random state.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from edge.convert.attribute_net import (
    AttributeNet,
    CheckpointError,
    load_backbone,
    network_of,
    read_checkpoint,
    save_checkpoint,
)
from edge.training.dataset import Dataset, load_dataset
from edge.training.evaluate import Evaluation, device_of, predict
from edge.training.loss import HeadsLoss, class_weights
from edge.training.plots import write_plots
from edge.training.recipe import Recipe
from edge.training.samples import CropSet, Sample, fingerprint, learnt_attributes, samples
from edge.training.transforms import train_transform

log = logging.getLogger(__name__)

SAVE_EVERY = 5


@dataclass(frozen=True)
class Run:
    """One ``edge train`` call: what it trains on, where it writes, how long it may go.

    Attributes
    ----------
    datasets : list of Path
        Dataset folders; their ``train`` crops are trained on, their ``val`` crops validate.
    out : Path
        The output folder.
    recipe : Recipe
        How to train (the checkpoint's when resuming).
    epochs : int
        The last epoch.
    resume : Path or None
        A checkpoint to go on from.
    device : str
        ``auto`` (CUDA when there is one), ``cpu`` or ``cuda``.
    workers : int
        Data loader processes (0: in this process).
    progress : bool
        A progress bar per epoch.
    """

    datasets: list[Path]
    out: Path
    recipe: Recipe = field(default_factory=Recipe)
    epochs: int = 100
    resume: Path | None = None
    device: str = "auto"
    workers: int = 0
    progress: bool = True


@dataclass(frozen=True)
class Trained:
    """A finished training: where it wrote, its epochs, whether it stopped early, its best epoch."""

    out: Path
    history: list[dict[str, Any]]
    stopped_early: bool
    best_epoch: int
    checkpoints: list[Path]

    def lines(self) -> list[str]:
        """Return the summary printed at the end."""
        best = next(r for r in self.history if r["epoch"] == self.best_epoch)
        last = self.history[-1]
        how = "stopped early" if self.stopped_early else "done"
        return [
            f"{how} after epoch {last['epoch']}: train loss {last['train_loss']:.4f}, "
            f"val loss {last['val_loss']:.4f}, val mA {last['val']['mA']:.4f}, "
            f"val mean accuracy {last['val']['accuracy']:.4f}",
            f"best epoch {self.best_epoch}: val mA {best['val']['mA']:.4f}, "
            f"val mean accuracy {best['val']['accuracy']:.4f} -> {self.out / 'best.pt'}",
            f"wrote {', '.join(p.name for p in self.checkpoints)}, metrics.json, plots.pdf in {self.out}",
        ]


def resumed_recipe(checkpoint: dict[str, Any], path: Path, given: dict[str, Any]) -> Recipe:
    """Return a checkpoint's recipe; refuse settings given that differ from it.

    Raises
    ------
    CheckpointError
        When the checkpoint holds no recipe, or ``given`` asks for another network or
        optimizer than the checkpoint's (it would not load, or would not go on).
    """
    if "recipe" not in checkpoint:
        raise CheckpointError(f"{path}: holds no training state to resume (not written by edge train)")
    recipe = Recipe(**checkpoint["recipe"])
    for name, value in given.items():
        if value is not None and value != getattr(recipe, name):
            raise CheckpointError(
                f"{path}: the checkpoint is a {recipe.arch} {'shared' if recipe.shared else 'ensemble'} "
                f"network trained with {name}={getattr(recipe, name)!r}; --resume goes on with it, "
                f"not with {name}={value!r}"
            )
    return recipe


def train(run: Run) -> Trained:
    """Train (or go on training) an attribute network; see the module doc.

    Every input (datasets, checkpoint, backbone) is read and checked before the output
    folder is made.

    Raises
    ------
    DatasetError
        For a bad dataset, or no labelled ``train`` or ``val`` crop.
    CheckpointError
        For a checkpoint or backbone file that does not fit.
    """
    return _Training(run).fit()


class _Training:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.ckpt = read_checkpoint(run.resume) if run.resume is not None else None
        self.recipe = run.recipe
        datasets: list[Dataset] = [load_dataset(d) for d in run.datasets]
        self.train_items: list[Sample] = samples(datasets, "train")
        self.val_items: list[Sample] = samples(datasets, "val")
        self.sources = [fingerprint(d) for d in datasets]
        self.device = device_of(run.device)
        _seed(self.recipe.seed)
        if self.ckpt is not None:
            self.net = network_of(self.ckpt, run.resume)
        else:
            self.net = AttributeNet(self.recipe.arch, self.recipe.shared, self.recipe.input_size)
            if self.recipe.backbone:
                load_backbone(self.net, Path(self.recipe.backbone))
        self.net.to(self.device)
        crops = CropSet(self.train_items, train_transform(self.recipe.input_size))
        labels = crops.label_matrix()
        self.learnt = learnt_attributes(labels)
        self.weights = class_weights(labels) if self.recipe.class_weights else None
        self.loss = HeadsLoss(self.weights, self.device)
        self.optimizer = _optimizer(self.recipe, self.net)
        self.history: list[dict[str, Any]] = []
        self.generator = torch.Generator().manual_seed(self.recipe.seed)
        if self.ckpt is not None:
            self._restore()
        self.loader = DataLoader(crops, batch_size=self.recipe.batch, shuffle=True, generator=self.generator,
                                 num_workers=run.workers, drop_last=len(crops) > self.recipe.batch)
        self.saved: list[Path] = []

    def _restore(self) -> None:
        assert self.ckpt is not None and self.run.resume is not None
        self.optimizer.load_state_dict(self.ckpt["optimizer"]["state_dict"])
        self.history = list(self.ckpt["history"])
        torch.set_rng_state(self.ckpt["rng"]["torch"])
        np.random.set_state(self.ckpt["rng"]["numpy"])
        random.setstate(self.ckpt["rng"]["python"])
        self.generator.set_state(self.ckpt["rng"]["shuffle"])
        best = self.run.resume.parent / "best.pt"
        self.run.out.mkdir(parents=True, exist_ok=True)
        if best.is_file() and not (self.run.out / "best.pt").exists():
            shutil.copyfile(best, self.run.out / "best.pt")

    def fit(self) -> Trained:
        out, recipe = self.run.out, self.recipe
        out.mkdir(parents=True, exist_ok=True)
        start = len(self.history) + 1
        if start > self.run.epochs:
            raise ValueError(f"--epochs {self.run.epochs}: the checkpoint is at epoch {start - 1} already")
        log.info("training %s on %d crops, validating on %d, %s", recipe.arch, len(self.train_items),
                 len(self.val_items), self.device)
        stopped = False
        for epoch in range(start, self.run.epochs + 1):
            began = time.perf_counter()
            train_loss = self._train_epoch(epoch)
            val = predict(self.net, self.val_items, self.loss, self.device, recipe.batch)
            self.history.append(_record(epoch, train_loss, val, time.perf_counter() - began))
            improved = self._best_epoch() == epoch
            stopped = epoch - self._best_epoch() >= recipe.patience
            if improved:
                self._save(out / "best.pt", epoch, val)
            if epoch % SAVE_EVERY == 0 or stopped or epoch == self.run.epochs:
                self.saved.append(self._save(out / f"epoch_{epoch:03d}.pt", epoch, val))
            (out / "metrics.json").write_text(json.dumps(
                {"recipe": asdict(recipe), "datasets": self.sources, "epochs": self.history}, indent=1))
            write_plots(self.history, out / "plots.pdf", recipe.score)
            if stopped:
                log.info("no better val %s for %d epochs: stopping at epoch %d", recipe.score,
                         recipe.patience, epoch)
                break
        return Trained(out, self.history, stopped, self._best_epoch(), self.saved)

    def _train_epoch(self, epoch: int) -> float:
        self.net.train()
        total, count = 0.0, 0
        bar = tqdm(self.loader, desc=f"epoch {epoch}/{self.run.epochs}", unit="batch",
                   disable=not self.run.progress, leave=False)
        for x, y in bar:
            x, y = x.to(self.device), y.to(self.device)
            self.optimizer.zero_grad()
            loss = self.loss(self.net(x), y)
            loss.backward()
            self.optimizer.step()
            total, count = total + float(loss.detach()) * len(x), count + len(x)
            bar.set_postfix(loss=f"{total / count:.4f}")
        return total / count

    def _best_epoch(self) -> int:
        """Return the epoch of the best watched score so far, the first of equals."""
        score = self.recipe.score
        return max(self.history, key=lambda r: (r["val"][score], -r["epoch"]))["epoch"]

    def _save(self, path: Path, epoch: int, val: Evaluation) -> Path:
        opt = self.optimizer
        optimizer = {"name": self.recipe.optimizer, "params": _parameters(opt),
                     "state_dict": opt.state_dict()}
        save_checkpoint(
            self.net, path, epoch=epoch, optimizer=optimizer,
            train_loss=self.history[-1]["train_loss"], val_loss=val.loss,
            score={"name": self.recipe.score, "value": val.scores.mean(self.recipe.score)},
            mA=val.scores.mean("mA"), mean_accuracy=val.scores.mean("accuracy"),
            per_attribute=val.scores.as_dict()["per_attribute"],
            recipe=asdict(self.recipe), datasets=self.sources, learnt=self.learnt, class_weights=self.weights,
            history=self.history,
            rng={"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                 "shuffle": self.generator.get_state()},
        )
        return path


def _record(epoch: int, train_loss: float, val: Evaluation, seconds: float) -> dict[str, Any]:
    return {"epoch": epoch, "train_loss": round(train_loss, 6), "val_loss": round(val.loss, 6),
            "val": val.scores.as_dict(), "seconds": round(seconds, 1)}


def _optimizer(recipe: Recipe, net: AttributeNet) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay,
                           momentum=recipe.momentum)


def _parameters(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Return the optimizer's hyper-parameters (of its one parameter group), JSON-ready."""
    group = optimizer.param_groups[0]
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()
            if k != "params" and isinstance(v, int | float | bool | tuple | str | type(None))}


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

