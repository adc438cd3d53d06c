"""Threshold selection: counts, selection, thresholds.json, ApplyThresholdsd (transforms), the handler (handlers)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import isic_monai.metrics
from isic_monai.metrics import (
    DEFAULT_CANDIDATES,
    SetJaccard,
    evaluate_thresholds,
    load_thresholds,
    save_thresholds,
    select_thresholds,
    set_jaccard,
    threshold_counts,
)
from isic_monai.metrics.handlers import ThresholdSelectionHandler
from isic_monai.metrics.thresholds import pick_thresholds, score_threshold_counts
from isic_monai.transforms import ApplyThresholds, ApplyThresholdsd


def test_moved_names_stay_importable_from_metrics():
    # bundle configs name isic_monai.metrics.ApplyThresholdsd and isic_monai.metrics.ThresholdSelectionHandler
    assert isic_monai.metrics.ApplyThresholds is ApplyThresholds
    assert isic_monai.metrics.ApplyThresholdsd is ApplyThresholdsd
    assert isic_monai.metrics.ThresholdSelectionHandler is ThresholdSelectionHandler


def test_default_candidates():
    assert len(DEFAULT_CANDIDATES) == 17
    assert DEFAULT_CANDIDATES[0] == 0.1 and DEFAULT_CANDIDATES[8] == 0.5 and DEFAULT_CANDIDATES[-1] == 0.9


def test_threshold_counts_hand_example():
    # prob  0.2 0.6     label 0 0      prediction is prob >= t
    #       0.5 0.8           1 1
    # t=0.3: predicted {0.6, 0.5, 0.8} -> TP 2 (0.5, 0.8), FP 1 (0.6), FN 0 -> Jaccard 2/3
    # t=0.5: 0.5 >= 0.5 is predicted too -> same as t=0.3                 -> Jaccard 2/3
    # t=0.7: predicted {0.8}            -> TP 1, FP 0, FN 1 (0.5)          -> Jaccard 1/2
    prob = np.array([[[0.2, 0.6], [0.5, 0.8]]])
    label = np.array([[[0, 0], [1, 1]]])
    counts = threshold_counts(prob, label, [0.3, 0.5, 0.7])
    assert counts.shape == (1, 3, 3)
    np.testing.assert_array_equal(counts[0].numpy(), [[2, 1, 0], [2, 1, 0], [1, 0, 1]])
    scores = evaluate_thresholds([prob], [label], [0.3, 0.5, 0.7])
    np.testing.assert_allclose(scores, [[2 / 3, 2 / 3, 1 / 2]])
    # tie between 0.3 and 0.5: the one closest to the default 0.5 wins
    assert select_thresholds([prob], [label], [0.3, 0.5, 0.7]) == [0.5]
    assert pick_thresholds(scores, [0.3, 0.5, 0.7], default=0.2) == [0.3]


def test_threshold_counts_random_against_brute_force():
    rng = np.random.default_rng(0)
    prob = rng.random((3, 2, 9, 7))
    prob[0, 0, 0, :3] = [0.1, 0.5, 0.9]  # exact candidate values
    label = rng.random((3, 2, 9, 7)) > 0.6
    counts = threshold_counts(torch.as_tensor(prob), torch.as_tensor(label)).numpy()
    assert counts.shape == (3, 2, 17, 3)
    for k, t in enumerate(DEFAULT_CANDIDATES):
        pred = prob >= t
        np.testing.assert_array_equal(counts[:, :, k, 0], (pred & label).sum(axis=(2, 3)))
        np.testing.assert_array_equal(counts[:, :, k, 1], (pred & ~label).sum(axis=(2, 3)))
        np.testing.assert_array_equal(counts[:, :, k, 2], (~pred & label).sum(axis=(2, 3)))
        # the set-level criterion equals the set-level Jaccard of the binarised predictions
        set_scores = score_threshold_counts(counts, "set_jaccard")[:, k]
        np.testing.assert_allclose(set_scores, set_jaccard(pred, label)[0])


def _constructed(seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Three channels with known best thresholds.

    channel 0: positives have prob in [0.36, 1], negatives in [0, 0.34] -> only t = 0.35 separates them (JI = 1);
               t = 0.30 adds negatives, t = 0.40 drops positives.
    channel 1: positives in [0.72, 1], negatives in [0, 0.68] -> t = 0.70.
    channel 2: no positives, probabilities below 0.3 -> every t >= 0.3 predicts nothing (score 1, the empty rule);
               the tie goes to the candidate closest to 0.5.
    """
    rng = np.random.default_rng(seed)
    probs, labels = [], []
    for _ in range(4):
        label = np.zeros((3, 16, 16), dtype=np.uint8)
        label[0, :8] = 1
        label[1, :, :5] = 1
        prob = np.empty((3, 16, 16))
        prob[0] = np.where(label[0], rng.uniform(0.36, 1.0, (16, 16)), rng.uniform(0.0, 0.34, (16, 16)))
        prob[1] = np.where(label[1], rng.uniform(0.72, 1.0, (16, 16)), rng.uniform(0.0, 0.68, (16, 16)))
        prob[2] = rng.uniform(0.0, 0.29, (16, 16))
        probs.append(prob)
        labels.append(label)
    return probs, labels


