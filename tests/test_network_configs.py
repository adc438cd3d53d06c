"""One network, one truth: every ``configs/networks/*.yaml`` defines its whole network, so layering it on any bundle
config (the shipped ``bundle/configs/train.yaml`` and ``inference.yaml`` hold another network's ids) builds and trains
exactly that network; the default network is written once; export and ``compare`` follow what a checkpoint records.

Parse and build only (``pretrained_encoder: false``, no weights read, 64x64): no training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import BUNDLE_ROOT
from monai.bundle import ConfigParser

from isic_monai.bundle import export
from isic_monai.bundle.checkpoint import read_checkpoint_info
from isic_monai.bundle.paths import NETWORK_CONFIG_DIR, network_config_names
from isic_monai.results.compare import load_run

NETWORKS = network_config_names()
WHOLE_NETWORK = ("network_name", "network_def", "size_multiple", "network_parameters", "network_train_handlers")
"""The ids every network file sets: together they decide what is built and how it is trained."""
SMALL = {"image_size": [64, 64], "pretrained_encoder": False, "device": "$torch.device('cpu')"}
SHIPPED_BASES = {kind: BUNDLE_ROOT / "configs" / f"{kind}.yaml" for kind in ("train", "inference")}


def layered(base: Path, network: str) -> ConfigParser:
    """``--config_file "['<base>','configs/networks/<network>.yaml']"`` as MONAI's CLI reads it, at a small size."""
    parser = ConfigParser()
    parser.read_config([str(base), str(NETWORK_CONFIG_DIR / f"{network}.yaml")])
    for key, value in SMALL.items():
        parser[key] = value
    return parser


def from_source(kind: str, network: str) -> ConfigParser:
    """The same network on its own source layers (configs/bundle/*, then the network file)."""
    content, _ = export.flat_config(kind, "task1", network)
    parser = ConfigParser(config=json.loads(json.dumps(content)))
    for key, value in SMALL.items():
        parser[key] = value
    return parser


def facts(parser: ConfigParser) -> dict[str, Any]:
    """What a config builds: its name and multiple, the network's class, parameter count and weight shapes."""
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    return {"network_name": parser.get_parsed_content("network_name"),
            "size_multiple": parser.get_parsed_content("size_multiple"), "class": type(net),
            "parameters": sum(p.numel() for p in net.parameters()),
            "shapes": {k: tuple(v.shape) for k, v in net.state_dict().items()}}


def optimised(parameters: Any) -> list[torch.nn.Parameter]:
    """The tensors an optimiser gets from ``network_parameters`` (parameters, or parameter groups)."""
    items = list(parameters)
    if items and isinstance(items[0], dict):
        return [p for group in items for p in group["params"]]
    return items


@pytest.mark.parametrize("network", NETWORKS)
def test_each_file_defines_its_whole_network(network: str) -> None:
    ids = yaml.safe_load((NETWORK_CONFIG_DIR / f"{network}.yaml").read_text())
    missing = [key for key in WHOLE_NETWORK if key not in ids]
    assert not missing, f"configs/networks/{network}.yaml does not set {missing}"
    assert ids["network_name"] == network


@pytest.mark.parametrize("kind", ["train", "inference"])
@pytest.mark.parametrize("network", NETWORKS)
def test_layered_on_the_shipped_bundle_builds_that_network(network: str, kind: str) -> None:
    """The shipped bundle is another network (EfficientNet-Lite1 with its parameter groups and encoder freezing):
    layered on it, each file builds what it builds on its own source layers, and training optimises exactly that
    network's parameters with that network's handlers."""
    on_bundle, on_source = layered(SHIPPED_BASES[kind], network), from_source(kind, network)
    got, expected = facts(on_bundle), facts(on_source)
    assert got["network_name"] == expected["network_name"] == network
    assert got["class"] is expected["class"], f"{network} on bundle/configs/{kind}.yaml built {got['class']}"
    assert got["parameters"] == expected["parameters"]
    assert got == expected
    if kind == "train":
        net = on_bundle.get_parsed_content("network")
        params = optimised(on_bundle.get_parsed_content("network_parameters"))
        assert len(params) == len({id(p) for p in params}), "a parameter is optimised twice"
        assert {id(p) for p in params} == {id(p) for p in net.parameters()}
        handlers = on_bundle.get_parsed_content("network_train_handlers")
        source_handlers = on_source.get_parsed_content("network_train_handlers")
        assert [type(h) for h in handlers] == [type(h) for h in source_handlers]
        assert all(getattr(h, "network", net) is net for h in handlers)


