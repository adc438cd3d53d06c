"""Mixed precision on a CPU: the training forward pass really runs in bfloat16, gradients flow, and it still learns."""

from __future__ import annotations

import pytest
import torch
from conftest import BUNDLE_ROOT
from monai.inferers import SimpleInferer
from monai.losses import DiceCELoss
from monai.networks.nets import UNet

from isic_monai.inferers import AutocastInferer, autocast_dtype


def test_autocast_dtype_rules() -> None:
    assert autocast_dtype("auto", "cpu") is torch.bfloat16
    assert autocast_dtype(None, torch.device("cuda:1")) is torch.float16
    assert autocast_dtype("bfloat16", "cuda") is torch.bfloat16
    with pytest.raises(ValueError, match="CPU autocast computes in bfloat16"):
        autocast_dtype("float16", "cpu")
    with pytest.raises(ValueError, match="--amp_dtype 'fp8'"):
        autocast_dtype("fp8", "cpu")


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return UNet(spatial_dims=2, in_channels=3, out_channels=1, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)


def test_forward_runs_in_bfloat16_and_returns_float32() -> None:
    net = _net()
    seen: list[torch.dtype] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
             for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    pred = AutocastInferer(SimpleInferer(), torch.bfloat16)(torch.rand(2, 3, 32, 32), net)
    for hook in hooks:
        hook.remove()
    assert seen and all(dtype is torch.bfloat16 for dtype in seen), set(seen)
    assert pred.dtype is torch.float32
    pred.mean().backward()
    assert all(p.grad is not None and p.grad.dtype is torch.float32 for p in net.parameters() if p.requires_grad)


def test_disabled_is_float32() -> None:
    net = _net()
    seen: list[torch.dtype] = []
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    AutocastInferer(SimpleInferer(), torch.bfloat16, enabled=False)(torch.rand(1, 3, 32, 32), net)
    assert seen == [torch.float32]


def test_learns_in_bfloat16() -> None:
    """A small segmentation problem (bright discs on noise): the Dice loss falls well below its start."""
    generator = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    centres = torch.randint(8, 24, (16, 2), generator=generator).float()
    masks = torch.stack([((yy - c[0]) ** 2 + (xx - c[1]) ** 2 < 36).float() for c in centres])[:, None]
    images = (masks.repeat(1, 3, 1, 1) * 0.6 + torch.rand(16, 3, 32, 32, generator=generator) * 0.4)
    net = _net()
    inferer = AutocastInferer(SimpleInferer(), torch.bfloat16)
    loss_fn = DiceCELoss(sigmoid=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = loss_fn(inferer(images, net), masks)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_bundle_trains_in_bfloat16_on_cpu() -> None:
    """The bundle's training inferer is the bfloat16 autocast on a CPU; validation and inference stay float32."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE_ROOT / "configs" / "train.yaml"))
    parser["device"] = "$torch.device('cpu')"
    train_inferer = parser.get_parsed_content("train#inferer")
    assert isinstance(train_inferer, AutocastInferer)
    assert train_inferer.enabled and train_inferer.dtype is torch.bfloat16
    assert isinstance(parser.get_parsed_content("validate#inferer"), SimpleInferer)
    assert parser.get_parsed_content("use_amp") is False
