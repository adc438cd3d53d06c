"""Mixed precision on a CPU (the training forward pass really runs in bfloat16, gradients flow, it still learns) and
the averaging inferer of evaluation and inference (test-time augmentation, ensembles)."""

from __future__ import annotations

import pytest
import torch
from conftest import BUNDLE_ROOT
from monai.inferers import SimpleInferer
from monai.losses import DiceCELoss
from monai.networks.nets import UNet

from isic_monai.bundle.checkpoint import CheckpointInfo
from isic_monai.engines.inferers import (
    TTA_VIEWS,
    AutocastInferer,
    AveragingInferer,
    apply_view,
    autocast_dtype,
    invert_view,
    load_ensemble,
)


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
    """The bundle's training inferer is the bfloat16 autocast on a CPU (``--cpu_autocast true``; the default ``auto``
    decides by the CPU: ``test_cpu_autocast_auto_follows_the_cpu``); validation and inference stay float32."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE_ROOT / "configs" / "train.yaml"))
    parser["device"] = "$torch.device('cpu')"
    assert parser["cpu_autocast"] == "auto"
    parser["cpu_autocast"] = True
    train_inferer = parser.get_parsed_content("train#inferer")
    assert isinstance(train_inferer, AutocastInferer)
    assert train_inferer.enabled and train_inferer.dtype is torch.bfloat16
    assert isinstance(parser.get_parsed_content("validate#inferer"), SimpleInferer)
    assert parser.get_parsed_content("use_amp") is False


# ------------------------------------------------------------------ averaging: test-time augmentation and ensembles


class _Shift(torch.nn.Module):
    """A network whose logit is a constant: a fixed ensemble member."""

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = torch.nn.Parameter(torch.tensor(logit))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x[:, :1]) + self.logit


def _asymmetric_net() -> torch.nn.Module:
    """A convolution with a random (not flip- or rotation-symmetric) kernel: its output depends on the view."""
    torch.manual_seed(1)
    return torch.nn.Conv2d(3, 2, kernel_size=3, padding=1)


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (1, 3, 16, 24)])
def test_tta_predictions_are_equivariant(shape: tuple[int, ...]) -> None:
    """Averaging over the flip/rotation views makes the prediction of a flipped or turned photo the flipped or turned
    prediction, even for a network that is not equivariant itself: all eight views for a square input, the four
    shape-keeping ones (flips, half turn) for a non-square one."""
    net, x = _asymmetric_net(), torch.rand(shape)
    tta = AveragingInferer(SimpleInferer(), tta=True)
    plain = AveragingInferer(SimpleInferer())
    pred = tta(x, net)
    assert pred.shape == (shape[0], 2, *shape[2:])
    views = [lambda t: torch.flip(t, dims=(-1,)), lambda t: torch.flip(t, dims=(-2,))]
    if shape[-1] == shape[-2]:  # a quarter turn is in the group only for a square input
        views.append(lambda t: torch.rot90(t, 1, dims=(-2, -1)))
    for view in views:
        assert torch.allclose(tta(view(x), net), view(pred), atol=1e-5)
        assert not torch.allclose(plain(view(x), net), view(plain(x, net)), atol=1e-3)  # the net alone is not


def test_tta_averages_probabilities_not_logits() -> None:
    net, x = _asymmetric_net(), torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        probs = [torch.sigmoid(invert_view(net(apply_view(x, k, f)), k, f)) for k, f in TTA_VIEWS]
        expected = torch.stack(probs).mean(0)
        assert torch.allclose(torch.sigmoid(AveragingInferer(SimpleInferer(), tta=True)(x, net)), expected, atol=1e-5)
        assert not torch.allclose(expected, torch.sigmoid(torch.stack([torch.logit(p) for p in probs]).mean(0)),
                                  atol=1e-4)


def test_non_square_inputs_average_only_shape_keeping_views() -> None:
    net, x = _asymmetric_net(), torch.rand(1, 3, 8, 12)
    with torch.no_grad():
        views = [(k, f) for k, f in TTA_VIEWS if k % 2 == 0]
        expected = torch.stack([torch.sigmoid(invert_view(net(apply_view(x, k, f)), k, f)) for k, f in views]).mean(0)
        assert len(views) == 4
        assert torch.allclose(torch.sigmoid(AveragingInferer(SimpleInferer(), tta=True)(x, net)), expected, atol=1e-5)


@pytest.mark.parametrize(("shape", "views", "expected_views"), [
    ((1, 3, 8, 12), 2, [(0, False), (0, True)]),  # identity + horizontal flip
    ((1, 3, 8, 12), 8, [(0, False), (0, True), (2, True), (2, False)]),  # non-square: at most the four
    ((2, 3, 8, 8), 6, [(0, False), (0, True), (2, True), (2, False), (1, False), (3, False)]),
])
def test_tta_views_take_the_first_views_the_shape_allows(shape, views, expected_views) -> None:
    net, x = _asymmetric_net(), torch.rand(shape)
    with torch.no_grad():
        expected = torch.stack([torch.sigmoid(invert_view(net(apply_view(x, k, f)), k, f))
                                for k, f in expected_views]).mean(0)
        for batch_views in (True, False):  # one forward per shape, or one per view: the same values
            inferer = AveragingInferer(SimpleInferer(), tta=True, views=views, batch_views=batch_views)
            assert torch.allclose(torch.sigmoid(inferer(x, net)), expected, atol=1e-5)
    with pytest.raises(ValueError, match="tta_views"):
        AveragingInferer(SimpleInferer(), tta=True, views=0)


def test_batched_views_run_one_forward_per_shape() -> None:
    calls = []

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return x[:, :1]

    AveragingInferer(SimpleInferer(), tta=True)(torch.rand(1, 3, 8, 12), counting)
    assert calls == [(4, 3, 8, 12)]
    calls.clear()
    AveragingInferer(SimpleInferer(), tta=True)(torch.rand(1, 3, 8, 8), counting)
    assert calls == [(4, 3, 8, 8), (4, 3, 8, 8)]  # the shape-keeping views, then the quarter turns


def test_one_view_one_network_is_the_plain_inferer() -> None:
    net, x = _asymmetric_net(), torch.rand(1, 3, 8, 8)
    assert torch.equal(AveragingInferer(SimpleInferer())(x, net), net(x))


def test_ensemble_is_the_mean_probability() -> None:
    x = torch.rand(1, 3, 4, 4)
    pred = AveragingInferer(SimpleInferer(), networks=[_Shift(-2.0), _Shift(3.0)])(x, _Shift(0.0))
    expected = torch.sigmoid(torch.tensor([0.0, -2.0, 3.0])).mean()
    assert torch.allclose(torch.sigmoid(pred), expected.expand_as(pred), atol=1e-6)


def test_load_ensemble_reads_members_and_checks_their_record(tmp_path) -> None:
    record = CheckpointInfo(["lesion"], [32, 32], "residual_unet")
    trained = _net()
    torch.nn.init.constant_(next(trained.parameters()), 0.5)
    torch.save({"model": trained.state_dict(), "config": record.state_dict()}, tmp_path / "a.pt")
    torch.save({"model": trained.state_dict(), "config": CheckpointInfo(["lesion"], [64, 64]).state_dict()},
               tmp_path / "b.pt")
    base = _net()
    (member,) = load_ensemble(base, [tmp_path / "a.pt"], record, "cpu")
    assert member is not base and not member.training
    pairs = zip(member.state_dict().values(), trained.state_dict().values(), strict=True)
    assert all(torch.equal(p, q) for p, q in pairs)
    assert not torch.equal(next(base.parameters()), next(member.parameters())), "the main network was changed"
    with pytest.raises(ValueError, match=r"b\.pt.*\n.*image_size: checkpoint \[64, 64\], config \[32, 32\]"):
        load_ensemble(base, [tmp_path / "b.pt"], record)
    other = UNet(spatial_dims=2, in_channels=3, out_channels=1, channels=(4, 8), strides=(2,))
    torch.save({"model": other.state_dict()}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"c\.pt does not fit the configured network"):
        load_ensemble(base, [tmp_path / "c.pt"])
    assert load_ensemble(base, []) == [] and load_ensemble(base, None) == []


def test_cpu_autocast_auto_follows_the_cpu() -> None:
    """``cpu_autocast: auto`` is on only where the CPU has bfloat16 in hardware (emulated, it made training 7x
    slower); true/false force it; never without amp or on CUDA (MONAI's own AMP)."""
    from isic_monai.engines.inferers import cpu_autocast_enabled, cpu_bfloat16_is_native

    native = cpu_bfloat16_is_native()
    assert native == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert cpu_autocast_enabled("auto", True, "cpu") is native
    assert cpu_autocast_enabled("true", True, "cpu") is True and cpu_autocast_enabled(True, True, "cpu") is True
    assert cpu_autocast_enabled("false", True, "cpu") is False
    assert cpu_autocast_enabled("true", False, "cpu") is False  # amp off
    assert cpu_autocast_enabled("true", True, "cuda:0") is False
    with pytest.raises(ValueError, match="--cpu_autocast 'sometimes'"):
        cpu_autocast_enabled("sometimes", True, "cpu")
