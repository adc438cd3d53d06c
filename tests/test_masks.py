"""One mask rule (isic_monai.data.masks): every place that reads a mask file or binarises values agrees on the edge
values (127/128 of an 8-bit mask, the 1 of a {0, 1} mask, a probability of exactly 0.5), and the official scorer's
rule differs only where it means to (128 and {0, 1} masks)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from monai.transforms import LoadImage
from PIL import Image

from isic_monai import ATTRIBUTES
from isic_monai.data.masks import (
    OFFICIAL_RULE,
    ColourMaskWarning,
    foreground,
    read_mask,
    read_mask_resized,
    read_mask_values,
    reduce_mask,
)
from isic_monai.data.sampling import attribute_presence
from isic_monai.data.stats import entry_stats
from isic_monai.data.validate import check_mask
from isic_monai.metrics.functional import as_binary_tensor, per_image_measure
from isic_monai.results.html_report import EvaluationRecorder
from isic_monai.transforms import (
    ApplyThresholds,
    BinarizeMaskd,
    SaveMasksd,
    binarize_mask,
    draw_overlay,
    label_map,
    mask_reader,
)

EDGE_GREY = np.array([[0, 1, 127, 128, 200, 255]], dtype=np.uint8)
"""An 8-bit mask's edge values, one pixel each."""
EDGE_EXPECTED = [False, False, False, True, True, True]
"""The project rule on them: foreground from half the scale, 127.5 (128 and above)."""
PROBS = np.array([[0.0, 0.25, 0.4999, 0.5, 0.75, 1.0]], dtype=np.float32)
"""Probabilities (or averaged binary masks) at the edge: foreground from 0.5, inclusive."""
PROBS_EXPECTED = [False, False, False, True, True, True]


def _save(array: np.ndarray, path: Path, mode: str | None = None) -> Path:
    Image.fromarray(array, mode=mode).save(path)
    return path


def _every_file_reader(path: Path) -> dict[str, list[bool]]:
    """What each place that reads a mask file makes of it, pixel by pixel (one row)."""
    loaded = LoadImage(reader=mask_reader(), image_only=True)(str(path))
    via_transform = BinarizeMaskd(keys="label")({"label": loaded[None]})["label"][0]
    return {
        "read_mask": read_mask(path)[0].tolist(),
        "read_mask_resized": (np.asarray(read_mask_resized(path, read_mask(path).shape)) > 0)[0].tolist(),
        "mask_reader + binarize_mask": (np.asarray(binarize_mask(loaded)) > 0)[0].tolist(),
        "mask_reader + BinarizeMaskd": (np.asarray(via_transform) > 0)[0].tolist(),
    }


def test_every_mask_file_reader_agrees_on_8_bit_edge_values(tmp_path: Path) -> None:
    path = _save(EDGE_GREY, tmp_path / "edge.png")
    for name, row in _every_file_reader(path).items():
        assert row == EDGE_EXPECTED, name
    # the official scorer's rule differs where it means to: 128 is background there
    assert (read_mask(path, OFFICIAL_RULE)[0].tolist()
            == (read_mask_values(path) > 128)[0].tolist() == [False, False, False, False, True, True])


def test_a_0_1_mask_reads_as_drawn_everywhere_and_is_empty_for_the_scorer(tmp_path: Path) -> None:
    path = _save(np.array([[0, 1, 1, 0]], dtype=np.uint8), tmp_path / "zero_one.png")
    for name, row in _every_file_reader(path).items():
        assert row == [False, True, True, False], name
    assert not read_mask(path, OFFICIAL_RULE).any()
    assert check_mask(path, (1, 4))[1] == []


@pytest.mark.parametrize(("value", "present"), [(127, False), (128, True), (1, True)])
def test_attribute_presence_and_stats_use_the_rule(tmp_path: Path, value: int, present: bool) -> None:
    """A faint attribute mask (all its foreground at 127) shows nothing, as training reads it; luminance's
    ``getbbox`` counted any non-zero pixel. A {0, 1} mask's 1 is foreground."""
    mask = np.zeros((4, 5), dtype=np.uint8)
    mask[1:3, 1:4] = value
    if value != 1:
        mask[0, 0] = 255 if present else 0  # a {0, 255} mask whose other pixels sit at the edge value
    files = {name: _save(mask if name == "streaks" else np.zeros((4, 5), np.uint8), tmp_path / f"{name}.png")
             for name in ATTRIBUTES}
    entry = {"image": str(_save(np.zeros((4, 5, 3), np.uint8), tmp_path / "photo.png")),
             "label": str(files["streaks"]), **{f"attribute_{n}": str(p) for n, p in files.items()}}
    expected = [name == "streaks" and present for name in ATTRIBUTES]
    assert attribute_presence(entry) == expected
    stats = entry_stats(entry)
    assert (stats["attributes"]["streaks"] > 0) is present
    assert stats["lesion"] == int(read_mask(files["streaks"]).sum())


