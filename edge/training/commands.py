"""The ``edge collect`` and ``edge dataset ...`` subcommands: parse, call one function, report."""

from __future__ import annotations

import argparse
from pathlib import Path
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
    p.add_argument("--tracker", default=d.tracker, help="sfsort (default) or bytetrack")
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
    """Add ``edge collect`` and ``edge dataset check|export|import|stats|merge`` (host only)."""
    _add_collect(sub)
    _add_dataset(sub)
