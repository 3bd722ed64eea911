"""UNet3D: shapes in every mode, conditioning and its dropping, the key mask, how frames and timesteps mix,
that every mode trains, and the parameter budget against video-diffusion-pytorch's Unet3D."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from sg2video.errors import ConfigError
from sg2video.unet import COND_MODES, Conditioning, UNet3D, build_unet
from sg2video.unet.conditioning import box_coverage, rasterize_boxes

COND_DIM = 16
CONF = Path(__file__).resolve().parents[1] / "conf" / "model" / "unet.yaml"


@pytest.fixture(autouse=True)
def _seed_one_thread(one_thread):
    """Seeded, on one thread (conftest.one_thread)."""
    torch.manual_seed(0)


def tiny(cond: str = "none", **kw) -> UNet3D:
    """Two levels (16 and 32 wide), one block each: fast, and still every block type."""
    args = dict(dim=16, dim_mults=(1, 2), num_res_blocks=1, spatial_attn_levels=(1,), temporal_attn_levels=(0, 1),
                attn_head_dim=8, cond=cond, cond_dim=COND_DIM, layout_channels=4)
    return UNet3D(**{**args, **kw}).eval()


def wake_zero_init(model: nn.Module, std: float = 0.3) -> nn.Module:
    """Give the layers that start at zero (cross-attention output, position bias, norm biases) random values."""
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, std)
    return model


def make_cond(batch: int, frames: int, tokens: int = 5, objects: int = 3, seed: int = 1) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    lo = torch.rand(batch, frames, objects, 2, generator=g) * 0.5
    size = 0.2 + torch.rand(batch, frames, objects, 2, generator=g) * 0.3
    token_mask = torch.ones(batch, frames, tokens, dtype=torch.bool)
    token_mask[..., -2:] = False  # two padding slots per frame
    layout_mask = torch.ones(batch, frames, objects, dtype=torch.bool)
    layout_mask[..., -1] = False
    return Conditioning(
        tokens=torch.randn(batch, frames, tokens, COND_DIM, generator=g),
        token_mask=token_mask,
        global_vec=torch.randn(batch, frames, COND_DIM, generator=g),
        layout_boxes=torch.cat((lo, lo + size), dim=-1),  # x0 y0 x1 y1
        layout_embed=torch.randn(batch, frames, objects, COND_DIM, generator=g),
        layout_mask=layout_mask,
    )


def inputs(batch=2, frames=4, size=16, channels=3):
    x = torch.randn(batch, channels, frames, size, size)
    t = torch.randint(1, 1000, (batch, frames))
    return x, t


# ---------------------------------------------------------------- shapes and config


@pytest.mark.parametrize("cond", COND_MODES)
@pytest.mark.parametrize("frames", [1, 4, 8])
@pytest.mark.parametrize("size", [16, 32])
def test_output_shape_equals_input_shape(cond, frames, size):
    model = tiny(cond)
    x, t = inputs(batch=2, frames=frames, size=size)
    with torch.no_grad():
        out = model(x, t, make_cond(2, frames))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_odd_sizes_out_channels_and_broadcast_t():
    model = tiny("concat", in_channels=4, out_channels=8, dim_mults=(1, 2, 2))
    x = torch.randn(1, 4, 3, 18, 22)  # 18 -> 9 -> 5 on the way down
    t = torch.tensor([7])
    with torch.no_grad():
        out = model(x, t, make_cond(1, 3))
        same = model(x, t.expand(1, 3), make_cond(1, 3))
    assert out.shape == (1, 8, 3, 18, 22)
    assert torch.equal(out, same)  # t (B,) is t (B, T) with the value repeated


def test_bad_config_values_name_value_and_accepted():
    with pytest.raises(ConfigError, match=r"model.cond='film'.*concat, crossattn, hybrid, adm, none"):
        UNet3D(cond="film")
    with pytest.raises(ConfigError, match=r"spatial_attn_levels.*\[3\].*0\.\.2"):
        UNet3D(spatial_attn_levels=(3,))
    with pytest.raises(ConfigError, match="crossattn needs spatial attention"):
        UNet3D(cond="crossattn", spatial_attn_levels=())


def test_model_config_builds_the_configured_net():
    cfg = OmegaConf.load(CONF)
    assert cfg.cond in COND_MODES and cfg.get("prefix_frames") is not None
    cfg.dim, cfg.dim_mults, cfg.temporal_attn_levels = 8, [1, 2, 4, 4], [3]  # shrink, and reach level 3
    cfg.num_res_blocks, cfg.spatial_attn_levels = 2, [3]
    model = build_unet(cfg, in_channels=4, cond_dim=COND_DIM)
    assert model.cond_mode == cfg.cond and len(model.down) == 4 and model.out_channels == 4
    temporal = [name for name, module in model.named_modules() if type(module).__name__ == "TemporalAttention"]
    assert temporal == ["down.3.0.temporal", "down.3.1.temporal", "mid.temporal", "up.0.0.temporal", "up.0.1.temporal"]
    x, t = inputs(batch=1, frames=2, size=16, channels=4)
    with torch.no_grad():
        assert model(x, t, make_cond(1, 2)).shape == x.shape
    cfg.cond = "film"
    with pytest.raises(ConfigError, match="model.cond='film'"):
        build_unet(cfg, in_channels=3, cond_dim=COND_DIM)


# ---------------------------------------------------------------- conditioning


def perturbed(cond: Conditioning) -> Conditioning:
    """Every conditioning value changed (masks kept)."""
    return Conditioning(
        tokens=cond.tokens + 1.0, token_mask=cond.token_mask, global_vec=cond.global_vec - 1.0,
        layout_boxes=(cond.layout_boxes * 0.7 + 0.2).clamp(0, 1), layout_embed=cond.layout_embed * -2.0,
        layout_mask=cond.layout_mask,
    )


@pytest.mark.parametrize("cond", ["crossattn", "adm", "concat", "hybrid"])
def test_drop_cond_removes_the_condition_per_sample(cond):
    model = wake_zero_init(tiny(cond))
    x, t = inputs()
    a = make_cond(2, 4)
    b = perturbed(a)
    with torch.no_grad():
        kept_a, kept_b = model(x, t, a), model(x, t, b)
        drop = torch.tensor([True, False])
        drop_a, drop_b = model(x, t, a, drop), model(x, t, b, drop)
        unconditional = model(x, t, None)
    # kept: the condition matters
    assert (kept_a - kept_b).abs().amax() > 1e-2
    # dropped sample 0: identical output whatever the condition, and equal to cond=None
    torch.testing.assert_close(drop_a[0], drop_b[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(drop_a[0], unconditional[0], rtol=0, atol=1e-6)
    # sample 1 is not dropped: it still follows its condition, exactly as without drop_cond
    assert (drop_a[1] - drop_b[1]).abs().amax() > 1e-2
    torch.testing.assert_close(drop_a[1], kept_a[1], rtol=0, atol=1e-6)


def test_crossattn_starts_as_the_unconditional_net_then_learns_to_listen():
    model = tiny("crossattn").train()
    x, t = inputs()
    a = make_cond(2, 4)
    b = perturbed(a)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, a), model(x, t, b), rtol=0, atol=0)  # zero-init output projection
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(x, t, a).square().mean().backward()
    opt.step()
    with torch.no_grad():
        assert (model(x, t, a) - model(x, t, b)).abs().amax() > 1e-4


def test_key_mask_hides_padding_tokens():
    model = wake_zero_init(tiny("crossattn"))
    x, t = inputs()
    cond = make_cond(2, 4)
    padded = Conditioning(**{**cond.__dict__, "tokens": cond.tokens.clone()})
    padded.tokens[..., -2:, :] = 100.0  # slots with token_mask False
    real = Conditioning(**{**cond.__dict__, "tokens": cond.tokens.clone()})
    real.tokens[:, :, 0, :] += 1.0  # a real token
    with torch.no_grad():
        base = model(x, t, cond)
        torch.testing.assert_close(model(x, t, padded), base, rtol=0, atol=1e-6)
        assert (model(x, t, real) - base).abs().amax() > 1e-2
        # a frame with no real token still has the null token to attend to
        empty = Conditioning(tokens=cond.tokens, token_mask=torch.zeros_like(cond.token_mask))
        assert torch.isfinite(model(x, t, empty)).all()


def test_condition_is_per_frame_when_frames_do_not_mix():
    model = wake_zero_init(tiny("crossattn", temporal_attn_levels=()))
    x, t = inputs()
    cond = make_cond(2, 4)
    changed = Conditioning(**{**cond.__dict__, "tokens": cond.tokens.clone()})
    changed.tokens[:, 2] += 1.0
    with torch.no_grad():
        diff = (model(x, t, cond) - model(x, t, changed)).abs().amax(dim=(0, 1, 3, 4))  # per frame
    assert diff[2] > 1e-2
    assert diff[[0, 1, 3]].max() < 1e-6


def test_layout_rasterisation_is_area_coverage():
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.125, 0.5, 0.25, 1.0]]])  # (N=1, K=2, 4)
    values = torch.tensor([[[1.0], [2.0]]])
    maps = rasterize_boxes(boxes, values, 4, 4)[0, 0]
    expected = torch.tensor([
        [1.0, 1.0, 0.0, 0.0],
        [1.0, 1.0, 0.0, 0.0],
        [1.0, 0.0, 0.0, 0.0],  # the second box covers half of pixel column 0: 2 * 0.5
        [1.0, 0.0, 0.0, 0.0],
    ])
    torch.testing.assert_close(maps, expected)
    # coarser maps are the finer ones averaged (so latent maps agree with pixel maps)
    rand = torch.rand(3, 5, 4)
    rand = torch.cat((rand[..., :2].minimum(rand[..., 2:]), rand[..., :2].maximum(rand[..., 2:])), -1)
    vals = torch.randn(3, 5, 2)
    fine, coarse = rasterize_boxes(rand, vals, 32, 32), rasterize_boxes(rand, vals, 8, 8)
    torch.testing.assert_close(F.avg_pool2d(fine, 4), coarse, rtol=1e-4, atol=1e-5)
    assert box_coverage(torch.tensor(0.3), torch.tensor(0.3), 10).sum() == 0  # empty box, no mass


def test_layout_mask_removes_padding_objects():
    model = tiny("concat")
    x, t = inputs()
    cond = make_cond(2, 4)
    moved = Conditioning(**{**cond.__dict__, "layout_embed": cond.layout_embed.clone()})
    moved.layout_embed[:, :, -1] = 50.0  # the padding object
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, moved), model(x, t, cond), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- frames and timesteps


def frame_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().amax(dim=(0, 1, 3, 4))  # (T,)


def test_temporal_attention_mixes_frames_and_spatial_only_does_not():
    x, t = inputs(frames=4)
    x2 = x.clone()
    x2[:, :, 0] += 1.0
    mixing = tiny()
    separate = tiny(temporal_attn_levels=())
    with torch.no_grad():
        d_mix = frame_diff(mixing(x, t), mixing(x2, t))
        d_sep = frame_diff(separate(x, t), separate(x2, t))
    assert d_mix[3] > 1e-3 and d_mix[0] > 1e-2
    assert d_sep[0] > 1e-2 and d_sep[1:].max() < 1e-6


def test_temporal_position_bias_breaks_frame_permutation_symmetry():
    """Without position information attention across frames is permutation-equivariant; the learned
    relative bias (zero at init) is what tells frame order."""
    model = tiny(spatial_attn_levels=())
    x, _ = inputs(frames=4)
    t = torch.full((2, 4), 10)
    flip = lambda v: v.flip(2)  # noqa: E731
    with torch.no_grad():
        torch.testing.assert_close(model(flip(x), t), flip(model(x, t)), rtol=0, atol=1e-5)
        wake_zero_init(model, std=1.0)
        assert (model(flip(x), t) - flip(model(x, t))).abs().amax() > 1e-3


def test_per_frame_timesteps():
    """t of frame 0 changes frame 0's output; other frames only through temporal attention."""
    x, t = inputs(frames=4)
    t2 = t.clone()
    t2[:, 0] = 0  # frame 0 becomes a clean prefix frame
    mixing, separate = tiny(), tiny(temporal_attn_levels=())
    with torch.no_grad():
        d_sep = frame_diff(separate(x, t), separate(x, t2))
        d_mix = frame_diff(mixing(x, t), mixing(x, t2))
    assert d_sep[0] > 1e-2 and d_sep[1:].max() < 1e-6
    assert d_mix[0] > 1e-2 and d_mix[1:].min() > 1e-4