def test_colour_and_palette_masks_are_checked_as_they_are_read(tmp_path: Path) -> None:
    """``check_mask`` counts the values every reader sees: a palette mask by its colours (its indices 0 and 5 are
    black and white), a pure red mask by its brightest channel, a grey mask with alpha without its alpha."""
    palette = Image.fromarray(np.array([[0, 5, 5, 0]], dtype=np.uint8), mode="P")
    palette.putpalette([0, 0, 0] * 5 + [255, 255, 255] + [0, 0, 0] * 250)
    palette.save(tmp_path / "palette.png")
    red = np.zeros((1, 4, 3), np.uint8)
    red[0, 1:3, 0] = 255
    _save(red, tmp_path / "red.png")
    grey_alpha = np.zeros((1, 4, 2), np.uint8)
    grey_alpha[0, 1:3, 0] = 255
    grey_alpha[..., 1] = 255  # opaque everywhere: the channel maximum would read every pixel as foreground
    _save(grey_alpha, tmp_path / "grey_alpha.png", "LA")
    for name in ("palette", "red", "grey_alpha"):
        path = tmp_path / f"{name}.png"
        _, problems = check_mask(path, (1, 4))
        assert [p.kind for p in problems if p.is_error] == [], (name, problems)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ColourMaskWarning)
            for reader, row in _every_file_reader(path).items():
                assert row == [False, True, True, False], (name, reader)


def test_a_grey_mask_with_edge_values_is_non_binary_to_the_check(tmp_path: Path) -> None:
    path = _save(EDGE_GREY, tmp_path / "edge.png")
    assert [p.kind for p in check_mask(path, (1, 6))[1]] == ["non_binary"]


def test_probabilities_at_one_half_are_foreground_everywhere(tmp_path: Path) -> None:
    """Every place that binarises a prediction or probability map: ``>= 0.5`` (the default threshold's own
    comparison), so a value of exactly 0.5 is foreground in the written mask, the metrics and the overlay alike."""
    probs = torch.as_tensor(PROBS)[None]  # (C=1, H=1, W=6)
    assert foreground(PROBS, scale=1)[0].tolist() == PROBS_EXPECTED
    assert as_binary_tensor(probs)[0, 0].tolist() == PROBS_EXPECTED
    assert (ApplyThresholds()(probs) > 0)[0, 0].tolist() == PROBS_EXPECTED
    assert (label_map(probs) > 0)[0].tolist() == PROBS_EXPECTED
    assert (np.asarray(binarize_mask(PROBS)) > 0)[0].tolist() == PROBS_EXPECTED
    assert reduce_mask(PROBS, PROBS.shape)[0].tolist() == PROBS_EXPECTED
    truth = torch.as_tensor(PROBS_EXPECTED, dtype=torch.float32).view(1, 1, 6)
    assert per_image_measure(probs, truth, "jaccard").item() == pytest.approx(1.0)

    meta = {"filename_or_obj": str(tmp_path / "ISIC_0000001.jpg")}
    SaveMasksd(keys="pred", output_dir=tmp_path / "masks", channel_names=["lesion"])(
        {"pred": probs, "image": MetaTensor(torch.zeros(3, 1, 6), meta=meta)})
    written = np.asarray(Image.open(tmp_path / "masks" / "ISIC_0000001_segmentation.png"))
    assert (written > 0)[0].tolist() == PROBS_EXPECTED

    evaluator = Engine(lambda engine, batch: batch)  # an Ignite engine whose output is its decollated batch
    EvaluationRecorder(tmp_path / "eval", [], ["lesion"]).attach(evaluator)
    evaluator.run([[{"pred": probs, "image": MetaTensor(torch.zeros(3, 1, 6), meta=meta)}]])
    saved = np.asarray(Image.open(tmp_path / "eval" / "predictions" / "ISIC_0000001_segmentation.png"))
    assert (saved > 0)[0].tolist() == PROBS_EXPECTED

    photo = np.zeros((5, 6, 3), np.uint8)
    half = np.zeros((5, 6), np.float32)
    half[1:4, 1:5] = 0.5
    assert np.asarray(draw_overlay(photo, [half], width=1)).any()  # a region at 0.5 has a contour


def test_reduce_mask_counts_half_covered_as_foreground() -> None:
    mask = np.zeros((2, 4), dtype=np.float32)
    mask[:, 0] = 1.0  # the first 2x2 box half covered, the second empty
    mask[0, 2] = 1.0  # a quarter
    assert reduce_mask(mask, (1, 2)).tolist() == [[True, False]]


def test_foreground_keeps_bool_and_handles_empty_arrays() -> None:
    flags = np.array([True, False])
    assert foreground(flags) is flags
    assert foreground(np.zeros((0, 3), np.uint8)).shape == (0, 3)
    assert foreground(torch.zeros(0)).shape == (0,)
    assert foreground(torch.tensor([0, 127, 128, 255])).tolist() == [False, False, True, True]
