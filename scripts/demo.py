"""The end-to-end demo behind ``make demo``: synthetic data → training → evaluation → folder inference, then the
shipped ISIC 2017 model (``bundle/models/model.pt``) on ten real photographs (``docs/examples/isic2017_val``).

A script, not a package module: it drives the repository's own files (``bundle/``, ``configs/recipes/demo.yaml``).

Every step runs the same command a user would type (the ``isic-monai`` console script and the stock
``python -m monai.bundle`` CLI) and prints it first, so the demo doubles as a walk-through. A step's whole output
goes to its own log (``<workdir>/demo_logs/NN_<step>.log``); the terminal gets the command, the step's key lines
(one per validated training epoch) and its result.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_DICE = 0.85
DEMO_NETWORK = "configs/networks/residual_unet_deep.yaml"  # what the demo trains (the real photos: the shipped model)
REAL_PHOTOS = REPO / "docs" / "examples" / "isic2017_val"
REAL_TRUTH = REPO.parent / "shared" / "data" / "isic2017_256x192" / "val" / "masks"


LOG_DIR: Path | None = None
"""Where each step's full output goes (set by :func:`main`); ``None`` prints everything."""
KEY_LINE = re.compile(r"epoch \d+/\d+ in .*val_|layout |-> |wrote |saved |masks? (?:written|in )|failures")
"""The lines of a step worth showing: validated epochs (EpochProgress), datalist and synth results."""
_steps = 0


def step_name(cmd: list[str]) -> str:
    """A step's log name: the ``isic-monai`` subcommand, the bundle run's id, or the bundle config it runs."""
    text = " ".join(cmd)
    for config in ("evaluate", "inference"):
        if f"{config}.yaml" in text:
            return config
    if "monai.bundle" in cmd:
        return "training" if "training" in cmd else "run"
    return next((a for a in cmd[3:] if re.fullmatch(r"[a-z_-]+", a)), "step")


def run(cmd: list[str], cwd: Path = REPO) -> None:
    """Print a command, run it with its output in a log, print its key lines; stop the demo if it fails.

    Raises:
        subprocess.CalledProcessError: when the command fails (after printing the end of its log).
    """
    global _steps
    print("\n$ " + shlex.join(cmd), flush=True)
    if LOG_DIR is None:
        subprocess.run(cmd, cwd=cwd, check=True)
        return
    _steps += 1
    name = step_name(cmd)
    log = LOG_DIR / f"{_steps:02d}_{name}.log"
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, text=True)
    lines = log.read_text(errors="replace").splitlines()
    if proc.returncode != 0:
        print("\n".join(lines[-40:]), flush=True)
        print(f"  FAILED (exit {proc.returncode}); whole output: {log}", flush=True)
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    for line in lines:
        if KEY_LINE.search(line):
            print("  " + line.split(" - INFO - ")[-1].strip()[:160], flush=True)
    shown = log.relative_to(REPO) if log.is_relative_to(REPO) else log
    print(f"  ok in {time.perf_counter() - started:.0f} s; whole output: {shown}", flush=True)


def bundle_cmd(run_id: str | None, configs: list[str], **overrides: str) -> list[str]:
    """A ``python -m monai.bundle run`` command line merging ``configs`` with ``--key value`` overrides."""
    cmd = [sys.executable, "-m", "monai.bundle", "run"] + ([run_id] if run_id else [])
    cmd += ["--config_file", "[" + ",".join(f"'{c}'" for c in configs) + "]"]
    for key, value in overrides.items():
        cmd += [f"--{key}", value]
    return cmd


def real_photos(out: Path, photos: Path = REAL_PHOTOS, truth: Path = REAL_TRUTH) -> dict[str, float]:
    """Segment the real photographs with the shipped model, as a user would right after installation.

    Returns:
        Dice per photo against the ISIC 2017 truth when ``truth`` exists (``../shared``), else an empty dict.
    """
    run(bundle_cmd(None, ["bundle/configs/inference.yaml"], bundle_root="bundle", dataset_dir=str(photos),
                   output_dir=str(out)))
    if not truth.is_dir():
        return {}
    import numpy as np
    from PIL import Image

    from isic_monai.metrics.functional import dice

    scores = {}
    for mask in sorted(out.glob("*_segmentation.png")):
        pred, gt = (np.asarray(Image.open(p)) > 127 for p in (mask, truth / mask.name))
        scores[mask.name.removesuffix("_segmentation.png")] = float(dice(pred[None], gt[None])[0])
    return scores


