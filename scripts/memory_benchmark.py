#!/usr/bin/env python
"""Memory over a long run: train the bundle for many epochs on synthetic data and record memory after every epoch.

A training that leaks (a list that grows each iteration, tensors kept with their graphs, handlers that accumulate,
CUDA caches that never stop growing) runs for hours and then dies. This script trains the bundle's own trainer,
built from ``bundle/configs/train.yaml`` by ``monai.bundle.ConfigParser`` as ``python -m monai.bundle run training``
builds it (validation, checkpoints, threshold selection, TensorBoard, history and the resume checkpoint included),
on synthetic ISIC 2018-layout data (:func:`isic_monai.data.synth.generate`), and after every epoch (after its
validation and checkpoints) records, once the garbage collector has run:

- the resident memory (RSS) of this process and of its DataLoader workers, and the process's peak RSS so far;
- on CUDA, the memory PyTorch has allocated and reserved, and the epoch's peak allocation.

It writes them to ``--out`` (JSON, rewritten after every epoch, so a long run stopped early keeps its figures)
and a markdown table beside it, with a summary: first, last, min and max RSS, the least-squares slope in MB per
epoch after the warm-up epochs, and the growth between the early epochs (just after the warm-up) and the late ones
(the last ones). The verdict is ``flat`` when that growth is at most ``--tolerance-mb``, else ``growing``; with
``--strict`` a growing run exits with status 1.

Example::

    python scripts/memory_benchmark.py --epochs 12 --images 32 --size 64 64 --out runs/memory/short.json
    python scripts/memory_benchmark.py --epochs 300 --images 200 --size 128 160 --out runs/memory/long.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "bundle" / "configs" / "train.yaml"
MB = 2**20


# ------------------------------------------------------------------------------------------------ memory readings


def rss_bytes(pid: int | str = "self") -> int | None:
    """Resident memory of a process from ``/proc/<pid>/statm`` (Linux), or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (``getrusage``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def children_rss_bytes() -> int:
    """Resident memory of this process's live children (DataLoader workers), from ``/proc`` (0 elsewhere)."""
    total = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                pids = f.read().split()
        except OSError:
            continue
        total += sum(rss_bytes(pid) or 0 for pid in pids)
    return total


def memory_snapshot(device: Any) -> dict[str, float | None]:
    """The memory figures of one epoch, in MB, after a garbage collection (and, on CUDA, the epoch's peak)."""
    import torch

    gc.collect()
    rss = rss_bytes()
    snap: dict[str, float | None] = {
        "rss_mb": None if rss is None else rss / MB,
        "peak_rss_mb": peak_rss_bytes() / MB,
        "children_rss_mb": children_rss_bytes() / MB,
    }
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        snap["cuda_allocated_mb"] = torch.cuda.memory_allocated(device) / MB
        snap["cuda_reserved_mb"] = torch.cuda.memory_reserved(device) / MB
        snap["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / MB
        torch.cuda.reset_peak_memory_stats(device)
    return snap


# ------------------------------------------------------------------------------------------------ analysis


def slope(values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against their index (0.0 for fewer than two values)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    den = sum((i - mean_x) ** 2 for i in range(n))
    return num / den


def windows(n_epochs: int, warmup: int | None = None) -> tuple[int, int]:
    """``(warm-up epochs, window length)``: the early window follows the warm-up, the late one ends the run.

    Defaults: a fifth of the run for the warm-up (at least 1, at most 10 epochs) and a quarter of what remains for
    each window (at least 1, at most 20 epochs), so the two never overlap when the run has at least 3 epochs.
    """
    if warmup is None:
        warmup = min(10, max(1, n_epochs // 5))
    warmup = max(0, min(warmup, n_epochs - 2)) if n_epochs >= 3 else 0
    window = max(1, min(20, (n_epochs - warmup) // 4))
    return warmup, window


def summarise(values: Sequence[float], warmup: int, window: int, tolerance_mb: float, key: str) -> dict[str, Any]:
    """First, last, min, max, slope after the warm-up (MB per epoch), early/late window means, growth, verdict."""
    steady = list(values[warmup:]) or list(values)
    early, late = steady[:window], steady[-window:]
    growth = sum(late) / len(late) - sum(early) / len(early)
    per_epoch = slope(steady)
    return {
        "key": key,
        "first_mb": values[0], "last_mb": values[-1], "min_mb": min(values), "max_mb": max(values),
        "slope_mb_per_epoch": per_epoch, "projected_mb_per_1000_epochs": per_epoch * 1000,
        "warmup_epochs": warmup, "window_epochs": window,
        "early_epochs": [warmup + 1, warmup + len(early)],
        "late_epochs": [len(values) - len(late) + 1, len(values)],
        "early_mean_mb": sum(early) / len(early), "late_mean_mb": sum(late) / len(late),
        "growth_mb": growth, "tolerance_mb": tolerance_mb,
        "verdict": "flat" if growth <= tolerance_mb else "growing",
    }


def summaries(rows: list[dict[str, Any]], warmup: int | None, tolerance_mb: float) -> dict[str, Any]:
    """A summary per recorded quantity (process RSS, RSS with the workers', CUDA allocated and reserved)."""
    if not rows:
        return {}
    w, win = windows(len(rows), warmup)
    out: dict[str, Any] = {}
    if all(r["rss_mb"] is not None for r in rows):
        out["rss"] = summarise([r["rss_mb"] for r in rows], w, win, tolerance_mb, "rss_mb")
        if any(r["children_rss_mb"] for r in rows):
            out["rss_with_workers"] = summarise([r["rss_mb"] + r["children_rss_mb"] for r in rows], w, win,
                                                tolerance_mb, "rss_mb + children_rss_mb")
    for key in ("cuda_allocated_mb", "cuda_reserved_mb"):
        if all(r.get(key) is not None for r in rows):
            out[key.removesuffix("_mb")] = summarise([r[key] for r in rows], w, win, tolerance_mb, key)
    out["verdict"] = "flat" if all(s["verdict"] == "flat" for s in out.values()) else "growing"
    return out


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: settings, summary table, verdict, per-epoch table."""
    s = report["settings"]
    lines = [
        "# Memory over a long run",
        "",
        f"{s['epochs']} epochs, {s['images']} synthetic images ({s['train_images']} training, "
        f"{s['validation_images']} validation), image_size {s['size']}, batch {s['batch_size']}, "
        f"num_workers {s['num_workers']}, validation every {s['val_interval']} epoch(s); device {report['device']}; "
        f"torch {report['machine']['torch']}, MONAI {report['machine']['monai']}, {report['machine']['platform']}.",
        "",
        "| quantity | first MB | last MB | min MB | max MB | slope MB/epoch | early mean MB (epochs) "
        "| late mean MB (epochs) | growth MB | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["summary"].items():
        if name == "verdict":
            continue
        lines.append(
            f"| {name} | {m['first_mb']:.1f} | {m['last_mb']:.1f} | {m['min_mb']:.1f} | {m['max_mb']:.1f} "
            f"| {m['slope_mb_per_epoch']:+.2f} | {m['early_mean_mb']:.1f} ({m['early_epochs'][0]}-"
            f"{m['early_epochs'][1]}) | {m['late_mean_mb']:.1f} ({m['late_epochs'][0]}-{m['late_epochs'][1]}) "
            f"| {m['growth_mb']:+.1f} | {m['verdict']} |")
    tol = next((m["tolerance_mb"] for k, m in report["summary"].items() if k != "verdict"), None)
    lines += ["", f"Verdict: **{report['summary'].get('verdict', 'no epochs')}** (growth between the early and the "
              f"late epochs at most {tol} MB for every quantity).", ""]
    cuda = any("cuda_allocated_mb" in r for r in report["epochs"])
    head = "| epoch | seconds | loss | RSS MB | peak RSS MB | workers MB |" + (
        " CUDA allocated MB | CUDA reserved MB | CUDA peak MB |" if cuda else "")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in report["epochs"]:
        row = (f"| {r['epoch']} | {r['seconds']:.1f} | {r['loss']:.4f} | {r['rss_mb']:.1f} | {r['peak_rss_mb']:.1f} "
               f"| {r['children_rss_mb']:.1f} |")
        if cuda:
            row += f" {r['cuda_allocated_mb']:.1f} | {r['cuda_reserved_mb']:.1f} | {r['cuda_peak_mb']:.1f} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ the run


def make_data(root: Path, images: int, size: Sequence[int], seed: int) -> Path:
    """Synthetic ISIC 2018-layout cases a little larger than ``size`` (H, W) and their datalist (a quarter held out
    for validation); returns the datalist file."""
    from isic_monai.data.selection import resolve_datalist
    from isic_monai.data.synth import generate

    h, w = size
    generate(root / "data", layout="isic2018", n=images, seed=seed,
             size_range=((h, max(h, h * 5 // 4)), (w, max(w, w * 5 // 4))))
    datalist = resolve_datalist(dataset_dir=root / "data", val_fraction=0.25, seed=seed)
    path = root / "datalist.json"
    path.write_text(json.dumps(datalist))
    return path


def write_report(report: dict[str, Any], out: Path, markdown_path: Path | None) -> None:
    """Write the JSON (through a temporary file, so a kill never leaves half of it) and the markdown."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out)
    if markdown_path is not None:
        markdown_path.write_text(markdown(report))


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train ``args.epochs`` epochs in ``work`` and return the report (also written after every epoch)."""
    import monai
    import torch
    from ignite.engine import Events
    from monai.bundle import ConfigParser
    from monai.handlers import from_engine

    datalist = make_data(work, args.images, args.size, args.seed)
    split = json.loads(datalist.read_text())
    parser = ConfigParser()
    parser.read_config([str(TRAIN)])
    overrides = {"datalist_file": str(datalist), "bundle_root": str(work / "bundle"), "image_size": list(args.size),
                 "batch_size": args.batch_size, "max_epochs": args.epochs, "val_interval": args.val_interval,
                 "num_workers": args.num_workers, "seed": args.seed}
    if args.device:
        overrides["device"] = f"$torch.device('{args.device}')"
    for key, value in overrides.items():
        parser[key] = value
    parser.get_parsed_content("initialize")
    trainer = parser.get_parsed_content("train#trainer")
    device = parser.get_parsed_content("device")
    report: dict[str, Any] = {
        "settings": {"epochs": args.epochs, "images": args.images, "size": list(args.size),
                     "batch_size": args.batch_size, "val_interval": args.val_interval,
                     "num_workers": args.num_workers, "seed": args.seed, "tolerance_mb": args.tolerance_mb,
                     "warmup": args.warmup, "train_images": len(split.get("training", [])),
                     "validation_images": len(split.get("validation", [])), "config": str(TRAIN.relative_to(REPO))},
        "device": str(device),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "monai": monai.__version__, "cpus": os.cpu_count(),
                    "cuda": torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else None},
        "epochs": [],
        "summary": {},
    }
    clock = {"start": time.perf_counter()}

    @trainer.on(Events.EPOCH_STARTED)
    def _start(_engine: Any) -> None:
        clock["start"] = time.perf_counter()

    @trainer.on(Events.EPOCH_COMPLETED)  # registered after the bundle's handlers: after validation and checkpoints
    def _record(engine: Any) -> None:
        seconds = time.perf_counter() - clock["start"]
        loss = from_engine(["loss"], first=True)(engine.state.output)
        row = {"epoch": engine.state.epoch, "seconds": seconds, "loss": float(loss), **memory_snapshot(device)}
        report["epochs"].append(row)
        report["summary"] = summaries(report["epochs"], args.warmup, args.tolerance_mb)
        write_report(report, args.out, args.markdown)
        print(f"epoch {row['epoch']}/{args.epochs}: {seconds:.1f} s, RSS {row['rss_mb']:.1f} MB"
              + (f", CUDA allocated {row['cuda_allocated_mb']:.1f} MB" if "cuda_allocated_mb" in row else ""),
              flush=True)

    trainer.run()
    return report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=100, help="training epochs (default 100)")
    p.add_argument("--images", type=int, default=64, help="synthetic cases, a quarter for validation (default 64)")
    p.add_argument("--size", type=int, nargs=2, default=[128, 160], metavar=("H", "W"),
                   help="image_size, height first, multiples of 16 (default 128 160)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--val-interval", type=int, default=1, help="epochs between validations (default 1)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (default 0)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the config's, CUDA when present)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=None,
                   help="epochs left out of the slope and the early window (default: a fifth of the run, 1-10)")
    p.add_argument("--tolerance-mb", type=float, default=32.0,
                   help="largest growth between the early and late epochs still called flat (default 32 MB)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when memory grows")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "memory" / "memory.json", help="the JSON report")
    p.add_argument("--markdown", type=Path, default=None, help="the markdown report (default: --out with .md)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where the data, checkpoints and logs go (default: a temporary folder, removed)")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.images < 4:
        p.error("--epochs must be at least 1 and --images at least 4")
    if args.markdown is None:
        args.markdown = args.out.with_suffix(".md")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the markdown summary; 1 with ``--strict`` when memory grows."""
    args = parse_args(argv)
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        report = run(args, args.work_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="memory-benchmark-") as tmp:
            report = run(args, Path(tmp))
    print(markdown(report).split("\n| epoch |")[0])
    print(f"wrote {args.out} and {args.markdown}")
    return 1 if args.strict and report["summary"].get("verdict") != "flat" else 0


if __name__ == "__main__":
    sys.exit(main())