def test_select_thresholds_recovers_known_best():
    probs, labels = _constructed()
    assert select_thresholds(probs, labels) == [0.35, 0.7, 0.5]
    for criterion in ("set_dice", "mean_jaccard", "mean_dice", "thresholded_jaccard"):
        assert select_thresholds(probs, labels, criterion=criterion) == [0.35, 0.7, 0.5], criterion
    scores = evaluate_thresholds(probs, labels)
    assert scores[0, DEFAULT_CANDIDATES.index(0.35)] == 1.0
    assert scores[0, DEFAULT_CANDIDATES.index(0.3)] < 1.0
    # a batch-first array works too
    assert select_thresholds(np.stack(probs), np.stack(labels)) == [0.35, 0.7, 0.5]
    with pytest.raises(ValueError):
        select_thresholds(probs, labels, criterion="accuracy")
    with pytest.raises(ValueError):
        select_thresholds(probs, labels, candidates=[0.5, 0.3])


def test_save_and_load_thresholds(tmp_path):
    path = save_thresholds(
        tmp_path / "models" / "thresholds.json",
        [0.35, 0.7],
        ["pigment_network", "streaks"],
        extra={"epoch": 3},
        scores=[0.8, float("nan")],
    )
    doc = json.loads(path.read_text())
    assert doc == {
        "channel_names": ["pigment_network", "streaks"],
        "thresholds": [0.35, 0.7],
        "criterion": "set_jaccard",
        "scores": [0.8, None],
        "epoch": 3,
    }
    assert load_thresholds(path) == doc
    with pytest.raises(ValueError):
        save_thresholds(tmp_path / "x.json", [0.5], ["a", "b"])
    with pytest.raises(ValueError):
        save_thresholds(tmp_path / "x.json", [0.5], ["a"], extra={"thresholds": 1})
    (tmp_path / "bad.json").write_text(json.dumps({"channel_names": ["a"], "thresholds": [0.1, 0.2]}))
    with pytest.raises(ValueError):
        load_thresholds(tmp_path / "bad.json")


