"""Tests for isic_monai.transforms with real Pillow files and real MONAI loading."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    Invertd,
    LoadImage,
    LoadImaged,
    Resized,
    ScaleIntensityRanged,
)
from PIL import Image

from isic_monai import ATTRIBUTES
from isic_monai.data.imageio import MAX_PIXELS_ENV, ImageTooLargeError, displayed_size, open_rgb
from isic_monai.data.masks import ColourMaskWarning, read_mask, read_mask_resized, read_mask_values, reduce_mask
from isic_monai.data.validate import check_image, check_mask
from isic_monai.transforms import (
    BinarizeMaskd,
    CleanMasksd,
    LabelMapd,
    LoadAttributesd,
    RandHueSaturationd,
    ResizeToOriginald,
    SaveMasksd,
    SaveOverlayd,
    adjust_hue_saturation,
    binarize_mask,
    draw_overlay,
    label_map,
    mask_file_names,
    mask_reader,
    rgb_reader,
)

W, H = 40, 24  # deliberately non-square: PIL size (W, H); every array here, loaded or written, is (H, W)


def _pattern_rgb(h: int = H, w: int = W) -> np.ndarray:
    """An (H, W, 3) uint8 photo whose every pixel is distinct enough to catch transposes and flips."""
    rows, cols = np.mgrid[0:h, 0:w]
    return np.stack([rows * 10 % 256, cols * 6 % 256, (rows * 7 + cols * 3) % 256], axis=-1).astype(np.uint8)


def _luma(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]


# --------------------------------------------------------------------------------------------- binarize_mask


@pytest.mark.parametrize("as_torch", [False, True])
def test_binarize_0_255(as_torch):
    raw = np.array([[0, 255, 128], [127, 255, 0]], dtype=np.uint8)
    mask = torch.as_tensor(raw) if as_torch else raw
    out = binarize_mask(mask)
    expected = np.array([[0, 1, 1], [0, 1, 0]], dtype=np.float32)
    if as_torch:
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
        out = out.numpy()
    else:
        assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("as_torch", [False, True])
def test_binarize_0_1(as_torch):
    raw = np.array([[0, 1, 1], [1, 0, 0]], dtype=np.uint8)
    mask = torch.as_tensor(raw) if as_torch else raw
    out = binarize_mask(mask)
    out = out.numpy() if isinstance(out, torch.Tensor) else out
    np.testing.assert_array_equal(out, raw.astype(np.float32))


@pytest.mark.parametrize("as_torch", [False, True])
def test_binarize_all_zero(as_torch):
    raw = np.zeros((4, 5), dtype=np.uint8)
    mask = torch.as_tensor(raw) if as_torch else raw
    out = binarize_mask(mask)
    out = out.numpy() if isinstance(out, torch.Tensor) else out
    assert out.shape == (4, 5)
    assert out.sum() == 0


def test_binarize_maskd_keeps_meta():
    meta = {"filename_or_obj": "/data/ISIC_0000001_segmentation.png", "spatial_shape": (3, 2)}
    mask = MetaTensor(torch.tensor([[[0.0, 255.0], [255.0, 0.0], [0.0, 0.0]]]), meta=meta)
    out = BinarizeMaskd(keys="label")({"label": mask, "other": 7})
    assert isinstance(out["label"], MetaTensor)
    assert out["label"].meta["filename_or_obj"] == "/data/ISIC_0000001_segmentation.png"
    torch.testing.assert_close(out["label"].as_tensor(), torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]]))
    assert out["other"] == 7


# ------------------------------------------------------------------------------------------------- readers


def _load(path: Path, reader) -> np.ndarray:
    return np.asarray(LoadImage(reader=reader, image_only=True)(str(path)))


def test_rgb_reader_rgba(tmp_path):
    rgb = _pattern_rgb()
    alpha = np.full((H, W, 1), 77, dtype=np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(np.concatenate([rgb, alpha], axis=-1), mode="RGBA").save(path)
    out = _load(path, rgb_reader())
    assert out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, rgb)


def test_rgb_reader_plain_rgb_non_square(tmp_path):
    rgb = _pattern_rgb()
    path = tmp_path / "photo.png"
    Image.fromarray(rgb).save(path)
    out = _load(path, rgb_reader())
    assert out.shape == (H, W, 3)  # NumPy/Pillow order, no transpose
    assert tuple(out[17, 31]) == tuple(rgb[17, 31])
    np.testing.assert_array_equal(out, rgb)


def test_rgb_reader_greyscale(tmp_path):
    grey = (np.arange(H * W).reshape(H, W) % 256).astype(np.uint8)
    path = tmp_path / "grey.png"
    Image.fromarray(grey, mode="L").save(path)
    out = _load(path, rgb_reader())
    assert out.shape == (H, W, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_rgb_reader_palette(tmp_path):
    index = (np.arange(H * W).reshape(H, W) % 3).astype(np.uint8)
    palette = [10, 20, 30, 200, 100, 50, 0, 255, 128]
    img = Image.fromarray(index, mode="P")
    img.putpalette(palette + [0] * (768 - len(palette)))
    path = tmp_path / "palette.png"
    img.save(path)
    out = _load(path, rgb_reader())
    assert out.shape == (H, W, 3)
    colours = np.array(palette, dtype=np.uint8).reshape(3, 3)
    np.testing.assert_array_equal(out, colours[index])


def test_rgb_reader_mode_1(tmp_path):
    bits = np.zeros((H, W), dtype=bool)
    bits[3:9, 20:35] = True
    path = tmp_path / "bits.png"
    Image.fromarray(bits).convert("1").save(path)
    assert Image.open(path).mode == "1"
    out = _load(path, rgb_reader())
    assert out.shape == (H, W, 3)
    expected = bits.astype(np.uint8) * 255
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], expected)


def _mask_array() -> np.ndarray:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[2:10, 25:38] = 1
    mask[20, 1] = 1
    return mask


@pytest.mark.parametrize("mode", ["L", "L01", "P", "1", "RGB", "RGBA"])
def test_mask_reader_modes(tmp_path, mode):
    mask = _mask_array()
    path = tmp_path / f"mask_{mode}.png"
    if mode == "L":
        Image.fromarray(mask * 255, mode="L").save(path)
        expected = mask * 255
    elif mode == "L01":
        Image.fromarray(mask, mode="L").save(path)
        expected = mask
    elif mode == "P":
        img = Image.fromarray(mask, mode="P")
        img.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
        img.save(path)
        expected = mask * 255
    elif mode == "1":
        Image.fromarray(mask.astype(bool)).convert("1").save(path)
        expected = mask * 255
    elif mode == "RGB":
        Image.fromarray(np.repeat(mask[..., None] * 255, 3, axis=-1), mode="RGB").save(path)
        expected = mask * 255
    else:
        rgba = np.concatenate([np.repeat(mask[..., None] * 255, 3, axis=-1), np.full((H, W, 1), 255, np.uint8)], -1)
        Image.fromarray(rgba.astype(np.uint8), mode="RGBA").save(path)
        expected = mask * 255
    if mode in ("P", "RGB", "RGBA"):  # colour channels all equal: greyscale, with a warning naming the file
        with pytest.warns(ColourMaskWarning, match=rf"{path.name}: mode {mode} with equal colour channels"):
            out = _load(path, mask_reader())
    else:
        out = _load(path, mask_reader())
    assert out.shape == (H, W)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(binarize_mask(out), mask.astype(np.float32))


# ------------------------------------------------------------------------------------------ LoadAttributesd


def _write_mask(path: Path, marked: tuple[int, int], shape: tuple[int, int] = (H, W), value: int = 255) -> None:
    """A mask PNG of shape (h, w) with one marked pixel [row, col]."""
    arr = np.zeros(shape, dtype=np.uint8)
    arr[marked] = value
    Image.fromarray(arr, mode="L").save(path)


def _image_ref() -> MetaTensor:
    return MetaTensor(torch.zeros(3, H, W), meta={"filename_or_obj": "/data/ISIC_0000000.jpg"})


def test_load_attributes_stacks_in_order(tmp_path):
    marks = [(1, 2), (5, 30), (10, 11), (23, 39), (0, 0)]  # NumPy [row, col]
    data = {"image": _image_ref()}
    for name, mark in zip(ATTRIBUTES, marks, strict=True):
        path = tmp_path / f"ISIC_0000000_attribute_{name}.png"
        _write_mask(path, mark, value=1 if name == "streaks" else 255)  # {0, 1} and {0, 255} files mixed
        data[f"attribute_{name}"] = str(path)
    out = LoadAttributesd()(data)
    label = out["label"]
    assert isinstance(label, MetaTensor)
    assert tuple(label.shape) == (5, H, W)
    for c, (row, col) in enumerate(marks):
        assert label[c, row, col].item() == 1.0
        assert label[c].sum().item() == 1.0
    assert label.meta["filename_or_obj"] == "/data/ISIC_0000000.jpg"


def test_load_attributes_none_path_is_zero_channel(tmp_path):
    data = {"image": _image_ref()}
    for i, name in enumerate(ATTRIBUTES):
        if name == "negative_network":
            data[f"attribute_{name}"] = None
            continue
        path = tmp_path / f"a_{name}.png"
        _write_mask(path, (i, i + 3))
        data[f"attribute_{name}"] = str(path)
    label = LoadAttributesd()(data)["label"]
    assert tuple(label.shape) == (5, H, W)
    assert label[1].sum().item() == 0.0
    assert [label[c].sum().item() for c in range(5)] == [1.0, 0.0, 1.0, 1.0, 1.0]
    assert label[2, 2, 5].item() == 1.0  # NumPy [row, col] of the file


def test_load_attributes_all_none_takes_image_shape():
    data = {"image": _image_ref(), **{f"attribute_{name}": None for name in ATTRIBUTES}}
    label = LoadAttributesd()(data)["label"]
    assert tuple(label.shape) == (5, H, W)
    assert label.sum().item() == 0.0


def test_load_attributes_custom_keys_order_and_output_key(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    _write_mask(a, (0, 0))
    _write_mask(b, (H - 1, W - 1))
    out = LoadAttributesd(keys=["second", "first"], output_key="attrs")({"image": _image_ref(), "first": str(a),
                                                                          "second": str(b)})
    assert tuple(out["attrs"].shape) == (2, H, W)
    assert out["attrs"][0, H - 1, W - 1].item() == 1.0  # "second" first
    assert out["attrs"][1, 0, 0].item() == 1.0


def test_load_attributes_size_mismatch_names_file(tmp_path):
    data = {"image": _image_ref()}
    for name in ATTRIBUTES:
        path = tmp_path / f"m_{name}.png"
        _write_mask(path, (0, 0), shape=(H, W - 8) if name == "milia_like_cyst" else (H, W))
        data[f"attribute_{name}"] = str(path)
    with pytest.raises(ValueError, match="m_milia_like_cyst.png"):
        LoadAttributesd()(data)


# ------------------------------------------------------------------------------------- hue and saturation


def _random_rgb(seed: int = 0, shape: tuple[int, int] = (9, 7)) -> torch.Tensor:
    # values kept in [0.25, 0.75] so moderate jitter stays unclipped and closed-form checks are exact
    return 0.25 + 0.5 * torch.rand(3, *shape, generator=torch.Generator().manual_seed(seed))


def test_adjust_identity():
    img = _random_rgb()
    torch.testing.assert_close(adjust_hue_saturation(img, 0.0, 1.0), img, atol=1e-5, rtol=0)


def test_adjust_full_turn_is_identity():
    img = _random_rgb(1)
    torch.testing.assert_close(adjust_hue_saturation(img, 2.0 * math.pi, 1.0), img, atol=1e-5, rtol=0)


def test_adjust_saturation_zero_is_grey_luma():
    img = _random_rgb(2)
    out = adjust_hue_saturation(img, 0.0, 0.0)
    torch.testing.assert_close(out[0], out[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], out[2], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0], _luma(img), atol=1e-5, rtol=0)


def test_adjust_saturation_scales_distance_from_grey():
    # in YIQ, scaling I and Q by s maps x to Y + s (x - Y)
    img = _random_rgb(3)
    y = _luma(img)
    out = adjust_hue_saturation(img, 0.0, 0.5)
    torch.testing.assert_close(out, y + 0.5 * (img - y), atol=1e-5, rtol=0)


def test_adjust_half_turn_reflects_through_grey():
    # rotating (I, Q) by pi negates them: x -> 2Y - x (luma kept)
    img = _random_rgb(4)
    y = _luma(img)
    out = adjust_hue_saturation(img, math.pi, 1.0)
    torch.testing.assert_close(out, (2 * y - img).clamp(0, 1), atol=1e-5, rtol=0)


def test_adjust_output_in_unit_range():
    img = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(5))
    out = adjust_hue_saturation(img, 1.3, 3.0)
    assert out.shape == img.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.allclose(out, img, atol=1e-2)


def test_rand_hue_saturation_prob_zero_unchanged():
    img = _random_rgb(6)
    t = RandHueSaturationd(keys="image", prob=0.0, hue=0.5, saturation=(0.1, 2.0))
    t.set_random_state(seed=0)
    out = t({"image": img.clone(), "label": torch.ones(1, 9, 7)})
    assert torch.equal(out["image"], img)
    assert torch.equal(out["label"], torch.ones(1, 9, 7))


def test_rand_hue_saturation_prob_one_deterministic():
    img = 0.4 + 0.2 * torch.rand(3, 9, 7, generator=torch.Generator().manual_seed(7))  # near grey: never clipped
    outs = []
    for seed in (11, 11, 12):
        t = RandHueSaturationd(keys="image", prob=1.0, hue=0.2, saturation=(0.5, 1.5))
        t.set_random_state(seed=seed)
        outs.append(t({"image": img.clone()})["image"])
    assert not torch.allclose(outs[0], img, atol=1e-3)
    assert torch.equal(outs[0], outs[1])
    assert not torch.allclose(outs[0], outs[2], atol=1e-4)
    # luma is preserved by a YIQ rotation/scaling (nothing clipped for these inputs)
    torch.testing.assert_close(_luma(outs[0]), _luma(img), atol=1e-4, rtol=0)


def test_rand_hue_saturation_fixed_saturation_values_and_meta():
    img = MetaTensor(_random_rgb(8), meta={"filename_or_obj": "x.jpg"})
    t = RandHueSaturationd(keys="image", prob=1.0, hue=0.0, saturation=(0.25, 0.25))
    t.set_random_state(seed=0)
    out = t({"image": img})["image"]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "x.jpg"
    plain = img.as_tensor()
    y = _luma(plain)
    torch.testing.assert_close(out.as_tensor(), y + 0.25 * (plain - y), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------- ResizeToOriginald


def test_resize_to_original_nearest():
    pred = torch.arange(2 * 6 * 8, dtype=torch.float32).reshape(2, 6, 8)  # (C, H=6, W=8)
    out = ResizeToOriginald(keys="pred", mode="nearest")({"pred": pred, "orig_size": [12, 16]})  # [H, W]
    assert type(out["pred"]) is torch.Tensor  # a plain tensor stays plain
    assert tuple(out["pred"].shape) == (2, 12, 16)  # (C, H, W)
    expected = pred.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    assert torch.equal(out["pred"], expected)


def test_resize_to_original_bilinear_constant_and_meta():
    pred = MetaTensor(torch.full((1, 5, 10), 0.75), meta={"filename_or_obj": "p.png"})
    out = ResizeToOriginald(keys="pred")({"pred": pred, "orig_size": [7, 21]})["pred"]
    assert tuple(out.shape) == (1, 7, 21)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "p.png"
    torch.testing.assert_close(out.as_tensor(), torch.full((1, 7, 21), 0.75))


def test_resize_to_original_bilinear_values():
    # half-pixel bilinear without anti-aliasing, up and down: torch's own interpolate gives the expected values
    pred = torch.rand(2, 5, 10, generator=torch.Generator().manual_seed(0))
    for size in ([7, 21], [3, 4]):
        out = ResizeToOriginald(keys="pred")({"pred": pred, "orig_size": size})["pred"]
        expected = torch.nn.functional.interpolate(pred[None], size=tuple(size), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out, expected[0], atol=1e-6, rtol=0)


def test_resize_to_original_accepts_tensor_size():
    pred = torch.zeros(1, 4, 4)
    out = ResizeToOriginald(keys="pred", mode="nearest")({"pred": pred, "orig_size": torch.tensor([3, 9])})
    assert tuple(out["pred"].shape) == (1, 3, 9)
    decollated = [torch.tensor(3), torch.tensor(9)]  # what a collated, then decollated [H, W] becomes
    out = ResizeToOriginald(keys="pred", mode="nearest")({"pred": pred, "orig_size": decollated})
    assert tuple(out["pred"].shape) == (1, 3, 9)


def test_resize_to_original_passthrough():
    pred = torch.rand(1, 6, 8)
    out = ResizeToOriginald(keys="pred")({"pred": pred})
    assert out["pred"] is pred
    same = ResizeToOriginald(keys="pred")({"pred": pred, "orig_size": [6, 8]})
    assert torch.equal(same["pred"], pred)


# ------------------------------------------------------------------------------------------ file names


def test_mask_file_names_lesion():
    assert mask_file_names("ISIC_0000000", ["lesion"]) == ["ISIC_0000000_segmentation.png"]


def test_mask_file_names_attributes():
    assert mask_file_names("ISIC_0000000", ATTRIBUTES) == [
        "ISIC_0000000_attribute_pigment_network.png",
        "ISIC_0000000_attribute_negative_network.png",
        "ISIC_0000000_attribute_streaks.png",
        "ISIC_0000000_attribute_milia_like_cyst.png",
        "ISIC_0000000_attribute_globules.png",
    ]


# ------------------------------------------------------------------------------------------------ SaveMasksd


def test_save_masks_orientation_and_values(tmp_path):
    pred = torch.zeros(1, H, W)
    pred[0, 5, 30] = 0.9  # [c, h, w]
    pred[0, 20, 2] = 0.4  # below 0.5: background
    image = MetaTensor(torch.zeros(3, H, W), meta={"filename_or_obj": "/in/ISIC_0000000.jpg"})
    SaveMasksd(keys="pred", output_dir=tmp_path / "out", channel_names=["lesion"])({"pred": pred, "image": image})
    written = tmp_path / "out" / "ISIC_0000000_segmentation.png"
    with Image.open(written) as img:
        assert img.size == (W, H)
        assert img.mode == "L"
        arr = np.asarray(img)
    assert arr.dtype == np.uint8
    assert set(np.unique(arr).tolist()) == {0, 255}
    assert arr[5, 30] == 255  # the same [h, w] in the file
    assert arr.sum() == 255
    # and the project's reader gets the same array back
    np.testing.assert_array_equal(_load(written, mask_reader()), (pred[0].numpy() > 0.5) * 255)


def test_save_masks_attributes_with_plain_tensor_and_id(tmp_path):
    pred = torch.zeros(5, H, W)
    for c in range(5):
        pred[c, c, 3 * c + 1] = 1.0
    data = {"pred": pred, "image": torch.zeros(3, H, W), "id": "ISIC_0012345"}
    SaveMasksd(keys="pred", output_dir=tmp_path, channel_names=ATTRIBUTES)(data)
    for c, name in enumerate(ATTRIBUTES):
        arr = np.asarray(Image.open(tmp_path / f"ISIC_0012345_attribute_{name}.png"))
        assert arr.shape == (H, W)
        assert arr[c, 3 * c + 1] == 255 and arr.sum() == 255


def test_save_masks_wrong_channel_count(tmp_path):
    data = {"pred": torch.zeros(2, H, W), "image": torch.zeros(3, H, W), "id": "x"}
    with pytest.raises(ValueError, match="channels"):
        SaveMasksd(keys="pred", output_dir=tmp_path, channel_names=["lesion"])(data)


def test_save_probability_maps(tmp_path):
    prob = torch.zeros(1, H, W)
    prob[0, 6, 4] = 0.5
    prob[0, 1, 7] = 1.0
    data = {"prob": prob, "image": torch.zeros(3, H, W), "id": "ISIC_0000001"}
    SaveMasksd(keys="prob", output_dir=tmp_path, channel_names=["lesion"], binary=False)(data)
    arr = np.asarray(Image.open(tmp_path / "ISIC_0000001_segmentation.png"))
    assert arr[6, 4] == 128 and arr[1, 7] == 255 and arr.sum() == 128 + 255


def _segment_and_save(source, out, max_side=None):
    """The bundle's inference path on one photo: load, channel first, scale, resize to an (H, W) network size of
    32×64, a perfect "network" there (the bright pixels), Invertd back to the photo's size, then the mask and overlay
    writers into ``out/masks`` and ``out/overlays``."""
    preprocessing = Compose([
        LoadImaged(keys="image", reader=rgb_reader(), image_only=True),
        EnsureChannelFirstd(keys="image", channel_dim=-1),
        ScaleIntensityRanged(keys="image", a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
        Resized(keys="image", spatial_size=(32, 64), mode="bilinear", anti_aliasing=True),  # (H, W)
    ])
    data = preprocessing({"image": str(source)})
    assert tuple(data["image"].shape) == (3, 32, 64)
    data["pred"] = (data["image"][:1] > 0.5).float()
    data = Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=True)(data)
    SaveMasksd(keys="pred", output_dir=out / "masks", channel_names=["lesion"])(data)
    SaveOverlayd(keys="pred", output_dir=out / "overlays", **({} if max_side is None else {"max_side": max_side}))(data)
    return data


def _assert_mask_matches(path, truth):
    """The written mask has the truth's (H, W) and covers it (Jaccard above 0.9)."""
    with Image.open(path) as img:
        assert img.size == truth.shape[::-1]
        written = np.asarray(img) > 127
    assert (written & truth).sum() / (written | truth).sum() > 0.9


