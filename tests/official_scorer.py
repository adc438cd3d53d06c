"""Run the ISIC challenge's own scorer (PyPI ``isic-challenge-scoring``) and print its result as JSON (run by the
scoring tests with :func:`conftest.extras_python`, the interpreter that has it: the scorer brings pandas and
scikit-learn, which MONAI imports in every process when they are installed, so ``make test`` keeps them in
``.venv-extras``).

Usage:
    ``python tests/official_scorer.py task1 TRUTH_DIR PRED_DIR``: ``SegmentationScore.from_dir(...).to_dict()``;
    ``python tests/official_scorer.py task2 TRUTH_DIR PRED_DIR``: ``task2.score(...)``;
    ``python tests/official_scorer.py per-image TRUTH PRED [TRUTH PRED ...]``: for each pair of mask files, the
    official confusion matrix (mask > 128, the scorer's rule) and the official per-image metrics.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from isic_challenge_scoring import metrics, segmentation, task2
from isic_challenge_scoring.confusion import create_binary_confusion_matrix
from PIL import Image

PER_IMAGE = {"accuracy": metrics.binary_accuracy, "sensitivity": metrics.binary_sensitivity,
             "specificity": metrics.binary_specificity, "jaccard": metrics.binary_jaccard,
             "threshold_jaccard": metrics.binary_threshold_jaccard, "dice": metrics.binary_dice,
             "precision": metrics.binary_ppv}


def per_image(files: list[str]) -> list[dict]:
    """The confusion matrix and the official per-image metrics of each (truth, prediction) pair in ``files``."""
    out = []
    for truth, pred in zip(files[::2], files[1::2], strict=True):
        t = np.asarray(Image.open(truth)) > 128
        p = np.asarray(Image.open(pred)) > 128
        cm = create_binary_confusion_matrix(truth_binary_values=t, prediction_binary_values=p)
        out.append({"truth": truth, "prediction": pred, "shape": list(t.shape),
                    **{k: int(cm[k]) for k in ("TP", "FP", "FN", "TN")},
                    **{name: float(fn(cm)) for name, fn in PER_IMAGE.items()}})
    return out


def main(command: str, args: list[str]) -> object:
    if command == "task1":
        return segmentation.SegmentationScore.from_dir(Path(args[0]), Path(args[1])).to_dict()
    if command == "task2":
        return task2.score(Path(args[0]), Path(args[1]))
    if command == "per-image":
        return per_image(args)
    raise SystemExit(f"unknown command {command!r}: task1, task2 or per-image")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2:])))
