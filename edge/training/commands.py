"""The ``edge collect``, ``edge dataset ...``, ``edge train`` and ``edge evaluate`` subcommands.

Each command's options are a model here (``edge collect``'s composed of the selection's
:class:`~edge.training.selection.Recipe`); each handler calls one function with them,
and reports.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from edge.convert.attribute_metrics import SCORES
from edge.settings import POSITIONAL, Options, UnitInterval, add_command, option, quiet_field
from edge.settings.values import Count
from edge.training.recipe import OPTIMIZERS, defaults
from edge.training.selection import Recipe
from edge.training.splits import VAL_SHARE
from edge.training.stats import MIN_SHARE

if TYPE_CHECKING:
    from edge.training.dataset import Dataset

ANNOTATION_TOOLS = ("labelstudio", "cvat")
PUBLIC_DATASETS = ("pa100k", "rapv2", "peta", "market1501")
DEVICES = ("auto", "cpu", "cuda")
DATASETS = {**POSITIONAL, **option(metavar="DATASET")}
"""Marks the dataset folders ``edge train`` and ``edge evaluate`` take as arguments."""
TRAINING = defaults()
"""The training recipe's defaults, which ``edge train``'s help shows."""


def _dataset_dir() -> Any:
    """Return the field of the dataset folder ``edge dataset``'s verbs take as an argument."""
    return Field(description="dataset folder", json_schema_extra=POSITIONAL)


class CollectCommand(Options):
    """The options of ``edge collect``: the sources, the dataset, the bundle, the selection's recipe."""

    sources: list[str] = Field(description="video files, image folders or rtsp:// URLs",
                               json_schema_extra=POSITIONAL)
    out: Path = Field(description="dataset folder to write")
    bundle: Path = Field(Path("models/default/cpu"), description="bundle (FP32)")
    test_sources: list[str] | None = Field(None, description="sources held out for test (as given, or their "
                                           "file name or stem)", json_schema_extra=option(metavar="SOURCE"))
    val_share: UnitInterval = Field(VAL_SHARE, description="share of tracks that go to val")
    recipe: Recipe = Field(default_factory=Recipe)
    every: Count = Field(1, description="detect on every N-th frame only (faster)")
    max_frames: int | None = Field(None, description="frames read per source at most")
    threads: int = Field(2, description="detector threads")
    quiet: bool = quiet_field()


class DatasetCheckCommand(Options):
    """The options of ``edge dataset check``."""

    dir: Path = _dataset_dir()
    quiet: bool = quiet_field("no progress bar")


class DatasetExportCommand(Options):
    """The options of ``edge dataset export``."""

    dir: Path = _dataset_dir()
    to: Literal[ANNOTATION_TOOLS] = Field(description="annotation tool")  # type: ignore[valid-type]
    out: Path | None = Field(None, description="folder for the files (default DIR/<tool>)")
    image_url: str = Field("/data/local-files/?d=images/",
                           description="Label Studio: prefix of the tasks' image URLs")


class DatasetImportCommand(Options):
    """The options of ``edge dataset import``."""

    input: Path = Field(description="export file, annotation file or PETA folder",
                        json_schema_extra=POSITIONAL)
    dir: Path = _dataset_dir()
    source: Literal[(*ANNOTATION_TOOLS, *PUBLIC_DATASETS)] = Field(  # type: ignore[valid-type]
        description="annotation tool or public dataset", json_schema_extra=option("--from"))
    images: Path | None = Field(None, description="public datasets: where the images are")
    quiet: bool = quiet_field()


class DatasetStatsCommand(Options):
    """The options of ``edge dataset stats``."""

    dir: Path = _dataset_dir()
    plot: Path | None = Field(None, description="chart PNG (default DIR/stats.png)")
    min_share: UnitInterval = Field(
        MIN_SHARE, description="warn about labels under this share of their attribute's known labels")


class DatasetMergeCommand(Options):
    """The options of ``edge dataset merge``."""

    inputs: list[Path] = Field(description="dataset folders", json_schema_extra=POSITIONAL)
    out: Path = Field(description="dataset folder to write")
    quiet: bool = quiet_field("no progress bar")