def test_inference_path_writes_at_the_photos_size_and_orientation(tmp_path):
    # the bundle's inference path: load, channel first, scale, resize to an (H, W) network size, a prediction at that
    # size, Invertd back, then the writers; the written mask and overlay match the photo pixel for pixel
    h, w = 60, 90  # not square, and not the network's aspect either
    photo = np.full((h, w, 3), 40, dtype=np.uint8)
    photo[10:40, 50:80] = 220  # the "lesion": bright, off-centre and not symmetric
    source = tmp_path / "ISIC_0000009.png"
    Image.fromarray(photo).save(source)
    _segment_and_save(source, tmp_path)
    _assert_mask_matches(tmp_path / "masks" / "ISIC_0000009_segmentation.png", photo[..., 0] > 127)
    with Image.open(tmp_path / "overlays" / "ISIC_0000009_overlay.png") as img:
        assert img.size == (w, h)
        changed = (np.asarray(img) != photo).any(axis=-1)
    assert changed[10:40, 50:80].any() and not changed[:, :40].any()  # contours around the lesion only


# ---------------------------------------------------------------------------- EXIF orientation and the pixel cap

STORED_FROM_DISPLAYED = {
    1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
"""How a camera stores a photo it tags with each EXIF orientation: the inverse of the turn a viewer applies."""


def _save_with_orientation(displayed: np.ndarray, path: Path, orientation: int) -> None:
    """Save the photo a viewer should show as ``displayed``, stored turned and tagged with ``orientation``."""
    img = Image.fromarray(displayed)
    method = STORED_FROM_DISPLAYED[orientation]
    stored = img if method is None else img.transpose(method)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, exif=exif)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_photos_are_read_as_displayed_by_every_photo_reader(tmp_path, orientation):
    """A photo tagged with any EXIF orientation is read as a viewer shows it: by the bundle's reader, by
    ``open_rgb`` (overlays, prepare, reports) and by the size the checks and the overlay writer read from the header;
    masks are read as stored."""
    displayed = _pattern_rgb()  # (H, W) = (24, 40): not square, not symmetric
    path = tmp_path / "photo.png"
    _save_with_orientation(displayed, path, orientation)
    assert Image.open(path).getexif()[0x0112] == orientation  # the tag is stored where Pillow reads it
    np.testing.assert_array_equal(_load(path, rgb_reader()), displayed)
    np.testing.assert_array_equal(np.asarray(open_rgb(path)), displayed)
    with Image.open(path) as img:
        assert displayed_size(img) == (H, W)
    assert check_image(path, "full")[0] == (H, W)
    stored_hw = (W, H) if orientation >= 5 else (H, W)
    assert _load(path, mask_reader()).shape == stored_hw  # a mask is read as stored, no turn


