"""The bundle through the stock MONAI CLI, run from inside a copy of the bundle folder as the model zoo documents:
metadata, network I/O, export, properties, train -> evaluate -> infer, several processes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import META, REPO_ROOT, bundle, bundle_setting, config_list, copy_bundle, eager_network
from PIL import Image
from scipy import ndimage

from isic_monai.bundle.checkpoint import checkpoint_epoch
from isic_monai.data.selection import resolve_datalist
from isic_monai.data.synth import generate
from isic_monai.metrics.confidence import choose_flag_threshold

TRAIN = "configs/train.yaml"  # inside the bundle folder
INFERENCE = "configs/inference.yaml"
SCHEMA = REPO_ROOT / "isic_monai" / "schemas" / "meta_schema.json"
TINY = ["--image_size", "[64,64]", "--num_workers", "0"]


@pytest.fixture(scope="module")
def synth_datalist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic ISIC 2018-layout data (small, non-square images) and its datalist JSON."""
    root = tmp_path_factory.mktemp("synth")
    generate(root / "data", layout="isic2018", n=40, seed=3, size_range=((72, 96), (96, 128)))
    datalist = resolve_datalist(dataset_dir=root / "data", val_fraction=0.25, seed=0)
    path = root / "datalist.json"
    path.write_text(json.dumps(datalist))
    return path


