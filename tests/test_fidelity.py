"""Fidelity metrics (sg2video.eval.fidelity) on shapes-world clips with the pixel-statistics features."""
import math

import numpy as np
import pytest
import torch

from sg2video.data.shapes import ShapesWorld
from sg2video.errors import UserError
from sg2video.eval.fidelity import (
    EncoderFeatures,
    FeatureExtractor,
    LocalI3DFeatures,
    LocalInceptionFeatures,
    PixelStatsFeatures,
    _torchmetrics_fid,
    as_videos,
    fidelity_metrics,
    fvd_metrics,
    frechet_distance,
    temporal_consistency,
    temporal_metrics,
)

NUM_CLIPS, FRAMES, SIZE = 24, 8, 32


@pytest.fixture(scope="module")
def clips() -> np.ndarray:
    """Held-out shapes clips, uint8 (48, 8, 32, 32, 3): two disjoint sets of 24."""
    world = ShapesWorld(size=SIZE, frames=FRAMES, seed=0)
    return world.render([world.params("val", i) for i in range(2 * NUM_CLIPS)])


def with_noise(videos: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, 1.0, videos.shape)
    return np.clip(videos + sigma * noise, 0, 255).astype(np.uint8)


def test_a_set_against_itself_scores_zero(clips):
    real = clips[:NUM_CLIPS]
    metrics = fidelity_metrics(real, real, PixelStatsFeatures(), kid_subset_size=50)
    assert metrics["fd_frame"] == pytest.approx(0.0, abs=1e-8)
    assert metrics["fd_video"] == pytest.approx(0.0, abs=1e-8)
    # KID is an unbiased estimate over random subsets: around 0, within a few of its own std
    assert abs(metrics["kd_frame_mean"]) < 3 * metrics["kd_frame_std"] + 1e-4
    assert metrics["features"] == "pixel-stats(grid=4,bins=8)"
    assert "fid_frame" not in metrics and "kid_frame_mean" not in metrics  # FID / KID only with Inception features
    assert metrics["kid_subset_size"] == 50
    # another draw of the same world is close, but not identical
    other = fidelity_metrics(real, clips[NUM_CLIPS:], PixelStatsFeatures(), kid_subset_size=50)
    assert 0.01 < other["fd_frame"] < 1.0 and 0.01 < other["fd_video"] < 1.0


def test_distances_grow_with_noise(clips):
    real = clips[:NUM_CLIPS]
    extractor = PixelStatsFeatures()
    sigmas = (0, 20, 40, 80)
    scores = [fidelity_metrics(real, with_noise(real, sigma), extractor, kid_subset_size=50) for sigma in sigmas]
    for key in ("fd_frame", "kd_frame_mean", "fd_video"):
        values = [s[key] for s in scores]
        assert all(a < b for a, b in zip(values, values[1:])), f"{key} not increasing with noise: {values}"
    kid = [s["kd_frame_mean"] for s in scores]
    assert kid[1] > 3 * scores[1]["kd_frame_std"], "the lightest noise is already clearly above KID's spread"
    assert scores[-1]["fd_frame"] > 10 * scores[1]["fd_frame"]


def test_kid_is_repeatable_and_clips_its_subset_size(clips):
    real, fake = clips[:4], with_noise(clips[:4], 40)
    first = fidelity_metrics(real, fake, PixelStatsFeatures(), kid_subset_size=1000)
    second = fidelity_metrics(real, fake, PixelStatsFeatures(), kid_subset_size=1000)
    assert first == second
    assert first["kid_subset_size"] == 4 * FRAMES


def test_video_distance_sees_temporal_order_that_frame_metrics_cannot(clips):
    """Shuffling each clip's frames keeps the set of frames (frame FID 0) but not the motion."""
    real = clips[:NUM_CLIPS]
    rng = np.random.default_rng(1)
    shuffled = np.stack([clip[rng.permutation(FRAMES)] for clip in real])
    metrics = fidelity_metrics(real, shuffled, PixelStatsFeatures(), kid_subset_size=50)
    assert metrics["fd_frame"] == pytest.approx(0.0, abs=1e-8)
    assert metrics["fd_video"] > 0.05