def test_a_phone_jpeg_turned_by_exif_gives_masks_and_overlays_as_displayed(tmp_path):
    """A JPEG with EXIF orientation 6 (a phone dermatoscope held upright): the bundle's inference path predicts on
    the upright photo and writes mask and overlay at the displayed size, the lesion where the user sees it."""
    h, w = 60, 90
    displayed = np.full((h, w, 3), 40, dtype=np.uint8)
    displayed[10:40, 50:80] = 220
    source = tmp_path / "ISIC_0000010.jpg"
    _save_with_orientation(displayed, source, 6)
    assert Image.open(source).size == (h, w)  # stored turned: Pillow's (W, H) is the displayed (H, W)
    _segment_and_save(source, tmp_path, max_side=45)
    _assert_mask_matches(tmp_path / "masks" / "ISIC_0000010_segmentation.png", displayed[..., 0] > 127)
    with Image.open(tmp_path / "overlays" / "ISIC_0000010_overlay.png") as img:
        assert img.size == (45, 30)  # drawn on the upright photo (decoded in draft mode), reduced to 45 wide
    assert np.asarray(open_rgb(source, draft_hw=(15, 22))).shape[:2] in ((15, 23), (30, 45), (60, 90))


def test_the_pixel_cap_applies_to_every_reader_before_decoding(tmp_path, monkeypatch):
    """One cap for every reader, set by ISIC_MONAI_MAX_PIXELS: a file above it is refused with its name, its size and
    the cap, a file at it is read."""
    monkeypatch.setenv(MAX_PIXELS_ENV, "1200")
    at_cap, above = tmp_path / "at_cap.png", tmp_path / "above.png"
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(at_cap)  # 1200 pixels
    Image.fromarray(np.zeros((31, 40), np.uint8)).save(above)  # 1240 pixels
    readers = {
        "rgb_reader": lambda p: _load(p, rgb_reader()),
        "mask_reader": lambda p: _load(p, mask_reader()),
        "open_rgb": open_rgb,
        "read_mask": read_mask,
        "read_mask_values": read_mask_values,
        "read_mask_resized": lambda p: read_mask_resized(p, (4, 4)),
    }
    for name, reader in readers.items():
        reader(at_cap)
        with pytest.raises(ImageTooLargeError, match=r"above\.png: 40x31 pixels .*exceeds limit of 0\.0012 Mpx"):
            reader(above)
            pytest.fail(f"{name} read a file above the cap")
    for check in (lambda p: check_image(p, "quick"), lambda p: check_mask(p, None)):
        assert [p for p in check(at_cap)[1] if p.is_error] == []
        hw, problems = check(above)
        assert hw is None and [p.kind for p in problems] == ["too_large"] and "40x31" in problems[0].message
    monkeypatch.setenv(MAX_PIXELS_ENV, "many")
    with pytest.raises(ValueError, match=MAX_PIXELS_ENV):
        open_rgb(at_cap)