def photo_lines(table: Path, dice: dict[str, float]) -> list[str]:
    """One line per photo of a folder inference's ``predictions.csv``: its confidence, whether it is flagged (a mask
    to check by eye: docs/metrics.md, "Confidence"), and its Dice against the truth when known."""
    import csv

    lines = []
    with table.open(newline="") as f:
        for row in csv.DictReader(f):
            flag = {"true": "  FLAGGED: check this mask", "false": ""}.get(row["flagged"], "  (no flag threshold)")
            known = f", Dice {dice[row['id']]:.3f}" if row["id"] in dice else ""
            lines.append(f"  {row['id']}: confidence {float(row['confidence']):.3f}{known}{flag}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns 0 when the validation Dice reaches the target."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default="runs/demo", help="where data, model and outputs go")
    parser.add_argument("--n", type=int, default=200, help="synthetic training+validation images")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's max_epochs")
    parser.add_argument("--verbose", action="store_true", help="print every step's whole output, not its log")
    args = parser.parse_args(argv)
    work = (REPO / args.workdir).resolve()
    global LOG_DIR
    if not args.verbose:
        LOG_DIR = work / "demo_logs"
        LOG_DIR.mkdir(parents=True, exist_ok=True)
    data, photos = work / "synth", work / "photos"
    datalist = work / "datalist.json"
    started = time.perf_counter()
    exe = [sys.executable, "-m", "isic_monai.cli"]
    if not (data / "ISIC2018_Task1-2_Training_Input").is_dir():
        run([*exe, "synth", str(data), "--layout", "isic2018", "--n", str(args.n), "--seed", "0"])
    if not (photos / "ISIC2018_Task1-2_Test_Input").is_dir():
        run([*exe, "synth", str(photos), "--layout", "isic2018", "--n", "8", "--seed", "1", "--split", "Test"])
    run([*exe, "datalist", str(data), "-o", str(datalist)])
    # the demo trains the from-scratch six-level residual U-Net: it learns the synthetic lesions in 2 minutes here and
    # needs no ImageNet weights; the shipped model (EfficientNet-Lite1) is what the real photos below are segmented with
    recipe = ["bundle/configs/train.yaml", DEMO_NETWORK, "configs/recipes/demo.yaml"]
    common = {"datalist_file": str(datalist), "bundle_root": str(work)}
    common_train = {**common, "max_epochs": str(args.epochs)} if args.epochs else common
    run(bundle_cmd("training", recipe, **common_train))
    run(bundle_cmd(None, [*recipe, "bundle/configs/evaluate.yaml"], **common))
    predictions = work / "predictions"
    run(bundle_cmd(None, ["bundle/configs/inference.yaml", DEMO_NETWORK, "configs/recipes/demo.yaml"],
                   bundle_root=str(work),
                   dataset_dir=str(photos / "ISIC2018_Task1-2_Test_Input"), output_dir=str(predictions)))
    real = work / "real_predictions"
    real_dice = real_photos(real)
    summary = json.loads((work / "eval" / "summary.json").read_text())
    dice = summary["per_image"]["dice"]["mean"]
    minutes = (time.perf_counter() - started) / 60
    print("\n" + (work / "eval" / "summary.md").read_text())
    print(f"validation Dice {dice:.4f} at original size (target >= {TARGET_DICE}: "
          f"{'met' if dice >= TARGET_DICE else 'NOT met'}); wall time {minutes:.1f} min")
    print(f"model: {work / 'models' / 'model.pt'}\nmasks: {predictions} (overlays: {predictions}_overlays)\n"
          f"TensorBoard: tensorboard --logdir {work / 'logs'}")
    print(f"\nshipped ISIC 2017 model on {len(list(REAL_PHOTOS.glob('*.jpg')))} real photos ({REAL_PHOTOS}):\n"
          f"  masks: {real}\n  overlays (photo with the predicted outline): {real}_overlays")
    print("\n".join(photo_lines(Path(f"{real}_report") / "predictions.csv", real_dice)))
    if real_dice:
        print(f"  mean Dice against the ISIC 2017 truth: {sum(real_dice.values()) / len(real_dice):.3f}")
    return 0 if dice >= TARGET_DICE else 1


if __name__ == "__main__":
    raise SystemExit(main())
