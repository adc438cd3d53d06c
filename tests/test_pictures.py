"""TensorBoard scalars and image panels, training curves and the per-epoch progress line of a real tiny training
through the MONAI CLI, read back with tensorboard's EventAccumulator; the drawing functions on known arrays."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_runs import IMAGE_HW, Output, reported_run, train

from isic_monai.engines.progress import epoch_line, format_duration, time_left
from isic_monai.results.pictures import (
    aggregate_names,
    history_from_events,
    overlay_masks,
    panel,
    photo_to_uint8,
    plot_training_curves,
    read_history,
)

EPOCHS = 4
GAP = 4


@pytest.fixture(scope="module")
def datalist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return reported_run(tmp_path_factory)[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Output]:
    """4 epochs (EPOCHS), validation every 2, image panels every 2 epochs of 3 samples, the training Dice on: the
    session's shared tiny run (tests/tiny_runs.py, also read by the report tests)."""
    _, root, output = reported_run(tmp_path_factory)
    return root, output


def _accumulators(log_dir: Path) -> list:
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, SCALARS, EventAccumulator

    out = []
    for event_file in sorted(log_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(event_file), size_guidance={SCALARS: 0, IMAGES: 0})
        acc.Reload()
        out.append(acc)
    return out


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for acc in _accumulators(log_dir):
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def _images(log_dir: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    for acc in _accumulators(log_dir):
        for tag in acc.Tags()["images"]:
            out.setdefault(tag, []).extend(acc.Images(tag))
    return out


# ------------------------------------------------------------------------------------------------ TensorBoard


@pytest.mark.slow
def test_tensorboard_scalars_loss_learning_rate_and_every_metric_per_channel(run: tuple[Path, object]) -> None:
    scalars = _scalars(run[0] / "logs")
    expected = {"train_loss", "train_loss_epoch", "learning_rate", "train_mean_dice", "val_mean_dice",
                "val_mean_jaccard", "val_thresholded_jaccard", "val_thresholded_jaccard_lesion"}
    assert expected <= set(scalars), sorted(scalars)
    assert [s for s, _ in scalars["train_loss_epoch"]] == [1, 2, 3, 4]
    assert [s for s, _ in scalars["val_mean_dice"]] == [2, 4]  # validation every 2 epochs, step = epoch
    lrs = [v for _, v in sorted(scalars["learning_rate"])]
    assert lrs[0] == pytest.approx(0.005)  # the rate epoch 1 trained with, then the cosine schedule
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert len(scalars["train_loss"]) == EPOCHS * 3  # per iteration: 15 images, batches of 5


@pytest.mark.slow
def test_tensorboard_image_panels_are_rgb_and_the_right_way_round(run: tuple[Path, object], datalist: Path) -> None:
    images = _images(run[0] / "logs")
    assert len(images) == 3 and all(tag.startswith("val_panel/") for tag in images), sorted(images)
    validation = {Path(e["image"]).stem: e for e in json.loads(datalist.read_text())["validation"]}
    h, w = IMAGE_HW
    for tag, events in images.items():
        assert [e.step for e in events] == [2, 4]
        image_id = tag.split("/", 1)[1].split("_", 1)[1]
        entry = validation[image_id]
        picture = np.asarray(Image.open(io.BytesIO(events[-1].encoded_image_string)).convert("RGB")).astype(float)
        assert picture.shape == (h, 3 * w + 2 * GAP, 3)  # H 32, W 3 x 64: not transposed
        # the photo: the file resized to (H, W) by Pillow, within resampling differences (measured: under 0.2 grey
        # levels); BGR or a mirrored photo would be tens of levels off
        photo = np.asarray(Image.open(entry["image"]).convert("RGB").resize((w, h), Image.Resampling.BILINEAR),
                           dtype=float)
        left = picture[:, :w]
        assert np.abs(left - photo).mean() < 2.0
        for wrong in (photo[..., ::-1], photo[:, ::-1], photo[::-1]):
            assert np.abs(left - wrong).mean() > 5.0
        # the truth: green blended inside the lesion, the photo unchanged away from it
        truth = np.asarray(Image.open(entry["label"]).convert("L").resize((w, h), Image.Resampling.NEAREST)) > 127
        from scipy import ndimage

        inside = ndimage.binary_erosion(truth, iterations=2)
        outside = ~ndimage.binary_dilation(truth, iterations=2)
        middle = picture[:, w + GAP : 2 * w + GAP]
        assert inside.sum() > 10 and outside.sum() > 100
        assert (middle[..., 1] - left[..., 1])[inside].mean() > 30
        assert np.abs(middle - left)[outside].mean() < 1.0


# ------------------------------------------------------------------------------------------------ curves


@pytest.mark.slow
def test_training_curves_png_and_history_written_at_the_end(run: tuple[Path, object]) -> None:
    logs = run[0] / "logs"
    png = logs / "training_curves.png"
    with Image.open(png) as img:
        assert img.format == "PNG"
        assert img.width > img.height >= 300 and img.width >= 800
        pixels = np.asarray(img.convert("L"))
    assert pixels.std() > 10  # not blank
    rows = read_history(logs / "training_history.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert ["val_mean_dice" in r for r in rows] == [False, True, False, True]
    assert all("train_loss_epoch" in r and "learning_rate" in r for r in rows)
    # the TensorBoard events hold the same per-epoch values
    from_events = {int(r["epoch"]): r for r in history_from_events(logs)}
    for row in rows:
        assert from_events[int(row["epoch"])]["train_loss_epoch"] == pytest.approx(row["train_loss_epoch"], rel=1e-5)
    settings = json.loads((logs / "run_settings.json").read_text())
    assert settings["image_size"] == list(IMAGE_HW) and settings["max_epochs"] == EPOCHS
    assert settings["n_training"] == 15 and settings["n_validation"] == 5 and settings["loss"] == "DiceCELoss"


def test_curves_of_several_channels_get_a_per_channel_panel(tmp_path: Path) -> None:
    channels = ["a", "b", "c"]
    rows = [{"epoch": e, "train_loss_epoch": 1.0 / e, "learning_rate": 1e-3 / e, "val_set": 0.1 * e,
             **{f"val_set_{c}": 0.05 * e * (i + 1) for i, c in enumerate(channels)}} for e in range(1, 5)]
    one = plot_training_curves(rows, tmp_path / "one.png")
    three = plot_training_curves(rows, tmp_path / "three.png", channels, "val_set")
    with Image.open(one) as a, Image.open(three) as b:
        assert a.height == b.height and b.width > 1.4 * a.width


def test_aggregate_names_drop_per_channel_entries() -> None:
    names = ["val_dice", "val_dice_streaks", "val_set_jaccard", "val_set_jaccard_globules_dice", "val_mean_jaccard"]
    assert aggregate_names(names) == ["val_dice", "val_set_jaccard", "val_mean_jaccard"]


# ------------------------------------------------------------------------------------------------ panels


def test_panel_keeps_height_first_and_colours() -> None:
    h, w = 20, 50
    photo = np.full((h, w, 3), 100, np.uint8)
    photo[0, 0] = (10, 20, 30)
    truth = np.zeros((h, w), bool)
    truth[5:15, 10:20] = True
    pred = np.zeros((2, h, w), bool)
    pred[1, 2:8, 30:45] = True
    out = panel(photo, truth, pred, gap=GAP)
    assert out.shape == (h, 3 * w + 2 * GAP, 3) and out.dtype == np.uint8
    assert (out[:, :w] == photo).all()
    assert (out[:, w : w + GAP] == 255).all()
    middle, right = out[:, w + GAP : 2 * w + GAP].astype(int), out[:, 2 * w + 2 * GAP :].astype(int)
    assert tuple(middle[10, 15]) == (60, 162, 60)  # channel 0 green, 40 % over the photo, inside the square
    assert (middle[0, 0] == photo[0, 0]).all() and (middle[10, 35] == 100).all()
    assert (right[10, 15] == 100).all()  # the first prediction channel is empty
    assert tuple(right[5, 37]) == (162, 60, 60)  # the second is red, in the rectangle (rows 2-7, columns 30-44)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        overlay_masks(photo, truth.T)


def test_photo_to_uint8_channel_first_unit_range() -> None:
    chw = np.zeros((3, 4, 6), np.float32)
    chw[0] = 1.0
    chw[2] = 0.5
    rgb = photo_to_uint8(chw)
    assert rgb.shape == (4, 6, 3) and tuple(rgb[0, 0]) == (255, 0, 128)
    assert tuple(photo_to_uint8(np.full((4, 6, 3), 7, np.uint8))[0, 0]) == (7, 7, 7)


# ------------------------------------------------------------------------------------------------ progress


EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+) in [\d.]+ s: train loss [\d.]+, lr [\d.e+-]+(, val_mean_dice [\d.]+ "
                        r"\(best [\d.]+ at \d+\))?; (.+ left|done)$")


@pytest.mark.slow
def test_one_line_per_epoch_and_no_iteration_lines_by_default(run: tuple[Path, Output]) -> None:
    log = run[1].stdout + run[1].stderr
    lines = [m for m in (EPOCH_LINE.search(line) for line in log.splitlines()) if m]
    assert [int(m.group(1)) for m in lines] == [1, 2, 3, 4]
    assert [m.group(3) is not None for m in lines] == [False, True, False, True]  # validation epochs
    assert lines[-1].group(4) == "done" and lines[0].group(4).endswith(" left")
    assert "Iter:" not in log


@pytest.mark.slow
def test_iteration_lines_on_request(datalist: Path, tmp_path: Path) -> None:
    proc = train(datalist, tmp_path / "run", "--iteration_log", "true", "--image_log_interval", "0", epochs=1)
    log = proc.stdout + proc.stderr
    assert len(re.findall(r"Epoch: 1/1, Iter: \d/3 -- train_loss", log)) == 3
    assert not any(tag.startswith("val_panel") for tag in _images(tmp_path / "run" / "logs"))


def test_progress_text() -> None:
    assert format_duration(4.24) == "4.2 s"
    assert format_duration(185) == "3m 05s"
    assert format_duration(2 * 3600 + 7 * 60) == "2h 07m"
    assert time_left(30.0, 3, 7) == pytest.approx(70.0)
    line = epoch_line(3, 10, 4.0, 0.25, 1e-3, {"name": "val_mean_dice", "value": 0.5, "best": 0.6, "best_epoch": 2},
                      70.0)
    assert line == ("epoch 3/10 in 4.0 s: train loss 0.2500, lr 1.00e-03, val_mean_dice 0.5000 (best 0.6000 at 2); "
                    "1m 10s left")
    assert EPOCH_LINE.search(line)


def test_history_csv_round_trip(tmp_path: Path) -> None:
    from isic_monai.results.pictures import write_history

    path = write_history([{"epoch": 1, "a": 0.5}, {"epoch": 2, "a": 0.25, "b": 1.0}], tmp_path / "h.csv")
    with path.open() as f:
        assert next(csv.reader(f)) == ["epoch", "a", "b"]
    assert read_history(path) == [{"epoch": 1.0, "a": 0.5}, {"epoch": 2.0, "a": 0.25, "b": 1.0}]