# ------------------------------------------------------------------------------------------------ LabelMapd


def test_label_map_single_channel():
    masks = torch.zeros(1, 4, 3)
    masks[0, 1, 2] = 1
    out = label_map(masks)
    assert out.dtype == torch.uint8 and out.shape == (4, 3)
    assert out.sum() == 1 and out[1, 2] == 1


def test_label_map_overlaps_take_the_most_probable_channel():
    masks = torch.zeros(3, 2, 2)
    probs = torch.zeros(3, 2, 2)
    masks[0, 0, 0] = masks[2, 0, 0] = 1  # overlap: channel 2 is more probable
    probs[0, 0, 0], probs[2, 0, 0] = 0.6, 0.9
    masks[1, 1, 1] = 1
    probs[1, 1, 1] = 0.7
    probs[0, 1, 0] = 0.99  # probable but below its threshold: not a mask pixel
    out = label_map(masks, probs)
    assert out.tolist() == [[3, 0], [0, 2]]
    assert label_map(masks).tolist() == [[1, 0], [0, 2]]  # without probabilities: the first channel


def test_label_mapd_keeps_metadata():
    pred = MetaTensor(torch.ones(1, 3, 2), meta={"filename_or_obj": "a.jpg"})
    out = LabelMapd(keys="pred", prob_key="prob")({"pred": pred, "prob": torch.full((1, 3, 2), 0.8)})["pred"]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "a.jpg"
    assert out.shape == (2, 3) and out.dtype == torch.uint8


