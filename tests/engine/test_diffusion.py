"""engine.diffusion: schedules, q_sample, targets, samplers and classifier-free guidance (tiny U-Net, CPU)."""
from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from engine.config import DDPMConfig
from engine.diffusion import Diffusion, make_betas, quartile_means, sample, sample_tensor
from engine.models.unet import build_unet, null_class

TINY = dict(channels=8, channel_mult=[1, 2], layers_per_block=1, attention_res=[8], attention_head_dim=8,
            dropout=0.0)


@pytest.fixture(scope="module")
def tiny():
    """A random-init 8 px U-Net with 3 classes: its outputs differ per class, which the guidance
    tests need (a trained model is not)."""
    torch.manual_seed(0)
    model = build_unet(DDPMConfig(**TINY), 8, 3).eval()
    return model, Diffusion("cosine", 1000, "epsilon")


# ----------------------------------------------------------------------------------------------
# schedules and the forward process

@pytest.mark.parametrize("schedule, builtin", [("linear", "linear"), ("cosine", "squaredcos_cap_v2"),
                                               ("quadratic", "scaled_linear")])
def test_betas_match_diffusers_builtin_schedules(schedule, builtin):
    from diffusers import DDPMScheduler

    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule=builtin).betas.double()
    ours = make_betas(schedule, 1000)
    assert ours.shape == (1000,)
    torch.testing.assert_close(ours, ref, atol=2e-6, rtol=1e-4)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "quadratic"])
@pytest.mark.parametrize("T", [50, 1000])
def test_alpha_bar_strictly_decreasing_in_unit_interval(schedule, T):
    ab = Diffusion(schedule, T).alphas_cumprod
    assert ab.shape == (T,)
    assert bool((ab > 0).all()) and bool((ab <= 1).all())
    assert bool((ab[1:] < ab[:-1]).all())
    assert ab[-1] < 0.05  # the last step is (almost) pure noise


def test_unknown_schedule_and_prediction_are_refused():
    from engine.config import ConfigError

    with pytest.raises(ConfigError, match="schedule"):
        make_betas("sigmoid")
    with pytest.raises(ConfigError, match="prediction"):
        Diffusion(prediction="sample")


