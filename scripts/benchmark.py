#!/usr/bin/env python
"""Benchmark the bundle: training throughput beside a plain PyTorch loop, where an epoch's time goes, inference
latency in eager PyTorch, TorchScript and ONNX Runtime, peak memory, and (opt-in) time until a validation Dice.

Every measurement runs in a fresh child process of this script (so peak memory is its own, and one measurement
cannot warm caches for another); the parent collects them into one JSON file and prints a markdown table.
The claims are ratios between figures measured in the same run on the same machine, never absolute times:

- ``training``: images per second of the bundle's ``SupervisedTrainer`` (built from ``bundle/configs/train.yaml``
  by ``monai.bundle.ConfigParser``, handlers and metrics included) and of a plain PyTorch loop with the same network,
  loss, optimiser, autocast, dataset, transforms and batches (the trainer's own objects), in alternating epochs of
  one process, ``--repeats`` pairs after a warm-up epoch each. ``ratio`` = the median of the pairs'
  ``bundle / plain`` (≥ 1.0: the bundle costs no throughput).
- ``steps``: what each of the bundle's training settings saves per step, each pair alternated in one process on one
  batch (plain tensors, gradients set to None, channels-last weights, the vectorised training Dice).
- ``profile``: one training epoch split into decoding + deterministic transforms (what ``CacheDataset`` caches),
  random augmentation, forward (with loss) and backward + optimiser step.
- ``inference``: milliseconds per photo of the shipped model for eager, TorchScript and ONNX Runtime, from the file
  on disk to the thresholded mask at the photo's own size (load, scale, resize, forward, sigmoid, resize back,
  threshold), split into pre-processing, forward and post-processing; on the ten ISIC 2017 photos in
  ``docs/examples/isic2017_val`` and, when ``../shared`` is there, the full-size ISIC 2018 photos.
- ``prepare``: ``isic-monai prepare`` of full-size photos (``--prepare-size``, JPEG with a PNG mask) split into
  its steps: header probe, draft-mode JPEG decode, LANCZOS resize, cached image written, mask decode, mask
  binarised and resized, mask written; and the whole ``prepare_entry`` per pair.
- ``--compare-network NAME [--compare-model model.pt]``: the ``training`` and ``inference`` sections again for
  another network (``configs/networks/NAME.yaml`` layered on the bundle's configs; its trained ``model.pt`` for
  inference, else the network untrained), in their own child processes of the same run, under ``compare``; the
  inference there and in the main section runs the bundle's default test-time augmentation (``tta``) unless
  ``--no-tta``.
- ``time_to_dice`` (``--time-to-dice``, long): the ISIC 2017 recipe trained until the validation Dice reaches
  ``--target-dice``; seconds and epochs.
- ``--network NAME``: measure ``configs/networks/NAME.yaml`` (layered on the bundle's configs, untrained for
  inference unless ``--model``) instead of the shipped bundle's own network. Each section records what it measured:
  ``network_name``, ``network_class`` and ``network_parameters`` of the network it built.
- ``--in-process``: every measurement in the parent process instead (no child pays the MONAI import again; peak
  memory is then the parent's, shared by every section): for smoke runs of the script, never for figures.

Example::

    python scripts/benchmark.py --out runs/benchmark.json --markdown runs/benchmark.md
    python scripts/benchmark.py --sections training --images 160 --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
ISIC2017 = SHARED / "isic2017_256x192"
ISIC2018 = SHARED / "isic2018_sample" / "ISIC2018_Task1-2_Training_Input"
EXAMPLES = REPO / "docs" / "examples" / "isic2017_val"
TRAIN = REPO / "bundle" / "configs" / "train.yaml"
INFERENCE = REPO / "bundle" / "configs" / "inference.yaml"
RECIPE = REPO / "configs" / "recipes" / "isic2017.yaml"
SECTIONS = ("training", "steps", "profile", "inference", "prepare")
BACKENDS = ("eager", "torchscript", "onnx")
STEP_LABELS = {"metadata": "plain tensors instead of MetaTensors (`train#plain_tensors`), whole step",
               "zero_fill": "gradients set to None, not zero-filled (`optim_set_to_none`), whole step",
               "layout": "channels-last weights (`channels_last`), whole step",
               "training_dice": "training Dice with post-processing (`--train_dice true`): `PerChannelDice` "
                                "instead of MONAI `MeanDice`"}


# ------------------------------------------------------------------------------------------------------ helpers


def peak_memory_mb() -> float:
    """This process's peak resident memory (Linux ``ru_maxrss`` is in KiB), or CUDA's peak allocation when used."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync() -> None:
    """Wait for queued CUDA work, so that timings include it."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def datalist_for(data: Path, images: int, workdir: Path) -> Path:
    """A datalist of the first ``images`` training pairs of ``data`` (and its validation pairs) written to
    ``workdir``; synthetic ISIC-layout data is generated when ``data`` does not exist."""
    from isic_monai.data.datalist import build_datalist

    if not data.is_dir():
        from isic_monai.data.synth import generate

        data = workdir / "synth"
        generate(data, layout="isic2018", n=images + 20, seed=0)
    datalist = build_datalist(data)
    datalist["training"] = datalist["training"][:images]
    datalist["validation"] = datalist.get("validation", [])[:20] or datalist["training"][:20]
    path = workdir / "datalist.json"
    path.write_text(json.dumps(datalist))
    return path


def network_layers(args: argparse.Namespace) -> list[Path]:
    """``configs/networks/<--network>.yaml`` when a network is named (it defines the whole network), else nothing
    (the bundle's own network)."""
    return [REPO / "configs" / "networks" / f"{args.network}.yaml"] if args.network else []


def network_facts(parser, network) -> dict[str, Any]:
    """What a section measured: the config's ``network_name``, and the built network's class and parameter count."""
    from isic_monai.networks.handlers import unwrap_network

    inner = unwrap_network(network)
    return {"network_name": str(parser.get_parsed_content("network_name")), "network_class": type(inner).__name__,
            "network_parameters": sum(p.numel() for p in inner.parameters())}


def bundle_parser(configs: Sequence[Path], **overrides: Any):
    """The bundle's config as ``python -m monai.bundle run`` reads it, with ``--key value`` overrides."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(c) for c in configs])
    for key, value in overrides.items():
        parser[key] = value
    return parser


def training_overrides(args: argparse.Namespace, datalist: Path, root: Path) -> dict[str, Any]:
    """The settings every training measurement shares, then ``--set`` (bundle ids, values parsed as JSON when they
    parse, as the MONAI CLI does)."""
    overrides: dict[str, Any] = {"datalist_file": str(datalist), "bundle_root": str(root),
                                 "image_size": list(args.size), "batch_size": args.batch_size, "max_epochs": 2,
                                 "val_interval": 1000, "num_workers": 0, "cache_rate": 1.0}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


class IterationClock:
    """Seconds from the end of a run's first iteration to the end of its last one: data loading, augmentation,
    forward, backward and the per-iteration handlers, without start-up, caching and end-of-epoch work."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last: float | None = None
        self.iterations = 0

    def tick(self) -> None:
        """Call at the end of every iteration."""
        sync()
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        else:
            self.iterations += 1
        self.last = now

    def images_per_second(self, batch_size: int) -> float:
        return self.iterations * batch_size / (self.last - self.first)


# ------------------------------------------------------------------------------------------------ measurements


def plain_epoch(loader, network, loss_fn, optimizer, inferer, device, use_amp: bool, clock: IterationClock) -> None:
    """One epoch of a plain PyTorch loop: batch to the device, zero the gradients, forward with the bundle's
    autocast, loss, backward, optimiser step (with a gradient scaler under CUDA AMP); ``clock`` ticks each step."""
    import torch

    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    network.train()
    for batch in loader:
        x, y = batch["image"].to(device), batch["label"].to(device)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=use_amp):
            loss = loss_fn(inferer(x, network), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        clock.tick()


def interleaved_order(pairs: int) -> list[str]:
    """``bundle, plain, plain, bundle, bundle, plain, ...``: each kind runs first in half the pairs, so a machine
    that speeds up or slows down over the run favours neither."""
    order: list[str] = []
    for i in range(pairs):
        order += ["bundle", "plain"] if i % 2 == 0 else ["plain", "bundle"]
    return order


def measure_training(args: argparse.Namespace, datalist: Path, root: Path) -> dict[str, Any]:
    """The bundle's ``SupervisedTrainer`` (as ``python -m monai.bundle run training`` builds it, handlers and metrics
    included) and a plain PyTorch loop, in alternating epochs of one process over the same objects: the trainer's
    own network, loss, optimiser, autocast inferer and ``train#dataloader``.

    An epoch of each kind first warms up (untimed); then ``--repeats`` pairs of epochs, in :func:`interleaved_order`.
    Each epoch's images/s runs from the end of its first iteration to the end of its last (data loading,
    augmentation, forward, backward and per-iteration handlers; not the epoch-end handlers). A pair's ratio is
    ``bundle / plain``; the claim is the median pair ratio. One process and adjacent epochs cancel what drifts
    between fresh processes on a shared machine (the earlier design's bundle repeats differed by 18 %).
    """
    from ignite.engine import Events

    parser = bundle_parser([TRAIN, *network_layers(args)], **training_overrides(args, datalist, root))
    parser.get_parsed_content("initialize")
    trainer = parser.get_parsed_content("train#trainer")
    device, use_amp = parser.get_parsed_content("device"), bool(parser.get_parsed_content("use_amp"))
    plain_parts = (trainer.data_loader, trainer.network, trainer.loss_function, trainer.optimizer, trainer.inferer,
                   device, use_amp)
    clock = IterationClock()
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _e: clock.tick())

    def epoch(kind: str) -> float:
        nonlocal clock
        clock = IterationClock()
        if kind == "bundle":
            trainer.state.max_epochs = (trainer.state.epoch or 0) + 1
            trainer.run()
        else:
            plain_epoch(*plain_parts, clock)
        return clock.images_per_second(args.batch_size)

    epoch("bundle"), epoch("plain")  # warm-up
    runs: dict[str, list[float]] = {"bundle": [], "plain": []}
    for kind in interleaved_order(args.repeats):
        runs[kind].append(epoch(kind))
    ratios = [b / p for b, p in zip(runs["bundle"], runs["plain"], strict=True)]
    return {**network_facts(parser, trainer.network), "images_per_s": runs, "pair_ratios": ratios,
            "iterations": clock.iterations,
            "bundle_images_per_s": statistics.median(runs["bundle"]),
            "plain_images_per_s": statistics.median(runs["plain"]),
            "ratio_bundle_to_plain": statistics.median(ratios)}


