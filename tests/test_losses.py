"""Tests for isic_monai.losses: SegmentationLoss against MONAI's own losses computed directly."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO_ROOT
from monai.bundle import ConfigParser
from monai.losses import DiceCELoss, DiceLoss, FocalLoss, TverskyLoss

from isic_monai.losses import LovaszHingeLoss, SegmentationLoss


def _batch(channels: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, channels, 12, 10, generator=gen) * 2.0
    target = (torch.rand(2, channels, 12, 10, generator=gen) > 0.7).float()
    return logits, target


def test_default_single_channel_equals_monai_dice_ce():
    logits, target = _batch(1)
    expected = DiceCELoss(sigmoid=True, batch=True)(logits, target)
    got = SegmentationLoss()(logits, target)
    assert torch.allclose(got, expected, atol=1e-6)


def test_default_multi_channel_is_dice_plus_sigmoid_bce():
    logits, target = _batch(5)
    dice = DiceLoss(sigmoid=True, batch=True)(logits, target)
    bce = torch.nn.BCEWithLogitsLoss()(logits, target)
    got = SegmentationLoss()(logits, target)
    assert torch.allclose(got, dice + bce, atol=1e-6)


def test_multi_label_false_positives_are_penalised_by_ce_term():
    # every target channel is 0 and the network is confidently positive everywhere: per-element BCE is ~10.
    # (MONAI's DiceCELoss uses softmax cross-entropy for >1 channel, which is exactly 0 here.)
    logits = torch.full((2, 5, 8, 8), 10.0)
    target = torch.zeros_like(logits)
    ce_only = SegmentationLoss(dice_weight=0.0, ce_weight=1.0)(logits, target)
    assert ce_only.item() == pytest.approx(10.0 + torch.log1p(torch.exp(torch.tensor(-10.0))).item(), rel=1e-5)


def test_focal_term_adds_monai_focal_loss():
    logits, target = _batch(5, seed=1)
    base = DiceLoss(sigmoid=True, batch=True)(logits, target) + torch.nn.BCEWithLogitsLoss()(logits, target)
    focal = FocalLoss(use_softmax=False)(logits, target)
    got = SegmentationLoss(focal_weight=1.0)(logits, target)
    assert torch.allclose(got, base + focal, atol=1e-6)
    got_half = SegmentationLoss(focal_weight=0.5)(logits, target)
    assert torch.allclose(got_half, base + 0.5 * focal, atol=1e-6)


def test_focal_single_channel_equals_dice_ce_plus_focal():
    logits, target = _batch(1, seed=4)
    expected = DiceCELoss(sigmoid=True, batch=True)(logits, target) + FocalLoss(use_softmax=False)(logits, target)
    assert torch.allclose(SegmentationLoss(focal_weight=1.0)(logits, target), expected, atol=1e-6)


def test_tversky_term_adds_monai_tversky_loss():
    logits, target = _batch(5, seed=2)
    base = DiceLoss(sigmoid=True, batch=True)(logits, target) + torch.nn.BCEWithLogitsLoss()(logits, target)
    tversky = TverskyLoss(sigmoid=True, alpha=0.3, beta=0.7, batch=True)(logits, target)
    got = SegmentationLoss(tversky_weight=2.0)(logits, target)
    assert torch.allclose(got, base + 2.0 * tversky, atol=1e-6)


def test_dice_and_ce_weights_scale_terms():
    logits, target = _batch(3, seed=3)
    dice = DiceLoss(sigmoid=True, batch=True)(logits, target)
    bce = torch.nn.BCEWithLogitsLoss()(logits, target)
    got = SegmentationLoss(dice_weight=0.25, ce_weight=3.0)(logits, target)
    assert torch.allclose(got, 0.25 * dice + 3.0 * bce, atol=1e-6)


def test_class_weights_change_value_and_match_direct_computation():
    logits, target = _batch(3, seed=5)
    weights = [1.0, 4.0, 0.5]
    plain = SegmentationLoss()(logits, target)
    weighted = SegmentationLoss(class_weights=weights)(logits, target)
    assert not torch.allclose(plain, weighted)
    w = torch.tensor(weights).reshape(1, 3, 1, 1)
    bce = (torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none") * w).mean()
    dice = DiceLoss(sigmoid=True, batch=True, weight=torch.tensor(weights))(logits, target)
    assert torch.allclose(weighted, dice + bce, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [{"dice_weight": -1.0}, {"ce_weight": -0.1}, {"focal_weight": -2.0}, {"tversky_weight": -1.0}],
)
def test_negative_weight_raises(kwargs):
    with pytest.raises(ValueError, match=">= 0"):
        SegmentationLoss(**kwargs)


def test_all_zero_weights_raise():
    with pytest.raises(ValueError, match="positive"):
        SegmentationLoss(dice_weight=0.0, ce_weight=0.0, focal_weight=0.0, tversky_weight=0.0)


def test_gradient_flows_to_logits():
    logits, target = _batch(5, seed=6)
    logits.requires_grad_(True)
    loss = SegmentationLoss(focal_weight=1.0, tversky_weight=1.0, class_weights=[1, 2, 3, 1, 1])(logits, target)
    loss.backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0
    # every channel receives gradient
    assert (logits.grad.abs().sum(dim=(0, 2, 3)) > 0).all()


def _jaccard_loss(truth: torch.Tensor, pred: torch.Tensor) -> float:
    inter = (truth & pred).sum().item()
    union = (truth | pred).sum().item()
    return 1.0 - inter / union if union else 0.0


def test_lovasz_equals_jaccard_loss_where_errors_are_zero_or_one():
    gen = torch.Generator().manual_seed(3)
    truth = torch.rand(3, 2, 9, 7, generator=gen) > 0.6
    wrong = torch.rand(3, 2, 9, 7, generator=gen) > 0.8
    sign = truth.float() * 2 - 1
    logits = torch.where(wrong, torch.zeros_like(sign), sign)  # hinge error 1 where wrong, 0 where right
    pred = truth ^ wrong
    expected = sum(_jaccard_loss(truth[b, c], pred[b, c]) for b in range(3) for c in range(2)) / 6
    assert LovaszHingeLoss()(logits, truth.float()).item() == pytest.approx(expected, abs=1e-6)
    assert expected > 0.1  # the case is not trivial


def test_lovasz_is_zero_for_confident_correct_logits_and_grows_with_errors():
    truth = torch.zeros(1, 1, 8, 8)
    truth[..., 2:6, 2:6] = 1
    good = (truth * 2 - 1) * 3.0
    assert LovaszHingeLoss()(good, truth).item() == 0.0
    losses = [LovaszHingeLoss()(good - shift * truth, truth).item() for shift in (2.5, 3.5, 5.0)]
    assert 0 < losses[0] < losses[1] < losses[2]


def test_lovasz_empty_truth_costs_the_largest_error():
    logits = torch.full((1, 1, 4, 4), -2.0)
    logits[0, 0, 1, 1] = 0.5
    assert LovaszHingeLoss()(logits, torch.zeros_like(logits)).item() == pytest.approx(1.5)


def test_lovasz_term_adds_to_dice_ce_in_float32_with_gradient():
    logits, target = _batch(1, seed=8)
    base = SegmentationLoss()(logits, target)
    combined = SegmentationLoss(lovasz_weight=0.5)(logits, target)
    assert combined.item() == pytest.approx(base.item() + 0.5 * LovaszHingeLoss()(logits, target).item(), rel=1e-6)
    half = logits.to(torch.bfloat16).requires_grad_(True)
    value = LovaszHingeLoss()(half, target)
    assert value.dtype == torch.float32
    value.backward()
    assert half.grad is not None and half.grad.abs().sum() > 0


def test_lovasz_shape_mismatch_raises():
    with pytest.raises(ValueError, match="differ in shape"):
        LovaszHingeLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))


def test_lovasz_recipe_layer_replaces_the_training_loss():
    parser = ConfigParser()
    parser.read_config([str(REPO_ROOT / f) for f in ("configs/bundle/common.yaml", "configs/bundle/train.yaml",
                                                     "configs/recipes/isic2017.yaml", "configs/recipes/lovasz.yaml")])
    parser["lovasz_weight"] = 0.25
    loss = parser.get_parsed_content("loss")
    assert isinstance(loss, SegmentationLoss) and loss.lovasz is not None
    logits, target = _batch(1, seed=9)
    expected = SegmentationLoss(batch=False)(logits, target) + 0.25 * LovaszHingeLoss()(logits, target)
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