def test_frechet_distance_exact_values_and_agreement_with_torchmetrics(clips):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(200, 6, generator=gen, dtype=torch.float64) @ torch.randn(6, 6, generator=gen, dtype=torch.float64)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, 1.5], dtype=torch.float64)
    # same covariance, shifted mean: exactly the squared shift
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift.square().sum()), rel=1e-9)
    # b = 2 (a - mean): |mu|^2 + tr(S) + 4 tr(S) - 2 tr(2 S) = |mu|^2 + tr(S)
    centred = a - a.mean(0)
    expected = float(a.mean(0).square().sum() + torch.cov(a.T).trace())
    assert frechet_distance(a, 2 * centred) == pytest.approx(expected, rel=1e-9)
    assert math.isnan(frechet_distance(a[:1], a))
    # on real features (more dimensions than rows: rank-deficient covariances) it agrees with torchmetrics
    features_a, _ = PixelStatsFeatures().features(clips[:2])
    features_b, _ = PixelStatsFeatures().features(clips[2:4])
    assert features_a.shape == (2 * FRAMES, 3 * 16 + 3 * 8)
    expected = _torchmetrics_fid(features_a, features_b)
    assert frechet_distance(features_a, features_b) == pytest.approx(expected, rel=1e-6)


def test_pixel_features_layout(clips):
    extractor = PixelStatsFeatures(grid=2, bins=4)
    assert isinstance(extractor, FeatureExtractor)
    black = np.zeros((1, 2, 8, 8, 3), dtype=np.uint8)
    black[0, 1, :4, :4] = 255  # second frame: a white top-left quarter
    frames = extractor.frame_features(black)
    # pooled grid (R, G, B planes of 2x2), then per channel 4 histogram bins
    expected_second = [1, 0, 0, 0] * 3 + [0.75, 0, 0, 0.25] * 3
    assert frames[0].tolist() == [0.0] * 12 + [1, 0, 0, 0] * 3
    assert frames[1].tolist() == pytest.approx(expected_second)
    video = extractor.video_features(black)
    assert video.shape == (1, 2 * 24)  # mean over time, then mean absolute change between frames
    assert video[0, :24].tolist() == pytest.approx(((frames[0] + frames[1]) / 2).tolist())
    assert video[0, 24:].tolist() == pytest.approx([1, 0, 0, 0] * 3 + [0.25, 0, 0, 0.25] * 3)


def test_video_inputs_in_either_layout(clips):
    thwc = clips[:3]
    tchw = torch.from_numpy(thwc.transpose(0, 1, 4, 2, 3).copy())
    assert np.array_equal(as_videos(tchw), thwc)
    assert np.array_equal(as_videos(list(thwc)), thwc)
    with pytest.raises(ValueError, match="uint8"):
        as_videos(thwc.astype(np.float32))