def test_still_items_are_denoised_frame_by_frame_while_video_items_mix():
    """Image-video co-training: the frames of a still (image) item are kept apart by temporal attention, so
    each equals that frame run alone; the video item beside it in the batch still mixes its frames."""
    model = wake_zero_init(tiny("adm"), std=0.5)
    x, t = inputs(frames=4)
    cond = make_cond(2, 4)
    still = torch.tensor([[True] * 4, [False] * 4])
    x2 = x.clone()
    x2[:, :, 0] += 1.0  # change frame 0 of both items
    with torch.no_grad():
        out, out2 = model(x, t, cond, still=still), model(x2, t, cond, still=still)
        d_still, d_video = frame_diff(out[:1], out2[:1]), frame_diff(out[1:], out2[1:])
        assert d_still[0] > 1e-2 and d_still[1:].max() < 1e-6
        assert d_video[1:].min() > 1e-4
        for f in range(4):  # a still frame is exactly the single-frame (image) prediction
            one = Conditioning(global_vec=cond.global_vec[:1, f : f + 1])
            torch.testing.assert_close(model(x[:1, :, f : f + 1], t[:1, f : f + 1], one), out[:1, :, f : f + 1],
                                       rtol=1e-4, atol=1e-5)
        # a batch with no still item runs the unmasked path: identical to passing still=None
        torch.testing.assert_close(model(x, t, cond, still=torch.zeros(2, 4, dtype=torch.bool)), model(x, t, cond))