class TrainCommand(Options):
    """The options of ``edge train``; a recipe's option left out is its default, or the checkpoint's."""

    datasets: list[Path] = Field(description="dataset folders", json_schema_extra=DATASETS)
    out: Path = Field(description="output folder, e.g. runs/train/NAME")
    arch: str | None = Field(
        None, description=f"torchvision ResNet: resnet18, 34, 50 or 101 ({TRAINING['arch']})")
    ensemble: bool = Field(
        False,
        description="one backbone per attribute, as the original system (default: one shared backbone)")
    input_size: int | None = Field(None, description=f"crop side in pixels ({TRAINING['input_size']})")
    backbone: Path | None = Field(
        None, description="start from a torchvision ResNet's weights without its classifier (.pt state_dict)")
    optimizer: Literal[OPTIMIZERS] | None = Field(  # type: ignore[valid-type]
        None, description=f"optimizer ({TRAINING['optimizer']})")
    lr: float | None = Field(None, description=f"learning rate ({TRAINING['lr']})")
    weight_decay: float | None = Field(None, description=f"L2 weight decay ({TRAINING['weight_decay']})")
    momentum: float | None = Field(None, description=f"SGD momentum ({TRAINING['momentum']})")
    batch: int | None = Field(None, description=f"crops per step ({TRAINING['batch']})")
    epochs: int = Field(100, description="the last epoch")
    patience: int | None = Field(
        None, description=f"stop after this many epochs without a better score ({TRAINING['patience']})")
    score: Literal[SCORES] | None = Field(  # type: ignore[valid-type]
        None, description=f"validation score early stopping watches ({TRAINING['score']}: label-based mean "
        "accuracy)")
    class_weights: bool = Field(
        False, description="weigh labels against their imbalance in the training crops")
    seed: int | None = Field(None, description=f"seed ({TRAINING['seed']})")
    resume: Path | None = Field(None, description="go on from this checkpoint (epoch_NNN.pt)")
    device: Literal[DEVICES] = Field("auto", description="auto: CUDA if there is one")  # type: ignore[valid-type]
    workers: int = Field(0, description="data loader processes (0: in this one)")
    quiet: bool = quiet_field()

    def recipe_given(self) -> dict[str, Any]:
        """Return the recipe's fields these options give (``--ensemble``: ``shared`` false)."""
        given = {**self.model_dump(include=set(TRAINING)), "shared": False if self.ensemble else None,
                 "class_weights": self.class_weights or None,
                 "backbone": self.backbone and str(self.backbone)}
        return {name: value for name, value in given.items() if value is not None}


class EvaluateCommand(Options):
    """The options of ``edge evaluate``."""

    checkpoint: Path = Field(description="a checkpoint of edge train (best.pt, epoch_NNN.pt)",
                             json_schema_extra=POSITIONAL)
    datasets: list[Path] = Field(description="dataset folders", json_schema_extra=DATASETS)
    split: Literal["train", "val", "test"] = Field("test", description="the split evaluated")
    out: Path | None = Field(
        None, description="report folder (default: beside the checkpoint, evaluate-<checkpoint>-<split>)")
    device: Literal[DEVICES] = Field("auto", description="auto: CUDA if there is one")  # type: ignore[valid-type]


def _summary(dataset: Dataset) -> str:
    counts = ", ".join(f"{n} {split}" for split, n in dataset.meta["counts"].items())
    return f"{dataset.path}: {len(dataset.rows)} crops ({counts})"


def _collect(command: CollectCommand) -> int:
    from edge.bundle import load_bundle
    from edge.training.collect import collect

    done = collect(
        command.sources, command.out, load_bundle(command.bundle), command.recipe,
        test_sources=command.test_sources, val_share=command.val_share, every=command.every,
        max_frames=command.max_frames, threads=command.threads, progress=not command.quiet,
    )
    print("\n".join(done.lines()))
    return 0


def _check(command: DatasetCheckCommand) -> int:
    from edge.training.dataset import load_dataset

    print(f"{_summary(load_dataset(command.dir, progress=not command.quiet))}: ok")
    return 0


def _export(command: DatasetExportCommand) -> int:
    from edge.training import cvat, labelstudio
    from edge.training.dataset import load_dataset

    dataset = load_dataset(command.dir)
    out = command.out or command.dir / command.to
    if command.to == "labelstudio":
        files = labelstudio.export_tasks(dataset, out, command.image_url)
    else:
        files = cvat.export_label_set(out)
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _import(command: DatasetImportCommand) -> int:
    from edge.training import cvat, labelstudio
    from edge.training.annotation import apply_answers
    from edge.training.dataset import load_dataset, replace_rows
    from edge.training.public import import_public

    if command.source not in ANNOTATION_TOOLS:
        imported = import_public(command.source, command.input, command.dir, command.images,
                                 progress=not command.quiet)
        print(f"wrote dataset {_summary(imported)}")
        return 0
    dataset = load_dataset(command.dir)
    if command.source == "labelstudio":
        answers = labelstudio.read_export(command.input)
    else:
        answers = cvat.read_export(command.input, dataset)
    replace_rows(dataset, apply_answers(dataset, answers, str(command.input)))
    print(f"{command.dir}: labels of {len(answers)} crops set from {command.input}")
    return 0


