#!/usr/bin/env python
"""Benchmark every network override in ``configs/networks``: parameters, training step time and inference latency.

Each network is built from its override file exactly as the bundle builds it (``network_def`` through
``monai.bundle.ConfigParser`` with ``num_classes``, ``in_channels`` and ``image_size``). Training: batch of random
images, DiceCELoss(sigmoid) + Adam, median over ``--steps`` steps after ``--warmup`` steps. Inference: batch 1,
``torch.no_grad``, median over ``--infer-runs`` runs after warm-up. On CUDA, training and inference use AMP
(``torch.autocast`` fp16 + ``GradScaler``). Ratios are to the reference network measured in the same run.

Example::

    nice -n 10 python scripts/benchmark_networks.py --out results.json --size 256 --steps 5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from isic_monai.bundle import export
from isic_monai.bundle.paths import network_config_names

DEFAULT_REFERENCE = export.default_network()  # the default network (configs/bundle/common.yaml names it)


def build_network(name: str, size: int, num_classes: int = 1, in_channels: int = 3) -> tuple[nn.Module, int]:
    """The bundle's network ``name`` at ``size`` × ``size`` and its ``size_multiple`` (:func:`export.build_network`)."""
    return export.build_network(name, (size, size), num_classes, in_channels)


def count_parameters(network: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad)


def median_time(fn: Callable[[], None], runs: int, warmup: int, sync: Callable[[], None]) -> list[float]:
    """Run ``fn`` ``warmup`` times, then time ``runs`` calls; returns the timings in seconds."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def benchmark_network(
    name: str, size: int, batch: int, steps: int, warmup: int, infer_runs: int, device: torch.device
) -> dict[str, Any]:
    """Measure one network; returns a result record (with ``error`` set when it could not be built or run)."""
    from monai.losses import DiceCELoss

    record: dict[str, Any] = {"network": name}
    try:
        network, multiple = build_network(name, size)
    except Exception as err:  # noqa: BLE001 - recorded in the results, e.g. a missing optional package
        record["error"] = f"build failed: {type(err).__name__}: {err}".splitlines()[0]
        return record
    record.update(params=count_parameters(network), size_multiple=multiple, network_class=type(network).__name__)
    if size % multiple:
        record["error"] = f"size {size} is not a multiple of {multiple}"
        return record
    cuda = device.type == "cuda"
    network = network.to(device)
    loss_fn = DiceCELoss(sigmoid=True)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    images = torch.rand(batch, 3, size, size, device=device)
    labels = (torch.rand(batch, 1, size, size, device=device) > 0.5).float()
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def train_step() -> None:
        network.train()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
            loss = loss_fn(network(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    image = torch.rand(1, 3, size, size, device=device)

    def infer() -> None:
        network.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
            network(image)

    try:
        train_times = median_time(train_step, steps, warmup, sync)
        infer_times = median_time(infer, infer_runs, max(warmup, 2), sync)
    except Exception as err:  # noqa: BLE001
        record["error"] = f"run failed: {type(err).__name__}: {err}".splitlines()[0]
        traceback.print_exc()
        return record
    record.update(
        train_step_s=statistics.median(train_times),
        train_step_s_all=[round(t, 4) for t in train_times],
        infer_ms=1000.0 * statistics.median(infer_times),
        infer_ms_all=[round(1000.0 * t, 2) for t in infer_times],
    )
    if cuda:
        record["max_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
    return record


def add_ratios(results: list[dict[str, Any]], reference: str) -> None:
    """Add ``train_ratio``/``infer_ratio``/``params_ratio`` relative to the ``reference`` network's record."""
    ref = next((r for r in results if r["network"] == reference and "error" not in r), None)
    if ref is None:
        return
    for record in results:
        if "error" in record:
            continue
        record["train_ratio"] = record["train_step_s"] / ref["train_step_s"]
        record["infer_ratio"] = record["infer_ms"] / ref["infer_ms"]
        record["params_ratio"] = record["params"] / ref["params"]


def markdown_table(results: list[dict[str, Any]], reference: str) -> str:
    """The results as a Markdown table."""
    lines = [
        f"| network | params | size multiple | train s/step | x {reference} | infer ms | x {reference} |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            params = f"{r['params'] / 1e6:.2f} M" if "params" in r else "–"
            lines.append(
                f"| {r['network']} | {params} | {r.get('size_multiple', '–')} | not measured: {r['error']} | | | |"
            )
            continue
        train_ratio, infer_ratio = r.get("train_ratio", float("nan")), r.get("infer_ratio", float("nan"))
        lines.append(
            f"| {r['network']} | {r['params'] / 1e6:.2f} M | {r['size_multiple']} | {r['train_step_s']:.2f} | "
            f"{train_ratio:.1f} | {r['infer_ms']:.0f} | {infer_ratio:.1f} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", nargs="*", default=None, help="config names (default: all in configs/networks)")
    parser.add_argument("--size", type=int, default=256, help="square input size (default 256)")
    parser.add_argument("--batch", type=int, default=8, help="training batch size (default 8)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps (default 1)")
    parser.add_argument("--infer-runs", type=int, default=10, help="timed batch-1 inference runs (default 10)")
    parser.add_argument("--reference", default=DEFAULT_REFERENCE, help="network the ratios refer to")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    available = network_config_names()
    names = list(args.networks) if args.networks else available
    unknown = sorted(set(names) - set(available))
    if unknown:
        print(f"unknown networks {unknown}; available: {available}", file=sys.stderr)
        return 2
    if args.reference not in names:
        names.insert(0, args.reference)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    torch.manual_seed(0)
    results = []
    for name in names:
        print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
        record = benchmark_network(name, args.size, args.batch, args.steps, args.warmup, args.infer_runs, device)
        print(json.dumps(record), file=sys.stderr, flush=True)
        results.append(record)
    add_ratios(results, args.reference)
    import monai

    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "device_type": device.type,
        "amp": device.type == "cuda",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "size": args.size,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "infer_runs": args.infer_runs,
        "reference": args.reference,
        "results": results,
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    print(markdown_table(results, args.reference), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
