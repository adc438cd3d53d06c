"""The project's set-level (ISIC 2018 Task 2) scores agree with the challenge's own scorer (``isic-challenge-scoring``,
the ``scorer`` extra, run through :func:`conftest.official_scorer`): the functions, the Ignite handler the bundle uses,
and the evaluation summary, on masks of several sizes with attributes empty in truth, in prediction or in both, and
images predicted empty."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import official_scorer
from PIL import Image

from isic_monai import ATTRIBUTES
from isic_monai.metrics import (
    PixelSetJaccard,
    SetJaccard,
    counts_per_image,
    normalized_counts,
    pixel_set_jaccard,
    set_jaccard,
    set_scores,
)
from isic_monai.results.summary import write_summary

SIZES = [(24, 32), (61, 47), (128, 96), (9, 13), (200, 150), (40, 40), (75, 110)]
TOL = 1e-9


def _disc(rng: np.random.Generator, hw: tuple[int, int], scale: float = 0.4) -> np.ndarray:
    h, w = hw
    yy, xx = np.mgrid[:h, :w]
    r = rng.uniform(1.5, scale * min(h, w))
    return (yy - rng.uniform(0, h)) ** 2 + (xx - rng.uniform(0, w)) ** 2 <= r * r


def task2_case(seed: int = 0) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Ids, predictions and truths (``5×H×W`` bool, channels in ATTRIBUTES order), one size per image.

    pigment_network and globules: present in some images, predicted with errors; negative_network: present in some
    truths, never predicted; streaks: empty in every truth and prediction; milia_like_cyst: empty in every truth,
    predicted in some images. Image 3 is predicted empty in every channel.
    """
    rng = np.random.default_rng(seed)
    ids, preds, truths = [], [], []
    for i, hw in enumerate(SIZES):
        truth = np.zeros((5, *hw), dtype=bool)
        pred = np.zeros((5, *hw), dtype=bool)
        for c in (0, 4):
            if rng.random() < 0.7:
                truth[c] = _disc(rng, hw)
            noise = rng.random(hw) > 0.25
            pred[c] = (truth[c] & noise) | (_disc(rng, hw, 0.2) if rng.random() < 0.5 else False)
        if i % 2 == 0:
            truth[1] = _disc(rng, hw)
        if i % 3 == 1:
            pred[3] = _disc(rng, hw, 0.2)
        if i == 3:
            pred[:] = False
        ids.append(f"ISIC_{i + 1:07d}")
        preds.append(pred)
        truths.append(truth)
    return ids, preds, truths


def write_task2(folder: Path, ids: list[str], masks: list[np.ndarray]) -> Path:
    """``<id>_attribute_<name>.png`` 0/255 masks, as the challenge names them."""
    folder.mkdir(parents=True, exist_ok=True)
    for image_id, mask in zip(ids, masks, strict=True):
        for c, name in enumerate(ATTRIBUTES):
            Image.fromarray(mask[c].astype(np.uint8) * 255, mode="L").save(folder / f"{image_id}_attribute_{name}.png")
    return folder


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[np.ndarray], list[np.ndarray], Path]:
    """The official scorer's Task 2 result on the written case, with the in-memory masks."""
    root = tmp_path_factory.mktemp("task2_official")
    ids, preds, truths = task2_case()
    write_task2(root / "truth", ids, truths)
    write_task2(root / "pred", ids, preds)
    return official_scorer("task2", root / "truth", root / "pred"), preds, truths, root


def _assert_matches_official(result: dict, per_channel_jaccard, per_channel_dice, overall, micro_dice) -> None:
    for c, name in enumerate(ATTRIBUTES):
        assert per_channel_jaccard[c] == pytest.approx(result[name]["jaccard"], abs=TOL), name
        assert per_channel_dice[c] == pytest.approx(result[name]["dice"], abs=TOL), name
    assert overall == pytest.approx(result["overall"], abs=TOL)
    assert micro_dice == pytest.approx(result["micro_average"]["dice"], abs=TOL)


