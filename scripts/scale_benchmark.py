#!/usr/bin/env python
"""Scale: folder inference, ``prepare`` and ``datalist`` on thousands of photos, time and peak memory (issue 19).

Each measured command runs alone in its own process, through the commands a user types (``python -m monai.bundle
run --config_file configs/inference.yaml`` inside ``bundle/``, ``isic-monai prepare``, ``isic-monai datalist``). Its
peak resident memory is the child's own ``ru_maxrss`` (``os.wait4``), and its time is the wall time from start to
exit (the MONAI import and the model load included).

Photos are synthetic, of mixed sizes (``--mix``: by default 90 % 1024×768, 9 % 3000×2000 and 1 % 6000×4000, the
sizes of ISIC and HAM10000 photos), made once per size and copied under new names, so a 10,000-photo folder costs
seconds to build. Pairs for ``prepare`` and ``datalist`` are in the ISIC 2018 layout (photo and Task 1 mask).

Sections:

- ``inference``: folder inference of each ``--photos`` count (default 1000 and 10000); photos/s, ms a photo, peak
  RSS, and the ratio of the largest count's peak to the smallest's (memory flat: ≤ 1.2);
- ``prepare``: ``isic-monai prepare`` of ``--pairs`` pairs to 256 px (and its resume: the same command again);
- ``datalist``: ``isic-monai datalist`` of the same pairs (every file checked).

Example (the figures in docs/performance.md)::

    python scripts/scale_benchmark.py --out runs/scale.json --markdown runs/scale.md
    python scripts/scale_benchmark.py --photos 20 40 --pairs 30 --set tta=false   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("inference", "prepare", "datalist")
DEFAULT_MIX = ("0.90:768x1024", "0.09:2000x3000", "0.01:4000x6000")
"""``share:HxW`` of the photo sizes (H×W)."""


def parse_mix(mix: Sequence[str]) -> list[tuple[float, tuple[int, int]]]:
    """``["0.9:768x1024", ...]`` -> ``[(0.9, (768, 1024)), ...]``, the shares summing to 1.

    Raises:
        ValueError: a malformed item or shares that do not sum to 1.
    """
    out = []
    for item in mix:
        try:
            share, size = item.split(":")
            h, w = (int(v) for v in size.lower().split("x"))
            out.append((float(share), (h, w)))
        except ValueError as err:
            raise ValueError(f"--mix item {item!r}: expected SHARE:HxW, e.g. 0.9:768x1024") from err
    if abs(sum(s for s, _ in out) - 1.0) > 1e-6:
        raise ValueError(f"--mix shares sum to {sum(s for s, _ in out)}, not 1")
    return out


def sizes_for(n: int, mix: list[tuple[float, tuple[int, int]]]) -> list[tuple[int, int]]:
    """``n`` photo sizes in the mix's shares (largest-remainder rounding), interleaved so every stretch of the run
    holds each size."""
    counts = [int(share * n) for share, _ in mix]
    order = sorted(range(len(mix)), key=lambda i: -(mix[i][0] * n - counts[i]))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    slots = [(k / c, i) for i, c in enumerate(counts) for k in range(c)]
    return [mix[i][1] for _, i in sorted(slots)]


def overrides(items: Sequence[str]) -> list[str]:
    """``["tta=false"]`` -> ``["--tta", "false"]`` (the MONAI CLI's form).

    Raises:
        ValueError: an item without ``=``.
    """
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set item {item!r}: expected ID=VALUE")
        out += [f"--{key}", value]
    return out


def template(folder: Path, hw: tuple[int, int]) -> tuple[Path, Path]:
    """One photo of size ``hw`` (a smooth skin-coloured JPEG with a darker lesion) and its mask, made once."""
    photo, mask = folder / f"template_{hw[0]}x{hw[1]}.jpg", folder / f"template_{hw[0]}x{hw[1]}.png"
    if not photo.is_file():
        rng = np.random.default_rng(hw[0] * 7 + hw[1])
        small = rng.integers(150, 210, size=(24, 32, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((hw[1], hw[0]), Image.Resampling.BICUBIC)
        label = Image.new("L", (hw[1], hw[0]), 0)
        box = (hw[1] // 3, hw[0] // 3, 2 * hw[1] // 3, 2 * hw[0] // 3)
        ImageDraw.Draw(label).ellipse(box, fill=255)
        image.paste((90, 60, 50), mask=label)
        image.save(photo, quality=90)
        label.save(mask)
    return photo, mask


def make_photos(folder: Path, n: int, mix: list[tuple[float, tuple[int, int]]], templates: Path,
                masks: Path | None = None) -> list[tuple[int, int]]:
    """``n`` photos ``ISIC_<i>.jpg`` in ``folder`` (and their ``_segmentation.png`` masks in ``masks``), copied
    from one template per size. Returns their sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = sizes_for(n, mix)
    for i, hw in enumerate(sizes):
        photo, mask = template(templates, hw)
        shutil.copyfile(photo, folder / f"ISIC_{i:07d}.jpg")
        if masks is not None:
            masks.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(mask, masks / f"ISIC_{i:07d}_segmentation.png")
    return sizes


def timed(cmd: list[str], cwd: Path, log: Path) -> dict[str, Any]:
    """Run ``cmd`` alone; its wall time, exit status and its own peak RSS (``os.wait4``).

    Raises:
        RuntimeError: a non-zero exit, with the end of its log.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {code}:\n{log.read_text()[-3000:]}")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def measure_inference(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Folder inference of each count in ``args.photos``: photos/s and peak memory."""
    mix = parse_mix(args.mix)
    runs = []
    for n in sorted(args.photos):
        photos = work / f"photos_{n}"
        sizes = make_photos(photos, n, mix, work)
        out = work / f"out_{n}"
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml",
               "--dataset_dir", str(photos), "--output_dir", str(out), "--num_workers", str(args.num_workers),
               *overrides(args.set)]
        run = {"photos": n, **timed(cmd, REPO / "bundle", work / f"inference_{n}.log")}
        written = len(list(out.glob("*_segmentation.png")))
        if written != n:
            raise RuntimeError(f"folder inference of {n} photos wrote {written} masks")
        rows = (Path(f"{out}_report") / "predictions.csv").read_text().splitlines()
        run.update(photos_per_s=round(n / run["seconds"], 2), ms_per_photo=round(1000 * run["seconds"] / n, 1),
                   predictions_rows=len(rows) - 1,
                   largest=f"{max(sizes)[0]}x{max(sizes)[1]}", sizes={f"{h}x{w}": sizes.count((h, w))
                                                                    for h, w in sorted(set(sizes))})
        runs.append(run)
        shutil.rmtree(photos)
        for folder in (out, Path(f"{out}_overlays")):
            shutil.rmtree(folder, ignore_errors=True)
    ratio = runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"]
    return {"runs": runs, "settings": args.set, "num_workers": args.num_workers,
            "peak_rss_ratio_largest_to_smallest": round(ratio, 3), "memory_flat": ratio <= 1.2}