def test_label_mapd_is_transposed_for_monai_label():
    # MONAI Label's writer (write_itk) transposes the map before writing: the PNG must come out (H, W) as the photo
    pred = torch.zeros(1, H, W)
    pred[0, 5, 30] = 1.0  # [c, h, w]
    out = LabelMapd(keys="pred")({"pred": pred})["pred"]
    assert out.shape == (W, H) and out[30, 5] == 1 and out.sum() == 1
    written = Image.fromarray(out.numpy().T)  # what MONAI Label writes
    assert written.size == (W, H) and np.asarray(written)[5, 30] == 1


# ------------------------------------------------------------------------------------------------- overlays


def _rect_mask() -> np.ndarray:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[5:15, 8:22] = 1  # rows 5..14, cols 8..21
    return mask


def _rect_edge() -> np.ndarray:
    edge = np.zeros((H, W), dtype=bool)
    edge[5, 8:22] = edge[14, 8:22] = True
    edge[5:15, 8] = edge[5:15, 21] = True
    return edge


def _dilate3(mask: np.ndarray) -> np.ndarray:
    out = np.zeros_like(mask)
    for r, c in zip(*np.nonzero(mask), strict=True):
        out[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2] = True
    return out


def _photo() -> np.ndarray:
    photo = _pattern_rgb()
    photo[..., 1] = np.minimum(photo[..., 1], 200)  # never pure green
    return photo


