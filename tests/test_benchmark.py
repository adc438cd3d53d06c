"""scripts/benchmark.py runs end to end on tiny settings and writes its JSON report and tables (the figures
themselves are claims of docs/performance.md, measured on a quiet machine, never asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from isic_monai.bundle import export

FACTS = ("network_name", "network_class", "network_parameters")


def built(network: str) -> dict:
    """What ``configs/networks/<network>.yaml`` builds on its own source layers: name, class, parameter count."""
    net, _ = export.build_network(network, (64, 64))
    return {"network_name": network, "network_class": type(net).__name__,
            "network_parameters": sum(p.numel() for p in net.parameters())}


def measured(section: dict) -> dict:
    """The network a benchmark section reports it measured."""
    return {key: section[key] for key in FACTS}


@pytest.mark.slow
def test_benchmark_writes_every_section_and_a_compared_network(tmp_path: Path) -> None:
    """One tiny run of every section, with ``--compare-network`` (the other network's training and TTA inference in
    the same run): what the benchmark must prove, in one run of the script. ``--in-process`` runs the nine
    measurements in the parent (each child would pay MONAI's import again; the child-process path has its own test
    below). Two small from-scratch networks stand in for the shipped one, whose depthwise convolutions are slow to
    run and export on a CPU; the shipped model's own figures are in docs/performance.md."""
    out, table = tmp_path / "bench.json", tmp_path / "bench.md"
    cmd = [sys.executable, "scripts/benchmark.py", "--out", str(out), "--markdown", str(table),
           "--data", str(tmp_path / "absent"), "--images", "16", "--size", "64", "64", "--batch-size", "4",
           "--repeats", "1", "--step-repeats", "1", "--inference-rounds", "2", "--prepare-size", "600", "800",
           "--prepare-pairs", "2", "--network", "residual_unet", "--compare-network", "unet", "--in-process"]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["settings"]["data"] == "synthetic" and report["settings"]["in_process"] is True
    # every section measured the network it is labelled with, not the shipped bundle's own (EfficientNet-Lite1)
    named, compared_net = built("residual_unet"), built("unet")
    assert len({json.dumps(f) for f in (named, compared_net, built(export.shipped_network()))}) == 3
    for section in (report["training"], report["steps"], report["profile"],
                    *(report["inference"][b]["isic2017_256x192"] for b in ("eager", "torchscript", "onnx"))):
        assert measured(section) == named
    assert measured(report["compare"]["unet"]["training"]) == compared_net
    assert measured(report["compare"]["unet"]["inference"]["isic2017_256x192"]) == compared_net
    training = report["training"]
    assert training["iterations"] == 3  # 16 images, batch 4: the first iteration of each epoch is not timed
    assert len(training["images_per_s"]["bundle"]) == len(training["images_per_s"]["plain"]) == 1
    assert training["pair_ratios"] == pytest.approx(
        [b / p for b, p in zip(training["images_per_s"]["bundle"], training["images_per_s"]["plain"], strict=True)])
    assert training["ratio_bundle_to_plain"] == pytest.approx(training["pair_ratios"][0])  # the median of one pair
    assert training["peak_memory_mb"] > 0
    steps = report["steps"]
    assert steps["step_ms"] > 0
    for name in ("metadata", "zero_fill", "layout", "training_dice"):
        assert steps[name]["before_ms"] > 0 and steps[name]["after_ms"] > 0
        assert steps[name]["saved_ms"] == pytest.approx(steps[name]["before_ms"] - steps[name]["after_ms"])
    profile = report["profile"]
    assert profile["images"] == 16 and sum(profile[k] for k in profile if k.endswith("_share")) == pytest.approx(1)
    for backend in ("eager", "torchscript", "onnx"):
        photos = report["inference"][backend]["isic2017_256x192"]
        assert photos["photos"] == 10 and photos["photo_size"] == [192, 256] and photos["total_ms"] > 0
    main = report["inference"]["eager"]["isic2017_256x192"]
    assert main["ratio_to_eager"] == 1.0 and main["tta"] is True and main["network"] == "residual_unet"
    assert report["prepare"]["photo_size"] == [600, 800] and report["prepare"]["prepare_entry_ms"] > 0
    compared = report["compare"]["unet"]
    assert compared["training"]["bundle_images_per_s"] > 0 and len(compared["training"]["pair_ratios"]) == 1
    photos = compared["inference"]["isic2017_256x192"]
    assert photos["network"] == "unet" and photos["tta"] is True and photos["total_ms"] > 0
    assert photos["ratio_to_bundle_eager"] == pytest.approx(photos["total_ms"] / main["total_ms"])
    assert "compared network `unet`" in result.stdout
    text = table.read_text()
    assert "ratio bundle / plain" in text and "channels-last weights" in text
    assert "| onnx |" in text and "prepare entry" in text


def test_benchmark_measures_in_a_child_process(tmp_path: Path) -> None:
    """Without ``--in-process`` each measurement runs in a child of its own, with its own peak memory."""
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "scripts/benchmark.py", "--out", str(out), "--sections", "prepare",
           "--prepare-size", "300", "400", "--prepare-pairs", "1"]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["settings"]["in_process"] is False and "prepare (in process)" not in result.stderr
    assert report["prepare"]["pairs"] == 1 and report["prepare"]["peak_memory_mb"] > 0
    assert set(report) == {"machine", "settings", "prepare"}


def test_scale_mix_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO_ROOT / "scripts"))
    import scale_benchmark as scale

    mix = scale.parse_mix(scale.DEFAULT_MIX)
    sizes = scale.sizes_for(1000, mix)
    assert len(sizes) == 1000 and sizes.count((4000, 6000)) == 10 and sizes.count((2000, 3000)) == 90
    assert (4000, 6000) in sizes[:200]  # interleaved: the large photos are spread through the run
    assert scale.overrides(["tta=false", "save_overlays=false"]) == ["--tta", "false", "--save_overlays", "false"]
    with pytest.raises(ValueError, match="sum to"):
        scale.parse_mix(["0.5:10x10"])
    with pytest.raises(ValueError, match="ID=VALUE"):
        scale.overrides(["tta"])


@pytest.mark.slow
def test_scale_benchmark_runs_each_section(tmp_path: Path) -> None:
    """The scale benchmark, tiny: folder inference of 3 and 6 mixed-size photos, prepare (and its resume) and
    datalist of 8 pairs, each through the user's command, with its own peak memory."""
    out = tmp_path / "scale.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "scale_benchmark.py"), "--photos", "3", "6",
                           "--mix", "0.67:48x64", "0.33:300x400", "--pairs", "8", "--pair-mix", "1:60x80",
                           "--set", "tta=false", "save_overlays=false", "--out", str(out),
                           "--markdown", str(tmp_path / "scale.md"), "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    runs = report["inference"]["runs"]
    assert [r["photos"] for r in runs] == [3, 6] and all(r["predictions_rows"] == r["photos"] for r in runs)
    assert runs[1]["sizes"] == {"48x64": 4, "300x400": 2} and all(r["peak_rss_mb"] > 100 for r in runs)
    assert report["prepare"]["files_written"] == 16 and report["prepare"]["again"]["files_written"] == 0
    assert report["datalist"]["entries"] == 8
    assert "| 6 |" in (tmp_path / "scale.md").read_text()
