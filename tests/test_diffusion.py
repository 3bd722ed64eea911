"""Diffusion: schedules against closed forms, the loss and its prefix handling, samplers, long videos."""
from __future__ import annotations

import math

import pytest
import torch

from sg2video.diffusion import (
    DDIMSampler,
    DDPMSampler,
    GaussianDiffusion,
    guided_output,
    make_sampler,
    make_schedule,
    plan_chunks,
    sample,
    sample_long,
    spaced_timesteps,
)
from sg2video.errors import ConfigError, UserError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- schedules --------------------------------------------------------------------------------------
def test_linear_schedule_endpoints_and_scaling():
    s = make_schedule("linear", 1000)
    assert s.betas.shape == (1001,) and s.betas[0] == 0 and s.alphas_cumprod[0] == 1
    assert s.betas[1].item() == pytest.approx(1e-4) and s.betas[1000].item() == pytest.approx(0.02)
    assert torch.allclose(s.alphas_cumprod, torch.cumprod(1 - s.betas, 0))
    assert s.alphas_cumprod[-1].item() == pytest.approx(math.prod(1 - b for b in s.betas[1:].tolist()))
    half = make_schedule("linear", 500)  # betas scale with 1000 / T
    assert half.betas[1].item() == pytest.approx(2e-4) and half.betas[500].item() == pytest.approx(0.04)
    assert torch.allclose(half.betas[1:].diff(), half.betas[2:3] - half.betas[1:2])  # evenly spaced


def test_schedule_errors_name_the_value():
    with pytest.raises(ConfigError, match="'quadratic'.*linear, cosine"):
        make_schedule("quadratic", 100)
    with pytest.raises(ConfigError, match="timesteps=10"):
        make_schedule("linear", 10)  # scaled last beta would be 2.0
    with pytest.raises(ConfigError, match="timesteps=1"):
        make_schedule("cosine", 1)


def test_cosine_alphas_cumprod_matches_formula():
    T, s_off = 1000, 0.008
    sched = make_schedule("cosine", T)
    f = [math.cos((t / T + s_off) / (1 + s_off) * math.pi / 2) ** 2 for t in range(T + 1)]
    expected = torch.tensor([v / f[0] for v in f], dtype=torch.float64)
    unclipped = sched.betas < 0.999
    assert unclipped[: T - 1].all() and not unclipped[T]  # only the last beta hits the 0.999 cap
    assert torch.allclose(sched.alphas_cumprod[:T], expected[:T], rtol=1e-9, atol=1e-12)
    assert sched.betas.max().item() == pytest.approx(0.999)
    assert (sched.alphas_cumprod.diff() < 0).all()


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_posterior_matches_gaussian_product(name):
    """q(x_{t-1}|x_t,x0) ∝ N(x_t; sqrt(a_t) x_{t-1}, b_t) N(x_{t-1}; sqrt(ab_{t-1}) x0, 1-ab_{t-1}):
    complete the square independently of the schedule's formulas."""
    sched = make_schedule(name, 200)
    ab = torch.cumprod(1 - sched.betas[1:], 0).tolist()  # ab[k] = alpha_bar_{k+1}
    for t in [2, 3, 50, 199, 200]:
        beta, ab_prev = sched.betas[t].item(), ab[t - 2]
        precision = (1 - beta) / beta + 1 / (1 - ab_prev)
        var = 1 / precision
        coef_xt = var * math.sqrt(1 - beta) / beta
        coef_x0 = var * math.sqrt(ab_prev) / (1 - ab_prev)
        assert sched.posterior_variance[t].item() == pytest.approx(var, rel=1e-9)
        assert sched.posterior_log_variance_clipped[t].item() == pytest.approx(math.log(var), rel=1e-9)
        assert sched.posterior_mean_coef1[t].item() == pytest.approx(coef_x0, rel=1e-9)
        assert sched.posterior_mean_coef2[t].item() == pytest.approx(coef_xt, rel=1e-9)
        assert sched.snr[t].item() == pytest.approx(ab[t - 1] / (1 - ab[t - 1]), rel=1e-9)
    # t = 1: x0 is determined (mean = x0, variance 0; the log variance borrows t = 2's)
    assert sched.posterior_mean_coef1[1].item() == pytest.approx(1.0) and sched.posterior_mean_coef2[1] == 0
    assert sched.posterior_variance[1] == 0
    assert sched.posterior_log_variance_clipped[1] == sched.posterior_log_variance_clipped[2]


