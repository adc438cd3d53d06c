"""Lesion measurements on drawn shapes whose answers are known: a disc, a rotated ellipse, a square, a half-disc."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isic_monai.cli import main
from isic_monai.data.masks import ColourMaskWarning
from isic_monai.results.lesions import (
    asymmetry,
    compactness,
    convex_hull,
    equivalent_diameter,
    max_feret_diameter,
    measure_mask,
    measurement_row,
    perimeter,
    principal_axes,
)

SIZE = 301


def ellipse(a: float, b: float, angle: float = 0.0, cy: float = 150.0, cx: float = 150.0) -> np.ndarray:
    """Pixels whose centres lie in the ellipse of semi-axes ``a`` (along ``angle`` from the x axis) and ``b``."""
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float64)
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * (xx - cx) + s * (yy - cy), -s * (xx - cx) + c * (yy - cy)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def square(side: int, top: int = 90, left: int = 70) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def ramanujan(a: float, b: float) -> float:
    """The ellipse perimeter (Ramanujan's second approximation, exact to 1e-10 here)."""
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def half_disc_asymmetry() -> float:
    """Folding a half-disc across its major axis (parallel to the flat side, through the centroid): the area
    fraction outside the mirror image, by numerical integration (radius 1, centroid 4/(3π) above the flat side)."""
    c = 4 / (3 * math.pi)
    y = np.linspace(0, 2 * c, 200_001)
    width = np.minimum(np.sqrt(np.clip(1 - y**2, 0, None)), np.sqrt(np.clip(1 - (2 * c - y) ** 2, 0, None)))
    overlap = float(np.sum((width[1:] + width[:-1]) * np.diff(y)))  # trapezoids of 2·width
    return 1 - overlap / (math.pi / 2)


@pytest.mark.parametrize("r, cy, cx", [(40, 150, 150), (25.5, 100.3, 180.7), (90, 150, 150)])
def test_disc(r: float, cy: float, cx: float) -> None:
    m = measure_mask(ellipse(r, r, 0, cy, cx))
    assert m.area == pytest.approx(math.pi * r * r, rel=0.01)
    assert m.perimeter == pytest.approx(2 * math.pi * r, rel=0.01)
    assert m.max_diameter == pytest.approx(2 * r, rel=0.01)
    assert m.equivalent_diameter == pytest.approx(2 * r, rel=0.01)
    assert m.compactness == pytest.approx(1.0, abs=0.02)
    # a disc's axes are fixed by the digitisation alone; off the pixel grid's symmetry the border pixels fold
    # imperfectly (r = 25.5 off-centre: 0.018), far below a real asymmetry (the half-disc: 0.185)
    assert m.asymmetry_major_axis < 0.025 and m.asymmetry_minor_axis < 0.025


@pytest.mark.parametrize("angle_deg", [0, 30, 115])
def test_rotated_ellipse(angle_deg: float) -> None:
    a, b, angle = 80.0, 40.0, math.radians(angle_deg)
    mask = ellipse(a, b, angle)
    m = measure_mask(mask)
    assert m.area == pytest.approx(math.pi * a * b, rel=0.01)
    assert m.perimeter == pytest.approx(ramanujan(a, b), rel=0.01)
    assert m.max_diameter == pytest.approx(2 * a, rel=0.01)
    assert m.equivalent_diameter == pytest.approx(2 * math.sqrt(a * b), rel=0.01)
    assert m.compactness == pytest.approx(ramanujan(a, b) ** 2 / (4 * math.pi * math.pi * a * b), rel=0.02)
    assert m.asymmetry_major_axis < 0.01 and m.asymmetry_minor_axis < 0.01  # symmetric about both principal axes
    centroid, axes, variances = principal_axes(mask)
    np.testing.assert_allclose(centroid, [150, 150], atol=0.01)
    major_yx = np.array([math.sin(angle), math.cos(angle)])
    assert abs(float(axes[0] @ major_yx)) > 0.9999  # the major axis follows the drawn angle
    assert variances[0] == pytest.approx(a * a / 4, rel=0.02) and variances[1] == pytest.approx(b * b / 4, rel=0.02)


def test_square() -> None:
    side = 120  # the pixels' union is a 120 × 120 square
    m = measure_mask(square(side))
    assert m.area == side * side
    assert m.perimeter == pytest.approx(4 * side, rel=0.015)  # corners rounded by the smoothing: -0.7 %
    assert m.max_diameter == pytest.approx(side * math.sqrt(2), rel=0.015)
    assert m.equivalent_diameter == pytest.approx(side * 2 / math.sqrt(math.pi), rel=1e-9)
    assert m.compactness == pytest.approx(4 / math.pi, rel=0.03)
    assert m.asymmetry_major_axis < 0.01 and m.asymmetry_minor_axis < 0.01


def test_half_disc_asymmetry_about_the_major_axis_only() -> None:
    yy = np.mgrid[:SIZE, :SIZE][0]
    mask = ellipse(100, 100) & (yy >= 150)
    major, minor = asymmetry(mask)
    assert major == pytest.approx(half_disc_asymmetry(), abs=0.005)  # 0.1852
    assert minor < 0.005  # symmetric across the axis perpendicular to the flat side
    _, axes, _ = principal_axes(mask)
    assert abs(axes[0][1]) > 0.9999  # the major axis is parallel to the flat side (along x)


def test_irregular_border_raises_compactness() -> None:
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float64)
    theta = np.arctan2(yy - 150, xx - 150)
    star = np.hypot(yy - 150, xx - 150) <= 70 * (1 + 0.25 * np.cos(9 * theta))
    assert measure_mask(star).compactness > 1.5 * measure_mask(ellipse(70, 70)).compactness