def measure_profile(args: argparse.Namespace, datalist: Path, root: Path) -> dict[str, Any]:
    """Seconds an epoch spends in each stage, each timed on its own over the bundle's training data."""
    from monai.transforms import Compose

    parser = bundle_parser([TRAIN, *network_layers(args)], **training_overrides(args, datalist, root))
    parser.get_parsed_content("initialize")
    deterministic = Compose(parser.get_parsed_content("train#deterministic_transforms"))
    entries = parser.get_parsed_content("train#dataset").data
    start = time.perf_counter()
    for entry in entries:
        deterministic(dict(entry))
    decode = time.perf_counter() - start
    loader = parser.get_parsed_content("train#dataloader")  # caches the deterministic part
    batches = []
    start = time.perf_counter()
    for batch in loader:
        batches.append(batch)
    augment = time.perf_counter() - start
    network, loss_fn = parser.get_parsed_content("network"), parser.get_parsed_content("loss")
    optimizer, inferer = parser.get_parsed_content("optimizer"), parser.get_parsed_content("train#inferer")
    device = parser.get_parsed_content("device")
    network.train()
    forward = backward = 0.0
    for i, batch in enumerate([batches[0], *batches]):  # the first batch warms up, untimed
        x, y = batch["image"].to(device), batch["label"].to(device)
        optimizer.zero_grad(set_to_none=True)
        sync()
        t0 = time.perf_counter()
        loss = loss_fn(inferer(x, network), y)
        sync()
        t1 = time.perf_counter()
        loss.backward()
        optimizer.step()
        sync()
        t2 = time.perf_counter()
        if i:
            forward, backward = forward + t1 - t0, backward + t2 - t1
    stages = {"decode_and_resize_s": decode, "augmentation_s": augment, "forward_s": forward, "backward_s": backward}
    total = sum(stages.values())
    return {**network_facts(parser, network), "images": len(entries), **stages,
            **{k.replace("_s", "_share"): v / total for k, v in stages.items()}}