def test_case_covers_the_empty_rules(official) -> None:
    result, preds, truths, _ = official
    assert result["streaks"] == {"jaccard": 1.0, "dice": 1.0}  # empty in truth and prediction: 1.0
    assert result["negative_network"]["jaccard"] == 0.0  # never predicted
    assert result["milia_like_cyst"]["jaccard"] == 0.0  # never true, sometimes predicted
    assert 0.05 < result["pigment_network"]["jaccard"] < 0.95 and 0.05 < result["globules"]["jaccard"] < 0.95
    assert not preds[3].any() and truths[3].any()
    assert len({t.shape for t in truths}) == len(SIZES)


def test_set_scores_equal_the_official_scorer(official) -> None:
    result, preds, truths, _ = official
    s = set_scores(preds, truths)
    _assert_matches_official(result, s.jaccard, s.dice, s.overall, s.micro_dice)
    per_channel, mean = set_jaccard(preds, truths)
    np.testing.assert_allclose(per_channel, s.jaccard)
    assert mean == pytest.approx(np.mean([result[n]["jaccard"] for n in ATTRIBUTES]), abs=TOL)
    assert s.mean_jaccard == pytest.approx(mean)


def _nested_close(ours: dict, theirs: dict) -> bool:
    assert ours.keys() == theirs.keys()
    for k, v in theirs.items():
        if isinstance(v, dict):
            _nested_close(ours[k], v)
        else:
            assert ours[k] == pytest.approx(v, abs=TOL), k
    return True


def test_official_layout_of_set_scores(official) -> None:
    result, preds, truths, _ = official
    assert _nested_close(set_scores(preds, truths).to_official(ATTRIBUTES), result)
    assert list(set_scores(preds, truths).to_official(ATTRIBUTES)) == list(result)  # same key order


def test_raw_pixel_variant_differs_where_sizes_and_empties_matter(official) -> None:
    result, preds, truths, _ = official
    raw, raw_mean = pixel_set_jaccard(preds, truths)
    assert np.isnan(raw[2])  # streaks: left out as NaN, where the official scorer gives 1.0
    counts = counts_per_image(preds, truths)
    summed = counts.sum(0)
    np.testing.assert_allclose(raw[0], summed[0, 0] / summed[0, :3].sum())
    # large images weigh more in the raw sums: pigment network differs from the official value
    assert abs(raw[0] - result["pigment_network"]["jaccard"]) > 1e-3
    assert raw_mean == pytest.approx(np.nanmean(raw))
    # each image's normalised counts sum to one
    np.testing.assert_allclose(normalized_counts(counts).sum(-1), 1.0)


def _engine_metrics(handler, preds: list[np.ndarray], truths: list[np.ndarray], name: str = "val_set_jaccard"):
    from ignite.engine import Engine

    engine = Engine(lambda e, b: b)
    handler.attach(engine, name)
    batches = [(torch.as_tensor(p[None]).float(), torch.as_tensor(t[None]).float()) for p, t in zip(preds, truths,
                                                                                                   strict=True)]
    engine.run(batches)  # batch size 1: every image keeps its own size, as in evaluate.yaml
    return engine.state.metrics


def test_set_jaccard_handler_is_the_official_score(official) -> None:
    result, preds, truths, _ = official
    m = _engine_metrics(SetJaccard(channel_names=ATTRIBUTES, output_transform=lambda o: o), preds, truths)
    assert m["val_set_jaccard"] == pytest.approx(result["overall"], abs=TOL)  # the key metric is the official overall
    _assert_matches_official(result, [m[f"val_set_jaccard_{n}"] for n in ATTRIBUTES],
                             [m[f"val_set_jaccard_{n}_dice"] for n in ATTRIBUTES], m["val_set_jaccard_overall"],
                             m["val_set_jaccard_micro_dice"])
    assert m["val_set_jaccard_mean"] == pytest.approx(np.mean([result[n]["jaccard"] for n in ATTRIBUTES]), abs=TOL)
    assert m["val_set_jaccard_mean_dice"] == pytest.approx(np.mean([result[n]["dice"] for n in ATTRIBUTES]), abs=TOL)
    by_mean = _engine_metrics(SetJaccard(channel_names=ATTRIBUTES, output_transform=lambda o: o, value="mean"),
                              preds, truths)
    assert by_mean["val_set_jaccard"] == pytest.approx(m["val_set_jaccard_mean"])