def test_the_checks_see_another_network() -> None:
    """A file that only names its network (the old residual_unet.yaml) is caught: on the shipped bundle it builds
    the bundle's network and trains it with the bundle's parameter groups."""
    parser = ConfigParser()
    parser.read_config(str(SHIPPED_BASES["train"]))
    parser["network_name"] = "residual_unet"
    for key, value in SMALL.items():
        parser[key] = value
    assert facts(parser)["class"] is not facts(from_source("train", "residual_unet"))["class"]


def test_the_default_network_is_written_once() -> None:
    """``DEFAULT_NETWORK`` is common.yaml's ``network_name``, a network file; the shipped network is the one the
    shipped model records, and the shipped configs build it."""
    common = yaml.safe_load((export.SOURCE_DIR / "common.yaml").read_text())
    assert export.DEFAULT_NETWORK == export.default_network() == common["network_name"]
    assert export.DEFAULT_NETWORK in NETWORKS
    assert not set(WHOLE_NETWORK[1:]) & set(common), "common.yaml defines a network of its own"
    record = read_checkpoint_info(BUNDLE_ROOT / "models" / "model.pt")
    assert export.shipped_network("task1") == record["network_name"]
    assert export.shipped_network("task2") is None  # no Task 2 model shipped: export uses the default there
    for base in SHIPPED_BASES.values():
        assert yaml.safe_load(base.read_text())["network_name"] == record["network_name"]


def _record(path: Path, network: str | None) -> Path:
    """A ``model.pt`` of ``network`` (untrained weights, 64x64) with its record (none when ``network`` is None)."""
    net, _ = export.build_network(network or "unet", (64, 64))
    config = {"channel_names": ["lesion"], "image_size": [64, 64]}
    if network:
        config["network_name"] = network
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": net.state_dict(), "config": config}, path)
    return path


def test_export_builds_the_network_the_checkpoint_records(tmp_path: Path) -> None:
    ckpt = _record(tmp_path / "run" / "models" / "model.pt", "attention_unet")
    assert export.resolve_network("task1", None, ckpt) == "attention_unet"
    result = export.export_bundle(tmp_path / "out", checkpoint=ckpt, torchscript=False)
    assert result["network"] == "attention_unet" and result["trained"]
    with pytest.raises(ValueError, match="records no network_name; name its network with --network"):
        export.resolve_network("task1", None, _record(tmp_path / "bare.pt", None))


def test_compare_groups_runs_by_the_recorded_network(tmp_path: Path) -> None:
    """``compare`` takes the network from the evaluated checkpoint, not from what the run's settings claim."""
    run = tmp_path / "run"
    _record(run / "models" / "model.pt", "unet")
    (run / "eval").mkdir()
    (run / "eval" / "summary.json").write_text(json.dumps({"per_image": {}, "n_images": 0}))
    (run / "logs").mkdir()
    (run / "logs" / "run_settings.json").write_text(json.dumps({"network_name": "residual_unet"}))
    settings = load_run(run)["settings"]
    net, _ = export.build_network("unet", (64, 64))
    assert settings["network_name"] == "unet"
    assert settings["network_weights"] == sum(v.numel() for v in net.state_dict().values())