def _median_ms(fn: Callable[[], Any], rounds: int) -> float:
    """Median milliseconds of ``fn()`` over ``rounds`` calls (after one untimed call)."""
    fn()
    times = []
    for _ in range(rounds):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure_steps(args: argparse.Namespace, datalist: Path, root: Path) -> dict[str, Any]:
    """Milliseconds of one training step, or of one per-step extra, in each of two settings, alternated in one
    process on one batch of the bundle's training data: the price of each training setting of the bundle.

    - ``metadata``: a step on MetaTensors (what MONAI's transforms return) or plain tensors (``train#plain_tensors``);
    - ``zero_fill``: ``zero_grad(set_to_none=False)`` (MONAI's default) or ``True`` (``optim_set_to_none``);
    - ``layout``: contiguous or channels-last weights (``channels_last``), bfloat16 autocast as the bundle trains;
    - ``training_dice`` (with ``train_dice: true``): MONAI's ``MeanDice`` or the bundle's vectorised
      ``PerChannelDice`` (``train#key_metric``), on the decollated, post-processed items.
    """
    import copy

    import torch
    from monai.data import MetaTensor, decollate_batch
    from monai.handlers import MeanDice

    from isic_monai.metrics import PerChannelDice

    parser = bundle_parser([TRAIN, *network_layers(args)], **training_overrides(args, datalist, root))
    parser.get_parsed_content("initialize")
    network, loss_fn = parser.get_parsed_content("network"), parser.get_parsed_content("loss")
    inferer, post = parser.get_parsed_content("train#inferer"), parser.get_parsed_content("train#postprocessing")
    batch = next(iter(parser.get_parsed_content("train#dataloader")))
    device = parser.get_parsed_content("device")
    x, y = batch["image"].to(device), batch["label"].to(device)
    contiguous = copy.deepcopy(network).to(memory_format=torch.contiguous_format)
    nets = {"channels_last": network, "contiguous": contiguous}
    optimizers = {k: torch.optim.AdamW(n.parameters()) for k, n in nets.items()}
    for n in nets.values():
        n.train()

    def step(layout: str = "channels_last", inputs: tuple = (x, y), set_to_none: bool = True) -> None:
        optimizers[layout].zero_grad(set_to_none=set_to_none)
        loss_fn(inferer(inputs[0], nets[layout]), inputs[1]).backward()
        optimizers[layout].step()

    meta = (MetaTensor(x), MetaTensor(y))
    with torch.no_grad():
        pred = inferer(x, network).float()
    monai_dice, bundle_dice = MeanDice(include_background=True), PerChannelDice(save_details=False)
    monai_dice.reset(), bundle_dice.reset()

    def training_dice(metric) -> Callable[[], None]:
        """What the trainer does each step with ``train_dice``: post-process the decollated items, update ``metric``."""

        def run() -> None:
            items = [post(item) for item in decollate_batch({"pred": pred, "label": y})]
            metric.update(([i["pred"] for i in items], [i["label"] for i in items]))

        return run

    pairs = {"metadata": (lambda: step(inputs=meta), step), "zero_fill": (lambda: step(set_to_none=False), step),
             "layout": (lambda: step("contiguous"), step),
             "training_dice": (training_dice(monai_dice), training_dice(bundle_dice))}
    result: dict[str, Any] = network_facts(parser, network)
    for name, (before, after) in pairs.items():
        b = a = 0.0
        for _ in range(args.step_repeats):  # alternate, so drift favours neither
            b += _median_ms(before, 5) / args.step_repeats
            a += _median_ms(after, 5) / args.step_repeats
        result[name] = {"before_ms": b, "after_ms": a, "saved_ms": b - a}
    result["step_ms"] = _median_ms(step, 10)
    return result


