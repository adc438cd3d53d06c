"""``isic-monai export-bundle`` and the config layers: flat configs that run alone, agree with each other and with
their metadata, and pass MONAI's own bundle checks from inside the exported folder."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from conftest import BUNDLE_ROOT, OFFICIAL_SCHEMA, bundle

from isic_monai import ATTRIBUTES
from isic_monai.bundle.export import (
    DEFAULT_NETWORK,
    SOURCE_DIR,
    build_metadata,
    channels_from_metadata,
    export_bundle,
    flat_config,
    network_min_size,
    parse_config,
    shipped_network,
    spatial_shape_expression,
)

EXPORTS = [("task1", shipped_network()), ("task1", "convnext_unet"), ("task2", DEFAULT_NETWORK),
           ("task2", "convnext_unet")]
SHARED_IDS = sorted({*yaml.safe_load((SOURCE_DIR / "common.yaml").read_text()),
                    "network_def", "size_multiple"})  # with the network's ids (configs/networks/<name>.yaml)
VERSION_KEYS = ("monai_version", "pytorch_version", "numpy_version", "required_packages_version")


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def assert_train_and_inference_agree(train: dict, infer: dict) -> None:
    """Every id of the common layer is the same in both configs, and both build the same network."""
    for key in SHARED_IDS:
        assert train.get(key) == infer.get(key), f"train and inference disagree on '{key}'"
    nets = [parse_config(c).get_parsed_content("network_def", instantiate=True) for c in (train, infer)]
    shapes = [{k: tuple(v.shape) for k, v in n.state_dict().items()} for n in nets]
    assert shapes[0] == shapes[1]


def assert_plain_facts_match_metadata(config: dict, meta: dict, network: str = DEFAULT_NETWORK) -> None:
    """Channel names, input channels and the size multiple are plain values (MONAI Label loads no metadata) and
    agree with ``metadata.json`` (its ``spatial_shape`` with the network's ``min_size`` too)."""
    for key in ("channel_names", "in_channels", "size_multiple"):
        assert not (isinstance(config[key], str) and config[key][:1] in "$@%"), f"{key} must be a plain value"
    fmt = meta["network_data_format"]
    assert config["channel_names"] == channels_from_metadata(meta)
    assert fmt["outputs"]["pred"]["num_channels"] == len(config["channel_names"])
    assert fmt["inputs"]["image"]["num_channels"] == config["in_channels"]
    shape = [spatial_shape_expression(config["size_multiple"], network_min_size(network))] * 2
    assert fmt["inputs"]["image"]["spatial_shape"] == shape
    assert fmt["outputs"]["pred"]["spatial_shape"] == shape


# ---------------------------------------------------------------------------------------- the layers themselves


def test_repository_bundle_configs_agree() -> None:
    """The configs a user runs in bundle/: train and inference share every common fact, metadata agrees."""
    train, infer = _load(BUNDLE_ROOT / "configs" / "train.yaml"), _load(BUNDLE_ROOT / "configs" / "inference.yaml")
    assert_train_and_inference_agree(train, infer)
    meta = json.loads((BUNDLE_ROOT / "configs" / "metadata.json").read_text())
    assert train["network_name"] == infer["network_name"] == shipped_network()  # bundle/ is the shipped network's
    assert_plain_facts_match_metadata(train, meta, shipped_network())
    assert_plain_facts_match_metadata(infer, meta, shipped_network())


def test_disagreement_is_caught() -> None:
    train, infer = _load(BUNDLE_ROOT / "configs" / "train.yaml"), _load(BUNDLE_ROOT / "configs" / "inference.yaml")
    infer["network_def"]["channels"] = [8, 16, 32, 64, 128]
    with pytest.raises(AssertionError, match="network_def"):
        assert_train_and_inference_agree(train, infer)


@pytest.mark.parametrize(("task", "network"), EXPORTS)
def test_layers_flatten_to_agreeing_configs(task: str, network: str) -> None:
    train, _ = flat_config("train", task, network)
    infer, text = flat_config("inference", task, network)
    assert_train_and_inference_agree(train, infer)
    meta = build_metadata(task, infer["channel_names"], infer["size_multiple"], infer["in_channels"], network=network)
    assert_plain_facts_match_metadata(infer, meta, network)
    assert infer["channel_names"] == (["lesion"] if task == "task1" else list(ATTRIBUTES))
    assert "label_transforms" not in infer and "loss" not in infer, "training-only ids leaked into inference"
    assert yaml.safe_load(text.split("\n", 1)[1]) == infer
    top_level = re.findall(r"^([A-Za-z_+][\w#]*):", text, flags=re.M)
    assert len(top_level) == len(set(top_level)), "an id is written twice in the flat config"


def test_spatial_shape_starts_at_the_network_min_size() -> None:
    """``n = 1`` (what ``verify_net_in_out`` feeds) gives ``min_size``; each step adds one size multiple."""
    from monai.bundle.scripts import _get_fake_spatial_shape

    assert spatial_shape_expression(16) == "16*n"
    assert spatial_shape_expression(32, 64) == "32*n+32"
    assert [_get_fake_spatial_shape(["32*n+32"], n=n)[0] for n in (1, 2, 3)] == [64, 96, 128]
    assert network_min_size(DEFAULT_NETWORK) is None and network_min_size("swin_unetr") == 64
    for bad in (8, 48):
        with pytest.raises(ValueError, match="multiple of size_multiple 32"):
            spatial_shape_expression(32, bad)


def test_default_layers_keep_their_comments() -> None:
    _, text = flat_config("inference", values={"image_size": [128, 160]})
    assert "# what MONAI Label runs" in text and "image_size: [128, 160]" in text


def test_repository_bundle_is_the_default_export(tmp_path: Path) -> None:
    """bundle/ is what `isic-monai export-bundle bundle` writes: nobody edits one config and forgets the other."""
    export_bundle(tmp_path / "b", torchscript=False)
    for name in ("train.yaml", "inference.yaml", "evaluate.yaml", "multi_gpu_train.yaml", "logging.conf"):
        assert (tmp_path / "b" / "configs" / name).read_text() == (BUNDLE_ROOT / "configs" / name).read_text(), (
            f"bundle/configs/{name} is out of date: run `make bundle`")
    fresh, committed = (json.loads((d / "configs" / "metadata.json").read_text())
                        for d in (tmp_path / "b", BUNDLE_ROOT))
    for key in VERSION_KEYS:
        fresh.pop(key), committed.pop(key)
    assert fresh == committed, "bundle/configs/metadata.json is out of date: run `make bundle`"
    assert (tmp_path / "b" / "docs" / "README.md").read_text() == (BUNDLE_ROOT / "docs" / "README.md").read_text()


# ------------------------------------------------------------------------------------------- exported bundles


@pytest.fixture(scope="module", params=EXPORTS, ids=[f"{t}-{n}" for t, n in EXPORTS])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A bundle written by the ``isic-monai export-bundle`` console script."""
    task, network = request.param
    out = tmp_path_factory.mktemp(f"{task}_{network}") / "bundle"
    script = Path(sys.executable).with_name("isic-monai")
    proc = subprocess.run([str(script), "export-bundle", str(out), "--task", task, "--network", network],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, {"task": task, "network": network, "stdout": proc.stdout, "stderr": proc.stderr}


@pytest.mark.slow
def test_export_layout(exported: tuple[Path, dict]) -> None:
    out, info = exported
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"configs/metadata.json", "configs/inference.yaml", "configs/train.yaml", "configs/evaluate.yaml",
            "configs/multi_gpu_train.yaml", "configs/logging.conf", "models/model.pt", "docs/README.md",
            "LICENSE"} <= names
    assert "models/model.ts" in names  # both networks can be scripted
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert {"isic-monai", "scikit-image"} <= set(meta["required_packages_version"])  # the clean-up needs skimage
    ckpt = torch.load(out / "models" / "model.pt", weights_only=True)
    assert ckpt["config"]["network_name"] == info["network"]
    readme = (out / "docs" / "README.md").read_text()
    for section in ("## Model Overview", "## Data", "## Preprocessing", "## Training configuration", "## Input",
                    "## Output", "## Performance", "## MONAI Bundle Commands", "## References", "## License"):
        assert section in readme
    shipped = (BUNDLE_ROOT / "models" / "model.pt").is_file()
    if shipped and (info["task"], info["network"]) == ("task1", shipped_network()):
        assert "untrained" not in info["stdout"].lower() + info["stderr"].lower()
        assert meta["eval_metrics"]["mean_jaccard"] > 0.5  # the shipped model's measured number
        assert f"{meta['eval_metrics']['mean_jaccard']:.4f}" in readme
    else:
        assert "exporting an untrained network" in info["stderr"]
        assert ckpt["config"].get("untrained") is True and "untrained" in readme


@pytest.mark.slow
def test_export_passes_monai_checks_inside(exported: tuple[Path, dict]) -> None:
    """From inside the exported folder: verify_metadata (official schema), verify_net_in_out, ckpt_export."""
    out, info = exported
    if OFFICIAL_SCHEMA.is_file():
        schema = out / "meta_schema_20240725.json"
        schema.write_bytes(OFFICIAL_SCHEMA.read_bytes())
        proc = bundle("verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", schema.name, cwd=out)
        assert "metadata is verified with no error" in proc.stdout + proc.stderr
        schema.unlink()
    proc = bundle("verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json", "--config_file",
                  "configs/inference.yaml", "--n", "4", cwd=out)
    assert "data shape of network is verified with no error" in proc.stdout + proc.stderr
    bundle("ckpt_export", "network_def", "--filepath", "models/exported.ts", "--ckpt_file", "models/model.pt",
           "--key_in_ckpt", "model", "--meta_file", "configs/metadata.json", "--config_file",
           "configs/inference.yaml", cwd=out)
    scripted = torch.jit.load(str(out / "models" / "exported.ts"))
    assert scripted(torch.rand(1, 3, 64, 64)).shape[1] == (1 if info["task"] == "task1" else 5)
    (out / "models" / "exported.ts").unlink()


@pytest.fixture(scope="module")
def synth_isic2018(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight small synthetic cases in the ISIC 2018 layout (Task 1 and Task 2 masks)."""
    from isic_monai.data.synth import generate

    root = tmp_path_factory.mktemp("synth2018")
    generate(root, layout="isic2018", n=8, seed=2, size_range=((64, 72), (72, 90)))
    return root


@pytest.mark.slow
def test_export_properties_inside(exported: tuple[Path, dict], synth_isic2018: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from monai.bundle import ConfigWorkflow

    out, _ = exported
    monkeypatch.chdir(out)
    photos = synth_isic2018 / "ISIC2018_Task1-2_Training_Input"
    for workflow_type, config, data in (("train", "configs/train.yaml", synth_isic2018),
                                        ("infer", "configs/inference.yaml", photos)):
        workflow = ConfigWorkflow(config_file=config, workflow_type=workflow_type, dataset_dir=str(data),
                                  num_workers=0)
        workflow.initialize()
        assert workflow.check_properties() == [], (workflow_type, workflow.check_properties())


# ------------------------------------------------------------------------------------------------ checkpoints


def _checkpoint(path: Path, task: str, network: str, image_size: list[int]) -> Path:
    infer, _ = flat_config("inference", task, network)
    net = parse_config(infer).get_parsed_content("network_def", instantiate=True)
    names = ["lesion"] if task == "task1" else list(ATTRIBUTES)
    torch.save({"model": net.state_dict(), "config": {"channel_names": names, "image_size": image_size,
                                                     "network_name": network}}, path)
    return path


def test_checkpoint_size_becomes_the_bundle_size(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "model.pt", "task1", "unet", [96, 64])
    (tmp_path / "thresholds.json").write_text(json.dumps({"channel_names": ["lesion"], "thresholds": [0.4]}))
    result = export_bundle(tmp_path / "out", "task1", "unet", checkpoint=ckpt, torchscript=False)
    assert result["trained"] and result["image_size"] == [96, 64]
    for name in ("train.yaml", "inference.yaml"):
        assert _load(tmp_path / "out" / "configs" / name)["image_size"] == [96, 64]
    assert json.loads((tmp_path / "out" / "models" / "thresholds.json").read_text())["thresholds"] == [0.4]
    assert torch.load(tmp_path / "out" / "models" / "model.pt", weights_only=True)["config"]["image_size"] == [96, 64]
    readme = (tmp_path / "out" / "docs" / "README.md").read_text()
    assert "96×64" in readme and "No evaluation was recorded" in readme


def test_the_evaluation_confidence_cut_ships_beside_thresholds(tmp_path: Path) -> None:
    """``<run>/eval/confidence.json`` (the flag threshold the evaluation chose) becomes ``models/confidence.json``; an
    export without one removes a stale copy."""
    (tmp_path / "run" / "models").mkdir(parents=True)
    (tmp_path / "run" / "eval").mkdir()
    ckpt = _checkpoint(tmp_path / "run" / "models" / "model.pt", "task1", "unet", [64, 64])
    (tmp_path / "run" / "eval" / "confidence.json").write_text(json.dumps({"flag_below": 0.8}))
    export_bundle(tmp_path / "out", "task1", "unet", checkpoint=ckpt, torchscript=False)
    assert json.loads((tmp_path / "out" / "models" / "confidence.json").read_text()) == {"flag_below": 0.8}
    (tmp_path / "run" / "eval" / "confidence.json").unlink()
    export_bundle(tmp_path / "out", "task1", "unet", checkpoint=ckpt, torchscript=False)
    assert not (tmp_path / "out" / "models" / "confidence.json").exists()


def test_checkpoint_of_another_task_is_refused(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "model.pt", "task1", DEFAULT_NETWORK, [64, 64])
    with pytest.raises(ValueError, match=r"channel_names: checkpoint \['lesion'\], config \['pigment_network'"):
        export_bundle(tmp_path / "out", "task2", DEFAULT_NETWORK, checkpoint=ckpt, torchscript=False)


def test_checkpoint_of_another_network_is_refused(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "model.pt", "task1", "unet", [64, 64])
    with pytest.raises(ValueError, match="network_name: checkpoint unet, config attention_unet"):
        export_bundle(tmp_path / "out", "task1", "attention_unet", checkpoint=ckpt, torchscript=False)


def test_untrained_export_warns(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = export_bundle(tmp_path / "out", "task2", "unet", torchscript=False)
    assert not result["trained"]
    assert any("untrained network" in str(w.message) for w in caught)


def test_unknown_network_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="convnext_unet"):
        export_bundle(tmp_path / "out", "task1", "resnet9000")