def _stats(command: DatasetStatsCommand) -> int:
    from edge.training.dataset import load_dataset
    from edge.training.stats import describe, plot, table, warnings

    stats = describe(load_dataset(command.dir))
    print("\n".join([*table(stats), *warnings(stats, command.min_share)]))
    print(f"wrote {plot(stats, command.plot or command.dir / 'stats.png')}")
    return 0


def _merge(command: DatasetMergeCommand) -> int:
    from edge.training.dataset import load_dataset
    from edge.training.merge import merge_datasets

    datasets = [load_dataset(d) for d in command.inputs]
    merged = merge_datasets(datasets, command.out, progress=not command.quiet)
    print(f"wrote dataset {_summary(merged)}")
    return 0


def _train(command: TrainCommand) -> int:
    from edge.convert.attribute_net import read_checkpoint
    from edge.training.recipe import Recipe as TrainingRecipe
    from edge.training.train import Run, resumed_recipe, train

    given = command.recipe_given()
    if command.resume is not None:
        recipe = resumed_recipe(read_checkpoint(command.resume), command.resume, given)
    else:
        recipe = TrainingRecipe(**given)
    done = train(Run(command.datasets, command.out, recipe, epochs=command.epochs, resume=command.resume,
                     device=command.device, workers=command.workers, progress=not command.quiet))
    print("\n".join(done.lines()))
    return 0


def _evaluate(command: EvaluateCommand) -> int:
    from edge.convert.attribute_metrics import table
    from edge.training.evaluate import evaluate_checkpoint

    out = command.out or command.checkpoint.parent / f"evaluate-{command.checkpoint.stem}-{command.split}"
    result = evaluate_checkpoint(command.checkpoint, command.datasets, command.split, out, command.device)
    print("\n".join([*table(result.scores), f"loss {result.loss:.4f}",
                     f"wrote {out / 'report.md'}, {out / 'confusion.png'}, {out / 'metrics.json'}"]))
    return 0


def _add_dataset(sub: argparse._SubParsersAction) -> None:
    dataset = sub.add_parser("dataset", help="check, annotate, import, describe and merge attribute datasets")
    verbs = dataset.add_subparsers(dest="verb", required=True)
    add_command(verbs, "check", DatasetCheckCommand, _check,
                help="check a dataset: its files, every row, every image")
    add_command(verbs, "export", DatasetExportCommand, _export,
                help="write what an annotation tool needs to label the crops")
    add_command(
        verbs, "import", DatasetImportCommand, _import,
        help="read an annotation tool's export into a dataset, or import a public dataset",
        description="labelstudio, cvat: set the labels of the dataset DIR from the tool's export INPUT. "
        "pa100k, rapv2, market1501: INPUT is the annotation .mat; peta: the folder of its subsets; "
        "the dataset DIR is written.",
    )
    add_command(verbs, "stats", DatasetStatsCommand, _stats,
                help="label counts per attribute and split, a bar chart, rare labels")
    add_command(verbs, "merge", DatasetMergeCommand, _merge, help="join datasets into a new one, splits kept")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``edge collect``, ``edge dataset ...``, ``edge train`` and ``edge evaluate`` (host only)."""
    add_command(
        sub, "collect", CollectCommand, _collect,
        help="collect person crops from videos and streams into an attribute dataset (host)",
        description="Run the bundle's detector and tracker over each source, keep each track's best "
        "crops spaced in time, drop near-duplicates across the dataset, and write the crops with every "
        "attribute unknown. Whole sources go to test (--test-sources, or the documented rule); whole "
        "tracks of the others to val.",
    )
    _add_dataset(sub)
    add_command(
        sub, "train", TrainCommand, _train, help="train the attribute classifier on datasets (host)",
        description="Train the attribute network on the train crops of the datasets, validating on their "
        "val crops every epoch (loss, accuracy and mA per attribute); stop early when the watched score "
        "stops improving. Writes epoch_NNN.pt every fifth epoch and at the end, best.pt, metrics.json and "
        "plots.pdf into --out. With --resume the network and its settings are the checkpoint's.",
    )
    add_command(
        sub, "evaluate", EvaluateCommand, _evaluate,
        help="evaluate an attribute checkpoint on a dataset split (host)",
        description="Accuracy and mA per attribute, confusion matrices (confusion.png) and report.md.",
    )
