"""The per-frame KL autoencoder: shapes of latents, the scale factor, learning, checkpoints."""
from __future__ import annotations

import pytest
import torch

from sg2video.autoencoder import FrameAutoencoder, psnr
from sg2video.autoencoder.train import FrameSampler, build_autoencoder, load_autoencoder, train_autoencoder
from sg2video.data.clips import video_to_model, video_to_uint8
from sg2video.data.shapes import ShapesDataset
from sg2video.errors import ConfigError
from sg2video.eval.compliance import check_video
from sg2video.train import checkpoint as ckpt
from sg2video.train.loop import LoopConfig, lr_lambda

TINY = dict(base_channels=8, channel_mults=(1, 2, 2), latent_channels=4, downsample=4)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one thread (conftest.one_thread)."""


def shapes_video(split: str = "val", clips: int = 2, size: int = 32, frames: int = 8) -> torch.Tensor:
    data = ShapesDataset(split, length=clips, size=size, frames=frames)
    return video_to_model(torch.stack([item["video"] for item in data.__getitems__(list(range(clips)))]))


def test_latent_shapes_and_decode_range():
    torch.manual_seed(0)
    ae = FrameAutoencoder(**TINY).eval()
    video = shapes_video(clips=2, frames=8)
    with torch.no_grad():
        z = ae.encode(video)
        assert z.shape == (2, 4, 8, 8, 8)
        out = ae.decode(z)
        assert out.shape == video.shape and out.min() >= -1 and out.max() <= 1
        assert ae.encode(video[:, :, :1]).shape == (2, 4, 1, 8, 8)  # T = 1
        # per frame: a frame's latent does not depend on the other frames of its clip
        assert torch.allclose(ae.encode(video[:, :, 3:4]), z[:, :, 3:4], atol=1e-5)
        # a posterior sample differs from the mean by the posterior's (small, initial) spread
        sample = ae.encode(video, sample=True, generator=torch.Generator().manual_seed(0))
        assert 0 < (sample - z).abs().max() < 0.5
    f8 = FrameAutoencoder(base_channels=8, channel_mults=(1, 1, 2, 2), downsample=8, latent_channels=8)
    with torch.no_grad():
        assert f8.encode(video[:, :, :2]).shape == (2, 8, 2, 4, 4)
    with pytest.raises(ValueError, match="divisible"):
        ae.encode(torch.zeros(1, 3, 1, 30, 30))
    with pytest.raises(ConfigError, match="channel_mults"):
        FrameAutoencoder(base_channels=8, channel_mults=(1, 2), downsample=4)
    with pytest.raises(ConfigError, match="power of two"):
        FrameAutoencoder(base_channels=8, channel_mults=(1, 2), downsample=3)


def test_scale_factor_gives_unit_std_and_leaves_reconstructions_alone():
    torch.manual_seed(0)
    ae = FrameAutoencoder(**TINY).eval()
    video = shapes_video(clips=4, frames=4)
    with torch.no_grad():
        before = ae.decode(ae.encode(video))
        raw_std = float(ae.encode(video).std())
        factor = ae.fit_scale_factor(ae.encode(video))
        assert factor == pytest.approx(1 / raw_std, rel=1e-4)
        assert float(ae.encode(video).std()) == pytest.approx(1.0, rel=1e-4)
        assert ae.fit_scale_factor(ae.encode(video)) == pytest.approx(factor, rel=1e-4)  # idempotent
        torch.testing.assert_close(ae.decode(ae.encode(video)), before, atol=1e-5, rtol=0)
    assert "scale_factor" in ae.state_dict()


def test_frame_sampler_picks_the_same_frames_for_the_same_clips():
    data = ShapesDataset("train", length=4, size=16, frames=8)
    items = data.__getitems__([0, 1, 2, 3])
    batch = FrameSampler(frames_per_clip=2, seed=0)(items)
    assert batch.shape == (4, 3, 2, 16, 16)
    assert torch.equal(batch, FrameSampler(frames_per_clip=2, seed=0)(items))
    full = video_to_model(torch.stack([item["video"] for item in items]))
    for clip, frames in zip(batch, full):  # each picked frame is one of its clip's frames
        for t in range(2):
            assert any(torch.equal(clip[:, t], frames[:, s]) for s in range(8))
    assert torch.equal(FrameSampler(0)(items), full)


def test_short_training_reconstructs_held_out_shapes():
    """The default architecture, seeded, 300 steps of 16 frames at 32 px (~15 s on one core): held-out PSNR
    goes from ~5 dB (untrained) to ~22 dB, and the shapes checker finds most objects and relations."""
    torch.manual_seed(0)
    ae = FrameAutoencoder(base_channels=16, channel_mults=(1, 2, 2), latent_channels=8, downsample=4)
    train = ShapesDataset("train", size=32, frames=8)
    sampler = FrameSampler(frames_per_clip=2, seed=0)
    held_items = ShapesDataset("val", size=32, frames=4).__getitems__(list(range(8)))
    held_out = video_to_model(torch.stack([item["video"] for item in held_items]))
    with torch.no_grad():
        untrained = psnr(held_out, ae.eval().decode(ae.encode(held_out)))
    ae.train()
    schedule = LoopConfig(max_steps=300, lr=2e-3, warmup_steps=20)  # the stage's warmup + cosine decay
    opt = torch.optim.AdamW(ae.parameters(), lr=schedule.lr, weight_decay=0.0)
    lr_steps = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(schedule))
    for step in range(schedule.max_steps):
        batch = sampler(train.__getitems__(list(range(8 * step, 8 * step + 8))))
        loss = ae.loss(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
        opt.step()
        lr_steps.step()
    with torch.no_grad():
        recon = ae.eval().decode(ae.encode(held_out))
    trained = psnr(held_out, recon)
    scores = [check_video(video_to_uint8(clip), item["graphs"]) for clip, item in zip(recon, held_items)]
    objects = sum(s.object_accuracy for s in scores) / len(scores)
    relations = sum(s.relation_accuracy for s in scores) / len(scores)
    print(f"untrained {untrained:.2f} dB, trained {trained:.2f} dB, objects {objects:.3f}, relations {relations:.3f}")
    # measured (seeds 0, 1, 2): 22.2 / 22.2 / 22.0 dB, objects 0.87 / 0.94 / 0.83, relations 0.98 / 1 / 1
    assert untrained < 10, untrained
    assert trained > 20.5, (untrained, trained)
    assert objects > 0.7 and relations > 0.9, (objects, relations)


def test_train_autoencoder_checkpoint_loads_alone(tmp_path):
    cfg = {"channels": 8, "channel_mults": [1, 2, 2], "latent_channels": 4, "downsample": 4,
           "train": {"frames_per_clip": 2, "scale_clips": 4}}
    data = ShapesDataset("train", length=16, size=16, frames=4)
    loop = LoopConfig(max_steps=3, batch_size=2, lr=1e-3, warmup_steps=0, ckpt_every=0, log_every=1)
    result = train_autoencoder(cfg, data, tmp_path, loop, progress=False, log=lambda _: None)
    assert result.finished and result.step == 3
    path = tmp_path / "checkpoints" / "autoencoder" / "last.pt"
    state = ckpt.load_checkpoint(path)
    assert state["finished"] and state["scale_fitted"] and state["stage"] == "autoencoder"
    assert isinstance(state["autoencoder_config"], dict)
    assert state["scale_factor"] == pytest.approx(float(result.model.scale_factor)) != 1.0

    loaded = load_autoencoder(path)
    video = shapes_video("val", clips=2, size=16, frames=4)
    with torch.no_grad():
        z = result.model.encode(video)
        assert torch.equal(loaded.encode(video), z)
        assert torch.equal(loaded.decode(z), result.model.decode(z))
    # a second call finds the finished stage and returns the same weights without training
    again = train_autoencoder(cfg, data, tmp_path, loop, progress=False, log=lambda _: None)
    assert again.step == 3 and torch.equal(again.model.scale_factor, result.model.scale_factor)
    with torch.no_grad():
        assert torch.equal(again.model.encode(video), z)
    assert build_autoencoder(cfg).config == loaded.config


def test_foreground_weight_makes_small_sprites_count():
    """foreground_mask finds the pixels unlike the frame's background; with foreground_weight an error on a
    6-pixel sprite costs far more of the loss than the same error spread over the background, and the weight
    survives a checkpoint's config."""
    from sg2video.autoencoder.model import AutoencoderOutput, foreground_mask

    video = torch.full((1, 3, 2, 32, 32), -1.0)
    video[:, :, :, 4:6, 4:7] = 1.0  # a 2 x 3 sprite in both frames
    mask = foreground_mask(video)
    assert mask.shape == (1, 1, 2, 32, 32) and int(mask.sum()) == 12 and bool(mask[0, 0, 0, 4, 4])
    latent = torch.zeros(1, 8, 2, 8, 8)
    sprite_wrong = video.clone()
    sprite_wrong[:, :, :, 4:6, 4:7] = 0.0  # the sprite at half brightness
    background_wrong = video.clone()
    background_wrong.view(-1)[: 12 * 3] += 1.0  # as many wrong channel values, each off by as much, on black
    losses = {}
    for weight in (0.0, 10.0):
        model = FrameAutoencoder(foreground_weight=weight)
        on_sprite = model.loss_terms(video, AutoencoderOutput(sprite_wrong, latent, latent))["recon"]
        on_background = model.loss_terms(video, AutoencoderOutput(background_wrong, latent, latent))["recon"]
        losses[weight] = float(on_sprite / on_background)
    assert losses[0.0] == pytest.approx(1.0) and losses[10.0] > 8.0
    assert FrameAutoencoder.from_config(FrameAutoencoder(foreground_weight=10.0).config).foreground_weight == 10.0