def test_pixel_set_jaccard_handler_keeps_the_raw_variant(official) -> None:
    _, preds, truths, _ = official
    m = _engine_metrics(PixelSetJaccard(channel_names=ATTRIBUTES, output_transform=lambda o: o), preds, truths, "raw")
    raw, raw_mean = pixel_set_jaccard(preds, truths)
    assert m["raw"] == pytest.approx(raw_mean)
    assert np.isnan(m["raw_streaks"])
    assert m["raw_pigment_network"] == pytest.approx(raw[0])
    with pytest.raises(TypeError, match="fixes"):
        PixelSetJaccard(normalize=True)


def test_evaluation_summary_reports_overall_and_mean_side_by_side(official, tmp_path: Path) -> None:
    """An evaluator with ``evaluate.yaml``'s handler names and MetricsSaver, then ``write_summary``."""
    from monai.data import DataLoader, MetaTensor
    from monai.engines import SupervisedEvaluator
    from monai.handlers import MetricsSaver, from_engine

    result, preds, truths, _ = official
    items = [{"image": MetaTensor(torch.as_tensor(p).float(), meta={"filename_or_obj": f"/d/ISIC_{i:07d}.jpg"}),
              "label": torch.as_tensor(t).float()} for i, (p, t) in enumerate(zip(preds, truths, strict=True))]
    pl = from_engine(["pred", "label"])
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(items, batch_size=1, shuffle=False, num_workers=0),
        network=torch.nn.Identity(),
        key_val_metric={"set_jaccard": SetJaccard(channel_names=ATTRIBUTES, output_transform=pl)},
        val_handlers=[MetricsSaver(save_dir=str(tmp_path), metrics="*", metric_details="*",
                                   batch_transform=lambda batch: [b["image"].meta for b in batch])],
    )
    evaluator.run()
    summary = write_summary(tmp_path, ATTRIBUTES)
    scores = summary["set_scores"]
    assert scores["metric"] == "set_jaccard"
    assert scores["overall"] == pytest.approx(result["overall"], abs=1e-6)
    assert scores["micro_dice"] == pytest.approx(result["micro_average"]["dice"], abs=1e-6)
    assert scores["mean_jaccard"] == pytest.approx(np.mean([result[n]["jaccard"] for n in ATTRIBUTES]), abs=1e-6)
    for name in ATTRIBUTES:
        assert scores["channels"][name]["jaccard"] == pytest.approx(result[name]["jaccard"], abs=1e-6)
        assert scores["channels"][name]["dice"] == pytest.approx(result[name]["dice"], abs=1e-6)
    # the keys tests and exports read stay: set_jaccard (now the official overall) and set_jaccard_<attribute>
    assert summary["set_level"]["set_jaccard"] == pytest.approx(result["overall"], abs=1e-6)
    assert summary["set_level"]["set_jaccard_streaks"] == 1.0
    assert json.loads((tmp_path / "summary.json").read_text())["set_scores"]["channels"].keys() == set(ATTRIBUTES)
    md = (tmp_path / "summary.md").read_text()
    assert f"| **overall** (micro-average, the official score) | {result['overall']:.4f} |" in md
    assert f"| mean of the channels | {scores['mean_jaccard']:.4f} |" in md
    assert f"| pigment_network | {result['pigment_network']['jaccard']:.4f} |" in md
    with (tmp_path / "per_image.csv").open(newline="") as f:
        assert len(list(csv.DictReader(f))) == len(SIZES)
