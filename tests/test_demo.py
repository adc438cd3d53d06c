"""scripts/demo.py's step runner: a step's whole output goes to its log, the terminal gets the command, the step's key
lines and its result (``make demo`` printed 73 KB before; the full demo is run by hand: 84 lines, 2026-12-07)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import demo  # noqa: E402


def test_a_step_prints_its_key_lines_and_keeps_the_rest_in_its_log(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "LOG_DIR", tmp_path)
    noisy = tmp_path / "noisy.py"
    noisy.write_text("import sys\nfor i in range(500): print(f'Loading dataset: {i}/500', file=sys.stderr)\n"
                     "print('INFO - epoch 2/4 in 1.0 s: train loss 0.5, val_mean_dice 0.8 (best 0.8 at 2); 2 s left')")
    demo.run([sys.executable, str(noisy), "training"])
    shown = capsys.readouterr().out.splitlines()
    assert shown[1].startswith("$ ") and "epoch 2/4 in 1.0 s" in shown[2] and shown[3].startswith("  ok in ")
    assert len(shown) == 4
    logs = list(tmp_path.glob("*.log"))
    assert len(logs) == 1 and len(logs[0].read_text().splitlines()) == 501  # every line kept in the step's log


def test_a_failed_step_shows_the_end_of_its_output(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "LOG_DIR", tmp_path)
    failing = tmp_path / "failing.py"
    failing.write_text("import sys\nfor i in range(100): print(i)\nsys.exit(3)")
    with pytest.raises(subprocess.CalledProcessError):
        demo.run([sys.executable, str(failing)])
    out = capsys.readouterr().out
    assert "FAILED (exit 3)" in out and "\n99\n" in out and "\n50\n" not in out  # the last 40 lines only


def test_step_names() -> None:
    assert demo.step_name(["py", "-m", "isic_monai.cli", "synth", "out"]) == "synth"
    assert demo.step_name(["py", "-m", "monai.bundle", "run", "training", "--config_file", "[x]"]) == "training"
    assert demo.step_name(["py", "-m", "monai.bundle", "run", "--config_file", "[bundle/configs/evaluate.yaml]"]) == (
        "evaluate")


def test_real_photos_print_each_confidence_and_flag_the_failures(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's last step, for real: the shipped bundle on the ten ISIC 2017 photos of docs/examples. Each photo's
    line carries its confidence; with the truth in ../shared, the photo the model gets wrong (ISIC_0012876, a tiny
    lesion: Dice about 0.1) is flagged, and the flagged photos score below the others."""
    monkeypatch.setattr(demo, "LOG_DIR", tmp_path)
    out = tmp_path / "real"
    dice = demo.real_photos(out)
    lines = demo.photo_lines(Path(f"{out}_report") / "predictions.csv", dice)
    assert len(lines) == len(list(demo.REAL_PHOTOS.glob("*.jpg"))) == 10
    assert all(": confidence 0." in line for line in lines)
    if not dice:
        pytest.skip("no ISIC 2017 truth in ../shared: the flags are not checked against it")
    flagged = {line.split(":")[0].strip() for line in lines if "FLAGGED" in line}
    assert min(dice, key=dice.get) in flagged and len(flagged) < len(lines)
    assert max(dice[i] for i in flagged) < min(dice[i] for i in dice if i not in flagged)