def _pairs(args: argparse.Namespace, work: Path) -> Path:
    root = work / "pairs"
    if not root.is_dir():
        make_photos(root / "ISIC2018_Task1-2_Training_Input", args.pairs, parse_mix(args.pair_mix), work,
                    masks=root / "ISIC2018_Task1_Training_GroundTruth")
    return root


def measure_prepare(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """``isic-monai prepare`` of ``args.pairs`` pairs, then the same command again (a resume with nothing to do)."""
    root = _pairs(args, work)
    cmd = [sys.executable, "-m", "isic_monai.cli", "prepare", str(root), "-o", str(work / "cache"), "--size", "256",
           "--quiet"]
    first = timed(cmd, REPO, work / "prepare.log")
    written = json.loads((work / "cache" / "datalist.json").read_text())["metadata"]["prepared"]["files_written"]
    again = timed(cmd, REPO, work / "prepare_again.log")
    rewritten = json.loads((work / "cache" / "datalist.json").read_text())["metadata"]["prepared"]["files_written"]
    return {"pairs": args.pairs, "mix": args.pair_mix, **first, "pairs_per_s": round(args.pairs / first["seconds"], 1),
            "files_written": written, "again": {**again, "files_written": rewritten}}


def measure_datalist(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """``isic-monai datalist`` of ``args.pairs`` pairs (every file opened and checked)."""
    root = _pairs(args, work)
    cmd = [sys.executable, "-m", "isic_monai.cli", "datalist", str(root), "-o", str(work / "datalist.json"),
           "--quiet"]
    result = timed(cmd, REPO, work / "datalist.log")
    data = json.loads((work / "datalist.json").read_text())
    entries = sum(len(data.get(k, [])) for k in ("training", "validation", "testing"))
    return {"pairs": args.pairs, **result, "pairs_per_s": round(args.pairs / result["seconds"], 1),
            "entries": entries}


def markdown(report: dict[str, Any]) -> str:
    """The report's tables."""
    lines = [f"Machine: {report['machine']}", ""]
    if "inference" in report:
        inf = report["inference"]
        lines += ["| photos | seconds | photos/s | ms a photo | peak RSS (MB) |", "|---|---|---|---|---|"]
        lines += [f"| {r['photos']} | {r['seconds']} | {r['photos_per_s']} | {r['ms_per_photo']} | {r['peak_rss_mb']} |"
                  for r in inf["runs"]]
        lines += ["", f"Peak RSS, largest run over smallest: {inf['peak_rss_ratio_largest_to_smallest']} "
                  f"({'flat' if inf['memory_flat'] else 'GROWING'}); settings {inf['settings'] or 'bundle defaults'}",
                  ""]
    for name in ("prepare", "datalist"):
        if name in report:
            r = report[name]
            lines.append(f"`{name}` of {r['pairs']} pairs: {r['seconds']} s ({r['pairs_per_s']} pairs/s), "
                         f"peak RSS {r['peak_rss_mb']} MB" + (f"; again (resume, {r['again']['files_written']} files "
                                                              f"written): {r['again']['seconds']} s"
                                                              if name == "prepare" else ""))
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the tables here")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--photos", type=int, nargs="+", default=[1000, 10000], help="folder sizes for inference")
    parser.add_argument("--mix", nargs="+", default=list(DEFAULT_MIX), metavar="SHARE:HxW")
    parser.add_argument("--pairs", type=int, default=10000, help="pairs for prepare and datalist")
    parser.add_argument("--pair-mix", nargs="+", default=["1:450x600"], metavar="SHARE:HxW")
    parser.add_argument("--num-workers", type=int, default=1, help="DataLoader workers of the folder inference")
    parser.add_argument("--set", nargs="*", default=[], metavar="ID=VALUE",
                        help="inference config overrides, e.g. --set tta=false save_overlays=false")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the photos here (default: a temp folder)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    parse_mix(args.mix)
    report: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                                         f"{platform.python_version()}", "command": sys.argv}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        for section in args.sections:
            report[section] = globals()[f"measure_{section}"](args, work)
            print(json.dumps({section: report[section]}), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