@pytest.fixture(scope="module")
def trained(synth_datalist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the bundle folder holding a model trained briefly by ``monai.bundle run training`` run inside it."""
    bundle_dir = copy_bundle(tmp_path_factory.mktemp("trained") / "bundle")
    bundle(
        "run", "training", "--config_file", TRAIN, "--datalist_file", str(synth_datalist),
        "--max_epochs", "15", "--val_interval", "5", "--batch_size", "6", "--learning_rate", "0.005", *TINY,
        cwd=bundle_dir,
    )
    return bundle_dir


def test_metadata_verifies_against_carried_schema() -> None:
    proc = bundle("verify_metadata", "--meta_file", META, "--filepath", str(SCHEMA))
    assert "metadata is verified with no error" in proc.stdout + proc.stderr
    meta = json.loads((REPO_ROOT / META).read_text())
    assert meta["version"] in meta["changelog"]
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 3
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "lesion"}


def test_metadata_schema_rejects_incomplete_metadata(tmp_path: Path) -> None:
    meta = json.loads((REPO_ROOT / META).read_text())
    del meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    bad = tmp_path / "metadata.json"
    bad.write_text(json.dumps(meta))
    proc = bundle("verify_metadata", "--meta_file", str(bad), "--filepath", str(SCHEMA), check=False)
    assert proc.returncode != 0
    assert "channel_def" in proc.stdout + proc.stderr


def test_verify_net_in_out_inside_bundle(tmp_path: Path) -> None:
    inside = copy_bundle(tmp_path / "bundle")
    proc = bundle("verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json", "--config_file",
                  INFERENCE, cwd=inside)
    assert "data shape of network is verified with no error" in proc.stdout + proc.stderr


@pytest.mark.parametrize(("workflow_type", "files"), [("train", [TRAIN]), ("train", [TRAIN, "configs/evaluate.yaml"]),
                                                      ("infer", [INFERENCE])])
def test_config_workflow_properties(workflow_type: str, files: list[str], synth_datalist: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from monai.bundle import ConfigWorkflow

    inside = copy_bundle(tmp_path / "bundle")
    monkeypatch.chdir(inside)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 30)).save(photos / "x.jpg")
    workflow = ConfigWorkflow(config_file=files, meta_file="configs/metadata.json", workflow_type=workflow_type,
                              datalist_file=str(synth_datalist), dataset_dir=str(photos), num_workers=0)
    workflow.initialize()
    assert workflow.check_properties() == []


def test_training_runs_plain_channels_last_batches(synth_datalist: Path, tmp_path: Path) -> None:
    """The training speed settings of docs/performance.md are on: plain tensors out of the loader (no metadata),
    channels-last weights (so activations are channels-last), no gradient zero-filling, no training Dice."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "bundle" / TRAIN))
    parser.update({"datalist_file": str(synth_datalist), "bundle_root": str(tmp_path), "image_size": [64, 64],
                   "num_workers": 0})
    trainer = parser.get_parsed_content("train#trainer")
    batch = next(iter(trainer.data_loader))
    assert type(batch["image"]) is torch.Tensor and type(batch["label"]) is torch.Tensor
    conv = next(m for m in trainer.network.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert conv(batch["image"]).is_contiguous(memory_format=torch.channels_last)
    assert trainer.optim_set_to_none
    assert trainer.state.key_metric_name is None  # the training Dice is off by default (train_dice)
    parser.update({"channels_last": "false", "train_dice": "true"})  # as the MONAI CLI passes them
    parser.parse()
    conv = next(m for m in parser.get_parsed_content("network").modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()
    assert parser.get_parsed_content("train#trainer").state.key_metric_name == "train_mean_dice"


def test_no_data_stops_with_guidance(tmp_path: Path) -> None:
    proc = bundle("run", "training", "--config_file", TRAIN, check=False, cwd=copy_bundle(tmp_path / "bundle"))
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "no training data" in out and "--datalist_file" in out and "isic-monai synth" in out


def test_image_size_not_a_multiple_is_refused(synth_datalist: Path, tmp_path: Path) -> None:
    proc = bundle("run", "training", "--config_file", TRAIN, "--datalist_file", str(synth_datalist),
                  "--image_size", "[100,100]", check=False, cwd=copy_bundle(tmp_path / "bundle"))
    assert proc.returncode != 0
    assert f"multiple of {bundle_setting('size_multiple')}" in proc.stdout + proc.stderr


def test_wrong_settings_are_refused_by_name(synth_datalist: Path, tmp_path: Path) -> None:
    inside = copy_bundle(tmp_path / "bundle")
    proc = bundle("run", "training", "--config_file", TRAIN, "--datalist_file", str(synth_datalist),
                  "--max_epochs", "0", "--learning_rate", "-1", check=False, cwd=inside)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "--max_epochs 0: must be a positive integer" in out and "--learning_rate -1" in out
    assert not (inside / "models").exists()  # refused before any work


def test_repository_root_with_paths(synth_datalist: Path, tmp_path: Path) -> None:
    """From the repository root the same configs run with paths and --bundle_root."""
    root = tmp_path / "root"
    bundle("run", "training", "--config_file", "bundle/configs/train.yaml", "--datalist_file", str(synth_datalist),
           "--bundle_root", str(root), "--max_epochs", "1", *TINY)
    assert (root / "models" / "model.pt").is_file()


@pytest.mark.slow
def test_training_learns_and_saves_checkpoints(trained: Path) -> None:
    model = torch.load(trained / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert set(model) == {"model", "config"}
    last = list((trained / "models").glob("last_checkpoint_epoch=*.pt"))
    assert len(last) == 1
    resume = torch.load(last[0], weights_only=True)
    assert {"model", "optimizer", "lr_scheduler"} <= set(resume)
    # the epoch its weights are from (the best one) and the run that trained them
    assert model["config"] == {"channel_names": ["lesion"], "image_size": [64, 64],
                               "network_name": bundle_setting("network_name"),
                               "epoch": resume["validation"]["best_metric_epoch"], "run_id": resume["run"]["run_id"]}
    events = list((trained / "logs").glob("events.out.tfevents.*"))
    assert events, "TensorBoard event files were not written"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for event_file in events:
        acc = EventAccumulator(str(event_file))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"train_loss", "val_mean_dice"} <= tags


@pytest.mark.slow
def test_evaluate_at_original_size(trained: Path, synth_datalist: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    bundle("run", "--config_file", config_list(TRAIN, "configs/evaluate.yaml"), "--datalist_file",
           str(synth_datalist), "--output_dir", str(out), *TINY, cwd=trained)
    summary = json.loads((out / "summary.json").read_text())
    n_val = len(json.loads(synth_datalist.read_text())["validation"])
    dice = summary["per_image"]["dice"]
    assert dice["n"] == n_val
    assert dice["mean"] >= 0.75, summary
    assert {"jaccard", "thresholded_jaccard", "accuracy", "sensitivity", "specificity", "precision"} <= set(
        summary["per_image"]
    )
    assert summary["set_level"]["set_jaccard_lesion"] >= 0.6, summary["set_level"]  # learned (predicting nothing: 0)
    thresholds = json.loads((trained / "models" / "thresholds.json").read_text())
    assert thresholds["channel_names"] == ["lesion"] and thresholds["n_images"] == n_val
    # chosen on this evaluation's pipeline (TTA, truth size, clean-up): its recorded score is the Jaccard measured here
    assert thresholds["criterion"] == "mean_jaccard"
    assert summary["per_image"]["jaccard"]["mean"] == pytest.approx(thresholds["scores"][0], abs=1e-6)
    assert thresholds["scores"][0] == pytest.approx(max(v for v in thresholds["candidate_scores"][0] if v is not None))
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert len(rows) == n_val
    # each image's confidence, and the flag threshold chosen from it on these images (confidence.json)
    confidence = [float(r["confidence"]) for r in rows]
    assert all(0.0 <= c <= 1.0 for c in confidence) and len(set(confidence)) > 1
    assert summary["per_image"]["confidence"]["n"] == n_val
    record = json.loads((out / "confidence.json").read_text())
    assert record == json.loads(json.dumps(choose_flag_threshold(confidence, [float(r["jaccard"]) for r in rows])))
    assert record["n_images"] == n_val and record["score"] == "soft_jaccard"


def test_evaluate_with_tta_and_an_ensemble(trained: Path, synth_datalist: Path, tmp_path: Path) -> None:
    """``--tta true`` and ``--ensemble`` run through the bundle's evaluation: the scores change (eight views and two
    members averaged) and stay good; a member trained at another size is refused by name."""
    runs = {"plain": ["--tta", "false"], "tta": ["--tta", "true"],
            "tta_ensemble": ["--tta", "true", "--ensemble", "['models/model.pt']"]}
    scores, probs = {}, {}
    for name, extra in runs.items():
        out = tmp_path / name
        bundle("run", "--config_file", config_list(TRAIN, "configs/evaluate.yaml"), "--datalist_file",
               str(synth_datalist), "--output_dir", str(out), *TINY, *extra, cwd=trained)
        per_image = list(csv.DictReader((out / "per_image.csv").open()))
        scores[name] = json.loads((out / "summary.json").read_text())["per_image"]["jaccard"]["mean"]
        probs[name] = [float(r["confidence"]) for r in per_image]  # a function of the averaged probabilities
    # the views are averaged: another probability map than one view's, and as good
    assert probs["tta"] != probs["plain"]
    assert scores["tta"] >= 0.6 and abs(scores["tta"] - scores["plain"]) < 0.1, scores
    # an ensemble member with the same weights is averaged in: the mean of identical maps is the map itself
    assert probs["tta_ensemble"] == pytest.approx(probs["tta"], abs=1e-5) and scores["tta_ensemble"] == pytest.approx(
        scores["tta"], abs=1e-6)
    other = tmp_path / "other.pt"
    ckpt = torch.load(trained / "models" / "model.pt", weights_only=True)
    ckpt["config"]["image_size"] = [32, 32]
    torch.save(ckpt, other)
    proc = bundle("run", "--config_file", config_list(TRAIN, "configs/evaluate.yaml"), "--datalist_file",
                  str(synth_datalist), "--output_dir", str(tmp_path / "bad"), *TINY, "--ensemble", f"['{other}']",
                  cwd=trained, check=False)
    assert proc.returncode != 0 and f"ensemble member {other}" in proc.stdout + proc.stderr
    assert "image_size: checkpoint [32, 32], config [64, 64]" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_evaluate_refuses_a_checkpoint_of_another_size(trained: Path, synth_datalist: Path, tmp_path: Path) -> None:
    """A model trained at 64x64, run with the config's default size: stops naming both sizes, writes nothing."""
    out = tmp_path / "eval"
    proc = bundle("run", "--config_file", config_list(TRAIN, "configs/evaluate.yaml"), "--datalist_file",
                  str(synth_datalist), "--output_dir", str(out), "--num_workers", "0", cwd=trained, check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "image_size: checkpoint [64, 64], config [" in text and "models/model.pt" in text
    assert not (out / "summary.json").exists()


@pytest.mark.slow
def test_inference_on_folder(trained: Path, synth_datalist: Path, tmp_path: Path) -> None:
    """``configs/inference.yaml`` alone, from inside the bundle: only masks in OUT, the rest beside it."""
    photos = tmp_path / "photos"
    photos.mkdir()
    entries = json.loads(synth_datalist.read_text())["validation"][:2]
    sizes = {}
    for entry in entries:
        src = Path(entry["image"])
        (photos / src.name).write_bytes(src.read_bytes())
        sizes[src.stem] = Image.open(src).size
    rgba = Image.open(entries[0]["image"]).convert("RGBA").resize((150, 70))
    rgba.save(photos / "wide_rgba.png")
    sizes["wide_rgba"] = (150, 70)
    Image.open(entries[1]["image"]).convert("L").save(photos / "grey.bmp")
    sizes["grey"] = Image.open(entries[1]["image"]).size
    (photos / "truncated.jpg").write_bytes(Path(entries[0]["image"]).read_bytes()[:500])
    out = tmp_path / "pred"
    flag = tmp_path / "confidence.json"  # a cut above every confidence: each photo is flagged
    flag.write_text(json.dumps({"score": "soft_jaccard", "flag_below": 1.01}))
    proc = bundle("run", "--config_file", INFERENCE, "--dataset_dir", str(photos), "--output_dir", str(out),
                  "--save_probabilities", "true", "--confidence_file", str(flag), *TINY, cwd=trained, check=False)
    assert proc.returncode != 0, "a skipped input must make the exit status non-zero"
    assert "truncated.jpg" in proc.stdout + proc.stderr
    report = json.loads((tmp_path / "pred_report" / "failures.json").read_text())
    assert [Path(f["path"]).name for f in report["failed"]] == ["truncated.jpg"]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{stem}_segmentation.png" for stem in sizes)
    for stem, size in sizes.items():
        mask = Image.open(out / f"{stem}_segmentation.png")
        assert mask.size == size, stem  # original size and orientation (W, H)
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        assert Image.open(tmp_path / "pred_overlays" / f"{stem}_overlay.png").size == size
        prob = np.asarray(Image.open(tmp_path / "pred_probabilities" / f"{stem}_segmentation.png"))
        assert prob.shape == (size[1], size[0]) and len(np.unique(prob)) > 2  # graded, not binary
    # OUT_report/predictions.csv: a row per written photo, its mask's lesion fraction, its confidence, flagged
    table = list(csv.DictReader((tmp_path / "pred_report" / "predictions.csv").open()))
    assert [r["id"] for r in table] == sorted(sizes) and list(table[0]) == ["id", "lesion_fraction", "confidence",
                                                                            "flagged"]
    for row in table:
        mask = np.asarray(Image.open(out / f"{row['id']}_segmentation.png")) > 127
        assert float(row["lesion_fraction"]) == pytest.approx(mask.mean(), abs=1e-6), row
        assert 0.0 < float(row["confidence"]) <= 1.0 and row["flagged"] == "true", row
    # the prediction agrees with the ground truth of a real validation image
    truth = np.asarray(Image.open(entries[0]["label"])) > 127
    pred = np.asarray(Image.open(out / f"{Path(entries[0]['image']).stem}_segmentation.png")) > 127
    dice = 2 * (truth & pred).sum() / max(1, truth.sum() + pred.sum())
    assert dice > 0.6
    for stem in sizes:  # Task 1 clean-up: one region without holes per mask
        mask = np.asarray(Image.open(out / f"{stem}_segmentation.png")) > 127
        assert ndimage.label(mask, structure=np.ones((3, 3)))[1] <= 1, stem
        assert np.array_equal(ndimage.binary_fill_holes(mask), mask), stem


@pytest.mark.slow
def test_torchscript_export_matches_eager(trained: Path, tmp_path: Path) -> None:
    ts_path = tmp_path / "model.ts"
    bundle("ckpt_export", "network_def", "--filepath", str(ts_path), "--ckpt_file", "models/model.pt",
           "--key_in_ckpt", "model", "--meta_file", "configs/metadata.json", "--config_file", INFERENCE, cwd=trained)
    net = eager_network(trained / INFERENCE, trained / "models" / "model.pt")
    scripted = torch.jit.load(str(ts_path))
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-5)


def _torchrun(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow
def test_multi_gpu_config_runs_two_processes_on_cpu(synth_datalist: Path, tmp_path: Path) -> None:
    """torchrun with 2 processes (gloo on CPU): DDP, sharded data, rank-0-only checkpoints."""
    inside = copy_bundle(tmp_path / "bundle")
    proc = _torchrun(["-m", "monai.bundle", "run", "training", "--config_file",
                      config_list(TRAIN, "configs/multi_gpu_train.yaml"), "--datalist_file", str(synth_datalist),
                      "--max_epochs", "1", *TINY], cwd=inside)
    assert proc.returncode == 0, proc.stderr[-4000:]
    state = torch.load(inside / "models" / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state["model"]), "DDP wrapper leaked into the checkpoint"
    # chosen by rank 0 alone after training, on the whole validation set (not one rank's shard), for model.pt's epoch
    thresholds = json.loads((inside / "models" / "thresholds.json").read_text())
    assert thresholds["n_images"] == len(json.loads(synth_datalist.read_text())["validation"])
    assert thresholds["epoch"] == checkpoint_epoch(inside / "models" / "model.pt") == 1


@pytest.mark.slow
def test_multi_gpu_keeps_validation_when_a_handler_is_inserted_first(synth_datalist: Path, tmp_path: Path) -> None:
    """As MONAI Label does: a ``CheckpointLoader`` inserted at index 0 of ``train#handlers``; every rank must still
    validate (its metric gathers are collectives), else rank 0 waits for ever."""
    inside = copy_bundle(tmp_path / "bundle")
    bundle("run", "training", "--config_file", TRAIN, "--datalist_file", str(synth_datalist), "--max_epochs", "1",
           *TINY, cwd=inside)  # a model.pt for the loader
    script = Path(__file__).with_name("ddp_insert_handler.py")
    proc = _torchrun([str(script), str(synth_datalist)], cwd=inside, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "ranks validated: 2" in proc.stdout


@pytest.mark.slow
def test_onnx_export_matches_eager(trained: Path, tmp_path: Path) -> None:
    """``monai.bundle onnx_export`` of the trained checkpoint; ONNX Runtime output equals PyTorch's."""
    ort = pytest.importorskip("onnxruntime")
    onnx_path = tmp_path / "model.onnx"
    bundle("onnx_export", "network_def", "--filepath", str(onnx_path), "--ckpt_file", "models/model.pt",
           "--key_in_ckpt", "model", "--meta_file", "configs/metadata.json", "--config_file", INFERENCE,
           "--input_shape", "[1,3,64,64]", cwd=trained)
    net = eager_network(trained / INFERENCE, trained / "models" / "model.pt")
    x = torch.rand(1, 3, 64, 64)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(onnx_out, net(x).numpy(), atol=1e-4)