# -- forward process and parameterizations ----------------------------------------------------------
def test_q_sample_statistics_per_clip_and_per_frame():
    diff = GaussianDiffusion(make_schedule("linear", 1000))
    x0 = torch.full((4, 1, 3, 64, 64), 0.7)
    noise = torch.randn(x0.shape, generator=gen(1))
    for t in [torch.tensor([1, 100, 500, 1000]), torch.tensor([[0, 10, 900]] * 4)]:
        xt = diff.q_sample(x0, t, noise)
        ab = diff.schedule.alphas_cumprod[t].float()
        if t.ndim == 1:
            mean, std = xt.mean(dim=(1, 2, 3, 4)), xt.std(dim=(1, 2, 3, 4))
        else:
            mean, std = xt.mean(dim=(1, 3, 4)), xt.std(dim=(1, 3, 4))
        assert torch.allclose(mean, 0.7 * ab.sqrt(), atol=0.03)
        assert torch.allclose(std, (1 - ab).sqrt(), atol=0.03)
    xt = diff.q_sample(x0, torch.tensor([[0, 10, 900]] * 4), noise)
    assert torch.equal(xt[:, :, 0], x0[:, :, 0])  # t = 0 is exactly clean


@pytest.mark.parametrize("param", ["eps", "x0", "v"])
def test_parameterizations_round_trip(param):
    """float64, so that even t = 1 and t = T (where float32 loses x0 or eps) round-trip tightly."""
    diff = GaussianDiffusion(make_schedule("cosine", 1000), parameterization=param)
    x0 = torch.rand(3, 2, 4, 5, 5, generator=gen(2), dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen(3), dtype=torch.float64)
    t = torch.tensor([[1, 2, 500, 999], [1000, 10, 300, 7], [0, 0, 40, 800]])
    xt = diff.q_sample(x0, t, noise)
    x0_hat, eps_hat = diff.predict_x0_eps(diff.target(x0, noise, t), xt, t)
    noisy = t[:, None, :, None, None].expand_as(x0) > 0
    assert torch.allclose(x0_hat, x0, atol=1e-9)
    assert torch.allclose(eps_hat[noisy], noise[noisy], atol=1e-9)
    assert (eps_hat[~noisy] == 0).all()  # clean frames carry no noise
    ab = diff.schedule.alphas_cumprod[t][:, None, :, None, None]
    expected_target = {"eps": noise, "x0": x0, "v": ab.sqrt() * noise - (1 - ab).sqrt() * x0}[param]
    assert torch.allclose(diff.target(x0, noise, t), expected_target, atol=1e-12)
    # a wrong output is not mistaken for the right one
    x0_off, _ = diff.predict_x0_eps(diff.target(x0, noise, t) + 0.1, xt, t)
    assert (x0_off - x0)[noisy].abs().min() > 1e-4


def test_unknown_parameterization_and_loss_are_config_errors():
    sched = make_schedule("cosine", 50)
    with pytest.raises(ConfigError, match="'score'"):
        GaussianDiffusion(sched, parameterization="score")
    with pytest.raises(ConfigError, match="'huber'"):
        GaussianDiffusion(sched, loss="huber")
    with pytest.raises(ConfigError, match="snr_weighting"):
        GaussianDiffusion(sched, snr_weighting="p2")


