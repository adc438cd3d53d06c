"""Measure candidate per-photo confidence scores against the truth (issue 19: which score to ship).

Reads a folder inference run with ``--save_probabilities true`` (masks in OUT, probability maps in
OUT_probabilities, both at each photo's own size) and the truth masks of the same photos, and writes one JSON
object: for each candidate, the AUROC for telling failures (Jaccard below ``--failure-below``, 0.65 by default: the
ISIC 2018 thresholded-Jaccard cut) from the rest, and the mean Jaccard of the most confident 90 % against all.

Candidates, each from the probability map ``p`` (TTA mean) and the final mask ``m`` alone:

- ``core_over_hull``: ``|p > 0.9| / |p > 0.1|``, how much of what the model might call lesion it is sure of;
- ``self_jaccard``: the soft Jaccard of ``p`` against ``m``, ``sum(p m) / sum(p + m - p m)``: the Jaccard the mask
  would have if ``p`` were the truth's probability;
- ``decided_border``: the mean of ``|2p - 1|`` over the band where ``0.02 < p < 0.98`` or the mask's border is,
  ``1 -`` the share of undecided pixels near the predicted outline.

A photo with no predicted lesion gets 0 from each (nothing found in a dermoscopy photo is itself a failure sign).

Usage::

    python -m monai.bundle run --config_file bundle/configs/inference.yaml --bundle_root bundle \\
        --dataset_dir ../shared/data/isic2017_256x192/val/images --output_dir runs/conf/out \\
        --save_probabilities true --save_overlays false
    python scripts/confidence_candidates.py runs/conf/out ../shared/data/isic2017_256x192/val/masks -o runs/conf.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from monai.metrics import compute_roc_auc
from PIL import Image

from isic_monai.data.masks import read_mask


def core_over_hull(p: np.ndarray, m: np.ndarray) -> float:
    """``|p > 0.9| / |p > 0.1|`` (0 when nothing is above 0.1)."""
    hull = int((p > 0.1).sum())
    return float((p > 0.9).sum()) / hull if hull else 0.0


def self_jaccard(p: np.ndarray, m: np.ndarray) -> float:
    """The soft Jaccard of the probabilities against the final mask (0 for an empty mask)."""
    mf = m.astype(np.float64)
    inter = float((p * mf).sum())
    union = float((p + mf - p * mf).sum())
    return inter / union if m.any() and union else 0.0


def decided_border(p: np.ndarray, m: np.ndarray) -> float:
    """The mean ``|2p - 1|`` over undecided pixels and the mask's outline (0 for an empty mask)."""
    if not m.any():
        return 0.0
    edge = np.zeros_like(m)
    edge[1:, :] |= m[1:, :] != m[:-1, :]
    edge[:, 1:] |= m[:, 1:] != m[:, :-1]
    band = edge | ((p > 0.02) & (p < 0.98))
    return float(np.abs(2 * p[band] - 1).mean()) if band.any() else 1.0


CANDIDATES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "core_over_hull": core_over_hull, "self_jaccard": self_jaccard, "decided_border": decided_border}


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard of two bool masks (1 when both are empty)."""
    union = int((a | b).sum())
    return float((a & b).sum()) / union if union else 1.0


def measure(pred_dir: Path, truth_dir: Path, failure_below: float, keep: float) -> dict:
    """Every candidate's AUROC and the mean Jaccard of its ``keep`` most confident share (see the module docstring)."""
    prob_dir = Path(str(pred_dir).rstrip("/") + "_probabilities")
    rows = []
    for mask_file in sorted(pred_dir.glob("*_segmentation.png")):
        image_id = mask_file.name.removesuffix("_segmentation.png")
        m = read_mask(mask_file)
        p = np.asarray(Image.open(prob_dir / mask_file.name), dtype=np.float64) / 255.0
        truth = read_mask(truth_dir / mask_file.name)
        rows.append({"id": image_id, "jaccard": jaccard(m, truth), **{k: f(p, m) for k, f in CANDIDATES.items()}})
    if not rows:
        raise SystemExit(f"{pred_dir}: no *_segmentation.png masks")
    j = np.array([r["jaccard"] for r in rows])
    failed = torch.tensor(j < failure_below, dtype=torch.float32)
    out: dict = {"photos": len(rows), "failures": int(failed.sum()), "failure_below": failure_below,
                 "mean_jaccard_all": float(j.mean()), "keep": keep, "candidates": {}}
    n_keep = int(round(keep * len(rows)))
    for name in CANDIDATES:
        score = torch.tensor([r[name] for r in rows], dtype=torch.float64)
        auroc = float(compute_roc_auc(-score, failed)) if 0 < failed.sum() < len(rows) else float("nan")
        kept = np.argsort(-score.numpy(), kind="stable")[:n_keep]
        out["candidates"][name] = {"auroc_failures": auroc, "mean_jaccard_kept": float(j[kept].mean())}
    out["per_image"] = rows
    return out


def main() -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pred_dir", type=Path, help="a folder inference's OUT (masks), with OUT_probabilities beside")
    parser.add_argument("truth_dir", type=Path, help="the truth masks, named <id>_segmentation.png")
    parser.add_argument("-o", "--out", type=Path, required=True, help="the JSON report")
    parser.add_argument("--failure-below", type=float, default=0.65, help="a failure: Jaccard below this")
    parser.add_argument("--keep", type=float, default=0.9, help="the most confident share whose Jaccard is reported")
    args = parser.parse_args()
    report = measure(args.pred_dir, args.truth_dir, args.failure_below, args.keep)
    args.out.write_text(json.dumps(report, indent=2))
    summary = {k: v for k, v in report.items() if k != "per_image"}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