def test_apply_thresholds_list_path_default(tmp_path):
    from monai.data import MetaTensor
    from monai.transforms import Activationsd, Compose

    x = torch.tensor([[[0.2, 0.4]], [[0.4, 0.8]]])  # 2×1×2
    out = ApplyThresholdsd("pred", thresholds=[0.3, 0.5])({"pred": x})["pred"]
    torch.testing.assert_close(out, torch.tensor([[[0.0, 1.0]], [[0.0, 1.0]]]))
    # default 0.5 everywhere; ``>=`` like AsDiscrete
    torch.testing.assert_close(ApplyThresholds()(x), torch.tensor([[[0.0, 0.0]], [[0.0, 1.0]]]))
    torch.testing.assert_close(ApplyThresholds([0.4])(x), torch.tensor([[[0.0, 1.0]], [[1.0, 1.0]]]))
    # numpy in, numpy out
    assert isinstance(ApplyThresholds([0.3, 0.5])(x.numpy()), np.ndarray)

    path = save_thresholds(tmp_path / "thresholds.json", [0.1, 0.9], ["a", "b"])
    # after a sigmoid: logits 0 -> 0.5, 3 -> 0.95
    post = Compose([Activationsd(keys="pred", sigmoid=True), ApplyThresholdsd(keys="pred", thresholds=str(path))])
    logits = MetaTensor(torch.tensor([[[0.0, 3.0]], [[0.0, 3.0]]]), meta={"filename_or_obj": "a.jpg"})
    out = post({"pred": logits})["pred"]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "a.jpg"
    torch.testing.assert_close(out.as_tensor(), torch.tensor([[[1.0, 1.0]], [[0.0, 1.0]]]))

    with pytest.raises(ValueError, match="channel names"):
        ApplyThresholdsd("pred", thresholds=path, channel_names=["lesion", "b"])
    with pytest.raises(ValueError, match="3 thresholds"):
        ApplyThresholds([0.1, 0.2, 0.3])(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = ApplyThresholdsd("pred", thresholds=tmp_path / "missing.json", default=0.45)
    assert any("not found" in str(w.message) for w in caught)
    torch.testing.assert_close(t({"pred": x})["pred"], torch.tensor([[[0.0, 0.0]], [[0.0, 1.0]]]))


def _evaluator(items: list[dict], handler: ThresholdSelectionHandler):
    from monai.data import DataLoader
    from monai.engines import SupervisedEvaluator
    from monai.handlers import from_engine
    from monai.transforms import AsDiscreted, Compose, CopyItemsd

    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(items, batch_size=3, shuffle=False, num_workers=0),
        network=torch.nn.Identity(),
        postprocessing=Compose([CopyItemsd(keys="pred", names="prob"), AsDiscreted(keys="pred", threshold=0.5)]),
        key_val_metric={"val_set_jaccard": SetJaccard(output_transform=from_engine(["pred", "label"]))},
        val_handlers=[handler],
        amp=False,
    )


def test_threshold_selection_handler_writes_json_on_best_epoch(tmp_path):
    from monai.data import DataLoader

    probs, labels = _constructed()
    items = [
        {"image": torch.as_tensor(p, dtype=torch.float32), "label": torch.as_tensor(y)}
        for p, y in zip(probs, labels, strict=True)
    ]
    out = tmp_path / "models" / "thresholds.json"
    handler = ThresholdSelectionHandler(out, ["pigment_network", "streaks", "globules"])
    evaluator = _evaluator(items, handler)
    evaluator.run(global_epoch=1)
    doc = load_thresholds(out)
    assert doc["thresholds"] == [0.35, 0.7, 0.5]
    assert doc["scores"] == [1.0, 1.0, 1.0]
    assert doc["channel_names"] == ["pigment_network", "streaks", "globules"]
    assert doc["criterion"] == "set_jaccard" and doc["epoch"] == 1 and doc["n_images"] == 4
    assert doc["candidates"] == list(DEFAULT_CANDIDATES)

    # epoch 2 on worse data (labels flipped): not the best key-metric epoch -> the file is kept
    worse = [{"image": it["image"], "label": 1 - it["label"]} for it in items]
    evaluator.data_loader = DataLoader(worse, batch_size=3, shuffle=False, num_workers=0)
    evaluator.run(global_epoch=2)
    assert evaluator.state.best_metric_epoch == 1
    assert handler.thresholds != [0.35, 0.7, 0.5]  # computed, but not written
    assert load_thresholds(out)["epoch"] == 1

    # only_on_best=False writes every epoch; a per-image criterion uses per-image buffers
    every = ThresholdSelectionHandler(
        tmp_path / "every.json", ["a", "b", "c"], criterion="mean_dice", only_on_best=False
    )
    ev2 = _evaluator(items, every)
    ev2.run(global_epoch=1)
    assert load_thresholds(tmp_path / "every.json")["thresholds"] == [0.35, 0.7, 0.5]