def test_single_frame_equals_clip_without_temporal_attention():
    """Images (T=1) go through the same per-frame weights as clips."""
    model = tiny("adm", temporal_attn_levels=())
    x, t = inputs(frames=3)
    cond = make_cond(2, 3)
    with torch.no_grad():
        clip = model(x, t, cond)
        for f in range(3):
            one = Conditioning(global_vec=cond.global_vec[:, f : f + 1])
            torch.testing.assert_close(model(x[:, :, f : f + 1], t[:, f : f + 1], one), clip[:, :, f : f + 1],
                                       rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- training and budget


# loss after 30 Adam steps / first loss, measured here (seeded, one thread): crossattn 0.22, concat 0.16,
# layout 0.25, none 0.29; the bound leaves room for other BLAS builds and thread counts.
@pytest.mark.parametrize("cond", COND_MODES)
def test_each_mode_trains(cond):
    model = tiny(cond).train()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 4, 16, 16, generator=g).round() * 2 - 1  # fixed binary clips
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (2, 4), generator=g)
    alpha = torch.cos(t / 1000 * torch.pi / 2)[:, None, :, None, None]
    noisy = alpha * x0 + (1 - alpha**2).sqrt() * noise
    cond_batch = make_cond(2, 4)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss = F.mse_loss(model(noisy, t, cond_batch), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    ratio = losses[-1] / losses[0]
    print(f"{cond}: loss {losses[0]:.3f} -> {losses[-1]:.3f} (ratio {ratio:.2f})")
    assert ratio < 0.45


def test_layout_maps_carry_each_pixels_position_inside_its_box():
    from sg2video.unet.conditioning import Conditioning, LayoutMaps

    maps_module = LayoutMaps(cond_dim=4, channels=3)
    boxes = torch.tensor([[[[0.25, 0.5, 0.75, 1.0]]]])  # one object: x in [4, 12), y in [8, 16) at 16x16
    cond = Conditioning(layout_boxes=boxes, layout_embed=torch.ones(1, 1, 1, 4), layout_mask=torch.ones(1, 1, 1, dtype=torch.bool))
    maps = maps_module(cond, None, 1, 1, 16, 16)
    assert maps.shape == (1, 5, 16, 16)
    u, v = maps[0, 3], maps[0, 4]
    assert u[10, 4].item() == pytest.approx(-7 / 8) and u[10, 11].item() == pytest.approx(7 / 8)
    assert v[8, 6].item() == pytest.approx(-7 / 8) and v[15, 6].item() == pytest.approx(7 / 8)
    assert u[:, :4].abs().sum() == 0 and u[:8].abs().sum() == 0  # zero outside the box
    dropped = maps_module(cond, torch.tensor([True]), 1, 1, 16, 16)
    assert dropped.abs().sum() == 0


# ---------------------------------------------------------------- where each mode's condition enters


def _grads_by_module(model: nn.Module, cond: Conditioning, x, t, names: list[str]) -> dict[str, float]:
    """|d loss / d parameter| summed over each named module's parameters, for a loss on the output."""
    model.zero_grad()
    model(x, t, cond).square().mean().backward()
    modules = dict(model.named_modules())
    return {name: sum(p.grad.abs().sum().item() for p in modules[name].parameters() if p.grad is not None)
            for name in names}


def test_crossattn_condition_reaches_every_level_it_claims_and_no_other():
    """With cross-attention at levels 0 and 1, the tokens' keys/values get a gradient in every spatial attention
    block of those levels (down, mid, up); the tokens themselves get one, and changing them changes the output."""
    model = wake_zero_init(tiny("crossattn", spatial_attn_levels=(0, 1))).train()
    x, t = inputs()
    cond = make_cond(2, 4)
    cond.tokens.requires_grad_(True)
    blocks = [name for name, m in model.named_modules() if type(m).__name__ == "SpatialAttention"]
    assert {name.split(".")[0] for name in blocks} == {"down", "mid", "up"} and len(blocks) >= 5
    for name in blocks:
        assert dict(model.named_modules())[name].has_context, name  # every spatial block attends to the graph
    grads = _grads_by_module(model, cond, x, t, [f"{name}.cross_kv" for name in blocks])
    assert all(g > 0 for g in grads.values()), grads
    assert cond.tokens.grad[cond.token_mask].abs().sum() > 0
    assert cond.tokens.grad[~cond.token_mask].abs().sum() == 0  # padding slots: no path from them to the output


def test_concat_condition_reaches_every_resblock_through_the_time_embedding():
    model = wake_zero_init(tiny("adm")).train()
    x, t = inputs()
    cond = make_cond(2, 4)
    cond.global_vec.requires_grad_(True)
    blocks = [name for name, m in model.named_modules() if type(m).__name__ == "ResBlock"]
    model.zero_grad()
    model(x, t, cond).square().mean().backward()
    assert cond.global_vec.grad.abs().sum() > 0
    # each ResBlock's own scale/shift layer is fed by time + graph: perturbing the graph moves every block's input
    seen = {}
    hooks = [dict(model.named_modules())[name].register_forward_hook(
        lambda m, args, out, name=name: seen.setdefault(name, []).append(args[1].detach().clone())) for name in blocks]
    with torch.no_grad():
        model(x, t, cond)
        model(x, t, Conditioning(global_vec=cond.global_vec.detach() + 1.0))
    for hook in hooks:
        hook.remove()
    assert len(seen) == len(blocks) and all((a - b).abs().amax() > 1e-3 for a, b in seen.values()), list(seen)


def test_coords_give_the_net_each_pixels_position():
    """model.coords: two more input channels hold each pixel's x and y in [-1, 1] (CoordConv), on every frame
    of every clip, at any size; they change what the net computes."""
    plain, placed = tiny("none"), tiny("none", coords=True)
    assert placed.init_conv.weight.shape[1] == plain.init_conv.weight.shape[1] + 2
    seen = []
    placed.init_conv.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    x, t = inputs(batch=2, frames=3, size=12)
    x = x[..., :12, :]
    x = torch.cat((x, x[..., :8]), dim=-1)  # 12 high, 20 wide
    with torch.no_grad():
        out = placed(x, t)
        assert out.shape == x.shape
        grid = seen[-1][:, -2:]  # ((b t) or b, 2, ..., H, W) as the first conv sees it
        xs, ys = grid[:, 0], grid[:, 1]
        assert torch.allclose(xs[..., 0, :], torch.linspace(-1, 1, 20).expand_as(xs[..., 0, :]))
        assert torch.allclose(ys[..., :, 0], torch.linspace(-1, 1, 12).expand_as(ys[..., :, 0]))
        assert (xs.amax(-2) == xs.amin(-2)).all() and (ys.amax(-1) == ys.amin(-1)).all()  # x varies along W only
        placed.init_conv.weight[:, -2:] = 0
        assert (placed(x, t) - out).abs().amax() > 1e-4