def test_helpers_and_empty_mask() -> None:
    assert equivalent_diameter(math.pi) == pytest.approx(2.0)
    assert compactness(2 * math.pi, math.pi) == pytest.approx(1.0)
    hull = convex_hull(np.array([[0, 0], [2, 0], [1, 1], [2, 2], [0, 2], [1, 0.5]]))
    assert sorted(map(tuple, hull)) == [(0, 0), (0, 2), (2, 0), (2, 2)]
    empty = measure_mask(np.zeros((20, 30), dtype=bool))
    assert empty.area == 0 and empty.perimeter == 0 and empty.max_diameter == 0
    assert math.isnan(empty.asymmetry_major_axis) and math.isnan(empty.compactness)
    # smoothing matters: the raw pixel staircase makes a circle's border about 6 % longer
    disc = ellipse(60, 60)
    assert perimeter(disc, sigma=0) / (2 * math.pi * 60) > 1.04
    assert max_feret_diameter(disc) == pytest.approx(120, rel=0.01)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        measure_mask(np.zeros((2, 5, 5), dtype=bool))


def test_millimetres_from_the_pixel_spacing() -> None:
    m = measure_mask(ellipse(40, 40))
    row = measurement_row(m, pixel_spacing=0.02)
    assert row["area_mm2"] == pytest.approx(m.area * 0.0004)
    assert row["perimeter_mm"] == pytest.approx(m.perimeter * 0.02)
    assert row["max_diameter_mm"] == pytest.approx(m.max_diameter * 0.02)
    assert row["equivalent_diameter_mm"] == pytest.approx(m.equivalent_diameter * 0.02)
    assert "area_mm2" not in measurement_row(m)


def _save(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


def test_measure_command_with_task2_attributes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    disc = ellipse(40, 40)
    _save(masks / "ISIC_0000001_segmentation.png", disc)
    left = disc.copy()
    left[:, 150:] = False  # the disc's left part, columns < 150
    _save(masks / "ISIC_0000001_attribute_pigment_network.png", left)
    _save(masks / "ISIC_0000001_attribute_streaks.png", np.zeros_like(disc))
    outside = np.zeros_like(disc)
    outside[:20, :20] = True  # outside the lesion: no share
    _save(masks / "ISIC_0000001_attribute_globules.png", outside)
    _save(masks / "ISIC_0000002_segmentation.png", square(100))
    Image.fromarray(ellipse(50, 30, 0.4)).convert("1").save(masks / "IMD003_lesion.bmp")  # PH2's 1-bit masks
    Image.fromarray(square(60).astype(np.uint8) * 255).convert("RGB").save(masks / "IMD004_lesion.bmp")  # PH2 RGB
    out = tmp_path / "measurements.csv"
    with pytest.warns(ColourMaskWarning, match=r"IMD004_lesion\.bmp: mode RGB with equal colour channels"):
        code = main(["measure", str(masks), "-o", str(out), "--pixel-spacing", "0.05", "-q"])
    assert code == 0, capsys.readouterr().err
    with out.open(newline="") as f:
        rows = {r["image"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"ISIC_0000001", "ISIC_0000002", "IMD003", "IMD004"}
    assert int(rows["IMD004"]["area_px"]) == int(square(60).sum())
    one = rows["ISIC_0000001"]
    assert int(one["area_px"]) == int(disc.sum())
    assert float(one["area_mm2"]) == pytest.approx(disc.sum() * 0.0025)
    assert float(one["max_diameter_mm"]) == pytest.approx(80 * 0.05, rel=0.01)
    assert float(one["pigment_network_share"]) == pytest.approx(left.sum() / disc.sum())
    assert 0.45 < float(one["pigment_network_share"]) < 0.5
    assert float(one["streaks_share"]) == 0.0 and float(one["globules_share"]) == 0.0
    assert rows["ISIC_0000002"]["pigment_network_share"] == ""  # no attribute files for this image
    assert float(rows["ISIC_0000002"]["compactness"]) == pytest.approx(4 / math.pi, rel=0.03)
    assert float(rows["IMD003"]["max_diameter_px"]) == pytest.approx(100, rel=0.01)
    assert (int(one["height"]), int(one["width"])) == (SIZE, SIZE)


def test_measure_command_attributes_dir_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lesions, attributes = tmp_path / "task1", tmp_path / "task2"
    lesions.mkdir()
    attributes.mkdir()
    disc = ellipse(30, 30)
    _save(lesions / "ISIC_0000001_segmentation.png", disc)
    _save(attributes / "ISIC_0000001_attribute_milia_like_cyst.png", disc)
    _save(attributes / "ISIC_0000001_attribute_globules.png", np.zeros((10, 10), dtype=bool))  # wrong size
    _save(attributes / "ISIC_0000009_attribute_globules.png", disc)  # no lesion mask: a warning
    out = tmp_path / "m.csv"
    code = main(["measure", str(lesions), "--attributes-dir", str(attributes), "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 1  # the size mismatch is an error; the measurable values are still written
    assert f"{attributes / 'ISIC_0000001_attribute_globules.png'}: size (H, W) = (10, 10)" in err
    assert "ISIC_0000009 without its lesion mask" in err
    with out.open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["milia_like_cyst_share"]) == 1.0 and "globules_share" not in row
    assert "area_mm2" not in row
    assert main(["measure", str(tmp_path / "nowhere"), "-q"]) == 2
    assert main(["measure", str(lesions), "--pixel-spacing", "0", "-o", str(out), "-q"]) == 2
