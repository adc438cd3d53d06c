"""The shipped model's figures are reproduced by the documented command: the bundle's own evaluation, run from
inside a copy of ``bundle/`` on the 150 ISIC 2017 validation images, gives the numbers recorded in
``models/evaluation.json``, ``metadata.json`` (``eval_metrics``) and the bundle README, and the flag threshold of
``models/confidence.json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import BUNDLE_ROOT, bundle, config_list, copy_bundle

from isic_monai.data.datalist import build_datalist

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def test_documented_evaluation_reproduces_the_shipped_figures(shared_data: Path, tmp_path: Path) -> None:
    recorded = json.loads((BUNDLE_ROOT / "models" / "evaluation.json").read_text())
    data = shared_data / "isic2017_256x192"
    datalist = tmp_path / "isic2017.json"
    datalist.write_text(json.dumps(build_datalist(data)))
    inside = copy_bundle(tmp_path / "bundle", models=True)
    out = tmp_path / "eval"
    bundle("run", "--config_file", config_list("configs/train.yaml", "configs/evaluate.yaml"), "--datalist_file",
           str(datalist), "--output_dir", str(out), "--num_workers", "0", cwd=inside)
    measured = json.loads((out / "summary.json").read_text())["per_image"]
    assert measured["jaccard"]["n"] == 150
    for metric in ("dice", "jaccard", "thresholded_jaccard", "accuracy", "sensitivity", "specificity"):
        assert measured[metric]["mean"] == pytest.approx(recorded["per_image"][metric]["mean"], abs=1e-4), metric
    meta = json.loads((BUNDLE_ROOT / "configs" / "metadata.json").read_text())
    assert meta["eval_metrics"]["mean_jaccard"] == pytest.approx(measured["jaccard"]["mean"], abs=1e-4)
    assert f"{measured['jaccard']['mean']:.4f}" in (BUNDLE_ROOT / "docs" / "README.md").read_text()
    # the shipped thresholds were chosen on this very predictor (TTA, truth size, clean-up): the score they record is
    # the Jaccard measured here, and it is the best of the candidates
    thresholds = json.loads((BUNDLE_ROOT / "models" / "thresholds.json").read_text())
    assert thresholds["n_images"] == 150 and thresholds["clean_up"] is True
    assert measured["jaccard"]["mean"] == pytest.approx(thresholds["scores"][0], abs=1e-6)
    assert thresholds["scores"][0] == pytest.approx(max(thresholds["candidate_scores"][0]), abs=1e-6)
    # the confidence cut shipped beside thresholds.json is the one this evaluation chooses (docs/results.md)
    shipped, chosen = (json.loads(p.read_text()) for p in (BUNDLE_ROOT / "models" / "confidence.json",
                                                            out / "confidence.json"))
    assert chosen["n_images"] == 150 and shipped["n_failures"] == chosen["n_failures"]
    for key in ("flag_below", "auroc", "mean_jaccard_most_confident"):
        assert chosen[key] == pytest.approx(shipped[key], abs=1e-4), key