@pytest.mark.parametrize("width", [1, 2])
def test_draw_overlay_changes_only_contour(width):
    photo = _photo()
    out = draw_overlay(photo, [_rect_mask()], width=width)
    assert out.mode == "RGB" and out.size == (W, H)
    arr = np.asarray(out)
    changed = (arr != photo).any(axis=-1)
    expected = _rect_edge() if width == 1 else _dilate3(_rect_edge())
    np.testing.assert_array_equal(changed, expected)
    assert (arr[expected] == np.array([0, 255, 0], dtype=np.uint8)).all()


def test_draw_overlay_no_line_along_the_frame():
    # a lesion cut by the photo's border: its contour stops at the border, no line is drawn along the frame
    photo = _photo()
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[:10, :12] = 1  # touches the top and left borders
    changed = (np.asarray(draw_overlay(photo, [mask], width=1)) != photo).any(axis=-1)
    expected = np.zeros((H, W), dtype=bool)
    expected[9, :12] = expected[:10, 11] = True
    np.testing.assert_array_equal(changed, expected)


def test_draw_overlay_second_mask_in_red():
    photo = _photo()
    photo[..., 0] = np.minimum(photo[..., 0], 200)  # never pure red
    arr = np.asarray(draw_overlay(photo, [np.zeros((H, W)), _rect_mask()], width=1))
    assert (arr[_rect_edge()] == np.array([255, 0, 0], dtype=np.uint8)).all()