def _photos() -> dict[str, list[Path]]:
    sets = {"isic2017_256x192": sorted(EXAMPLES.glob("*.jpg"))}
    if ISIC2018.is_dir():
        sets["isic2018_full_size"] = sorted(ISIC2018.glob("*.jpg"))
    return sets


def _backend(kind: str, network, example, workdir: Path) -> Callable:
    """A callable ``x -> logits`` for one backend."""
    import numpy as np
    import torch

    if kind == "eager":
        return network
    if kind == "torchscript":
        module = torch.jit.trace(network, example)
        path = workdir / "model.ts"
        torch.jit.save(module, str(path))
        return torch.jit.load(str(path))
    import warnings

    import onnxruntime as ort

    path = workdir / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(network, (example,), str(path), opset_version=17, dynamo=False, input_names=["image"],
                          output_names=["pred"], dynamic_axes={"image": {0: "batch"}, "pred": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"image": np.ascontiguousarray(x.numpy())})[0])


def measure_inference(args: argparse.Namespace, backend: str, workdir: Path) -> dict[str, Any]:
    """Milliseconds per photo, file to mask at the photo's size, for one backend and the shipped model (or
    ``--network`` with ``--model``), with the bundle's default test-time augmentation unless ``--no-tta``."""
    import torch
    import torch.nn.functional as F

    results: dict[str, Any] = {}
    model_path = Path(args.model) if args.model else (None if args.network else REPO / "bundle" / "models" / "model.pt")
    state = torch.load(model_path, map_location="cpu", weights_only=True) if model_path else None
    extra = {"image_size": list(state["config"]["image_size"])} if state and "config" in state else {}
    for name, photos in _photos().items():
        parser = bundle_parser([INFERENCE, *network_layers(args)], bundle_root=str(REPO / "bundle"),
                               dataset_dir=str(photos[0].parent), tta=not args.no_tta, **extra)
        network = parser.get_parsed_content("network").eval()
        if state is not None:
            network.load_state_dict(state["model"])
        tta = parser.get_parsed_content("inferer")
        preprocessing = parser.get_parsed_content("preprocessing")
        cut = parser.get_parsed_content("apply_thresholds").op  # models/thresholds.json, per channel
        size = parser.get_parsed_content("checked_image_size")
        with torch.no_grad():
            model = _backend(backend, network, torch.rand(1, 3, *size), workdir)
            pre, fwd, post = [], [], []
            for _ in range(args.inference_rounds):
                for photo in photos:
                    t0 = time.perf_counter()
                    x = preprocessing({"image": str(photo)})["image"].as_tensor()[None]
                    t1 = time.perf_counter()
                    logits = tta(x, model)
                    sync()
                    t2 = time.perf_counter()
                    orig = photo_size(photo)
                    prob = F.interpolate(torch.sigmoid(logits), size=orig, mode="bilinear", align_corners=False)
                    mask = cut(prob[0])
                    t3 = time.perf_counter()
                    assert mask.shape[-2:] == orig
                    pre.append(t1 - t0), fwd.append(t2 - t1), post.append(t3 - t2)
        skip = len(photos)  # the first round warms up
        stages = {"pre_ms": pre[skip:], "forward_ms": fwd[skip:], "post_ms": post[skip:]}
        med = {k: 1000 * statistics.median(v) for k, v in stages.items()}
        total = [a + b + c for a, b, c in zip(*stages.values(), strict=True)]
        results[name] = {**med, "total_ms": 1000 * statistics.median(total), "photos": len(photos),
                         "photo_size": list(photo_size(photos[0])), "network_size": list(size),
                         "tta": not args.no_tta, "network": args.network or "bundle",
                         **network_facts(parser, network)}
    return results


