"""Tests for isic_monai.metrics: hand-computed values, MONAI/Ignite integration and a 2-process gloo run."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from isic_monai import ATTRIBUTES
from isic_monai.metrics import (
    ConfusionCountsMetric,
    ConfusionMatrix,
    PerChannelDice,
    PerChannelJaccard,
    PerImageMetric,
    PerImageMetricHandler,
    SetJaccard,
    SetJaccardMetric,
    ThresholdedJaccard,
    ThresholdedJaccardMetric,
    accuracy,
    confusion_counts,
    confusion_matrix,
    dice,
    jaccard,
    mean_thresholded_jaccard,
    measure_from_counts,
    pixel_set_jaccard,
    precision,
    sensitivity,
    set_jaccard,
    set_scores,
    specificity,
    thresholded_jaccard,
)

# ---------------------------------------------------------------------------------------------------------------
# Hand-worked 4×4 example, four channels of one image.
#
# channel 0 (partial overlap)         channel 1: both empty
#   pred        truth
#   1 1 0 0     0 1 1 0               channel 2: truth empty, prediction has one pixel at (3, 3)
#   1 1 0 0     0 1 1 0
#   0 0 0 0     0 0 0 0               channel 3: truth is the whole image, prediction the top three rows
#   0 0 0 0     0 0 0 0
#
# counts (TP, FP, FN, TN):
#   ch0: TP = 2 ((0,1), (1,1)), FP = 2 ((0,0), (1,0)), FN = 2 ((0,2), (1,2)), TN = 16 - 6 = 10
#   ch1: (0, 0, 0, 16)
#   ch2: (0, 1, 0, 15)
#   ch3: (12, 0, 4, 0)
# measures:        dice             jaccard        accuracy   sensitivity     specificity     precision
#   ch0: 2*2/(4+2+2)=0.5       2/6=1/3        12/16=.75    2/4=.5        10/12=5/6        2/4=.5
#   ch1: 0/0 -> 1              0/0 -> 1       16/16=1      0/0 -> 1      16/16=1          0/0 -> 1
#   ch2: 0/1 = 0               0/1 = 0        15/16        0/0 -> 1      15/16            0/1 = 0
#   ch3: 24/28=6/7             12/16=.75      12/16=.75    12/16=.75     0/0 -> 1         12/12=1
# ---------------------------------------------------------------------------------------------------------------


def _example() -> tuple[np.ndarray, np.ndarray]:
    pred = np.zeros((4, 4, 4), dtype=np.uint8)
    truth = np.zeros((4, 4, 4), dtype=np.uint8)
    pred[0, :2, :2] = 1
    truth[0, :2, 1:3] = 1
    pred[2, 3, 3] = 1
    truth[3] = 1
    pred[3, :3] = 1
    return pred, truth


def test_confusion_counts_hand_example():
    pred, truth = _example()
    counts = confusion_counts(pred, truth)
    assert counts.shape == (4, 4)
    np.testing.assert_array_equal(counts, [[2, 2, 2, 10], [0, 0, 0, 16], [0, 1, 0, 15], [12, 0, 4, 0]])
    # batched input gives a batch axis; {0, 255} masks and torch tensors count the same
    batched = confusion_counts(torch.as_tensor(pred[None] * 255), torch.as_tensor(truth[None] * 255))
    np.testing.assert_array_equal(batched[0], counts)


def test_measures_hand_example_empty_one():
    pred, truth = _example()
    np.testing.assert_allclose(dice(pred, truth), [0.5, 1.0, 0.0, 6 / 7])
    np.testing.assert_allclose(jaccard(pred, truth), [1 / 3, 1.0, 0.0, 0.75])
    np.testing.assert_allclose(accuracy(pred, truth), [0.75, 1.0, 15 / 16, 0.75])
    np.testing.assert_allclose(sensitivity(pred, truth), [0.5, 1.0, 1.0, 0.75])
    np.testing.assert_allclose(specificity(pred, truth), [5 / 6, 1.0, 15 / 16, 1.0])
    np.testing.assert_allclose(precision(pred, truth), [0.5, 1.0, 0.0, 1.0])


def test_measures_hand_example_empty_nan_and_zero():
    pred, truth = _example()
    # only the 0/0 entries change: ch1 dice/jaccard/sensitivity/precision, ch2 sensitivity, ch3 specificity
    np.testing.assert_allclose(dice(pred, truth, empty="nan"), [0.5, np.nan, 0.0, 6 / 7])
    np.testing.assert_allclose(jaccard(pred, truth, empty="nan"), [1 / 3, np.nan, 0.0, 0.75])
    np.testing.assert_allclose(sensitivity(pred, truth, empty="nan"), [0.5, np.nan, np.nan, 0.75])
    np.testing.assert_allclose(specificity(pred, truth, empty="nan"), [5 / 6, 1.0, 15 / 16, np.nan])
    np.testing.assert_allclose(precision(pred, truth, empty="zero"), [0.5, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(accuracy(pred, truth, empty="nan"), [0.75, 1.0, 15 / 16, 0.75])
    # aliases and bad names
    np.testing.assert_allclose(measure_from_counts(confusion_counts(pred, truth), "iou"), [1 / 3, 1.0, 0.0, 0.75])
    with pytest.raises(ValueError):
        measure_from_counts(confusion_counts(pred, truth), "hausdorff")
    with pytest.raises(ValueError):
        dice(pred, truth, empty="maybe")


def test_all_background_image():
    # an all-background image predicted all background: every measure is 1 (accuracy/specificity 16/16)
    z = np.zeros((1, 4, 4))
    for fn in (dice, jaccard, accuracy, sensitivity, specificity, precision):
        assert fn(z, z)[0] == 1.0
    assert math.isnan(dice(z, z, empty="nan")[0])
    assert accuracy(z, z, empty="nan")[0] == 1.0


def test_counts_come_from_monai_reordered_and_exact_in_chunks(monkeypatch):
    from monai.metrics import get_confusion_matrix

    import isic_monai.metrics.functional as functional
    from isic_monai.metrics import COUNT_FIELDS, confusion_counts_torch, from_monai_confusion

    pred, truth = _example()
    monai_matrix = get_confusion_matrix(torch.as_tensor(pred[None]), torch.as_tensor(truth[None]))  # [TP, FP, TN, FN]
    np.testing.assert_array_equal(monai_matrix[0, 0].numpy(), [2, 2, 10, 2])
    counts = from_monai_confusion(monai_matrix)
    assert counts.dtype == torch.int64 and COUNT_FIELDS == ("tp", "fp", "fn", "tn")
    np.testing.assert_array_equal(counts[0].numpy(), confusion_counts(pred, truth))
    # images longer than float32's exact range are counted in padded chunks: force 7-pixel chunks on 16 pixels
    monkeypatch.setattr(functional, "_FLOAT32_EXACT", 7)
    chunked = confusion_counts_torch(torch.as_tensor(pred[None] * 255), torch.as_tensor(truth[None] * 255))
    np.testing.assert_array_equal(chunked[0].numpy(), [[2, 2, 2, 10], [0, 0, 0, 16], [0, 1, 0, 15], [12, 0, 4, 0]])


def test_measure_from_counts_without_tn():
    # the (TP, FP, FN) counts of the threshold candidates give the same Dice/Jaccard/sensitivity/precision
    pred, truth = _example()
    counts = confusion_counts(pred, truth)
    for name in ("dice", "jaccard", "sensitivity", "precision"):
        np.testing.assert_allclose(measure_from_counts(counts[:, :3], name), measure_from_counts(counts, name))
    for name in ("accuracy", "specificity"):
        with pytest.raises(ValueError, match="needs counts"):
            measure_from_counts(counts[:, :3], name)


def test_confusion_matrix_layout():
    pred, truth = _example()
    cm = confusion_matrix(pred, truth)
    assert cm.shape == (4, 2, 2)
    # rows truth, columns prediction: [[TN, FP], [FN, TP]]
    np.testing.assert_array_equal(cm[0], [[10, 2], [2, 2]])
    np.testing.assert_array_equal(cm[3], [[0, 0], [4, 12]])
    assert confusion_matrix(pred[None], truth[None]).shape == (1, 4, 2, 2)


def _mask_with(n_true: int, n_pred: int, n_overlap: int, size: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """One-channel 5×5 masks with given truth, prediction and overlap pixel counts."""
    t = np.zeros(size, dtype=np.uint8)
    p = np.zeros(size, dtype=np.uint8)
    t[:n_true] = 1
    start = n_true - n_overlap
    p[start : start + n_pred] = 1
    return p.reshape(1, 5, 5), t.reshape(1, 5, 5)


def test_thresholded_jaccard_below_at_above():
    # JI = 13/20 = 0.65 exactly (truth 13 px, prediction 20 px containing them): kept
    p, t = _mask_with(13, 20, 13)
    assert thresholded_jaccard(p, t)[0] == pytest.approx(0.65)
    # JI = 12/21 = 0.5714 < 0.65 (truth 13, prediction 20 overlapping 12): set to 0
    p2, t2 = _mask_with(13, 20, 12)
    assert jaccard(p2, t2)[0] == pytest.approx(12 / 21)
    assert thresholded_jaccard(p2, t2)[0] == 0.0
    # JI = 10/10 = 1
    p3, t3 = _mask_with(10, 10, 10)
    assert thresholded_jaccard(p3, t3)[0] == 1.0
    # ISIC 2018 Task 1 score of the three images: (0.65 + 0 + 1) / 3 = 0.55
    preds, truths = [p, p2, p3], [t, t2, t3]
    assert mean_thresholded_jaccard(preds, truths) == pytest.approx(1.65 / 3)
    # per-image mean Jaccard would be (0.65 + 0.5714 + 1) / 3 = 0.7405: a different number
    assert jaccard(np.stack(preds), np.stack(truths)).mean() == pytest.approx((0.65 + 12 / 21 + 1) / 3)


def test_set_jaccard_hand_example():
    # image A: (TP, FP, FN) = (2, 2, 2) (channel 0 of the 4×4 example); image B: (12, 0, 4) (channel 3)
    # raw pixels: ΣTP = 14, ΣFP = 2, ΣFN = 6 -> 14 / 22 = 0.636; per-image mean = (1/3 + 3/4) / 2 = 0.5417
    pred, truth = _example()
    preds = [pred[[0, 1]], pred[[3, 1]]]  # channel 1 is empty everywhere -> NaN (raw) or 1 (official)
    truths = [truth[[0, 1]], truth[[3, 1]]]
    per_channel, mean = pixel_set_jaccard(preds, truths)
    assert per_channel[0] == pytest.approx(14 / 22)
    assert math.isnan(per_channel[1])
    assert mean == pytest.approx(14 / 22)
    per_channel, mean = pixel_set_jaccard(preds, truths, empty="one")
    assert mean == pytest.approx((14 / 22 + 1) / 2)
    # everything empty: NaN
    z = np.zeros((2, 3, 4, 4))
    assert math.isnan(pixel_set_jaccard(z, z)[1])
    # official: both images have 16 pixels, so normalising changes no ratio; the empty channel scores 1
    per_channel, mean = set_jaccard(preds, truths)
    np.testing.assert_allclose(per_channel, [14 / 22, 1.0])
    assert mean == pytest.approx((14 / 22 + 1) / 2)
    assert set_jaccard(z, z)[1] == 1.0


def test_set_jaccard_random_against_numpy():
    rng = np.random.default_rng(0)
    preds = rng.random((7, 5, 16, 12)) > 0.6
    truths = rng.random((7, 5, 16, 12)) > 0.7
    per_channel, mean = set_jaccard(list(preds), list(truths))
    inter = (preds & truths).sum(axis=(0, 2, 3))
    union = (preds | truths).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(per_channel, inter / union)
    assert mean == pytest.approx(float(np.mean(inter / union)))


# ------------------------------------------------------------------------------------- cumulative (MONAI) metrics


def test_cumulative_metrics_match_functional_and_accept_lists():
    rng = np.random.default_rng(1)
    preds = torch.as_tensor(rng.random((6, 5, 8, 8)) > 0.5).float()
    labels = torch.as_tensor(rng.random((6, 5, 8, 8)) > 0.8).float()
    labels[2, 1] = 0  # an empty truth, predicted empty
    preds[2, 1] = 0
    ref_per_channel, ref_mean = set_jaccard(preds.numpy(), labels.numpy())
    ref_overall = set_scores(preds.numpy(), labels.numpy()).overall

    m_batch, m_list = SetJaccardMetric(), SetJaccardMetric()
    m_batch(preds[:4], labels[:4])
    m_batch(preds[4:], labels[4:])
    m_list(list(preds), list(labels))  # decollated: a list of C×H×W tensors
    for m in (m_batch, m_list):
        value, per_channel = m.aggregate()
        np.testing.assert_allclose(per_channel.numpy(), ref_per_channel)
        assert float(value) == pytest.approx(ref_overall)  # the official overall (micro-average) by default
        assert m.scores().mean_jaccard == pytest.approx(ref_mean)
        assert m.get_details().shape == (6, 5)

    dice_metric = PerImageMetric("dice")
    dice_metric(preds, labels)
    ref = dice(preds.numpy(), labels.numpy())
    mean, per_channel = dice_metric.aggregate()
    np.testing.assert_allclose(per_channel.numpy(), ref.mean(0))
    assert float(mean) == pytest.approx(ref.mean())
    assert dice_metric.get_details()[2, 1] == 1.0

    nan_metric = PerImageMetric("dice", empty="nan", channel=1)
    nan_metric(preds, labels)
    mean, per_channel = nan_metric.aggregate()
    assert per_channel.shape == (1,)
    assert float(mean) == pytest.approx(np.nanmean(dice(preds.numpy(), labels.numpy(), empty="nan")[:, 1]))

    tj = ThresholdedJaccardMetric()
    tj(preds, labels)
    assert float(tj.aggregate()[0]) == pytest.approx(mean_thresholded_jaccard(preds.numpy(), labels.numpy()))

    cc = ConfusionCountsMetric()
    cc(preds, labels)
    np.testing.assert_array_equal(cc.aggregate().numpy(), confusion_counts(preds.numpy(), labels.numpy()).sum(0))

    cc.reset()
    with pytest.raises(RuntimeError):
        cc.aggregate()


# ------------------------------------------------------------------------------------------------ Ignite handlers


def _dataset(n: int = 6, channels: int = 5, seed: int = 2) -> list[dict]:
    from monai.data import MetaTensor

    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        prob = rng.random((channels, 8, 8)).astype(np.float32)
        label = (rng.random((channels, 8, 8)) > 0.6).astype(np.float32)
        label[:, :4] = (prob[:, :4] > 0.5).astype(np.float32)  # half the pixels agree with the 0.5 prediction
        if i == 0 and channels > 1:
            label[1] = 0  # negative network absent in image 0 ...
            prob[1] = 0.1  # ... and predicted absent
        items.append(
            {
                "image": MetaTensor(torch.as_tensor(prob), meta={"filename_or_obj": f"/data/ISIC_{i:07d}.jpg"}),
                "label": torch.as_tensor(label),
            }
        )
    return items


def _evaluator(items: list[dict], tmp_path: Path, extra_handlers: list | None = None, batch_size: int = 4):
    from monai.data import DataLoader
    from monai.engines import SupervisedEvaluator
    from monai.handlers import MetricsSaver, StatsHandler, TensorBoardStatsHandler, from_engine
    from monai.transforms import AsDiscreted, Compose, CopyItemsd

    names = list(ATTRIBUTES)
    pl = from_engine(["pred", "label"])
    tb = TensorBoardStatsHandler(log_dir=str(tmp_path / "tb"), iteration_log=False, output_transform=lambda x: None)
    handlers = [
        StatsHandler(name="isic_metrics_test", iteration_log=False, output_transform=lambda x: None),
        tb,
        MetricsSaver(
            save_dir=str(tmp_path / "csv"),
            metrics="*",
            metric_details="*",
            batch_transform=lambda batch: [b["image"].meta for b in batch],
            summary_ops="*",
        ),
        *(extra_handlers or []),
    ]
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(items, batch_size=batch_size, shuffle=False, num_workers=0),
        network=torch.nn.Identity(),
        postprocessing=Compose([CopyItemsd(keys="pred", names="prob"), AsDiscreted(keys="pred", threshold=0.5)]),
        key_val_metric={"val_set_jaccard": SetJaccard(channel_names=names, output_transform=pl)},
        additional_metrics={
            "val_dice": PerChannelDice(channel_names=names, output_transform=pl),
            "val_jaccard": PerChannelJaccard(channel_names=names, output_transform=pl),
            "val_precision": PerImageMetricHandler("precision", channel_names=names, output_transform=pl),
            "val_thr_jaccard": ThresholdedJaccard(channel_names=names, output_transform=pl),
            "val_streaks_dice": PerChannelDice(channel_names=names, channel=2, output_transform=pl),
            "val_cm": ConfusionMatrix(channel_names=names, output_transform=pl),
        },
        val_handlers=handlers,
        amp=False,
    )
    return evaluator, tb


def test_handlers_in_supervised_evaluator(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    items = _dataset()
    preds = np.stack([(it["image"].numpy() >= 0.5) for it in items])
    labels = np.stack([it["label"].numpy() for it in items])
    evaluator, tb = _evaluator(items, tmp_path)
    evaluator.run()
    tb.close()
    m = evaluator.state.metrics

    ref_set, ref_set_mean = set_jaccard(preds, labels)
    ref_overall = set_scores(preds, labels).overall
    assert m["val_set_jaccard"] == pytest.approx(ref_overall)  # the official overall
    assert m["val_set_jaccard_overall"] == pytest.approx(ref_overall)
    assert m["val_set_jaccard_mean"] == pytest.approx(ref_set_mean)
    assert evaluator.state.best_metric == pytest.approx(ref_overall)  # usable as the key metric
    ref_dice = dice(preds, labels)
    ref_jac = jaccard(preds, labels)
    assert m["val_dice"] == pytest.approx(ref_dice.mean())
    assert m["val_jaccard"] == pytest.approx(ref_jac.mean())
    assert m["val_precision"] == pytest.approx(precision(preds, labels).mean())
    assert m["val_thr_jaccard"] == pytest.approx(mean_thresholded_jaccard(preds, labels))
    assert m["val_streaks_dice"] == pytest.approx(ref_dice[:, 2].mean())
    assert m["val_streaks_dice_streaks"] == pytest.approx(ref_dice[:, 2].mean())
    for c, name in enumerate(ATTRIBUTES):
        assert m[f"val_set_jaccard_{name}"] == pytest.approx(ref_set[c])
        assert m[f"val_dice_{name}"] == pytest.approx(ref_dice[:, c].mean())
        assert m[f"val_jaccard_{name}"] == pytest.approx(ref_jac[:, c].mean())
        assert m[f"val_thr_jaccard_{name}"] == pytest.approx(thresholded_jaccard(preds, labels)[:, c].mean())
    counts = confusion_counts(preds, labels).sum(0)
    assert m["val_cm_streaks_tp"] == counts[2, 0]
    assert m["val_cm_globules_tn"] == counts[4, 3]
    assert m["val_cm_pigment_network_sensitivity"] == pytest.approx(counts[0, 0] / (counts[0, 0] + counts[0, 2]))

    # per-image details: N×C tensors
    details = evaluator.state.metric_details
    assert tuple(details["val_set_jaccard"].shape) == (6, 5)
    np.testing.assert_allclose(details["val_dice"].numpy(), ref_dice, rtol=1e-6)
    assert details["val_dice"][0, 1] == 1.0  # empty truth, empty prediction
    assert tuple(details["val_streaks_dice"].shape) == (6, 1)
    assert tuple(details["val_cm_tp"].shape) == (6, 5)

    # MetricsSaver: <name>_raw.csv with one row per image, named by file
    with open(tmp_path / "csv" / "val_dice_raw.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["filename", "class0", "class1", "class2", "class3", "class4", "mean"]
    assert [r[0] for r in rows[1:]] == [f"/data/ISIC_{i:07d}.jpg" for i in range(6)]
    np.testing.assert_allclose([float(v) for v in rows[1][1:6]], ref_dice[0], atol=1e-4)
    assert (tmp_path / "csv" / "val_set_jaccard_raw.csv").is_file()
    assert (tmp_path / "csv" / "val_thr_jaccard_summary.csv").is_file()
    metrics_csv = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "val_set_jaccard_pigment_network," in metrics_csv

    # StatsHandler logged every attribute
    logged = capsys.readouterr()
    assert "val_set_jaccard_milia_like_cyst:" in logged.out + logged.err

    # TensorBoard: one scalar series per attribute
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for name in ATTRIBUTES:
        assert f"val_set_jaccard_{name}" in tags
        assert f"val_dice_{name}" in tags
    assert acc.Scalars("val_set_jaccard_streaks")[0].value == pytest.approx(ref_set[2], rel=1e-6)

    # a second run resets the buffers and gives the same numbers
    evaluator.run(global_epoch=2)
    assert evaluator.state.metrics["val_set_jaccard"] == pytest.approx(ref_overall)
    assert tuple(evaluator.state.metric_details["val_dice"].shape) == (6, 5)


def test_per_channel_handlers_fix_the_measure():
    from isic_monai.metrics import ISIC2018_JACCARD_CUTOFF

    positional = PerChannelDice(["lesion"], 0, "nan")  # PerImageMetricHandler's arguments after `measure`
    assert isinstance(positional, PerImageMetricHandler)
    assert positional.metric_fn.measure == "dice" and positional.metric_fn.channel == 0
    assert positional.metric_fn.empty == "nan" and positional.channel_names == ["lesion"]
    assert PerChannelJaccard(save_details=False).metric_fn.measure == "jaccard"
    with pytest.raises(TypeError):
        PerChannelDice(measure="jaccard")
    assert ThresholdedJaccard().metric_fn.threshold == ISIC2018_JACCARD_CUTOFF == 0.65


def test_channel_name_mismatch_raises(tmp_path):
    from ignite.engine import Engine

    items = _dataset(n=2, channels=2)
    engine = Engine(lambda e, b: (b["image"] >= 0.5, b["label"]))
    SetJaccard(channel_names=["lesion"]).attach(engine, "sj")
    with pytest.raises(ValueError, match="channel names"):
        engine.run([{"image": it["image"][None], "label": it["label"][None]} for it in items])


def test_plain_ignite_engine_without_names():
    from ignite.engine import Engine

    items = _dataset(n=3, channels=1)
    engine = Engine(lambda e, b: (b["image"] >= 0.5, b["label"]))
    PerChannelJaccard().attach(engine, "jac")
    engine.run([{"image": it["image"][None], "label": it["label"][None]} for it in items])
    assert set(engine.state.metrics) == {"jac", "jac_0"}
    assert engine.state.metrics["jac"] == engine.state.metrics["jac_0"]


# ------------------------------------------------------------------------------------ 2-process gloo (DDP) run


def _shard_data(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    prob = torch.as_tensor(rng.random((8, 5, 6, 6)), dtype=torch.float32)
    label = torch.as_tensor(rng.random((8, 5, 6, 6)) > 0.7, dtype=torch.float32)
    label[:, 3] = 0  # milia-like cyst absent from the whole set
    prob[:, 3] = prob[:, 3] * 0.4  # and never predicted at 0.5
    return prob, label


def _compute_all(prob: torch.Tensor, label: torch.Tensor) -> dict:
    """The same computations for one process (all data) or one rank (its shard)."""
    from ignite.engine import Engine, Events

    from isic_monai.metrics import ThresholdSelectionHandler

    pred = (prob >= 0.5).float()
    out = {}
    sj = SetJaccardMetric()
    sj(list(pred[:2]), list(label[:2]))  # a decollated batch and a tensor batch
    sj(pred[2:], label[2:])
    out["set_mean"], out["set_per_channel"] = (t.clone() for t in sj.aggregate())
    out["set_details"] = sj.get_details()
    dm = PerImageMetric("dice", empty="nan")
    dm(pred, label)
    out["dice_mean"], out["dice_per_channel"] = dm.aggregate()
    tj = ThresholdedJaccardMetric()
    tj(pred, label)
    out["thr_mean"] = tj.aggregate()[0]

    batches = [{"prob": prob[i : i + 2], "label": label[i : i + 2]} for i in range(0, len(prob), 2)]
    engine = Engine(lambda e, b: b)
    handler = ThresholdSelectionHandler("unused.json", ATTRIBUTES, output_transform=lambda o: (o["prob"], o["label"]))
    engine.add_event_handler(Events.EPOCH_STARTED, handler.reset)  # compute() is called below, on every rank
    engine.add_event_handler(Events.ITERATION_COMPLETED, handler.update)
    sjh = SetJaccard(channel_names=ATTRIBUTES, output_transform=lambda o: ((o["prob"] >= 0.5).float(), o["label"]))
    sjh.attach(engine, "sj")
    engine.run(batches)
    out["handler_thresholds"], out["handler_scores"] = handler.compute()
    out["handler_n"] = handler.n_images
    out["engine_metrics"] = dict(engine.state.metrics)
    return out


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        prob, label = _shard_data()
        shard = slice(0, 5) if rank == 0 else slice(5, 8)  # uneven shards: 5 and 3 images
        result = _compute_all(prob[shard], label[shard])
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_matches_single_process(tmp_path):
    import torch.multiprocessing as mp

    prob, label = _shard_data()
    single = _compute_all(prob, label)
    assert float(single["set_per_channel"][3]) == 1.0  # empty over the set: 1, as the official scorer scores it

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "pg_init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        r = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert float(r["set_mean"]) == pytest.approx(float(single["set_mean"]))
        np.testing.assert_allclose(r["set_per_channel"].numpy(), single["set_per_channel"].numpy())
        # gathered details are in rank order (rank 0's 5 images, then rank 1's 3), like MetricsSaver's file names
        np.testing.assert_allclose(r["set_details"].numpy(), single["set_details"].numpy())
        np.testing.assert_allclose(r["dice_per_channel"].numpy(), single["dice_per_channel"].numpy())
        assert float(r["thr_mean"]) == pytest.approx(float(single["thr_mean"]))
        assert r["handler_thresholds"] == single["handler_thresholds"]
        np.testing.assert_allclose(r["handler_scores"], single["handler_scores"])
        assert r["handler_n"] == 8
        for k, v in single["engine_metrics"].items():
            assert r["engine_metrics"][k] == pytest.approx(v, nan_ok=True), k


def test_bundle_config_instantiates_handlers(tmp_path):
    from monai.bundle import ConfigParser

    config = {
        "bundle_root": str(tmp_path),
        "channel_names": "$list(isic_monai.ATTRIBUTES)",
        "imports": ["$import isic_monai"],
        "key_metric": {
            "val_set_jaccard": {
                "_target_": "isic_monai.metrics.SetJaccard",
                "channel_names": "@channel_names",
                "output_transform": "$monai.handlers.from_engine(['pred', 'label'])",
            }
        },
        "additional_metrics": {
            "val_dice": {
                "_target_": "isic_monai.metrics.PerChannelDice",
                "channel_names": "@channel_names",
                "output_transform": "$monai.handlers.from_engine(['pred', 'label'])",
            },
            "val_thr_jaccard": {"_target_": "isic_monai.metrics.ThresholdedJaccard", "channel_names": ["lesion"]},
        },
        "threshold_handler": {
            "_target_": "isic_monai.metrics.ThresholdSelectionHandler",
            "output_path": "$@bundle_root + '/models/thresholds.json'",
            "channel_names": "@channel_names",
        },
        "post": {
            "_target_": "isic_monai.metrics.ApplyThresholdsd",
            "keys": "pred",
            "thresholds": "$@bundle_root + '/models/thresholds.json'",
        },
    }
    parser = ConfigParser(config)
    assert isinstance(parser.get_parsed_content("key_metric")["val_set_jaccard"], SetJaccard)
    assert isinstance(parser.get_parsed_content("additional_metrics")["val_dice"], PerChannelDice)
    assert parser.get_parsed_content("threshold_handler").channel_names == list(ATTRIBUTES)
    with pytest.warns(UserWarning, match="not found"):
        assert parser.get_parsed_content("post").op.thresholds is None


def test_model_selection_and_evaluation_score_empty_truths_alike():
    """val_mean_dice / val_mean_jaccard (train.yaml, model selection) and the evaluation's dice / jaccard follow one
    rule on an empty truth (docs/metrics.md, "Empty masks"): empty prediction 1, anything predicted 0."""
    from ignite.engine import Engine
    from monai.bundle import ConfigParser

    from isic_monai.metrics import evaluation_metrics

    parser = ConfigParser()
    parser.read_config("bundle/configs/train.yaml")
    pairs = [  # (prediction, truth): a hit, an empty/empty image, a false positive on an empty truth
        (torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4)),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)),
        (torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)),
    ]
    values = {}
    for source, name, handler in (
        ("validation", "dice", parser.get_parsed_content("validate#key_metric#val_mean_dice")),
        ("validation", "jaccard", parser.get_parsed_content("validate#additional_metrics#val_mean_jaccard")),
        *[("evaluation", n, h) for n, h in evaluation_metrics(
            ["dice", "jaccard"], ["lesion"], lambda o: (o["pred"], o["label"])).items()],
    ):
        engine = Engine(lambda e, b: {"pred": b[0], "label": b[1]})
        handler.attach(engine, f"{source}_{name}")
        engine.run(pairs)
        values[source, name] = engine.state.metrics[f"{source}_{name}"]
    for name in ("dice", "jaccard"):
        assert values["validation", name] == pytest.approx(2 / 3)  # (1 + 1 + 0) / 3, nothing ignored
        assert values["validation", name] == pytest.approx(values["evaluation", name])
