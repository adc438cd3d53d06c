"""Statistics: counts, sizes, lesion fraction and attributes agree with what the generator drew; JSON and chart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isic_monai import ATTRIBUTES
from isic_monai.data import build_datalist, compute_stats, format_stats, plot_stats, synth


def test_stats_match_generated_data(tmp_path: Path) -> None:
    summary = synth.generate(tmp_path / "ds", layout="isic2018", n=10, seed=4, size_range=((30, 40), (44, 60)))
    stats = compute_stats(tmp_path / "ds")
    assert stats["counts"]["total"] == 10 and stats["counts"]["labelled"] == 10
    assert stats["image_size"]["height"]["min"] == summary["sizes"]["min"][0]
    assert stats["image_size"]["width"]["max"] == summary["sizes"]["max"][1]
    assert stats["lesion_fraction"]["min"] == pytest.approx(summary["lesion_fraction"]["min"], abs=1e-6)
    assert stats["lesion_fraction"]["max"] == pytest.approx(summary["lesion_fraction"]["max"], abs=1e-6)
    assert list(stats["attributes"]) == list(ATTRIBUTES)
    for name in ATTRIBUTES:
        row = stats["attributes"][name]
        assert row["present"] == summary["attributes"][name] and row["files"] == 10 and row["missing_files"] == 0
        assert 0 <= row["pixel_share"] <= row["lesion_share"] <= 1
    assert sum(r["attribute_share"] for r in stats["attributes"].values()) == pytest.approx(1.0)
    # pixel share recomputed directly for one attribute
    dl = build_datalist(tmp_path / "ds")
    entries = dl["training"] + dl["validation"]
    px = sum((np.asarray(Image.open(e["attribute_pigment_network"])) > 0).sum() for e in entries)
    area = sum(e["orig_size"][0] * e["orig_size"][1] for e in entries)
    assert stats["attributes"]["pigment_network"]["pixel_share"] == pytest.approx(px / area)
    text = format_stats(stats)
    assert "pigment_network" in text and "images: 10" in text
    chart = plot_stats(stats, tmp_path / "chart.png")
    with Image.open(chart) as img:
        assert img.format == "PNG" and img.size[0] > 300
    json.dumps(stats)  # serialisable


def test_stats_without_attributes(tmp_path: Path) -> None:
    synth.generate(tmp_path / "ds", layout="plain", n=4, seed=0, size_range=((30, 40), (44, 60)))
    stats = compute_stats(tmp_path / "ds")
    assert stats["attributes"] == {} and stats["counts"]["total"] == 4
    assert 0 < stats["lesion_fraction"]["min"] <= stats["lesion_fraction"]["median"] <= stats["lesion_fraction"]["max"]
    assert Image.open(plot_stats(stats, tmp_path / "c.png")).format == "PNG"


@pytest.mark.realdata
def test_real_isic2018_attribute_stats(shared_data: Path) -> None:
    stats = compute_stats(shared_data / "isic2018_sample")
    pn = stats["attributes"]["pigment_network"]
    assert pn["files"] == 6 and pn["present"] == 6 and pn["missing_files"] == 0 and pn["pixel_share"] > 0
    for name in ATTRIBUTES[1:]:
        assert stats["attributes"][name]["files"] == 0 and stats["attributes"][name]["missing_files"] == 6
    assert stats["image_size"]["distinct"] == 1 and stats["image_size"]["width"]["max"] == 1022
