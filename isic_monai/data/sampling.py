"""Task 2 sampling: draw images showing rare attributes more often (``--rare_sampling true``)."""

from __future__ import annotations

from typing import Any

from isic_monai import ATTRIBUTES

__all__ = ["attribute_presence", "rare_attribute_sampler", "rare_attribute_weights"]


def attribute_presence(entry: dict[str, Any]) -> list[bool]:
    """Which Task 2 attributes an entry's masks show: a mask file with any foreground pixel, read as training reads
    it (:func:`isic_monai.data.masks.read_mask`, the project rule)."""
    from isic_monai.data.masks import read_mask

    present = []
    for name in ATTRIBUTES:
        path = entry.get(f"attribute_{name}")
        present.append(path is not None and bool(read_mask(path).any()))
    return present


def rare_attribute_weights(entries: list[dict[str, Any]], power: float = 1.0) -> list[float]:
    """Sampling weights that favour images showing rare attributes.

    An image's weight is ``(1 / frequency) ** power`` of the rarest attribute it shows (images showing none count
    as their own group), so each attribute group is drawn about equally often when ``power`` is 1.
    """
    presence = [attribute_presence(e) for e in entries]
    n = max(1, len(presence))
    freq = [sum(p[i] for p in presence) / n for i in range(len(ATTRIBUTES))]
    none_freq = sum(not any(p) for p in presence) / n
    weights = []
    for p in presence:
        shown = [freq[i] for i, flag in enumerate(p) if flag]
        weights.append((1.0 / min(shown) if shown else 1.0 / max(none_freq, 1e-6)) ** power)
    return weights


def rare_attribute_sampler(entries: list[dict[str, Any]], seed: int = 0, power: float = 1.0):
    """A ``WeightedRandomSampler`` over :func:`rare_attribute_weights` (with replacement, len(entries) per epoch)."""
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    weights = rare_attribute_weights(entries, power)
    return torch.utils.data.WeightedRandomSampler(weights, num_samples=len(entries), replacement=True,
                                                  generator=generator)