# -- training loss ----------------------------------------------------------------------------------
class TimeMixingModel(torch.nn.Module):
    """Each frame's output depends on all frames (like temporal attention), so a prefix frame would
    influence the loss through the model unless it is treated as given data. Records its inputs."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.5, -0.3, 0.01]))
        self.calls = []

    def forward(self, x, t, cond, drop_cond):
        self.calls.append((x.detach().clone(), t.clone(), drop_cond))
        frames_mean = x.mean(dim=2, keepdim=True)
        return self.w[0] * x + self.w[1] * frames_mean + self.w[2] * t[:, None, :, None, None].float()


@pytest.mark.parametrize("param", ["eps", "v"])
def test_prefix_frames_are_clean_and_out_of_the_loss(param):
    diff = GaussianDiffusion(make_schedule("cosine", 100), parameterization=param)
    model, P = TimeMixingModel(), 2
    x0 = (torch.rand(3, 2, 6, 4, 4, generator=gen(4)) * 2 - 1).requires_grad_(True)
    out = diff.training_loss(model, x0, cond=None, prefix_frames=P, cond_dropout=0.0, generator=gen(5))
    out["loss"].backward()
    assert torch.equal(x0.grad[:, :, :P], torch.zeros_like(x0.grad[:, :, :P]))
    assert (x0.grad[:, :, P:].abs().sum(dim=(1, 3, 4)) > 0).all()
    assert model.w.grad.abs().sum() > 0

    x_t, t, drop = model.calls[0]
    assert drop is None
    assert torch.equal(x_t[:, :, :P], x0.detach()[:, :, :P]) and (t[:, :P] == 0).all()
    clip_t = out["timesteps"]
    assert torch.equal(t[:, P:], clip_t[:, None].expand(3, 6 - P)) and (clip_t >= 1).all()
    # the loss is the mean over the non-prefix frames of (out - target)^2, the noise read back from x_t
    ab = diff.schedule.alphas_cumprod[t].float()[:, None, :, None, None]
    noise = (x_t - ab.sqrt() * x0.detach()) / (1 - ab).sqrt().clamp(min=1e-12)
    target = noise if param == "eps" else ab.sqrt() * noise - (1 - ab).sqrt() * x0.detach()
    with torch.no_grad():
        expected = (model(x_t, t, None, None) - target)[:, :, P:].square().mean()
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_without_prefix_every_frame_is_noised_and_counted():
    diff = GaussianDiffusion(make_schedule("cosine", 100))
    model = TimeMixingModel()
    x0 = (torch.rand(2, 1, 4, 3, 3, generator=gen(6)) * 2 - 1).requires_grad_(True)
    diff.training_loss(model, x0, None, prefix_frames=0, cond_dropout=0.0, generator=gen(7))["loss"].backward()
    assert (x0.grad.abs().sum(dim=(1, 3, 4)) > 0).all()
    assert (model.calls[0][1] >= 1).all()


def test_prefix_dropout_gives_some_clips_no_prefix():
    diff = GaussianDiffusion(make_schedule("cosine", 100))
    model = TimeMixingModel()
    x0 = torch.zeros(400, 1, 3, 1, 1)
    diff.training_loss(model, x0, None, prefix_frames=1, cond_dropout=0.0, generator=gen(8), prefix_dropout=0.25)
    t = model.calls[0][1]
    share_without = (t[:, 0] > 0).float().mean().item()
    assert 0.18 < share_without < 0.32
    assert ((t[:, 0] == 0) | (t[:, 0] == t[:, 1])).all()


def test_cond_dropout_share():
    diff = GaussianDiffusion(make_schedule("cosine", 100))
    model = TimeMixingModel()
    x0 = torch.zeros(2000, 1, 2, 1, 1)
    diff.training_loss(model, x0, None, cond_dropout=0.1, generator=gen(9))
    drop = model.calls[-1][2]
    assert drop.dtype == torch.bool and drop.shape == (2000,)
    assert 0.08 < drop.float().mean().item() < 0.12
    diff.training_loss(model, x0, None, cond_dropout=1.0, generator=gen(9))
    assert model.calls[-1][2].all()


def test_min_snr_weighting():
    sched = make_schedule("linear", 1000)
    model = TimeMixingModel()
    x0 = torch.rand(8, 1, 2, 3, 3, generator=gen(10))
    plain = GaussianDiffusion(sched).training_loss(model, x0, None, cond_dropout=0, generator=gen(11))
    weighted = GaussianDiffusion(sched, snr_weighting="min_snr").training_loss(
        model, x0, None, cond_dropout=0, generator=gen(11)
    )
    snr = sched.snr[weighted["timesteps"]].float()
    weights = snr.clamp(max=5.0) / snr  # eps parameterization
    assert torch.allclose(weighted["loss_per_clip"], plain["loss_per_clip"])
    assert weighted["loss"].item() == pytest.approx((plain["loss_per_clip"] * weights).mean().item(), rel=1e-5)
    assert weights.min() < 0.99  # some clip was at a low-noise step, where the weight bites


# -- samplers ---------------------------------------------------------------------------------------
def test_timestep_spacing():
    assert spaced_timesteps(1000, 20) == list(range(1000, 0, -50))
    assert spaced_timesteps(1000, 20, "leading") == list(range(951, 0, -50))
    assert spaced_timesteps(10, 10) == spaced_timesteps(10, 10, "leading") == list(range(10, 0, -1))
    assert spaced_timesteps(10, 3) == [10, 7, 3]
    with pytest.raises(ConfigError, match="sample_steps=0"):
        spaced_timesteps(10, 0)
    with pytest.raises(ConfigError, match="sample_steps=11"):
        DDIMSampler(make_schedule("cosine", 10), 11)
    with pytest.raises(ConfigError, match="'euler'"):
        make_sampler("euler", make_schedule("cosine", 10), 5)
    sampler = make_sampler("ddim", make_schedule("cosine", 100), 10)
    sampler.set_timesteps(4)
    assert sampler.timesteps == [100, 75, 50, 25] and sampler.prev_timestep(25) == 0


def fixed_model(x, t, cond, drop_cond):
    """An imperfect but deterministic eps-model."""
    return 0.6 * x + 0.2 * torch.sin(3 * x) + 1e-3 * t[:, None, :, None, None].float()


def test_ddim_eta0_is_deterministic():
    sched = make_schedule("cosine", 100)
    diff = GaussianDiffusion(sched)
    shape = (2, 1, 3, 4, 4)
    runs = [sample(diff, fixed_model, shape, None, DDIMSampler(sched, 10), generator=gen(s)) for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])
    # eta = 0 never draws noise after the start: the generator is used once
    g = gen(3)
    sample(diff, fixed_model, shape, None, DDIMSampler(sched, 10), generator=g)
    g_ref = gen(3)
    torch.randn(shape, generator=g_ref)
    assert torch.equal(g.get_state(), g_ref.get_state())


@pytest.mark.parametrize("clip_x0", [False, True])
def test_ddim_eta1_all_steps_is_ddpm(clip_x0):
    sched = make_schedule("cosine", 100)
    diff = GaussianDiffusion(sched)
    ddpm = DDPMSampler(sched)
    # the DDPM sampler's tables over all timesteps are the schedule's posterior
    for t in [1, 2, 50, 100]:
        c1, c2, var = ddpm.posterior[t]
        assert c1 == pytest.approx(sched.posterior_mean_coef1[t].item(), rel=1e-9)
        assert c2 == pytest.approx(sched.posterior_mean_coef2[t].item(), rel=1e-9, abs=1e-15)
        assert var == pytest.approx(sched.posterior_variance[t].item(), rel=1e-9, abs=1e-15)
    shape = (2, 1, 3, 4, 4)
    a = sample(diff, fixed_model, shape, None, ddpm, generator=gen(4), clip_x0=clip_x0)
    b = sample(diff, fixed_model, shape, None, DDIMSampler(sched, 100, eta=1.0), generator=gen(4), clip_x0=clip_x0)
    assert torch.allclose(a, b, atol=1e-4)
    c = sample(diff, fixed_model, shape, None, DDIMSampler(sched, 100, eta=0.0), generator=gen(4), clip_x0=clip_x0)
    assert (a - c).abs().max() > 0.05  # eta matters: the test can tell the samplers apart


def oracle_eps_model(diff, x0_true):
    def model_fn(x, t, cond, drop_cond):
        ab = diff.schedule.alphas_cumprod[t].float()[:, None, :, None, None]
        return (x - ab.sqrt() * x0_true) / (1 - ab).sqrt()

    return model_fn


def test_ddim20_with_oracle_recovers_x0_along_the_noising_path():
    sched = make_schedule("linear", 1000)
    diff = GaussianDiffusion(sched)
    x0 = torch.rand(2, 3, 4, 8, 8, generator=gen(5)) * 1.6 - 0.8
    model_fn = oracle_eps_model(diff, x0)
    out = sample(diff, model_fn, x0.shape, None, DDIMSampler(sched, 20), generator=gen(6))
    assert (out - x0).abs().max() < 1e-3

    # step by step, x stays on q_sample(x0, t, e) for the noise e implied at the start
    sampler = DDIMSampler(sched, 20)
    x = torch.randn(x0.shape, generator=gen(7))
    t_first = torch.full((2, 4), sampler.timesteps[0])
    e = model_fn(x, t_first, None, None)
    for t in sampler.timesteps:
        t_frames = torch.full((2, 4), t)
        x = sampler.step(model_fn(x, t_frames, None, None), t, x, diff, clip_x0=False)
        prev = torch.full((2, 4), sampler.prev_timestep(t))
        assert torch.allclose(x, diff.q_sample(x0, prev, e), atol=1e-4)


@pytest.mark.parametrize(
    "param,sampler_name,steps,eta",
    [("eps", "ddpm", None, 0.0), ("x0", "ddim", 200, 0.0), ("v", "ddim", 200, 1.0)],
)
def test_samplers_reproduce_gaussian_data(param, sampler_name, steps, eta):
    """Data x0 ~ N(mu, s^2) has an exact optimal denoiser; sampling with it over all timesteps must give
    N(mu, s^2). (With few steps both samplers under-disperse it: std ~0.45 at 25-50 steps, a property
    of the discretisation, not tested here.)"""
    mu, s = 0.3, 0.5
    sched = make_schedule("linear", 200)
    diff = GaussianDiffusion(sched, parameterization=param)

    def model_fn(x, t, cond, drop_cond):
        ab = diff.schedule.alphas_cumprod[t].float()[:, None, :, None, None]
        a, b = ab.sqrt(), (1 - ab).sqrt()
        eps = b / (a**2 * s**2 + b**2) * (x - a * mu)  # E[eps | x_t]
        x0 = (x - b * eps) / a
        return {"eps": eps, "x0": x0, "v": a * eps - b * x0}[param]

    sampler = make_sampler(sampler_name, sched, steps, eta)
    out = sample(diff, model_fn, (4096, 1, 1, 1, 1), None, sampler, generator=gen(8), clip_x0=False)
    assert out.mean().item() == pytest.approx(mu, abs=0.04)
    assert out.std().item() == pytest.approx(s, abs=0.04)


def cond_model(calls):
    """out = x + 2 * cond per clip, or x - 1 with the null condition; records (batch, drop_cond)."""

    def model_fn(x, t, cond, drop_cond):
        calls.append((x.shape[0], None if drop_cond is None else drop_cond.clone()))
        value = cond[:, None, None, None, None] * 2.0
        if drop_cond is not None:
            value = torch.where(drop_cond[:, None, None, None, None], torch.full_like(value, -1.0), value)
        return x + value

    return model_fn


def test_guidance_formula_and_model_calls():
    x = torch.randn(3, 1, 2, 2, 2, generator=gen(9))
    t = torch.full((3, 2), 10)
    cond = torch.tensor([0.5, 1.0, -2.0])
    calls = []
    model_fn = cond_model(calls)
    conditional = x + 2 * cond[:, None, None, None, None]
    unconditional = x - 1.0

    assert torch.equal(guided_output(model_fn, x, t, cond, 1.0), conditional)
    assert calls == [(3, None)]
    calls.clear()
    guided = guided_output(model_fn, x, t, cond, 4.0)
    assert torch.allclose(guided, unconditional + 4.0 * (conditional - unconditional))
    assert len(calls) == 1 and calls[0][0] == 6
    assert calls[0][1].tolist() == [False] * 3 + [True] * 3

    calls.clear()
    sched = make_schedule("cosine", 50)
    sample(GaussianDiffusion(sched), model_fn, (3, 1, 2, 2, 2), cond, DDIMSampler(sched, 7), guidance=1.0)
    assert len(calls) == 7 and all(c == (3, None) for c in calls)


def test_sample_keeps_prefix_clean_and_reports_progress():
    sched = make_schedule("cosine", 50)
    diff = GaussianDiffusion(sched)
    prefix = torch.rand(2, 1, 2, 3, 3, generator=gen(10)) * 2 - 1
    seen, ticks = [], []

    def model_fn(x, t, cond, drop_cond):
        seen.append((x[:, :, :2].clone(), t.clone()))
        return fixed_model(x, t, cond, drop_cond)

    out = sample(
        diff, model_fn, (2, 1, 5, 3, 3), None, DDIMSampler(sched, 6), guidance=3.0, prefix=prefix,
        generator=gen(11), progress=lambda i, n: ticks.append((i, n)),
    )
    assert torch.equal(out[:, :, :2], prefix)
    assert ticks == [(i, 6) for i in range(1, 7)]
    for x_prefix, t in seen:  # doubled batch for guidance: prefix and t = 0 in both halves
        assert torch.equal(x_prefix, torch.cat([prefix, prefix])) and (t[:, :2] == 0).all()
        assert (t[:, 2:] > 0).all()


# -- long videos ------------------------------------------------------------------------------------
@pytest.mark.parametrize("last_chunk", ["short", "overlap"])
def test_sample_long_chunks_reuse_the_prefix(last_chunk):
    sched = make_schedule("cosine", 30)
    diff = GaussianDiffusion(sched)
    total, chunk, P = 13, 6, 2
    cond_calls, model_inputs = [], []

    def cond_for_frames(start, end):
        cond_calls.append((start, end))
        return torch.arange(start, end, dtype=torch.float32)[None].expand(2, -1)  # (B, frames) frame ids

    def model_fn(x, t, cond, drop_cond):
        assert cond.shape[1] == x.shape[2] <= chunk
        model_inputs.append((x.clone(), t.clone(), cond[0, 0].item()))
        return 0.5 * x + 0.01 * cond[:, None, :, None, None]

    video, chunks = sample_long(
        diff, model_fn, lambda: DDIMSampler(sched, 4), total, chunk, P, cond_for_frames,
        channels=1, height=3, width=3, batch=2, guidance=1.0, generator=gen(12), last_chunk=last_chunk,
    )
    assert video.shape == (2, 1, total, 3, 3) and video.device.type == "cpu"
    assert torch.isfinite(video).all()
    last = (8, 13, 2) if last_chunk == "short" else (7, 13, 3)
    assert [(c.start, c.end, c.prefix_frames) for c in chunks] == [(0, 6, 0), (4, 10, 2), last]
    assert cond_calls == [(c.start, c.end) for c in chunks]
    covered = sorted({f for c in chunks for f in range(c.new_start, c.end)})
    assert covered == list(range(total))

    assert len(model_inputs) == 4 * len(chunks)
    for k, c in enumerate(chunks):
        for x, t, first_frame in model_inputs[4 * k : 4 * k + 4]:
            assert first_frame == c.start  # each chunk is conditioned on its own frames
            assert x.shape[2] == c.frames
            # the prefix is the previous chunks' output, exactly, with t = 0
            assert torch.equal(x[:, :, : c.prefix_frames], video[:, :, c.start : c.new_start])
            assert (t[:, : c.prefix_frames] == 0).all() and (t[:, c.prefix_frames :] > 0).all()


def test_sample_long_single_chunk_equals_sample():
    sched = make_schedule("cosine", 30)
    diff = GaussianDiffusion(sched)
    cond = torch.zeros(1, 5)
    video, chunks = sample_long(
        diff, fixed_model, lambda: DDIMSampler(sched, 5), 5, 8, 0, lambda s, e: cond,
        channels=1, height=2, width=2, generator=gen(13),
    )
    direct = sample(diff, fixed_model, (1, 1, 5, 2, 2), cond, DDIMSampler(sched, 5), generator=gen(13))
    assert [(c.start, c.end) for c in chunks] == [(0, 5)]
    assert torch.equal(video, direct)


def test_sample_long_refuses_without_prefix():
    sched = make_schedule("cosine", 30)
    with pytest.raises(UserError, match="without prefix frames.*at most 8 frames"):
        sample_long(
            GaussianDiffusion(sched), fixed_model, lambda: DDIMSampler(sched, 2), 20, 8, 0, lambda s, e: None,
            channels=1, height=2, width=2,
        )
    with pytest.raises(ConfigError, match="prefix_frames=8"):
        plan_chunks(20, 8, 8)
