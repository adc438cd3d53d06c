"""Tests for isic_monai.bundle.settings: the bundle's settings checked before any work starts."""

from __future__ import annotations

import pytest

from isic_monai.bundle.settings import as_bool, check_settings, check_size


def test_check_size_accepts_multiples():
    assert check_size([64, 96], 16) == [64, 96]
    assert check_size((32.0, 48), 16) == [32, 48]


def test_check_size_refuses_non_multiple():
    with pytest.raises(ValueError, match="multiple of 16"):
        check_size([100, 100], 16)
    with pytest.raises(ValueError, match="multiple of 32"):
        check_size([64, 80], 32)


@pytest.mark.parametrize("size", [[64], [64, 64, 64], [], [0, 64], [-16, 64]])
def test_check_size_refuses_bad_shape(size):
    with pytest.raises(ValueError, match="two positive integers"):
        check_size(size, 16)


def test_check_settings_accepts_good_and_names_every_bad_value() -> None:
    good = {"max_epochs": 3, "batch_size": 2, "val_interval": 1, "learning_rate": 1e-3, "val_fraction": 0.2,
            "threshold": 0.5, "unrelated": "kept"}
    assert check_settings(**good) == good
    with pytest.raises(ValueError) as err:
        check_settings(max_epochs=0, batch_size=2.5, learning_rate=0, val_fraction=1.0, threshold=1.0,
                       val_interval=True)
    message = str(err.value)
    for name in ("max_epochs", "batch_size", "learning_rate", "val_fraction", "threshold", "val_interval"):
        assert f"--{name}" in message


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), ("false", False), ("False", False),
                                                 ("true", True), ("yes", True), ("off", False), (0, False), (1, True)])
def test_as_bool_reads_command_line_values(value, expected):
    assert as_bool(value, "save_overlays") is expected


def test_as_bool_names_a_wrong_value():
    with pytest.raises(ValueError, match="--save_overlays 'maybe': must be true or false"):
        as_bool("maybe", "save_overlays")


def test_inference_writers_follow_a_typed_false(tmp_path):
    """``--save_overlays false`` arrives from the MONAI CLI as the string "false": no overlay writer then."""
    from conftest import INFERENCE, REPO_ROOT
    from monai.bundle import ConfigParser

    from isic_monai.engines.folder_inference import RecordPredictiond
    from isic_monai.transforms import SaveMasksd, SaveOverlayd

    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / INFERENCE))
    parser["output_dir"] = str(tmp_path / "out")
    parser["save_overlays"] = "false"
    parser["save_probabilities"] = "true"
    writers = parser.get_parsed_content("writers")
    assert not any(isinstance(w, SaveOverlayd) for w in writers)
    # probability maps, the predictions.csv row, then the masks (last: a photo with masks has all its files)
    assert [type(w) for w in writers] == [SaveMasksd, RecordPredictiond, SaveMasksd]