def test_draw_overlay_empty_mask_is_photo():
    photo = _photo()
    np.testing.assert_array_equal(np.asarray(draw_overlay(photo, [np.zeros((H, W))])), photo)


def test_save_overlay(tmp_path):
    photo = _photo()
    source = tmp_path / "ISIC_0000007.png"
    Image.fromarray(photo).save(source)
    image = MetaTensor(torch.zeros(3, 16, 16), meta={"filename_or_obj": str(source)})
    pred = torch.as_tensor(_rect_mask()[None].astype(np.float32))  # (1, H, W)
    SaveOverlayd(keys="pred", output_dir=tmp_path / "ov")({"pred": pred, "image": image})
    with Image.open(tmp_path / "ov" / "ISIC_0000007_overlay.png") as img:
        assert img.mode == "RGB" and img.size == (W, H)
        arr = np.asarray(img)
    changed = (arr != photo).any(axis=-1)
    np.testing.assert_array_equal(changed, _dilate3(_rect_edge()))


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_save_overlay_reduces_large_photos_to_max_side(tmp_path, suffix):
    """A photo longer than ``max_side`` gets an overlay that long, with the contour of the reduced mask only."""
    h, w = 240, 400
    photo = np.full((h, w, 3), 120, dtype=np.uint8)
    source = tmp_path / f"ISIC_0000011{suffix}"
    Image.fromarray(photo).save(source, quality=95) if suffix == ".jpg" else Image.fromarray(photo).save(source)
    mask = np.zeros((h, w), dtype=np.float32)
    mask[60:180, 100:300] = 1
    image = MetaTensor(torch.zeros(3, 8, 8), meta={"filename_or_obj": str(source)})
    writer = SaveOverlayd(keys="pred", output_dir=tmp_path / "ov", max_side=100, compress_level=1)
    writer({"pred": torch.as_tensor(mask[None]), "image": image})
    with Image.open(tmp_path / "ov" / "ISIC_0000011_overlay.png") as img:
        assert img.size == (100, 60)  # (W, H): 400x240 reduced to a longest side of 100
        arr = np.asarray(img.convert("RGB")).astype(int)
    green = (arr[..., 1] - arr[..., 0] > 60) & (arr[..., 1] - arr[..., 2] > 60)
    assert green[15, 25:75].all() and green[44, 25:75].all()  # the reduced mask's top and bottom edges (rows 15-44)
    assert not green[:13].any() and not green[47:].any() and not green[20:40, 28:72].any()


def test_save_overlay_keeps_a_small_photo_and_checks_the_level(tmp_path):
    photo = _photo()
    source = tmp_path / "ISIC_0000012.png"
    Image.fromarray(photo).save(source)
    image = MetaTensor(torch.zeros(3, 4, 4), meta={"filename_or_obj": str(source)})
    pred = torch.as_tensor(_rect_mask()[None].astype(np.float32))
    SaveOverlayd(keys="pred", output_dir=tmp_path / "ov", max_side=W)({"pred": pred, "image": image})
    with Image.open(tmp_path / "ov" / "ISIC_0000012_overlay.png") as img:
        changed = (np.asarray(img) != photo).any(axis=-1)
    np.testing.assert_array_equal(changed, _dilate3(_rect_edge()))  # at its own size: the same as without max_side
    with pytest.raises(ValueError, match="compress_level"):
        SaveOverlayd(keys="pred", output_dir=tmp_path, compress_level=10)


def test_reduce_mask_keeps_regions_mostly_covered():
    mask = np.zeros((8, 8))
    mask[:4, :4] = 1  # the top-left 2x2 block of the reduced mask, fully covered
    mask[4:6, 4:6] = 1
    mask[4, 4] = 0  # three quarters of one pixel of the reduced mask: kept
    mask[7, ::2] = 1  # a quarter of each bottom pixel: dropped
    np.testing.assert_array_equal(reduce_mask(mask, (4, 4)), [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])


def test_save_overlay_size_mismatch(tmp_path):
    source = tmp_path / "p.png"
    Image.fromarray(_photo()).save(source)
    image = MetaTensor(torch.zeros(3, 4, 4), meta={"filename_or_obj": str(source)})
    with pytest.raises(ValueError, match="does not match"):  # transposed: (W, H) where the photo is (H, W)
        SaveOverlayd(keys="pred", output_dir=tmp_path)({"pred": torch.zeros(1, W, H), "image": image})


# ------------------------------------------------------------------ mask clean-up (largest region, holes filled)


def _lesion_with_hole_and_speck() -> torch.Tensor:
    """A 12x12 square with a 2x2 hole, and a 3x5 speck apart from it: 140 + 15 - 4 pixels."""
    m = torch.zeros(1, 24, 30)
    m[0, 2:14, 2:14] = 1
    m[0, 6:8, 6:8] = 0
    m[0, 18:21, 20:25] = 1
    return m


@pytest.mark.parametrize(("largest", "fill", "pixels"), [(True, True, 144), (True, False, 140), (False, True, 159),
                                                         (False, False, 155)])
def test_clean_masks_switches(largest, fill, pixels):
    out = CleanMasksd("pred", largest_component=largest, fill_holes=fill)({"pred": _lesion_with_hole_and_speck()})
    assert out["pred"].shape == (1, 24, 30) and int(out["pred"].sum()) == pixels


