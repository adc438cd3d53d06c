"""The confidence score (``isic_monai.metrics.confidence``): its values, the flag threshold, the MONAI metric and the
transform; ``predictions.csv`` (``isic_monai.engines.folder_inference``) after a torn line and a resumed run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from isic_monai.engines.folder_inference import PREDICTIONS_FILE, RecordPredictiond, finish_predictions
from isic_monai.metrics.confidence import (
    Confidenced,
    ConfidenceMetric,
    choose_flag_threshold,
    image_confidence,
    load_flag_threshold,
    mask_confidence,
    save_confidence,
)
from isic_monai.metrics.handlers import ConfidenceHandler


def test_soft_jaccard_by_hand() -> None:
    prob = torch.tensor([[[0.9, 0.6], [0.2, 0.0]]])
    mask = torch.tensor([[[1, 1], [0, 0]]])
    # sum(p m) = 1.5; sum(p + m - p m) = 1.5 + 2 + 0.2 - 1.5 ... per pixel: 1, 1, 0.2, 0
    assert mask_confidence(prob, mask).item() == pytest.approx(1.5 / 2.2)
    assert mask_confidence(mask.float(), mask).item() == 1.0  # probabilities that are the mask: fully sure


def test_empty_masks_follow_the_rule() -> None:
    prob = torch.full((2, 4, 4), 0.1)
    empty = torch.zeros((2, 4, 4))
    assert mask_confidence(prob, empty).tolist() == [0.0, 0.0]  # Task 1: nothing found is a failure sign
    assert mask_confidence(prob, empty, empty_score=None).tolist() == pytest.approx([0.9, 0.9])  # 1 - mean(p)
    with pytest.raises(ValueError, match="differ in shape"):
        mask_confidence(prob, empty[:1])


def test_an_unsure_border_scores_lower() -> None:
    """The same mask, once with decided probabilities and once with a wide band of 0.5 around it."""
    mask = torch.zeros(1, 32, 32)
    mask[0, 8:24, 8:24] = 1
    sure = mask * 0.98 + 0.01
    unsure = sure.clone()
    unsure[0, 4:28, 4:28] = torch.where(mask[0, 4:28, 4:28] > 0, 0.98, 0.5)
    assert mask_confidence(sure, mask) > 0.95 > 0.7 > mask_confidence(unsure, mask)


def test_image_confidence_is_the_least_confident_channel() -> None:
    assert image_confidence(torch.tensor([0.9, 0.4, 0.8])) == pytest.approx(0.4)


def test_flag_threshold_separates_failures() -> None:
    jaccard = [0.9, 0.85, 0.95, 0.3, 0.5, 0.8]
    confidence = [0.92, 0.88, 0.97, 0.40, 0.55, 0.86]  # the failures are the two least confident
    record = choose_flag_threshold(confidence, jaccard)
    assert record["auroc"] == pytest.approx(1.0) and record["n_failures"] == 2
    assert 0.55 < record["flag_below"] < 0.86 and record["flagged"] == 2 and record["flagged_failures"] == 2
    assert record["mean_jaccard_unflagged"] == pytest.approx(np.mean([0.9, 0.85, 0.95, 0.8]))
    assert record["mean_jaccard_most_confident"] == pytest.approx(np.mean([0.9, 0.85, 0.95, 0.8, 0.5]))  # top 90 %


def test_flag_threshold_with_a_useless_score() -> None:
    rng = np.random.default_rng(0)
    jaccard = rng.random(200)
    record = choose_flag_threshold(rng.random(200), jaccard)
    assert 0.35 < record["auroc"] < 0.65  # random scores tell nothing


def test_no_failure_leaves_nothing_to_flag(tmp_path: Path) -> None:
    record = choose_flag_threshold([0.8, 0.9], [0.9, 0.95])
    assert record["flag_below"] is None and record["auroc"] is None and record["flagged"] == 0
    path = save_confidence(tmp_path / "confidence.json", record)
    assert load_flag_threshold(path) is None and load_flag_threshold(tmp_path / "absent.json") is None
    with pytest.raises(ValueError, match="lengths|Jaccard"):
        choose_flag_threshold([0.5], [0.5, 0.6])


def test_load_flag_threshold_names_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "confidence.json"
    bad.write_text("[1, 2")
    with pytest.raises(ValueError, match="confidence.json: not a confidence.json"):
        load_flag_threshold(bad)
    bad.write_text(json.dumps({"flag_below": "high"}))
    with pytest.raises(ValueError, match="flag_below must be a number"):
        load_flag_threshold(bad)
    bad.write_text(json.dumps({"flag_below": 0.8}))
    assert load_flag_threshold(bad) == 0.8


def test_metric_buffers_each_image() -> None:
    metric = ConfidenceMetric()
    prob = torch.rand(3, 2, 8, 8)
    mask = prob > 0.5
    metric(prob, mask)
    metric(prob[:1], torch.zeros_like(mask[:1]))
    details = metric.get_details()
    assert details.shape == (4, 2)
    assert torch.allclose(details[0], mask_confidence(prob[0], mask[0]))
    assert details[3].tolist() == [0.0, 0.0]
    mean, per_channel = metric.aggregate()
    assert torch.allclose(per_channel, details.double().mean(0)) and mean == pytest.approx(float(per_channel.mean()))


def test_handler_reads_prob_and_pred_from_the_engine() -> None:
    from ignite.engine import Engine

    prob = torch.rand(1, 8, 8)
    mask = (prob > 0.5).float()
    engine = Engine(lambda e, b: [{"prob": prob, "pred": mask}])
    ConfidenceHandler(channel_names=["lesion"]).attach(engine, "confidence")
    engine.run([0, 1], max_epochs=1)
    assert engine.state.metrics["confidence"] == pytest.approx(float(mask_confidence(prob, mask)))
    assert engine.state.metrics["confidence_lesion"] == pytest.approx(float(mask_confidence(prob, mask)))
    assert engine.state.metric_details["confidence"].shape == (2, 1)


def test_transform_describes_task1_and_task2() -> None:
    prob = torch.zeros(1, 10, 10)
    prob[0, :5] = 0.9
    mask = (prob > 0.5).float()
    d = Confidenced("pred", flag_below=0.95)({"pred": mask, "prob": prob})
    assert d["result"] == {"lesion_fraction": 0.5, "confidence": pytest.approx(0.9), "flagged": True}
    assert Confidenced("pred")({"pred": mask, "prob": prob})["result"]["flagged"] is None  # no threshold known
    names = ["a", "b"]
    prob2 = torch.stack([prob[0], torch.full((10, 10), 0.2)])
    mask2 = (prob2 > 0.5).float()
    result = Confidenced("pred", channel_names=names, empty_score=None, flag_below=0.5)(
        {"pred": mask2, "prob": prob2})["result"]
    assert result["a_fraction"] == 0.5 and result["b_fraction"] == 0.0
    assert result["b_confidence"] == pytest.approx(0.8) and result["confidence"] == pytest.approx(0.8)
    assert result["flagged"] is False
    with pytest.raises(ValueError, match="channel names"):
        Confidenced("pred", channel_names=["a", "b", "c"])({"pred": mask2, "prob": prob2})


def _item(stem: str, fraction: float, confidence: float) -> dict:
    image = MetaTensor(torch.zeros(3, 2, 2), meta={"filename_or_obj": f"/photos/{stem}.jpg"})
    return {"image": image, "result": {"lesion_fraction": fraction, "confidence": confidence, "flagged": False}}


def test_predictions_table_survives_a_torn_line_and_a_rerun(tmp_path: Path) -> None:
    """Rows are appended as photos are done; a torn last line (a kill mid-write) is ended and dropped; a photo done
    twice keeps its last row; the final table lists the photos with masks, in the inputs' order."""
    report, masks = tmp_path / "report", tmp_path / "masks"
    masks.mkdir()
    inputs = [{"id": s, "image": f"/photos/{s}.jpg"} for s in ("b", "a", "c")]
    recorder = RecordPredictiond("result", report, ["lesion"])
    recorder(_item("b", 0.1, 0.9))
    recorder(_item("a", 0.2, 0.5))
    with (report / PREDICTIONS_FILE).open("a") as f:
        f.write("c,0.3")  # killed mid-row
    for stem in ("b", "a"):
        (masks / f"{stem}_segmentation.png").write_bytes(b"png")
    again = RecordPredictiond("result", report, ["lesion"])  # the resumed run
    again(_item("a", 0.25, 0.6))
    again(_item("c", 0.3, 0.7))
    (masks / "c_segmentation.png").write_bytes(b"png")
    finish_predictions(report, inputs, masks, ["lesion"])
    rows = list(csv.DictReader((report / PREDICTIONS_FILE).open()))
    assert [(r["id"], r["lesion_fraction"], r["confidence"]) for r in rows] == [
        ("b", "0.1", "0.9"), ("a", "0.25", "0.6"), ("c", "0.3", "0.7")]
    assert rows[0]["flagged"] == "false"
