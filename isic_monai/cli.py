"""The ``isic-monai`` console script.

Subcommands are registered in :data:`COMMANDS` as ``(name, add_arguments, run)`` tuples: ``add_arguments(parser)``
adds the options to a sub-parser and ``run(args) -> int`` returns the exit code (the first line of ``run``'s
docstring is the help text). Exit codes: 0 success, 1 bad data (problems printed and written to a JSON report) or
a failed download, 2 invalid options or any other error.

Errors: a command that fails prints one line, ``isic-monai <command>: error: <message>``, and the traceback goes
to a new file of its own in :data:`ERROR_LOG_DIR` (named in that line; :func:`write_error_log`); ``--debug``
(before or after the command) lets it propagate with its traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from isic_monai import __version__
from isic_monai.data.atomic import write_text_atomic
from isic_monai.data.records import DataError, json_safe

__all__ = ["COMMANDS", "ERROR_LOG_DIR", "build_parser", "main", "write_error_log"]

ERROR_LOG_DIR = Path(tempfile.gettempdir())
"""Where a failed command's traceback goes: a new ``isic-monai-<command>-<random>.log`` per failure, never a fixed
name another user could create first or point elsewhere (``ISIC_MONAI_ERROR_LOG_DIR`` overrides the folder)."""


# ----------------------------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------------------------


def _add_build_options(parser: argparse.ArgumentParser) -> None:
    from isic_monai.data.datalist import SPLIT_MODES
    from isic_monai.data.layouts import LAYOUTS
    from isic_monai.data.validate import VERIFY_MODES

    g = parser.add_argument_group("datalist options (when the input is a dataset folder)")
    g.add_argument("--layout", choices=LAYOUTS, default=None, help="force a layout (default: auto-detect)")
    g.add_argument("--split", choices=SPLIT_MODES, default="auto",
                   help="auto = official challenge splits when the layout has them, else ratio (default: auto)")
    g.add_argument("--ratios", type=float, nargs="+", default=[0.8, 0.2], metavar="R",
                   help="train val [test] ratios, e.g. 0.8 0.2 or 0.7 0.15 0.15 (default: 0.8 0.2); with official "
                   "splits they carve validation out of training when there is no labelled validation split")
    g.add_argument("--folds", type=int, default=5, help="number of folds for --split kfold (default: 5)")
    g.add_argument("--fold", type=int, default=0, help="validation fold for --split kfold (default: 0)")
    g.add_argument("--fraction", type=float, default=1.0,
                   help="training fraction, e.g. 0.1 0.25 0.5 1.0; nested for one seed (default: 1.0)")
    g.add_argument("--seed", type=int, default=0, help="seed of every split and subset (default: 0)")
    g.add_argument("--verify", choices=VERIFY_MODES, default="quick",
                   help="quick: headers, JPEG/PNG end markers, masks decoded; full: decode every image")
    g.add_argument("--skip-bad", action="store_true",
                   help="keep the good items and report the bad ones instead of stopping")


def _build_kwargs(args: argparse.Namespace) -> dict[str, object]:
    return {"layout": args.layout, "split": args.split, "ratios": args.ratios, "folds": args.folds,
            "fold": args.fold, "fraction": args.fraction, "seed": args.seed, "verify": args.verify,
            "skip_bad": args.skip_bad, "workers": args.workers, "progress": not args.quiet}


def _add_workers(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    parser.add_argument("--workers", type=int, default=default,
                        help="worker processes (default: %(default)s; None = all CPUs)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _report(problems: Sequence[object], report: Path | None, header: str) -> None:
    """Print problems (at most 20 per kind) to stderr and write the complete JSON report."""
    from isic_monai.data.records import format_problems, write_problems

    if not problems:
        return
    print(header, file=sys.stderr)
    print(format_problems(problems), file=sys.stderr)  # type: ignore[arg-type]
    if report is not None:
        write_problems(problems, report)  # type: ignore[arg-type]
        print(f"complete list: {report}", file=sys.stderr)


def _fail(err: DataError, report: Path | None) -> int:
    """Exit code 1 for bad data: the problems printed, the complete list written to ``report``."""
    from isic_monai.data.records import errors

    n = len(errors(err.problems))
    _report(err.problems, report, f"error: {n} problem(s) stop the build (use --skip-bad to keep the good items):")
    return 1


def write_error_log(command: str, text: str, folder: str | os.PathLike | None = None) -> Path:
    """Write ``text`` to a new file of this run's own, ``<folder>/isic-monai-<command>-<random>.log``.

    The file is created exclusively (``O_EXCL``: an existing file or symbolic link of that name is never opened) and
    readable by its owner only, so in a shared temporary folder no other user can read a traceback (paths, data
    names) nor make this process write through a link they planted; two runs never overwrite each other's log.

    Args:
        command: the failed command (in the name and the first line).
        text: the traceback.
        folder: where (default: ``ISIC_MONAI_ERROR_LOG_DIR`` or :data:`ERROR_LOG_DIR`).

    Returns:
        The file written.
    """
    folder = Path(folder if folder is not None else os.environ.get("ISIC_MONAI_ERROR_LOG_DIR") or ERROR_LOG_DIR)
    fd, name = tempfile.mkstemp(prefix=f"isic-monai-{command}-", suffix=".log", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"isic-monai {command}\n{text}")
    return Path(name)


def error_line(command: str, err: BaseException, folder: str | os.PathLike | None = None) -> str:
    """Write ``err``'s traceback to a log of its own (:func:`write_error_log`) and return the one line printed
    for it."""
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    try:
        log = write_error_log(command, text, folder)
        where = f"traceback: {log}; --debug shows it"
    except OSError:
        where = "--debug shows the traceback"
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"isic-monai {command}: error: {message} ({type(err).__name__}; {where})"


def _problems_of(datalist: dict) -> list:
    from isic_monai.data.records import Problem

    return [Problem.from_dict(p) for p in datalist.get("metadata", {}).get("problems", [])]


def _counts_line(datalist: dict) -> str:
    from isic_monai.data.records import DATALIST_KEYS

    meta = datalist.get("metadata", {})
    counts = ", ".join(f"{k} {len(datalist.get(k, []))}" for k in DATALIST_KEYS)
    return f"layout {meta.get('layout')} (split {meta.get('split')}): {counts}"


# ----------------------------------------------------------------------------------------------------------------
# datalist
# ----------------------------------------------------------------------------------------------------------------


def add_datalist_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``isic-monai datalist``."""
    parser.add_argument("root", type=Path, help="dataset folder (any supported layout)")
    parser.add_argument("-o", "--output", type=Path, default=Path("datalist.json"),
                        help="datalist JSON to write (default: datalist.json)")
    _add_build_options(parser)
    _add_workers(parser, default=1)