def test_threshold_selection_handler_sigmoid_and_plain_engine(tmp_path):
    from ignite.engine import Engine

    probs, labels = _constructed()
    logits = [torch.logit(torch.as_tensor(p).clamp(1e-6, 1 - 1e-6)) for p in probs]
    engine = Engine(lambda e, b: b)
    handler = ThresholdSelectionHandler(
        tmp_path / "t.json", ["a", "b", "c"], output_transform=lambda o: (o["logits"], o["label"]), sigmoid=True
    )
    handler.attach(engine)
    engine.run(
        [
            {"logits": torch.stack(logits[:2]), "label": torch.as_tensor(np.stack(labels[:2]))},
            {"logits": torch.stack(logits[2:]), "label": torch.as_tensor(np.stack(labels[2:]))},
        ]
    )
    assert load_thresholds(tmp_path / "t.json")["thresholds"] == [0.35, 0.7, 0.5]


def _ring_case() -> tuple[np.ndarray, np.ndarray]:
    """A lesion whose core is sure (0.8) and whose true rim is not (0.3), in a background of 0.3 specks.

    Without clean-up a low threshold also takes every speck, so a threshold above 0.3 scores best; the bundle's
    clean-up (largest region, holes filled) drops the specks, so 0.3 (core and rim) scores best: selection must see
    the clean-up.
    """
    prob = np.full((1, 64, 64), 0.05, dtype=np.float32)
    label = np.zeros((1, 64, 64), dtype=np.uint8)
    label[0, 8:24, 8:24] = 1  # 256 pixels: at 0.8 the core alone, Jaccard 100 / 256 = 0.39
    prob[0, 8:24, 8:24] = 0.3
    prob[0, 11:21, 11:21] = 0.8
    prob[0, 30:64:2, 0:64:2] = 0.3  # 544 isolated specks: at 0.3 without clean-up, Jaccard 256 / 800 = 0.32
    return prob, label


def test_candidate_counts_without_clean_up_equal_the_histogram_counts():
    from isic_monai.metrics.thresholds import candidate_counts

    rng = np.random.default_rng(4)
    prob = rng.random((2, 13, 11)).astype(np.float32)
    label = rng.random((2, 13, 11)) > 0.6
    counts, conf = candidate_counts(prob, label)
    np.testing.assert_array_equal(counts.numpy(), threshold_counts(prob, label).numpy())
    assert conf.shape == (2, len(DEFAULT_CANDIDATES)) and bool(((conf >= 0) & (conf <= 1)).all())


def test_selection_sees_the_clean_up_inference_applies(tmp_path):
    from ignite.engine import Engine

    from isic_monai.transforms import CleanMasksd

    prob, label = _ring_case()
    chosen = {}
    for name, clean in (("plain", None), ("cleaned", CleanMasksd("pred"))):
        engine = Engine(lambda e, b: b)
        handler = ThresholdSelectionHandler(tmp_path / f"{name}.json", ["lesion"], criterion="mean_jaccard",
                                            output_transform=lambda o: (o["prob"], o["label"]), clean=clean,
                                            confidence_path=tmp_path / f"{name}_confidence.json")
        handler.attach(engine)
        engine.run([{"prob": torch.as_tensor(prob)[None], "label": torch.as_tensor(label)[None]}])
        chosen[name] = load_thresholds(tmp_path / f"{name}.json")
    # without clean-up: any threshold above the rim (ties go to the one nearest 0.5): the core alone
    assert chosen["plain"]["thresholds"] == [0.5] and chosen["plain"]["clean_up"] is False
    assert chosen["plain"]["scores"] == [pytest.approx(100 / 256)]
    assert chosen["cleaned"]["thresholds"] == [0.3] and chosen["cleaned"]["clean_up"] is True
    assert chosen["cleaned"]["scores"] == [1.0]  # core and rim, the specks removed: the truth exactly
    # the score recorded is the score of the mask inference makes at that threshold
    mask = CleanMasksd("pred")({"pred": ApplyThresholds([0.3])(torch.as_tensor(prob))})["pred"]
    np.testing.assert_array_equal(mask.numpy(), label.astype(np.float32))
    record = json.loads((tmp_path / "cleaned_confidence.json").read_text())
    assert record["thresholds"] == [0.3] and record["n_images"] == 1 and record["mean_jaccard"] == 1.0


