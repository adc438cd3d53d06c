"""Tests for isic_monai.data.sampling: rare-attribute weights and the seeded sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from isic_monai import ATTRIBUTES
from isic_monai.data.sampling import rare_attribute_sampler, rare_attribute_weights


def _mask(path: Path, on: bool) -> str:
    arr = np.zeros((6, 8), dtype=np.uint8)
    if on:
        arr[2, 3] = 255
    Image.fromarray(arr, mode="L").save(path)
    return str(path)


def _entries(tmp_path: Path, shown: list[set[str]], none_paths: dict[int, set[str]] | None = None) -> list[dict]:
    none_paths = none_paths or {}
    entries = []
    for i, present in enumerate(shown):
        entry = {"image": f"/x/{i}.jpg"}
        for name in ATTRIBUTES:
            if name in none_paths.get(i, set()):
                entry[f"attribute_{name}"] = None
            else:
                entry[f"attribute_{name}"] = _mask(tmp_path / f"{i}_{name}.png", name in present)
        entries.append(entry)
    return entries


def test_rare_attribute_weights_hand_computed(tmp_path):
    # pigment_network in 2/4 images, streaks in 1/4, nothing in 2/4
    shown = [{"pigment_network"}, {"pigment_network", "streaks"}, set(), set()]
    entries = _entries(tmp_path, shown, none_paths={3: {"globules", "streaks"}})
    # e0: 1/0.5 = 2; e1: rarest is streaks 1/0.25 = 4; e2, e3: none-group 1/0.5 = 2
    assert rare_attribute_weights(entries) == pytest.approx([2.0, 4.0, 2.0, 2.0])
    assert rare_attribute_weights(entries, power=2.0) == pytest.approx([4.0, 16.0, 4.0, 4.0])
    assert rare_attribute_weights(entries, power=0.0) == pytest.approx([1.0] * 4)


def test_rare_attribute_weights_every_image_shows_something(tmp_path):
    shown = [{"globules"}, {"globules"}, {"globules"}, {"milia_like_cyst", "globules"}, {"negative_network"}]
    entries = _entries(tmp_path, shown)
    # globules 4/5 -> 1.25, milia 1/5 -> 5, negative 1/5 -> 5
    assert rare_attribute_weights(entries) == pytest.approx([1.25, 1.25, 1.25, 5.0, 5.0])


def test_rare_attribute_sampler_deterministic(tmp_path):
    shown = [{"pigment_network"}, {"streaks"}, set(), set(), set(), set(), {"pigment_network"}, set()]
    entries = _entries(tmp_path, shown)
    first = list(rare_attribute_sampler(entries, seed=3))
    second = list(rare_attribute_sampler(entries, seed=3))
    assert first == second
    assert len(first) == len(entries)
    assert all(0 <= i < len(entries) for i in first)
    sampler = rare_attribute_sampler(entries, seed=3)
    # none-group 5/8 -> 1.6; pigment 2/8 -> 4; streaks 1/8 -> 8
    expected = torch.tensor([4.0, 8.0, 1.6, 1.6, 1.6, 1.6, 4.0, 1.6], dtype=torch.double)
    torch.testing.assert_close(sampler.weights, expected)
    others = {tuple(rare_attribute_sampler(entries, seed=s)) for s in range(4, 10)}
    assert len(others | {tuple(first)}) > 1  # the seed matters