def test_clean_masks_every_channel_on_its_own_and_meta_kept():
    """Channel 0 is a foreground mask like the others (MONAI's one-hot mode would skip it as background)."""
    second = torch.zeros(1, 24, 30)
    second[0, 20:23, 1:4] = 1  # a 3x3 region, the second channel's only one: kept although it is tiny
    masks = MetaTensor(torch.cat([_lesion_with_hole_and_speck(), second]), meta={"filename_or_obj": "x.png"})
    out = CleanMasksd("pred")({"pred": masks})["pred"]
    assert out.sum(dim=(1, 2)).tolist() == [144.0, 9.0]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "x.png" and out.dtype == masks.dtype


def test_clean_masks_diagonal_touch_is_one_region():
    """Regions are 8-connected (a lesion's outline drawn diagonally stays one region) and holes 4-connected."""
    m = torch.zeros(1, 8, 8)
    m[0, 1:4, 1:4] = 1
    m[0, 4:7, 4:7] = 1  # touches the first square at one corner only
    assert int(CleanMasksd("pred", fill_holes=False)({"pred": m})["pred"].sum()) == 18
    empty = torch.zeros(1, 8, 8)
    assert int(CleanMasksd("pred")({"pred": empty})["pred"].sum()) == 0


@pytest.mark.parametrize("channel", [0, 1, 2])
def test_mask_reader_colour_mask_takes_the_brightest_channel(tmp_path, channel):
    """A pure red, green or blue {0, 255} mask is a lesion, as the datalist check and load_mask read it (Pillow's
    luminance would put red and blue below the binarisation threshold)."""
    rgb = np.zeros((9, 13, 3), dtype=np.uint8)
    rgb[2:6, 3:8, channel] = 255
    path = tmp_path / f"mask_{channel}.png"
    Image.fromarray(rgb).save(path)
    mask = np.asarray(LoadImage(reader=mask_reader(), image_only=True)(str(path)))
    assert mask.shape == (9, 13) and int((mask > 127).sum()) == 20


# --------------------------------------------------------------------------------------------- AntialiasedResized


def test_antialiased_resized_keeps_size_mode_and_per_key_mode() -> None:
    """``size_mode``, the per-key ``mode`` and the refusal of ``lazy`` reach the anti-aliased resizer (they were
    silently dropped before: the resizer was rebuilt with ``spatial_size`` and one ``mode`` only)."""
    from monai.transforms import Resized

    from isic_monai.transforms import AntialiasedResized

    rng = np.random.default_rng(0)
    image = torch.as_tensor(rng.random((3, 60, 90)), dtype=torch.float32)
    label = torch.as_tensor(rng.random((1, 60, 90)) > 0.5, dtype=torch.float32)
    data = {"image": image, "label": label}
    ours = AntialiasedResized(keys=["image", "label"], spatial_size=30, size_mode="longest",
                              mode=["bilinear", "nearest"])(data)
    monai = Resized(keys=["image", "label"], spatial_size=30, size_mode="longest", mode=["bilinear", "nearest"])(data)
    assert ours["image"].shape == monai["image"].shape == (3, 20, 30)  # the longest side is 30, aspect kept
    expected = torch.nn.functional.interpolate(image[None], size=(20, 30), mode="bilinear", antialias=True,
                                               align_corners=False)[0]
    np.testing.assert_allclose(ours["image"].numpy(), expected.numpy(), atol=1e-5)
    assert not np.allclose(ours["image"].numpy(), monai["image"].numpy(), atol=1e-3)  # anti-aliased, not MONAI's
    np.testing.assert_array_equal(ours["label"].numpy(), monai["label"].numpy())  # nearest: MONAI's, still binary
    assert set(np.unique(ours["label"].numpy())) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="lazy"):
        AntialiasedResized(keys="image", spatial_size=(20, 30), lazy=True)


def test_photos_are_resized_before_they_are_scaled_with_the_same_values(tmp_path) -> None:
    """Training, evaluation and inference resize a photo before scaling its intensities: a 6000x4000 photo is then
    scaled at the network's size, and the network sees the same values as when scaling came first."""
    from conftest import EVALUATE, INFERENCE, REPO_ROOT, TRAIN
    from monai.bundle import ConfigParser

    rng = np.random.default_rng(3)
    source = tmp_path / "ISIC_0000013.png"
    Image.fromarray(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)).save(source)
    for config, key in ((INFERENCE, "preprocessing"), (TRAIN, "train#deterministic_transforms"),
                        (EVALUATE, "validate#preprocessing")):
        parser = ConfigParser()
        parser.read_config([str(REPO_ROOT / TRAIN), str(REPO_ROOT / config)] if config == EVALUATE
                           else str(REPO_ROOT / config))
        chain = parser.get_parsed_content(key)
        names = [type(t).__name__ for t in (chain.transforms if isinstance(chain, Compose) else chain)]
        assert names.index("AntialiasedResized") < names.index("ScaleIntensityRanged"), (config, names)
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / INFERENCE))
    loading = parser.get_parsed_content("image_transforms")
    resize, scale = parser.get_parsed_content("resize_image"), parser.get_parsed_content("scale_image")
    resized_first = Compose([*loading, resize, scale])({"image": str(source)})["image"]
    scaled_first = Compose([*loading, scale, resize])({"image": str(source)})["image"]
    assert float(resized_first.min()) >= 0.0 and float(resized_first.max()) <= 1.0
    np.testing.assert_allclose(resized_first.numpy(), scaled_first.numpy(), atol=1e-5)