def test_thresholds_applied_are_said_and_recorded(tmp_path, caplog):
    import logging

    from isic_monai.metrics.thresholds import write_applied

    path = save_thresholds(tmp_path / "thresholds.json", [0.3], ["lesion"])
    with caplog.at_level(logging.INFO, logger="isic_monai.transforms"):
        chosen = ApplyThresholdsd("pred", thresholds=str(path), channel_names=["lesion"])
    assert chosen.describe() == {"thresholds": [0.3], "source": str(path), "channel_names": ["lesion"]}
    assert str(path) in caplog.text and "[0.3]" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="isic_monai.transforms"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        missing = ApplyThresholdsd("pred", thresholds=str(tmp_path / "none.json"), channel_names=["a", "b"])
    assert missing.describe()["thresholds"] == [0.5, 0.5]
    assert "not found" in missing.describe()["source"] and "not found" in caplog.text
    assert any(r.levelname == "WARNING" for r in caplog.records)
    written = json.loads(write_applied(tmp_path / "report", missing.describe()).read_text())
    assert written["thresholds"] == [0.5, 0.5] and "none.json not found" in written["source"]


def test_a_file_holds_one_threshold_per_channel(tmp_path):
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"thresholds": [0.3]}))  # one value, no channel names
    with pytest.raises(ValueError, match="1 threshold\\(s\\) for the 5 channels"):
        ApplyThresholdsd("pred", thresholds=str(bare), channel_names=list("abcde"))
    # without channel names to check against, the file's single value still does not spread over five channels
    with pytest.raises(ValueError, match="1 thresholds for an input with 5 channels"):
        ApplyThresholds(str(bare))(torch.zeros(5, 2, 2))
    # a value given in a config (not a file) is one threshold for every channel, on purpose
    assert ApplyThresholds([0.3])(torch.full((5, 2, 2), 0.4)).sum() == 20


def test_a_trained_bundle_chooses_on_the_pipeline_its_evaluation_runs(tmp_path_factory):
    """One truth: the score thresholds.json records for its threshold is the evaluation's score at that threshold
    (same predictor: TTA, truth size, clean-up), and model.pt, thresholds.json and confidence.json name one epoch."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_runs import reported_run

    from isic_monai.bundle.checkpoint import checkpoint_epoch

    datalist, run, _ = reported_run(tmp_path_factory)
    doc = load_thresholds(run / "models" / "thresholds.json")
    n_validation = len(json.loads(Path(datalist).read_text())["validation"])
    assert doc["criterion"] == "mean_jaccard" and doc["clean_up"] is True and doc["n_images"] == n_validation
    epoch = checkpoint_epoch(run / "models" / "model.pt")
    assert epoch is not None and doc["epoch"] == epoch
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["n_images"] == n_validation
    assert summary["per_image"]["jaccard"]["mean"] == pytest.approx(doc["scores"][0], abs=1e-6)
    # the evaluation says which thresholds it applied and where from
    settings = json.loads((run / "eval" / "evaluation.json").read_text())["settings"]
    assert settings["thresholds_applied"]["thresholds"] == doc["thresholds"]
    assert settings["thresholds_applied"]["source"].endswith("thresholds.json")
    shipped = json.loads((run / "models" / "confidence.json").read_text())
    evaluated = json.loads((run / "eval" / "confidence.json").read_text())
    assert shipped["epoch"] == epoch and shipped["thresholds"] == doc["thresholds"]
    assert shipped["flag_below"] == evaluated["flag_below"] and shipped["n_images"] == evaluated["n_images"]
