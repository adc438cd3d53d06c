"""The isic-monai console script: datalist, prepare, synth, stats, exit codes and reports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isic_monai.cli import COMMANDS, main
from isic_monai.data import synth


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "ham"
    synth.generate(root, layout="ham10000", n=10, seed=0, size_range=((30, 40), (44, 60)))
    return root


def test_commands_registered() -> None:
    assert [c[0] for c in COMMANDS][:5] == ["datalist", "prepare", "synth", "stats", "download"]
    # the console script installed beside this interpreter (the venv need not be on PATH)
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    exe = shutil.which("isic-monai", path=search)
    assert exe is not None
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert all(name in out for name in ("datalist", "prepare", "synth", "stats", "download"))


def test_datalist_command(ds: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "dl.json"
    assert main(["datalist", str(ds), "-o", str(out), "--ratios", "0.7", "0.15", "0.15", "--seed", "3", "-q"]) == 0
    dl = json.loads(out.read_text())
    assert [len(dl[k]) for k in ("training", "validation", "testing")] == [7, 2, 1]
    assert dl["metadata"]["layout"] == "ham10000" and dl["metadata"]["seed"] == 3
    assert "training 7" in capsys.readouterr().out
    out2 = tmp_path / "k.json"
    assert main(["datalist", str(ds), "-o", str(out2), "--split", "kfold", "--folds", "5", "--fold", "2",
                 "--fraction", "0.5", "-q"]) == 0
    dl2 = json.loads(out2.read_text())
    assert len(dl2["validation"]) == 2 and len(dl2["training"]) == 4


def test_bad_data_exit_codes_and_reports(ds: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(ds, bad)
    victim = next((bad / "HAM10000_images_part_1").glob("*.jpg"))
    victim.write_bytes(victim.read_bytes()[:300])
    orphan = bad / "HAM10000_segmentations_lesion_tschandl" / "ISIC_9999999_segmentation.png"
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(orphan)
    out = tmp_path / "dl.json"
    assert main(["datalist", str(bad), "-o", str(out), "-q"]) == 1
    assert not out.exists()
    err = capsys.readouterr().err
    assert victim.name in err and orphan.name in err and "--skip-bad" in err
    report = json.loads((tmp_path / "dl.problems.json").read_text())
    assert sorted(p["kind"] for p in report["problems"]) == ["missing_image", "truncated"]
    assert main(["datalist", str(bad), "-o", str(out), "--skip-bad", "-q"]) == 0
    dl = json.loads(out.read_text())
    assert sum(len(dl[k]) for k in ("training", "validation", "testing")) == 9
    assert dl["metadata"]["skipped"] == [victim.stem]
    assert json.loads((tmp_path / "dl.problems.json").read_text())["errors"] == 2
    assert main(["datalist", str(tmp_path / "nowhere"), "-o", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["datalist", str(ds), "-o", str(out), "--split", "official", "-q"]) == 2


def test_prepare_and_stats_commands(ds: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cache = tmp_path / "cache"
    assert main(["prepare", str(ds), "-o", str(cache), "--size", "32", "--workers", "1", "-q"]) == 0
    dl = json.loads((cache / "datalist.json").read_text())
    e = dl["training"][0]
    assert max(Image.open(e["image"]).size) == 32 and "image_orig" in e and "orig_size" in e
    assert main(["prepare", str(ds), "-o", str(tmp_path / "c2"), "--size", "16", "24", "--image-format", "jpg",
                 "--workers", "1", "-q"]) == 0
    e2 = json.loads((tmp_path / "c2" / "datalist.json").read_text())["training"][0]
    assert e2["image"].endswith(".jpg") and Image.open(e2["image"]).size == (24, 16)
    capsys.readouterr()
    js, chart = tmp_path / "s.json", tmp_path / "s.png"
    assert main(["stats", str(cache / "datalist.json"), "--json", str(js), "--chart", str(chart)]) == 0
    assert "lesion fraction" in capsys.readouterr().out
    stats = json.loads(js.read_text())
    assert stats["counts"]["total"] == 10 and stats["image_size"]["width"]["max"] == 32
    assert Image.open(chart).format == "PNG"


def test_synth_command(tmp_path: Path) -> None:
    assert main(["synth", str(tmp_path / "s"), "--layout", "ph2", "--n", "2", "--min-size", "30", "40",
                 "--max-size", "32", "44"]) == 0
    assert main(["datalist", str(tmp_path / "s"), "-o", str(tmp_path / "d.json"), "-q"]) == 0
    assert json.loads((tmp_path / "d.json").read_text())["metadata"]["layout"] == "ph2"


def test_an_unexpected_error_is_one_line_with_the_traceback_kept(ds: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Any failure prints ``isic-monai <command>: error: ...`` (exit 2) and keeps the traceback in a log of its
    own, readable by its owner only; ``--debug`` lets the exception through."""
    import isic_monai.cli as cli

    logs = tmp_path / "logs"
    logs.mkdir()
    monkeypatch.setattr(cli, "ERROR_LOG_DIR", logs)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code = main(["stats", str(ds), "--json", str(blocker / "stats.json")])  # a folder cannot be made under a file
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    [log] = list(logs.iterdir())
    assert len(err) == 1 and err[0].startswith("isic-monai stats: error: ") and str(log) in err[0]
    assert "Traceback (most recent call last)" in log.read_text() and "a_file" in log.read_text()
    assert log.stat().st_mode & 0o077 == 0  # other users cannot read it
    assert main(["stats", str(ds), "--json", str(blocker / "stats.json")]) == 2
    assert len(list(logs.iterdir())) == 2  # a second failure never overwrites the first one's log
    with pytest.raises(OSError):
        main(["stats", str(ds), "--json", str(blocker / "stats.json"), "--debug"])


def test_the_error_log_never_follows_a_planted_link(tmp_path: Path) -> None:
    """A symbolic link another user planted in the shared temporary folder, under any name an earlier version used or
    any name at all, is never written through: each log is a new file created exclusively."""
    from isic_monai.cli import write_error_log

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    shared = tmp_path / "tmp"
    shared.mkdir()
    (shared / "isic-monai-last-error.log").symlink_to(victim)
    log = write_error_log("stats", "Traceback ...", shared)
    assert victim.read_text() == "keep me" and not log.is_symlink() and log.parent == shared
    assert log.name.startswith("isic-monai-stats-") and log.read_text() == "isic-monai stats\nTraceback ..."
