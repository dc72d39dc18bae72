"""The ``edge collect``, ``edge dataset ...``, ``edge train`` and ``edge evaluate`` subcommands.

Each parses its options, calls one function, and reports.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.training.dataset import Dataset

ANNOTATION_TOOLS = ("labelstudio", "cvat")
PUBLIC_DATASETS = ("pa100k", "rapv2", "peta", "market1501")


def _summary(dataset: Dataset) -> str:
    counts = ", ".join(f"{n} {split}" for split, n in dataset.meta["counts"].items())
    return f"{dataset.path}: {len(dataset.rows)} crops ({counts})"


def _collect(args: argparse.Namespace) -> int:
    from edge.bundle import load_bundle
    from edge.training.collect import collect
    from edge.training.selection import Recipe

    recipe = Recipe(
        conf_th=args.conf_th, min_score=args.min_score, min_height=args.min_height,
        crops_per_track=args.crops_per_track, min_gap_seconds=args.min_gap, edge_margin=args.edge_margin,
        max_hash_distance=args.max_hash_distance, tracker=args.tracker,
    )
    done = collect(
        args.sources, args.out, load_bundle(args.bundle), recipe, test_sources=args.test_sources,
        val_share=args.val_share, every=args.every, max_frames=args.max_frames, threads=args.threads,
        progress=not args.quiet,
    )
    print("\n".join(done.lines()))
    return 0


def _check(args: argparse.Namespace) -> int:
    from edge.training.dataset import load_dataset

    print(f"{_summary(load_dataset(args.dir, progress=not args.quiet))}: ok")
    return 0


def _export(args: argparse.Namespace) -> int:
    from edge.training import cvat, labelstudio
    from edge.training.dataset import load_dataset

    dataset = load_dataset(args.dir)
    out = args.out or args.dir / args.to
    if args.to == "labelstudio":
        files = labelstudio.export_tasks(dataset, out, args.image_url)
    else:
        files = cvat.export_label_set(out)
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _import(args: argparse.Namespace) -> int:
    from edge.training import cvat, labelstudio
    from edge.training.annotation import apply_answers
    from edge.training.dataset import load_dataset, replace_rows
    from edge.training.public import import_public

    if args.source not in ANNOTATION_TOOLS:
        imported = import_public(args.source, args.input, args.dir, args.images, progress=not args.quiet)
        print(f"wrote dataset {_summary(imported)}")
        return 0
    dataset = load_dataset(args.dir)
    if args.source == "labelstudio":
        answers = labelstudio.read_export(args.input)
    else:
        answers = cvat.read_export(args.input, dataset)
    replace_rows(dataset, apply_answers(dataset, answers, str(args.input)))
    print(f"{args.dir}: labels of {len(answers)} crops set from {args.input}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from edge.training.dataset import load_dataset
    from edge.training.stats import describe, plot, table, warnings

    stats = describe(load_dataset(args.dir))
    print("\n".join([*table(stats), *warnings(stats, args.min_share)]))
    print(f"wrote {plot(stats, args.plot or args.dir / 'stats.png')}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from edge.training.dataset import load_dataset
    from edge.training.merge import merge_datasets

    merged = merge_datasets([load_dataset(d) for d in args.inputs], args.out, progress=not args.quiet)
    print(f"wrote dataset {_summary(merged)}")
    return 0


RECIPE_OPTIONS = ("arch", "shared", "input_size", "backbone", "optimizer", "lr", "weight_decay", "momentum",
                  "batch", "patience", "score", "class_weights", "seed")
"""The options of ``edge train`` that make its Recipe (a resumed training takes the checkpoint's)."""
DEVICES = ("auto", "cpu", "cuda")


def _train(args: argparse.Namespace) -> int:
    from edge.convert.attribute_net import read_checkpoint
    from edge.training.recipe import Recipe
    from edge.training.train import Run, resumed_recipe, train

    given = {name: getattr(args, name) for name in RECIPE_OPTIONS if getattr(args, name) is not None}
    if args.resume is not None:
        recipe = resumed_recipe(read_checkpoint(args.resume), args.resume, given)
    else:
        recipe = Recipe(**{**given, "backbone": str(args.backbone) if args.backbone else None})
    done = train(Run(args.datasets, args.out, recipe, epochs=args.epochs, resume=args.resume,
                     device=args.device, workers=args.workers, progress=not args.quiet))
    print("\n".join(done.lines()))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from edge.convert.attribute_metrics import table
    from edge.training.evaluate import evaluate_checkpoint

    out = args.out or args.checkpoint.parent / f"evaluate-{args.checkpoint.stem}-{args.split}"
    result = evaluate_checkpoint(args.checkpoint, args.datasets, args.split, out, args.device)
    print("\n".join([*table(result.scores), f"loss {result.loss:.4f}",
                     f"wrote {out / 'report.md'}, {out / 'confusion.png'}, {out / 'metrics.json'}"]))
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    from edge.convert.attribute_metrics import SCORES
    from edge.training.recipe import OPTIMIZERS, defaults

    d = SimpleNamespace(**defaults())
    p = sub.add_parser(
        "train", help="train the attribute classifier on datasets (host)",
        description="Train the attribute network on the train crops of the datasets, validating on their "
        "val crops every epoch (loss, accuracy and mA per attribute); stop early when the watched score "
        "stops improving. Writes epoch_NNN.pt every fifth epoch and at the end, best.pt, metrics.json and "
        "plots.pdf into --out. With --resume the network and its settings are the checkpoint's.",
    )
    p.add_argument("datasets", nargs="+", type=Path, metavar="DATASET", help="dataset folders")
    p.add_argument("--out", type=Path, required=True, help="output folder, e.g. runs/train/NAME")
    p.add_argument("--arch", default=None, help=f"torchvision ResNet: resnet18, 34, 50 or 101 ({d.arch})")
    p.add_argument("--ensemble", dest="shared", action="store_const", const=False, default=None,
                   help="one backbone per attribute, as the original system (default: one shared backbone)")
    p.add_argument("--input-size", type=int, default=None, help=f"crop side in pixels ({d.input_size})")
    p.add_argument("--backbone", type=Path, default=None,
                   help="start from a torchvision ResNet's weights without its classifier (.pt state_dict)")
    p.add_argument("--optimizer", default=None, choices=OPTIMIZERS, help=f"({d.optimizer})")
    p.add_argument("--lr", type=float, default=None, help=f"learning rate ({d.lr})")
    p.add_argument("--weight-decay", type=float, default=None, help=f"L2 weight decay ({d.weight_decay})")
    p.add_argument("--momentum", type=float, default=None, help=f"SGD momentum ({d.momentum})")
    p.add_argument("--batch", type=int, default=None, help=f"crops per step ({d.batch})")
    p.add_argument("--epochs", type=int, default=100, help="the last epoch (100)")
    p.add_argument("--patience", type=int, default=None,
                   help=f"stop after this many epochs without a better score ({d.patience})")
    p.add_argument("--score", default=None, choices=SCORES,
                   help=f"validation score early stopping watches ({d.score}: label-based mean accuracy)")
    p.add_argument("--class-weights", action="store_const", const=True, default=None,
                   help="weigh labels against their imbalance in the training crops")
    p.add_argument("--seed", type=int, default=None, help=f"({d.seed})")
    p.add_argument("--resume", type=Path, default=None, help="go on from this checkpoint (epoch_NNN.pt)")
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto: CUDA if there is one")
    p.add_argument("--workers", type=int, default=0, help="data loader processes (0: in this one)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_train)

    e = sub.add_parser(
        "evaluate", help="evaluate an attribute checkpoint on a dataset split (host)",
        description="Accuracy and mA per attribute, confusion matrices (confusion.png) and report.md.",
    )
    e.add_argument("checkpoint", type=Path, help="a checkpoint of edge train (best.pt, epoch_NNN.pt)")
    e.add_argument("datasets", nargs="+", type=Path, metavar="DATASET", help="dataset folders")
    e.add_argument("--split", default="test", choices=("train", "val", "test"), help="(test)")
    e.add_argument("--out", type=Path, default=None,
                   help="report folder (default: beside the checkpoint, evaluate-<checkpoint>-<split>)")
    e.add_argument("--device", default="auto", choices=DEVICES, help="auto: CUDA if there is one")
    e.set_defaults(func=_evaluate)


def _add_collect(sub: argparse._SubParsersAction) -> None:
    from edge.training.selection import Recipe
    from edge.training.splits import VAL_SHARE

    d = Recipe()
    p = sub.add_parser(
        "collect", help="collect person crops from videos and streams into an attribute dataset (host)",
        description="Run the bundle's detector and tracker over each source, keep each track's best "
        "crops spaced in time, drop near-duplicates across the dataset, and write the crops with every "
        "attribute unknown. Whole sources go to test (--test-sources, or the documented rule); whole "
        "tracks of the others to val.",
    )
    p.add_argument("sources", nargs="+", help="video files, image folders or rtsp:// URLs")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    p.add_argument("--bundle", type=Path, default=Path("models/default/cpu"), help="bundle (FP32)")
    p.add_argument("--test-sources", nargs="+", default=None, metavar="SOURCE",
                   help="sources held out for test (as given, or their file name or stem)")
    p.add_argument("--val-share", type=float, default=VAL_SHARE, help="share of tracks that go to val")
    p.add_argument("--tracker", default=d.tracker, help=f"tracker (default {d.tracker})")
    p.add_argument("--conf-th", type=float, default=d.conf_th, help="detector threshold (tracking)")
    p.add_argument("--min-score", type=float, default=d.min_score, help="least confidence of a kept crop")
    p.add_argument("--min-height", type=int, default=d.min_height, help="least crop height in pixels")
    p.add_argument("--crops-per-track", type=int, default=d.crops_per_track, help="crops kept per track")
    p.add_argument("--min-gap", type=float, default=d.min_gap_seconds,
                   help="seconds between two crops of a track")
    p.add_argument("--edge-margin", type=int, default=d.edge_margin,
                   help="boxes closer than this to the frame's border (pixels) are cut by it")
    p.add_argument("--max-hash-distance", type=int, default=d.max_hash_distance,
                   help="near-duplicates: perceptual hashes at most this many bits apart (of 64)")
    p.add_argument("--every", type=int, default=1, help="detect on every N-th frame only (faster)")
    p.add_argument("--max-frames", type=int, default=None, help="frames read per source at most")
    p.add_argument("--threads", type=int, default=2, help="detector threads")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_collect)


def _add_dataset(sub: argparse._SubParsersAction) -> None:
    from edge.training.stats import MIN_SHARE

    dataset = sub.add_parser("dataset", help="check, annotate, import, describe and merge attribute datasets")
    verbs = dataset.add_subparsers(dest="verb", required=True)

    check = verbs.add_parser("check", help="check a dataset: its files, every row, every image")
    check.add_argument("dir", type=Path, help="dataset folder")
    check.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    check.set_defaults(func=_check)

    export = verbs.add_parser("export", help="write what an annotation tool needs to label the crops")
    export.add_argument("dir", type=Path, help="dataset folder")
    export.add_argument("--to", required=True, choices=ANNOTATION_TOOLS, help="annotation tool")
    export.add_argument("--out", type=Path, default=None, help="folder for the files (default DIR/<tool>)")
    export.add_argument("--image-url", default="/data/local-files/?d=images/",
                        help="Label Studio: prefix of the tasks' image URLs")
    export.set_defaults(func=_export)

    imp = verbs.add_parser(
        "import", help="read an annotation tool's export into a dataset, or import a public dataset",
        description="labelstudio, cvat: set the labels of the dataset DIR from the tool's export INPUT. "
        "pa100k, rapv2, market1501: INPUT is the annotation .mat; peta: the folder of its subsets; "
        "the dataset DIR is written.",
    )
    imp.add_argument("input", type=Path, help="export file, annotation file or PETA folder")
    imp.add_argument("dir", type=Path, help="dataset folder")
    imp.add_argument("--from", dest="source", required=True, choices=(*ANNOTATION_TOOLS, *PUBLIC_DATASETS))
    imp.add_argument("--images", type=Path, default=None, help="public datasets: where the images are")
    imp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    imp.set_defaults(func=_import)

    stats = verbs.add_parser("stats", help="label counts per attribute and split, a bar chart, rare labels")
    stats.add_argument("dir", type=Path, help="dataset folder")
    stats.add_argument("--plot", type=Path, default=None, help="chart PNG (default DIR/stats.png)")
    stats.add_argument("--min-share", type=float, default=MIN_SHARE,
                       help="warn about labels under this share of their attribute's known labels")
    stats.set_defaults(func=_stats)

    merge = verbs.add_parser("merge", help="join datasets into a new one, splits kept")
    merge.add_argument("inputs", nargs="+", type=Path, help="dataset folders")
    merge.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    merge.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    merge.set_defaults(func=_merge)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``edge collect``, ``edge dataset ...``, ``edge train`` and ``edge evaluate`` (host only)."""
    _add_collect(sub)
    _add_dataset(sub)
    _add_train(sub)