def run_datalist(args: argparse.Namespace) -> int:
    """Detect, validate and split a dataset folder into a Decathlon-style datalist JSON."""
    from isic_monai.data.datalist import build_datalist, problems_path, write_datalist

    report = problems_path(args.output)
    try:
        datalist = build_datalist(args.root, **_build_kwargs(args))
    except DataError as err:
        return _fail(err, report)
    write_datalist(datalist, args.output)
    problems = _problems_of(datalist)
    _report(problems, None, f"{len(problems)} problem(s) reported (kept items only have warnings):")
    if problems:
        print(f"complete list: {report}", file=sys.stderr)
    print(f"{_counts_line(datalist)} -> {args.output}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# prepare
# ----------------------------------------------------------------------------------------------------------------


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``isic-monai prepare``."""
    parser.add_argument("source", type=Path, help="dataset folder, datalist JSON, or a folder holding datalist.json")
    parser.add_argument("-o", "--output", type=Path, required=True, help="cache folder")
    parser.add_argument("--size", type=int, nargs="+", default=[256], metavar="N",
                        help="N = longest side (aspect kept) or H W = exact size (default: 256)")
    parser.add_argument("--image-format", choices=("png", "jpg"), default="png",
                        help="cache image format (default: png, lossless)")
    _add_build_options(parser)
    _add_workers(parser, default=None)


def run_prepare(args: argparse.Namespace) -> int:
    """Resize every image once into a cache folder and write CACHE/datalist.json (resumable)."""
    from isic_monai.data.datalist import DATALIST_FILE, problems_path
    from isic_monai.data.prepare import prepare

    if len(args.size) not in (1, 2):
        print("error: --size takes N or H W", file=sys.stderr)
        return 2
    report = problems_path(args.output / DATALIST_FILE)
    kwargs = _build_kwargs(args)
    workers, progress, skip_bad = kwargs.pop("workers"), kwargs.pop("progress"), kwargs.pop("skip_bad")
    try:
        datalist = prepare(args.source, args.output, args.size if len(args.size) == 2 else args.size[0],
                           workers=workers, image_format=args.image_format, skip_bad=skip_bad,
                           progress=progress, **kwargs)
    except DataError as err:
        return _fail(err, report)
    prepared = datalist["metadata"]["prepared"]
    problems = _problems_of(datalist)
    _report(problems, None, f"{len(problems)} problem(s) reported:")
    print(f"{_counts_line(datalist)}; {prepared['files_written']} file(s) written in {prepared['seconds']:.1f} s "
          f"-> {args.output / DATALIST_FILE}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# stats
# ----------------------------------------------------------------------------------------------------------------


def add_stats_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``isic-monai stats``."""
    parser.add_argument("source", type=Path, help="dataset folder, datalist JSON, or a folder holding datalist.json")
    parser.add_argument("--json", type=Path, default=None, help="write the statistics as JSON")
    parser.add_argument("--chart", type=Path, default=None, help="write a PNG bar chart of the attributes")
    _add_build_options(parser)
    _add_workers(parser, default=1)


def run_stats(args: argparse.Namespace) -> int:
    """Counts, image sizes, lesion fraction and attribute distribution (text, JSON, PNG)."""
    from isic_monai.data.stats import compute_stats, format_stats, plot_stats

    kwargs = _build_kwargs(args)
    workers = kwargs.pop("workers")
    kwargs["progress"] = False
    try:
        stats = compute_stats(args.source, workers=workers or 1, **kwargs)
    except DataError as err:
        return _fail(err, None)
    print(format_stats(stats))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.json, json.dumps(stats, indent=2))
        print(f"-> {args.json}")
    if args.chart:
        plot_stats(stats, args.chart)
        print(f"-> {args.chart}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# download
# ----------------------------------------------------------------------------------------------------------------


def add_download_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``isic-monai download``."""
    from isic_monai.data.download import DATASETS

    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=tuple(DATASETS), help="a known dataset (official archives)")
    src.add_argument("--url", help="a custom archive URL (zip, tar, tar.gz)")
    src.add_argument("--list", action="store_true", help="list the known datasets and their URLs")
    parser.add_argument("--md5", default=None, help="MD5 checksum of the --url archive")
    parser.add_argument("--dest", type=Path, default=Path("."), help="destination folder (default: .)")
    parser.add_argument("--mirror", default=None, help="base URL replacing the official host (a local mirror)")
    parser.add_argument("--no-extract", action="store_true", help="download only")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def run_download(args: argparse.Namespace) -> int:
    """Download and extract official challenge archives (checksum, resume, extraction)."""
    from isic_monai.data.download import DATASETS, download

    if args.list:
        for name, archives in DATASETS.items():
            print(name)
            for a in archives:
                print(f"  {a.url}" + (f"  md5 {a.md5}" if a.md5 else ""))
        return 0
    try:
        results = download(args.dest, args.dataset, url=args.url, md5=args.md5, mirror=args.mirror,
                           extract=not args.no_extract, progress=not args.quiet)
    except (OSError, ValueError, RuntimeError) as err:  # network, checksum (HashCheckError) and archive errors
        print(error_line("download", err).replace(": error: ", ": error: download failed: ", 1), file=sys.stderr)
        return 1
    for r in results:
        state = "downloaded" if r["downloaded"] else "already present"
        print(f"{r['archive']}: {state}" + (", extracted" if r["extracted"] else ""))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# synth (written in isic_monai/data/synth.py; imported lazily)
# ----------------------------------------------------------------------------------------------------------------


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``isic-monai synth`` (from :mod:`isic_monai.data.synth`)."""
    try:
        from isic_monai.data import synth
    except ImportError as err:
        parser.set_defaults(_synth_error=str(err))
        return
    synth.add_arguments(parser)


def run_synth(args: argparse.Namespace) -> int:
    """Generate synthetic dermoscopy images in the layout of a real dataset."""
    if getattr(args, "_synth_error", None):
        print(f"error: the synth module is unavailable: {args._synth_error}", file=sys.stderr)
        return 2
    from isic_monai.data import synth

    return int(synth.run(args))


# ----------------------------------------------------------------------------------------------------------------
# export-bundle (written in isic_monai/bundle/export.py)
# ----------------------------------------------------------------------------------------------------------------


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``isic-monai export-bundle``."""
    from isic_monai.bundle.export import DEFAULT_NETWORK, TASKS
    from isic_monai.bundle.paths import network_config_names

    parser.add_argument("out", type=Path, help="the bundle folder to write")
    parser.add_argument("--task", choices=sorted(TASKS), default="task1", help="default: %(default)s")
    parser.add_argument("--network", choices=network_config_names() or None, default=None,
                        help="a configs/networks override (default: the checkpoint's recorded network, else the "
                        f"shipped model's for the task, else {DEFAULT_NETWORK})")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a trained models/model.pt (default: the shipped model where task and network match it, "
                        "else an untrained network)")
    parser.add_argument("--metrics", type=Path, default=None,
                        help="the checkpoint's evaluation summary.json (default: eval/summary.json of its run)")
    parser.add_argument("--no-torchscript", action="store_true", help="do not write models/model.ts")


def run_export(args: argparse.Namespace) -> int:
    """Write a flat, self-contained MONAI bundle for one task and network."""
    import logging
    import warnings

    from isic_monai.bundle.export import export_bundle

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        print(f"error: {args.checkpoint}: checkpoint not found", file=sys.stderr)
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the untrained-model warning is logged once instead
        try:
            result = export_bundle(args.out, args.task, args.network, args.checkpoint, args.metrics,
                                   torchscript=not args.no_torchscript)
        except (ValueError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    weights = "trained" if result["trained"] else "UNTRAINED (template)"
    print(f"{result['out']}: {result['task']} x {result['network']}, {weights} weights, image_size "
          f"{result['image_size']}, model.ts: {result['torchscript'] or 'none'}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# score (written in isic_monai/results/scoring.py)
# ----------------------------------------------------------------------------------------------------------------


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``isic-monai score``."""
    parser.add_argument("pred_dir", type=Path, help="folder of predicted masks (file names hold the image id)")
    parser.add_argument("gt_dir", type=Path, help="folder of truth masks (or a PH2 tree of IMDxxx_lesion masks)")
    parser.add_argument("--task", type=int, choices=(1, 2), default=None,
                        help="1 = lesion masks, 2 = <id>_attribute_<name> masks (default: from the truth names)")
    parser.add_argument("--format", choices=("table", "json"), default="table",
                        help="table, or one JSON object with the official scorer's keys and the extras "
                        "(default: %(default)s)")
    parser.add_argument("--csv", type=Path, default=None, metavar="PER_IMAGE_CSV",
                        help="also write one row per truth mask (counts and every measure)")
    parser.add_argument("--problems", type=Path, default=None, metavar="JSON",
                        help="write every problem found (errors and warnings) to this JSON file")
    _add_workers(parser, default=1)


def run_score(args: argparse.Namespace) -> int:
    """Score a folder of masks against the truth as the ISIC challenge's scorer does, with extras."""
    from isic_monai.results.scoring import ScoringError, format_table, score_folders, score_report, write_per_image_csv

    for folder in (args.pred_dir, args.gt_dir):
        if not folder.is_dir():
            print(f"error: {folder}: not a folder", file=sys.stderr)
            return 2
    try:
        score = score_folders(args.pred_dir, args.gt_dir, task=args.task, workers=args.workers,
                              progress=not args.quiet)
    except ScoringError as err:
        _report(err.problems, args.problems, str(err).splitlines()[0])
        return 1
    _report(score.problems, args.problems, f"{len(score.problems)} warning(s):")
    report = score_report(score)
    if args.csv is not None:
        write_per_image_csv(score, args.csv)
        print(f"per-image scores: {args.csv}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(json_safe(report), indent=2))
    else:
        print(format_table(report), end="")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# measure (written in isic_monai/results/lesions.py)
# ----------------------------------------------------------------------------------------------------------------


def add_measure_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``isic-monai measure``."""
    parser.add_argument("masks_dir", type=Path,
                        help="folder of lesion masks (<id>_segmentation.png, ...) and <id>_attribute_<name>.png masks")
    parser.add_argument("-o", "--output", type=Path, default=Path("measurements.csv"),
                        help="CSV to write (default: %(default)s)")
    parser.add_argument("--pixel-spacing", type=float, default=None, metavar="MM",
                        help="millimetres per pixel: adds area_mm2 and the _mm lengths")
    parser.add_argument("--attributes-dir", type=Path, default=None,
                        help="a separate folder of <id>_attribute_<name> masks (default: MASKS_DIR)")
    parser.add_argument("--problems", type=Path, default=None, metavar="JSON",
                        help="write every problem found to this JSON file")
    _add_workers(parser, default=1)


def run_measure(args: argparse.Namespace) -> int:
    """Measure lesion masks (area, perimeter, diameters, asymmetry, compactness, attribute shares) into a CSV."""
    from isic_monai.data.records import errors
    from isic_monai.results.lesions import measure_folder, write_measurements_csv

    for folder in (args.masks_dir, args.attributes_dir):
        if folder is not None and not folder.is_dir():
            print(f"error: {folder}: not a folder", file=sys.stderr)
            return 2
    if args.pixel_spacing is not None and not args.pixel_spacing > 0:
        print(f"error: --pixel-spacing must be a positive number of millimetres, got {args.pixel_spacing}",
              file=sys.stderr)
        return 2
    rows, problems = measure_folder(args.masks_dir, args.attributes_dir, args.pixel_spacing, workers=args.workers,
                                    progress=not args.quiet)
    n_errors = len(errors(problems))
    _report(problems, args.problems, f"{n_errors} error(s), {len(problems) - n_errors} warning(s):")
    if not rows:
        print(f"error: {args.masks_dir}: no lesion mask measured", file=sys.stderr)
        return 1
    write_measurements_csv(rows, args.output)
    print(f"{len(rows)} mask(s) measured -> {args.output}")
    return 1 if n_errors else 0


# ----------------------------------------------------------------------------------------------------------------
# report (written in isic_monai/results/html_report.py)
# ----------------------------------------------------------------------------------------------------------------


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``isic-monai report``."""
    parser.add_argument("run_dir", type=Path, help="a run folder (bundle_root, evaluated) or its evaluation folder")
    parser.add_argument("-o", "--output", type=Path, default=Path("report.html"),
                        help="the HTML page to write (default: %(default)s)")
    parser.add_argument("--metric", default="jaccard",
                        help="per-image score for sorting and the gallery (default: %(default)s)")
    parser.add_argument("--gallery", type=int, default=4, metavar="N",
                        help="the N worst and N best images shown (default: %(default)s)")
    parser.add_argument("--datalist", type=Path, default=None,
                        help="truth files for an evaluation made without eval/evaluation.json")
    parser.add_argument("--title", default=None, help="the page's title")
    _add_workers(parser, default=1)


def run_report(args: argparse.Namespace) -> int:
    """Write one self-contained HTML page of an evaluation: scores, tables, gallery, charts, curves, config."""
    from isic_monai.results.html_report import write_report

    datalist = None
    if args.datalist is not None:
        if not args.datalist.is_file():
            print(f"error: {args.datalist}: datalist not found", file=sys.stderr)
            return 2
        datalist = json.loads(args.datalist.read_text())
    try:
        path = write_report(args.run_dir, args.output, metric=args.metric, n_gallery=args.gallery,
                            datalist=datalist, workers=args.workers, progress=not args.quiet, title=args.title)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"-> {path}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# compare (written in isic_monai/results/compare.py)
# ----------------------------------------------------------------------------------------------------------------


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``isic-monai compare``."""
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR",
                        help="run folders (bundle_root, evaluated) or evaluation folders")
    parser.add_argument("-o", "--output", type=Path, default=Path("comparison"),
                        help="folder for comparison.csv and comparison.png (default: %(default)s)")
    parser.add_argument("--metric", action="append", default=None,
                        help="a score to plot (repeatable; default: jaccard, dice, thresholded_jaccard or the "
                        "official set-level overall, those every run has)")


def run_compare(args: argparse.Namespace) -> int:
    """Compare evaluated runs: one CSV of their differing settings and scores, one plot."""
    from isic_monai.results.compare import compare_runs, format_comparison, plot_comparison, write_comparison

    try:
        runs, settings, metrics = compare_runs(args.run_dirs)
        missing = [m for m in args.metric or [] if m not in metrics]
        if missing:
            raise ValueError(f"no score {missing} in the runs; they have {metrics}")
        csv_path = write_comparison(runs, settings, metrics, args.output / "comparison.csv")
        png_path = plot_comparison(runs, settings, args.output / "comparison.png", args.metric)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_comparison(runs, settings, metrics), end="")
    print(f"-> {csv_path}\n-> {png_path}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# tracking-settings (written in isic_monai/engines/tracking.py)
# ----------------------------------------------------------------------------------------------------------------


def add_tracking_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``isic-monai tracking-settings``."""
    parser.add_argument("-o", "--output", type=Path, default=Path("mlflow.json"),
                        help="the settings file for --tracking (default: %(default)s)")
    parser.add_argument("--tracking-uri", default=None,
                        help="the MLflow store, e.g. sqlite:///runs/mlruns.db or http://127.0.0.1:5000 "
                        "(default: MONAI's, SQLite <output_dir>/mlruns.db)")
    parser.add_argument("--experiment", default="isic_monai", help="MLflow experiment name (default: %(default)s)")
    parser.add_argument("--run-name", default=None, help="MLflow run name (default: run_<date>_<time>)")


def run_tracking(args: argparse.Namespace) -> int:
    """Write MLflow settings for `python -m monai.bundle run ... --tracking FILE` (run settings as parameters)."""
    from isic_monai.engines.tracking import mlflow_settings

    settings = mlflow_settings(args.tracking_uri, args.experiment, args.run_name)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.output, json.dumps(settings, indent=2) + "\n")
    print(f"-> {args.output} (python -m monai.bundle run ... --tracking {args.output})")
    return 0


COMMANDS: list[tuple[str, Callable[[argparse.ArgumentParser], object], Callable[[argparse.Namespace], int]]] = [
    ("datalist", add_datalist_arguments, run_datalist),
    ("prepare", add_prepare_arguments, run_prepare),
    ("synth", add_synth_arguments, run_synth),
    ("stats", add_stats_arguments, run_stats),
    ("download", add_download_arguments, run_download),
    ("export-bundle", add_export_arguments, run_export),
    ("score", add_score_arguments, run_score),
    ("measure", add_measure_arguments, run_measure),
    ("report", add_report_arguments, run_report),
    ("compare", add_compare_arguments, run_compare),
    ("tracking-settings", add_tracking_arguments, run_tracking),
]
"""Subcommands: ``(name, add_arguments(parser), run(args) -> exit code)``; append to add one."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="isic-monai", description="ISIC dermoscopy datasets for MONAI.")
    parser.add_argument("--version", action="version", version=f"isic-monai {__version__}")
    parser.add_argument("--debug", action="store_true", help="let errors propagate with their traceback")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="let errors propagate with their traceback")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, add_arguments, run in COMMANDS:
        doc = (run.__doc__ or "").strip().splitlines()
        p = sub.add_parser(name, help=doc[0] if doc else None, description=doc[0] if doc else None,
                           parents=[common])
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``isic-monai`` command line.

    Args:
        argv: arguments without the program name (None: ``sys.argv[1:]``).

    Returns:
        Exit code (0 success, 1 bad data or failed download, 2 invalid options).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    if args.debug or os.environ.get("ISIC_MONAI_DEBUG"):
        return int(args._run(args))
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        print(f"isic-monai {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - any failure: one line here, the traceback in a log of its own
        print(error_line(args.command, err), file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