def test_q_sample_mean_and_variance():
    d = Diffusion("linear", 1000)
    n, t_val = 200_000, 400
    x0 = torch.full((n, 1, 1, 1), 0.6)
    t = torch.full((n,), t_val, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    xt = d.q_sample(x0, t, torch.randn(x0.shape, generator=g))
    ab = float(d.alphas_cumprod[t_val])
    mean, var = xt.mean().item(), xt.var().item()
    # standard errors: sqrt(var / n) for the mean, var * sqrt(2 / n) for the variance; 5 sigma
    assert abs(mean - ab ** 0.5 * 0.6) < 5 * ((1 - ab) / n) ** 0.5
    assert abs(var - (1 - ab)) < 5 * (1 - ab) * (2 / n) ** 0.5


def test_q_sample_equals_diffusers_add_noise():
    from diffusers import DDPMScheduler

    d = Diffusion("cosine", 1000)
    ref = DDPMScheduler(num_train_timesteps=1000, trained_betas=d.betas.float().numpy())
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.rand(6, 3, 4, 4, generator=g) * 2 - 1, torch.randn(6, 3, 4, 4, generator=g)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    torch.testing.assert_close(d.q_sample(x0, t, noise), ref.add_noise(x0, noise, t), atol=1e-5, rtol=1e-5)


def test_v_target_recovers_x0_and_noise():
    d = Diffusion("cosine", 1000, "v_prediction")
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.rand(5, 3, 4, 4, generator=g) * 2 - 1, torch.randn(5, 3, 4, 4, generator=g)
    t = torch.tensor([3, 100, 500, 900, 999])
    xt, v = d.q_sample(x0, t, noise), d.target(x0, t, noise)
    a = d.alphas_cumprod[t].float().sqrt().view(-1, 1, 1, 1)
    s = (1 - d.alphas_cumprod[t]).float().sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close(a * xt - s * v, x0, atol=1e-5, rtol=1e-5)  # x0 = sqrt(ab) x_t - sqrt(1-ab) v
    torch.testing.assert_close(Diffusion("cosine", 1000).target(x0, t, noise), noise)


def test_quartile_means_and_empty_quartile_is_nan():
    d = Diffusion("linear", 100)
    t = torch.tensor([0, 10, 30, 60, 99, 80])
    assert d.quartile(t).tolist() == [0, 0, 1, 2, 3, 3]
    per = torch.tensor([1.0, 3.0, 5.0, 7.0, 2.0, 4.0])
    means, counts = quartile_means(per, d.quartile(torch.tensor([0, 10, 30, 30, 99, 80])))
    assert [float(m) for m in means[:1]] == [2.0] and float(means[1]) == 6.0 and float(means[3]) == 3.0
    assert bool(torch.isnan(means[2])) and [int(c) for c in counts] == [2, 2, 0, 2]


# ----------------------------------------------------------------------------------------------
# samplers

@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpm"])
def test_samplers_return_uint8_images(tiny, sampler):
    model, d = tiny
    calls = []
    img = sample(model, d, [0, 1, -1], [1, 2, 3], sampler=sampler, steps=4, guidance=1.0,
                 progress=lambda i, n: calls.append((i, n)))
    assert img.shape == (3, 8, 8, 3) and img.dtype == np.uint8
    assert calls == [(i, 4) for i in range(1, 5)]


def test_ddim_eta0_deterministic_and_batch_independent(tiny):
    model, d = tiny
    a = sample_tensor(model, d, [0, 1, 2], [5, 6, 7], sampler="ddim", steps=5)
    b = sample_tensor(model, d, [0, 1, 2], [5, 6, 7], sampler="ddim", steps=5)
    assert torch.equal(a, b)
    alone = sample_tensor(model, d, [1], [6], sampler="ddim", steps=5)
    torch.testing.assert_close(alone[0], a[1], atol=1e-5, rtol=0)
    chunked = sample_tensor(model, d, [0, 1, 2], [5, 6, 7], sampler="ddim", steps=5, batch=2)
    torch.testing.assert_close(chunked, a, atol=1e-5, rtol=0)
    other = sample_tensor(model, d, [1], [60], sampler="ddim", steps=5)
    assert (other[0] - a[1]).abs().max() > 1e-2  # another seed, another image


@pytest.mark.parametrize("sampler, eta", [("ddim", 1.0), ("ddpm", 0.0)])
def test_stochastic_samplers_draw_per_sample_noise(tiny, sampler, eta):
    """With noise at every step, each sample's noise still comes from its own seed: the same image
    alone or in a batch, different images for different seeds."""
    model, d = tiny
    both = sample_tensor(model, d, [2, 2], [11, 12], sampler=sampler, steps=6, eta=eta)
    alone = sample_tensor(model, d, [2], [12], sampler=sampler, steps=6, eta=eta)
    torch.testing.assert_close(alone[0], both[1], atol=1e-5, rtol=0)
    assert (both[0] - both[1]).abs().max() > 1e-2


def test_guidance_changes_conditional_output(tiny):
    model, d = tiny
    g0 = sample_tensor(model, d, [0, 1], [3, 4], steps=5, guidance=0.0)
    g3 = sample_tensor(model, d, [0, 1], [3, 4], steps=5, guidance=3.0)
    assert (g0 - g3).abs().max() > 1e-2


def test_guidance_with_null_class_is_unconditional(tiny):
    model, d = tiny
    null = null_class(model)
    assert null == 3
    uncond = sample_tensor(model, d, [-1, -1], [3, 4], steps=5, guidance=0.0)
    guided = sample_tensor(model, d, [-1, -1], [3, 4], steps=5, guidance=4.0)
    by_index = sample_tensor(model, d, [null, null], [3, 4], steps=5, guidance=2.0)
    torch.testing.assert_close(guided, uncond, atol=1e-5, rtol=0)
    torch.testing.assert_close(by_index, uncond, atol=1e-5, rtol=0)
    cond = sample_tensor(model, d, [0, 0], [3, 4], steps=5, guidance=0.0)
    assert (cond - uncond).abs().max() > 1e-2  # the label does reach the model


def test_v_prediction_sampling_and_bad_arguments(tiny):
    model, _ = tiny
    d = Diffusion("linear", 1000, "v_prediction")
    x = sample_tensor(model, d, [0], [0], sampler="dpm", steps=3, guidance=1.0)
    assert bool(torch.isfinite(x).all()) and x.abs().max() <= 1
    with pytest.raises(ValueError, match="one seed per sample"):
        sample_tensor(model, d, [0, 1], [0])
    with pytest.raises(ValueError, match="out of range"):
        sample_tensor(model, d, [4], [0])
    with pytest.raises(ValueError, match="guidance"):
        sample_tensor(model, d, [0], [0], guidance=-1)


def test_building_and_sampling_never_reach_the_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    model = build_unet(DDPMConfig(**TINY), 8, 2)
    d = Diffusion("quadratic", 100)
    for s in ("ddpm", "ddim", "dpm"):
        d.scheduler(s)
    assert sample(model, d, [0], [0], steps=2).shape == (1, 8, 8, 3)


class ExactDenoiser(torch.nn.Module):
    """The ideal model for a data set of one image per class: it knows x0, so eps (or v) follows from
    x_t exactly. Every sampler must then land on that image: a check that our targets, our schedule
    and diffusers' reading of eps / v agree."""

    def __init__(self, d: Diffusion, x0: torch.Tensor):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))  # a parameter, so sample_tensor finds a device
        self.d, self.x0 = d, x0
        self.config = type("Cfg", (), {"num_class_embeds": x0.shape[0], "sample_size": x0.shape[-1]})

    def forward(self, x, t, class_labels=None, return_dict=False):
        ab = self.d.alphas_cumprod.float()[t].view(-1, 1, 1, 1)
        x0 = self.x0[class_labels]
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        return (self.d.target(x0, t, eps),)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("schedule", ["cosine", "linear", "quadratic"])
def test_every_sampler_recovers_the_data_with_the_exact_denoiser(schedule, prediction):
    d = Diffusion(schedule, 1000, prediction)
    x0 = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(3)) * 1.6 - 0.8
    x0[2] = x0[1]  # the null class (index 2) "is" class 1, so guidance leaves class 1's image unchanged
    model = ExactDenoiser(d, x0)
    for sampler, steps, guidance in (("ddim", 4, 0.0), ("dpm", 4, 0.0), ("ddpm", 20, 0.0),
                                     ("ddim", 4, 3.0), ("dpm", 4, 3.0)):
        classes = [0, 1, 0] if guidance == 0 else [1, 1]
        x = sample_tensor(model, d, classes, list(range(len(classes))), sampler=sampler, steps=steps,
                          eta=0.5, guidance=guidance)
        torch.testing.assert_close(x, x0[classes], atol=1e-4, rtol=0, msg=f"{sampler} w={guidance}")