def moving_square(speed: int, frames: int = 6, size: int = 32, side: int = 6) -> np.ndarray:
    clip = np.zeros((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        clip[t, 10 : 10 + side, 2 + speed * t : 2 + speed * t + side] = 255
    return clip


def test_temporal_consistency_is_zero_for_still_video_and_grows_with_motion():
    changes = [temporal_consistency(moving_square(speed)[None]) for speed in (0, 1, 2, 4)]
    assert changes[0] == 0.0
    # a white square of side 6 moving v <= 6 pixels changes 2 * 6 * v pixels fully per step
    assert changes[1:] == pytest.approx([2 * 6 * v / 32**2 for v in (1, 2, 4)], rel=1e-12)
    real = np.stack([moving_square(2), moving_square(2)])
    fast = np.stack([moving_square(4), moving_square(4)])
    assert temporal_metrics(real, real)["temporal_change_ratio"] == pytest.approx(1.0)
    assert temporal_metrics(real, fast)["temporal_change_ratio"] == pytest.approx(2.0)
    assert temporal_metrics(real, np.stack([moving_square(0)] * 2))["temporal_change_ratio"] == 0.0
    assert math.isnan(temporal_metrics(np.stack([moving_square(0)] * 2), real)["temporal_change_ratio"])


def test_encoder_features_use_the_projects_video_encoder(clips):
    from sg2video.encoder.video_encoder import VideoEncoder

    torch.manual_seed(0)
    encoder = VideoEncoder(img_size=16, patch_size=4, embed_dim=32, depth=1, heads=2, out_dim=24).train()
    extractor = EncoderFeatures(encoder, name="sg2video-video-encoder@test.pt")
    assert extractor.image_size == 16  # read from the encoder: 32 px frames are resized
    frames, videos = extractor.features(clips[:3])
    assert frames.shape == (3 * FRAMES, 24) and videos.shape == (3, 24)
    assert encoder.training, "the encoder's mode is restored"
    # dropout-free eval mode: the same clips give the same features
    assert torch.equal(extractor.frame_features(clips[:3]), frames)
    metrics = fidelity_metrics(clips[:6], clips[:6], extractor, kid_subset_size=20)
    assert metrics["fd_frame"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["features"] == "sg2video-video-encoder@test.pt"
    assert fidelity_metrics(clips[:6], with_noise(clips[:6], 80), extractor, kid_subset_size=20)["fd_frame"] > 1e-3

    def embed(video):  # any callable: (B, 3, T, H, W) in [-1, 1] -> (B, T, D), (B, D)
        assert video.min() >= -1 and video.max() <= 1 and video.shape[1:3] == (3, FRAMES)
        per_frame = video.mean(dim=(3, 4)).transpose(1, 2)  # (B, T, 3): mean colour
        return per_frame, per_frame.mean(1)

    frames, videos = EncoderFeatures(embed, name="mean-colour").features(clips[:2])
    expected = clips[:2].reshape(2 * FRAMES, -1, 3).mean(1) / 255 * 2 - 1
    assert frames.numpy() == pytest.approx(expected, abs=1e-5)


def test_inception_weights_file_must_exist_and_fit(tmp_path):
    with pytest.raises(UserError, match=r"eval.fid_weights=.*nowhere.pth.*no such file"):
        LocalInceptionFeatures(tmp_path / "nowhere.pth")
    wrong = tmp_path / "linear.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), wrong)
    with pytest.raises(UserError, match=r"linear.pth.*does not fit torchvision's inception_v3"):
        LocalInceptionFeatures(wrong)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"garbage.pth.*cannot load"):
        LocalInceptionFeatures(garbage)


@pytest.mark.slow
def test_local_inception_features_from_a_state_dict_file(tmp_path, clips):
    from torchvision.models.inception import Inception3

    torch.manual_seed(0)
    model = Inception3(aux_logits=True, init_weights=True)
    weights = tmp_path / "inception_v3.pth"
    torch.save(model.state_dict(), weights)
    extractor = LocalInceptionFeatures(weights, batch_size=4)
    assert extractor.name == "inception:inception_v3.pth"
    frames, videos = extractor.features(clips[:2, :3])
    assert frames.shape == (6, 2048) and videos.shape == (2, 4096)
    assert torch.isfinite(frames).all() and frames.std() > 0
    metrics = fidelity_metrics(clips[:2, :3], with_noise(clips[:2, :3], 40), extractor, kid_subset_size=4)
    assert metrics["features"] == "inception:inception_v3.pth" and metrics["fid_frame"] > 0  # the names FID / KID
    assert "fd_frame" not in metrics and math.isfinite(metrics["kid_frame_mean"])


def test_i3d_weights_file_must_exist_and_fit(tmp_path):
    with pytest.raises(UserError, match=r"eval.fvd_weights=.*nowhere.pt.*no such file"):
        LocalI3DFeatures(tmp_path / "nowhere.pt")
    wrong = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), wrong)
    with pytest.raises(UserError, match=r"linear.pt.*does not fit cd-fvd's InceptionI3d"):
        LocalI3DFeatures(wrong)


@pytest.mark.slow
def test_fvd_from_a_local_i3d_state_dict_file(tmp_path, clips):
    """cd-fvd's I3D, randomly initialised and saved here, loaded through the real path: 8-frame clips looped to
    16, 400 logits per video, FVD 0 for a set against itself and above 0 against a noisy copy."""
    from cdfvd.third_party.i3d.pytorch_i3d import InceptionI3d

    torch.manual_seed(0)
    model = InceptionI3d(400, in_channels=3)
    with torch.no_grad():  # its own init leaves logits nearly constant; He init makes them vary with the input
        for module in model.modules():
            if isinstance(module, torch.nn.Conv3d):
                torch.nn.init.kaiming_normal_(module.weight)
    weights = tmp_path / "i3d_pretrained_400.pt"
    torch.save(model.state_dict(), weights)
    extractor = LocalI3DFeatures(weights, batch_size=2)
    real = clips[:3]
    features = extractor.video_features(real)
    assert features.shape == (3, 400) and torch.isfinite(features).all() and features.std() > 0
    same = fvd_metrics(real, real, extractor)
    assert same["fvd"] == pytest.approx(0.0, abs=1e-6)
    assert same["fvd_features"] == "i3d:i3d_pretrained_400.pt" and same["fvd_frames"] == FRAMES
    assert fvd_metrics(real, with_noise(real, 80), extractor)["fvd"] > 1.0  # measured 18.6
