"""Segmentation losses for sigmoid multi-label outputs, built from MONAI's losses.

MONAI has DiceCE, focal and Tversky losses but no single configurable sum of them; Task 2 (five attributes, most
masks empty) benefits from per-class weights and from focal/Tversky terms that push recall on rare attributes.
:class:`SegmentationLoss` adds the terms that have a non-zero weight. MONAI has no Lovász hinge (a convex surrogate
of the Jaccard index, the ISIC score): :class:`LovaszHingeLoss` is written here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DiceLoss, FocalLoss, TverskyLoss
from torch import nn


def lovasz_jaccard_weights(truth_sorted: torch.Tensor) -> torch.Tensor:
    """The Lovász extension's weights of the Jaccard loss for truths sorted by decreasing error.

    Args:
        truth_sorted: ``(N, P)`` binary truths (float), each row ordered by decreasing hinge error.

    Returns:
        ``(N, P)`` weights: row ``n``'s ``k``-th weight is the Jaccard loss of the ``k`` largest errors taken as
        wrong, minus that of the ``k - 1`` largest (Berman et al., CVPR 2018, Eq. 8).
    """
    positives = truth_sorted.sum(dim=1, keepdim=True)
    intersection = positives - truth_sorted.cumsum(dim=1)
    union = positives + (1.0 - truth_sorted).cumsum(dim=1)
    jaccard_loss = 1.0 - intersection / union
    return torch.cat([jaccard_loss[:, :1], jaccard_loss[:, 1:] - jaccard_loss[:, :-1]], dim=1)


class LovaszHingeLoss(nn.Module):
    """The Lovász hinge of Berman et al. (CVPR 2018): a convex surrogate of ``1 - Jaccard``, per image and channel.

    For each image and channel, the hinge errors ``max(0, 1 - logit·sign)`` (sign +1 on the lesion, -1 elsewhere) are
    sorted and weighted by the Lovász extension of the Jaccard loss; the result is the mean over images and channels.
    Where every error is 0 or 1 it equals the Jaccard loss of the pixels counted wrong. An empty truth gives the
    largest error alone (its Jaccard loss is 1 as soon as one pixel is predicted). Computed in float32, also under
    autocast: the cumulative sums need it.

    Why here: MONAI has no Lovász loss (its ``DiceLoss(jaccard=True)`` is the soft Jaccard, a different surrogate).
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The mean Lovász hinge for ``(B, C, *spatial)`` logits and a binary target of the same shape.

        Raises:
            ValueError: shapes differ.
        """
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
        flat_logits = logits.float().reshape(logits.shape[0] * logits.shape[1], -1)
        flat_truth = (target.reshape(flat_logits.shape) > 0.5).float()
        errors = 1.0 - flat_logits * (2.0 * flat_truth - 1.0)
        errors_sorted, order = torch.sort(errors, dim=1, descending=True)
        weights = lovasz_jaccard_weights(torch.gather(flat_truth, 1, order))
        return (torch.relu(errors_sorted) * weights).sum(dim=1).mean()


class SegmentationLoss(nn.Module):
    """``dice_weight·Dice + ce_weight·BCE + focal_weight·Focal + tversky_weight·Tversky + lovasz_weight·Lovász``.

    BCE is the per-element sigmoid binary cross-entropy (mean over all elements, channel ``c`` scaled by
    ``class_weights[c]``) for any number of channels.

    Args:
        dice_weight: weight of the soft Dice term.
        ce_weight: weight of the binary cross-entropy term.
        focal_weight: weight of the focal term (0 disables it).
        tversky_weight: weight of the Tversky term (0 disables it).
        lovasz_weight: weight of the Lovász hinge term (:class:`LovaszHingeLoss`, per image; 0 disables it).
        class_weights: per-channel weights for the Dice/CE and focal terms (``None``: equal).
        focal_gamma: focusing parameter of the focal term.
        tversky_alpha: Tversky false-positive weight.
        tversky_beta: Tversky false-negative weight (> alpha favours recall).
        batch: compute Dice/Tversky over the whole batch (stable when most masks are empty).

    Raises:
        ValueError: a negative weight, or all weights zero.
    """

    def __init__(
        self,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        focal_weight: float = 0.0,
        tversky_weight: float = 0.0,
        class_weights: Sequence[float] | None = None,
        focal_gamma: float = 2.0,
        tversky_alpha: float = 0.3,
        tversky_beta: float = 0.7,
        batch: bool = True,
        lovasz_weight: float = 0.0,
    ) -> None:
        super().__init__()
        weights = {"dice_weight": dice_weight, "ce_weight": ce_weight, "focal_weight": focal_weight,
                   "tversky_weight": tversky_weight, "lovasz_weight": lovasz_weight}
        bad = [k for k, v in weights.items() if v < 0]
        if bad:
            raise ValueError(f"loss weights must be >= 0, got {', '.join(f'{k}={weights[k]}' for k in bad)}")
        if sum(weights.values()) == 0:
            raise ValueError("at least one loss weight must be positive")
        cw = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)
        self.focal_weight = float(focal_weight)
        self.tversky_weight = float(tversky_weight)
        self.lovasz_weight = float(lovasz_weight)
        # Dice and BCE separately: MONAI's DiceCELoss switches to softmax cross-entropy for more than one channel,
        # which gives no loss at pixels where every (multi-label) target is 0, i.e. never penalises false positives.
        self.dice = DiceLoss(sigmoid=True, batch=batch, weight=cw)
        self.register_buffer("class_weights", cw)
        self.focal = FocalLoss(gamma=focal_gamma, weight=cw, use_softmax=False) if focal_weight > 0 else None
        self.tversky = (
            TverskyLoss(sigmoid=True, alpha=tversky_alpha, beta=tversky_beta, batch=batch)
            if tversky_weight > 0 else None
        )
        self.lovasz = LovaszHingeLoss() if lovasz_weight > 0 else None

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weighted sum for logits and a binary target of the same shape."""
        target = target.to(logits.dtype)
        loss = self.dice_weight * self.dice(logits, target)
        bce = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        if self.class_weights is not None:
            bce = bce * self.class_weights.to(bce).reshape(1, -1, *([1] * (bce.ndim - 2)))
        loss = loss + self.ce_weight * bce.mean()
        if self.focal is not None:
            loss = loss + self.focal_weight * self.focal(logits, target)
        if self.tversky is not None:
            loss = loss + self.tversky_weight * self.tversky(logits, target)
        if self.lovasz is not None:
            loss = loss + self.lovasz_weight * self.lovasz(logits, target)
        return loss