def photo_size(path: Path) -> tuple[int, int]:
    """A photo's (H, W) without decoding it."""
    from PIL import Image

    with Image.open(path) as im:
        return im.height, im.width


def measure_time_to_dice(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The ISIC 2017 recipe trained until the validation Dice reaches ``--target-dice`` (or ``--max-epochs``)."""
    from ignite.engine import Events

    from isic_monai.data.datalist import build_datalist

    datalist = workdir / "isic2017.json"
    datalist.write_text(json.dumps(build_datalist(ISIC2017)))
    parser = bundle_parser([TRAIN, *network_layers(args), RECIPE], datalist_file=str(datalist),
                           bundle_root=str(workdir / "run"), max_epochs=args.max_epochs, num_workers=0)
    parser.get_parsed_content("initialize")
    trainer = parser.get_parsed_content("train#trainer")
    evaluator = parser.get_parsed_content("validate#evaluator")
    start = time.perf_counter()
    curve: list[dict[str, float]] = []

    def record(_engine) -> None:
        dice = float(evaluator.state.metrics["val_mean_dice"])
        curve.append({"epoch": trainer.state.epoch, "seconds": time.perf_counter() - start, "val_dice": dice})
        if dice >= args.target_dice:
            trainer.terminate()

    evaluator.add_event_handler(Events.COMPLETED, record)
    trainer.run()
    reached = next((c for c in curve if c["val_dice"] >= args.target_dice), None)
    return {"target_dice": args.target_dice, "reached": reached, "curve": curve}


def _write_photo_pair(folder: Path, index: int, hw: tuple[int, int]) -> tuple[Path, Path]:
    """A full-size JPEG photo with smooth content and its PNG lesion mask (an ellipse)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(index)
    small = Image.fromarray(rng.integers(60, 220, size=(24, 32, 3), dtype=np.uint8))
    photo = small.resize((hw[1], hw[0]), Image.Resampling.BICUBIC)
    image = folder / f"ISIC_{index:07d}.jpg"
    photo.save(image, quality=92)
    mask = Image.new("L", (hw[1], hw[0]), 0)
    ImageDraw.Draw(mask).ellipse((hw[1] // 4, hw[0] // 4, 3 * hw[1] // 4, 3 * hw[0] // 4), fill=255)
    label = folder / f"ISIC_{index:07d}_segmentation.png"
    mask.save(label)
    return image, label


def measure_prepare(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Milliseconds per full-size pair for each step of ``isic-monai prepare`` and for the whole entry."""
    from PIL import Image

    from isic_monai.data.imageio import open_rgb, resize_image, save_atomic, target_size
    from isic_monai.data.masks import read_mask, resize_mask
    from isic_monai.data.prepare import prepare_entry

    hw_full = tuple(args.prepare_size)
    source, cache = workdir / "photos", workdir / "cache"
    source.mkdir()
    pairs = [_write_photo_pair(source, i, hw_full) for i in range(args.prepare_pairs)]
    hw = target_size(hw_full, 256)
    steps: dict[str, list[float]] = {k: [] for k in ("probe", "jpeg_draft_decode", "jpeg_full_decode", "resize",
                                                     "image_write", "mask_decode", "mask_resize", "mask_write",
                                                     "prepare_entry")}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        value = fn()
        steps[name].append(1000 * (time.perf_counter() - t0))
        return value

    for i, (image, label) in enumerate(pairs):
        timed("probe", lambda image=image: Image.open(image).size)
        img = timed("jpeg_draft_decode", lambda image=image: open_rgb(image, draft_hw=hw))
        timed("jpeg_full_decode", lambda image=image: open_rgb(image))
        small = timed("resize", lambda img=img: resize_image(img, hw))
        timed("image_write", lambda small=small, i=i: save_atomic(small, workdir / f"{i}.png", compress_level=3))
        mask = timed("mask_decode", lambda label=label: read_mask(label))
        small_mask = timed("mask_resize", lambda mask=mask: resize_mask(mask, hw))
        timed("mask_write", lambda m=small_mask, i=i: save_atomic(m, workdir / f"{i}_m.png", compress_level=3))
        entry = {"id": image.stem, "image": str(image), "label": str(label)}
        timed("prepare_entry", lambda entry=entry: prepare_entry(entry, cache, 256))
    med = {f"{k}_ms": statistics.median(v) for k, v in steps.items()}
    return {"photo_size": list(hw_full), "cache_size": list(hw), "pairs": len(pairs), **med}


# ------------------------------------------------------------------------------------------------------ driver


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Run one measurement in this process (``--child KIND``)."""
    import torch

    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="isic-bench-"))
    kind = args.child
    if kind.startswith("inference:"):
        result: dict[str, Any] = measure_inference(args, kind.split(":", 1)[1], work)
    elif kind == "prepare":
        result = measure_prepare(args, work)
    elif kind == "time_to_dice":
        result = measure_time_to_dice(args, work)
    else:
        datalist = datalist_for(Path(args.data), args.images, work)
        measure = {"training": measure_training, "steps": measure_steps, "profile": measure_profile}
        result = measure[kind](args, datalist, work / "run")
    return {**result, "peak_memory_mb": peak_memory_mb()}


def spawn(kind: str, argv: Sequence[str], in_process: bool = False) -> dict[str, Any]:
    """Run ``--child kind`` in a fresh process (or in this one, ``in_process``) and return its JSON."""
    if in_process:
        print(f"  {kind} (in process) ...", file=sys.stderr, flush=True)
        return json.loads(json.dumps(child(parse_args([*argv, "--child", kind]))))
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = Path(tmp.name)
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", kind, "--child-out", str(out)]
    print(f"  {kind} ...", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)
    result = json.loads(out.read_text())
    out.unlink()
    return result


def run_all(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Every requested section, each measurement in its own process (unless ``--in-process``)."""
    import functools

    import torch

    spawn_ = functools.partial(spawn, in_process=args.in_process)

    report: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
                    "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"},
        "settings": {"data": args.data if Path(args.data).is_dir() else "synthetic", "images": args.images,
                     "in_process": args.in_process,
                     "overrides": list(args.set),
                     "image_size": list(args.size), "batch_size": args.batch_size, "repeats": args.repeats},
    }
    if "training" in args.sections:
        report["training"] = spawn_("training", argv)
    if "steps" in args.sections:
        report["steps"] = spawn_("steps", argv)
    if "profile" in args.sections:
        report["profile"] = spawn_("profile", argv)
    if "inference" in args.sections:
        inference = {b: spawn_(f"inference:{b}", argv) for b in BACKENDS}
        for name in inference["eager"]:
            if name == "peak_memory_mb":
                continue
            eager = inference["eager"][name]["total_ms"]
            for backend in BACKENDS:
                inference[backend][name]["ratio_to_eager"] = inference[backend][name]["total_ms"] / eager
        report["inference"] = inference
    if "prepare" in args.sections:
        report["prepare"] = spawn_("prepare", argv)
    if args.compare_network:
        other = [*argv, "--network", args.compare_network] + (["--model", args.compare_model] if args.compare_model
                                                              else [])
        compared: dict[str, Any] = {}
        if "training" in args.sections:
            compared["training"] = spawn_("training", other)
        if "inference" in args.sections:
            compared["inference"] = spawn_("inference:eager", other)
            if "inference" in report:
                for name, r in compared["inference"].items():
                    if name != "peak_memory_mb":
                        r["ratio_to_bundle_eager"] = r["total_ms"] / report["inference"]["eager"][name]["total_ms"]
        report["compare"] = {args.compare_network: compared}
    if args.time_to_dice:
        report["time_to_dice"] = spawn_("time_to_dice", argv)
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as the tables of docs/performance.md."""
    lines = [f"Machine: {report['machine']['device']}, {report['machine']['cpus']} CPUs, torch "
             f"{report['machine']['torch']}; settings: {json.dumps(report['settings'])}", ""]
    if "training" in report:
        t = report["training"]
        r = t["pair_ratios"]
        lines += [f"| training, {len(r)} interleaved pairs of epochs | images/s (median) |", "|---|---|",
                  f"| plain PyTorch loop | {t['plain_images_per_s']:.1f} |",
                  f"| bundle (`SupervisedTrainer`) | {t['bundle_images_per_s']:.1f} |",
                  f"| **ratio bundle / plain** (median of pairs; range {min(r):.2f}–{max(r):.2f}) | "
                  f"**{t['ratio_bundle_to_plain']:.2f}** |", f"| peak memory, both in one process (MB) | "
                  f"{t['peak_memory_mb']:.0f} |", ""]
    if "steps" in report:
        st = report["steps"]
        lines += [f"| training setting (one step: {st['step_ms']:.1f} ms) | without (ms) | with (ms) | saved (ms) |",
                  "|---|---|---|---|"]
        for name, label in STEP_LABELS.items():
            r = st[name]
            lines.append(f"| {label} | {r['before_ms']:.1f} | {r['after_ms']:.1f} | {r['saved_ms']:.1f} |")
        lines.append("")
    if "profile" in report:
        p = report["profile"]
        lines += [f"| one epoch of {p['images']} images | seconds | share |", "|---|---|---|"]
        for stage in ("decode_and_resize", "augmentation", "forward", "backward"):
            lines.append(f"| {stage.replace('_', ' ')} | {p[stage + '_s']:.2f} | {p[stage + '_share']:.0%} |")
        lines.append("")
    if "inference" in report:
        inf = report["inference"]
        lines += ["| inference, photos | backend | pre (ms) | forward (ms) | post (ms) | total (ms) | ratio to eager |"
                  " peak memory (MB) |", "|---|---|---|---|---|---|---|---|"]
        for name in (k for k in inf["eager"] if k != "peak_memory_mb"):
            for backend in BACKENDS:
                r = inf[backend][name]
                lines.append(f"| {name} ({r['photos']} photos, {r['photo_size'][1]}×{r['photo_size'][0]}) | {backend} "
                             f"| {r['pre_ms']:.1f} | {r['forward_ms']:.1f} | {r['post_ms']:.1f} | {r['total_ms']:.1f} "
                             f"| {r['ratio_to_eager']:.2f} | {inf[backend]['peak_memory_mb']:.0f} |")
        lines.append("")
    if "prepare" in report:
        p = report["prepare"]
        lines += [f"| prepare, {p['pairs']} pairs {p['photo_size'][1]}×{p['photo_size'][0]} → "
                  f"{p['cache_size'][1]}×{p['cache_size'][0]} | ms per pair |", "|---|---|"]
        lines += [f"| {k[:-3].replace('_', ' ')} | {v:.1f} |" for k, v in p.items() if k.endswith("_ms")]
        lines.append("")
    for network, compared in report.get("compare", {}).items():
        lines += [f"| compared network `{network}` | value |", "|---|---|"]
        if "training" in compared:
            t = compared["training"]
            lines += [f"| training images/s, bundle (plain loop) | {t['bundle_images_per_s']:.1f} "
                      f"({t['plain_images_per_s']:.1f}) |",
                      f"| ratio bundle / plain (range {min(t['pair_ratios']):.2f}–{max(t['pair_ratios']):.2f}) | "
                      f"{t['ratio_bundle_to_plain']:.2f} |"]
            if "training" in report:
                lines.append(f"| training images/s against the bundle's network | "
                             f"{t['bundle_images_per_s'] / report['training']['bundle_images_per_s']:.2f} |")
        for name, r in compared.get("inference", {}).items():
            if name != "peak_memory_mb":
                lines.append(f"| inference {name}, eager{' + TTA' if r['tta'] else ''}, ms per photo (pre / forward / "
                             f"post) | {r['total_ms']:.1f} ({r['pre_ms']:.1f} / {r['forward_ms']:.1f} / "
                             f"{r['post_ms']:.1f}) |")
        lines.append("")
    if "time_to_dice" in report:
        t = report["time_to_dice"]
        reached = t["reached"]
        lines.append(f"Time to validation Dice {t['target_dice']}: " + (
            f"{reached['seconds'] / 60:.1f} min (epoch {reached['epoch']})" if reached else
            f"not reached in {len(t['curve'])} epochs (best {max(c['val_dice'] for c in t['curve']):.3f})"))
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the tables here")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--data", default=str(ISIC2017), help="training data (synthetic when the folder is absent)")
    parser.add_argument("--images", type=int, default=400, help="training images per epoch")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 160), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--set", nargs="*", default=[], metavar="ID=VALUE",
                        help="bundle config overrides for the training sections, e.g. train_dice=false")
    parser.add_argument("--repeats", type=int, default=6, help="interleaved pairs of bundle and plain epochs")
    parser.add_argument("--step-repeats", type=int, default=4, help="alternations of each setting pair (steps)")
    parser.add_argument("--inference-rounds", type=int, default=4, help="passes over the photos (first: warm-up)")
    parser.add_argument("--prepare-size", type=int, nargs=2, default=(3000, 4000), metavar=("H", "W"))
    parser.add_argument("--prepare-pairs", type=int, default=6)
    parser.add_argument("--time-to-dice", action="store_true", help="also train ISIC 2017 until --target-dice")
    parser.add_argument("--target-dice", type=float, default=0.85)
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--compare-network", default=None, metavar="NAME",
                        help="also measure training and eager inference of configs/networks/NAME.yaml")
    parser.add_argument("--compare-model", default=None, metavar="MODEL_PT",
                        help="the compared network's trained model.pt for inference (else untrained)")
    parser.add_argument("--no-tta", action="store_true", help="inference without test-time augmentation")
    parser.add_argument("--in-process", action="store_true",
                        help="every measurement in this process (a smoke run; memory figures not separate)")
    parser.add_argument("--network", default=None, metavar="NAME",
                        help="measure configs/networks/NAME.yaml layered on the bundle (default: the bundle's own)")
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child:
        args.child_out.write_text(json.dumps(child(args)))
        return 0
    passed = [a for a in argv if a not in ("--time-to-dice", "--in-process")]
    passed = _drop_options(passed, ("--out", "--markdown", "--sections", "--compare-network", "--compare-model"))
    report = run_all(args, passed + (["--time-to-dice"] if args.time_to_dice else []))
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    table = markdown(report)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    print(table)
    return 0


def _drop_options(argv: list[str], names: Sequence[str]) -> list[str]:
    """``argv`` without the named options and their values (the children need only the measurement settings)."""
    out, skip = [], False
    for arg in argv:
        if skip and not arg.startswith("--"):
            continue
        skip = arg.split("=")[0] in names
        if not skip:
            out.append(arg)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
