"""Image parametrizations (pii/core/param.py): render, gradient, growth, state; the method presets;
the spectral slope; `param=pixel` stays the paper's loop exactly."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import as_hydra_run, compose_config, stopped_after_stage
from omegaconf import OmegaConf
from tiny import tiny_cfg

from pii import models
from pii.core import param as param_lib
from pii.core import schedule
from pii.core.draws import Draws, stream_seed
from pii.core.inversion import invert
from pii.core.observers import Observer
from pii.eval.judge import spectral_slope
from pii.run import build, resume, runner

KINDS = ["pixel", "fourier", "maco"]


def make(kind: str, batch: int = 2, *overrides: str):
    """The `param` option `kind` as conf/param/ sets it, built as a run builds it."""
    return build.param(compose_config([f"param={kind}", *overrides, "output_dir=/x"]), batch, "cpu")


def draws(batch: int):
    return Draws.seeded(0, range(batch), 0)


def stages():
    return schedule.plan(64, stages=3, steps=1, zoom=True, centering=True)


@pytest.mark.parametrize("kind", KINDS)
def test_renders_in_0_1_at_the_stage_size_and_the_gradient_reaches_the_parameters(kind):
    torch.manual_seed(0)
    p = make(kind)
    for stage in stages():
        p.grow(stage, draws(2))
        image = p.render()
        assert image.shape == (2, 3, stage.size, stage.size)
        assert image.min() >= 0 and image.max() <= 1
        (image * torch.randn_like(image)).sum().backward()
        assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in p.parameters())


@pytest.mark.parametrize("kind,tolerance", [("pixel", 1e-6), ("fourier", 1e-3), ("maco", None)])
def test_growth_keeps_the_image(kind, tolerance):
    torch.manual_seed(0)
    p = make(kind)
    first, second = stages()[:2]
    p.grow(first, draws(2))
    with torch.no_grad():  # give the image some structure first
        for t in p.parameters():
            t.add_(torch.randn_like(t) * (0.3 if kind == "pixel" else 1.0))
        p.project()
    before = p.image()
    p.grow(second, draws(2))
    after = p.image()
    top = (second.size - second.paste) // 2
    centre = after[..., top:top + second.paste, top:top + second.paste]
    expected = F.interpolate(before, size=(second.paste,) * 2, mode="bilinear", align_corners=False).clamp(0, 1)
    if tolerance is not None:  # pixel and fourier re-express the grown image exactly
        assert (centre - expected).abs().max() < tolerance
    else:  # maco keeps the phase under its fixed magnitude: the same picture, not the same pixels
        a, b = centre - centre.mean(), expected - expected.mean()
        assert (a * b).sum() / (a.norm() * b.norm()) > 0.6


@pytest.mark.parametrize("kind", KINDS)
def test_state_round_trips_exactly(kind):
    torch.manual_seed(0)
    p = make(kind)
    p.grow(stages()[1], draws(2))
    q = make(kind)
    q.load_state_dict(p.state_dict())
    assert q.size == p.size and torch.equal(q.render(), p.render())


def test_maco_keeps_its_magnitude_fixed_through_optimisation():
    torch.manual_seed(0)
    p = make("maco", batch=1)
    p.grow(stages()[-1], draws(1))
    size = p.size

    def magnitude_ratio():  # |rfft2| of the rendered (standardised) image over the fixed magnitude
        with torch.no_grad():
            x = p.spatial(p.phase, size).double()
        ratio = torch.fft.rfft2(x).abs()[..., 1:-1] / p.magnitude(size).double()[..., 1:-1]
        return ratio / ratio.mean()

    assert torch.allclose(magnitude_ratio(), torch.ones(1, dtype=torch.float64), atol=2e-3)
    optimizer = torch.optim.NAdam(p.parameters(), lr=1.0)
    phase = p.phase.detach().clone()
    for _ in range(3):
        optimizer.zero_grad()
        (p.render()[:, 0] ** 2).mean().backward()
        optimizer.step()
    assert not torch.equal(p.phase, phase)  # the phase moved, the magnitude did not
    assert torch.allclose(magnitude_ratio(), torch.ones(1, dtype=torch.float64), atol=2e-3)
    assert len(p.parameters()) == 1 and p.parameters()[0] is p.phase


def test_maco_reads_a_spectrum_file(tmp_path):
    spectrum = torch.rand(3, 40, 21).numpy()
    import numpy as np

    np.save(tmp_path / "s.npy", spectrum)
    p = make("maco", 2, f"param.spectrum={tmp_path / 's.npy'}")
    assert p.magnitude(40).shape == (3, 40, 21) and torch.equal(p.magnitude(40), torch.from_numpy(spectrum))
    assert p.magnitude(64).shape == (3, 64, 33)
    p.grow(stages()[0], draws(2))
    assert p.render().shape == (2, 3, 32, 32)


def test_maco_photos_spectrum_makes_natural_images():
    """param.spectrum=photos (scikit-learn's sample photos' mean magnitude, no download): MACO's canvases are
    as steep as photos (slope near -2.5), steeper than under the 1 / f law, in colour, not grey."""
    natural, law = make("maco", 2, "param.spectrum=photos"), make("maco", 2)
    assert natural.magnitude(64).shape == (3, 64, 33)
    slopes = {}
    for name, p in (("photos", natural), ("law", law)):
        image = p.canvas(224, draws(1))[0]
        slopes[name] = spectral_slope(image)
        assert 0 <= image.min() and image.max() <= 1 and image.std() > 0.05
    assert -3.2 < slopes["photos"] < -2.0 and slopes["photos"] < slopes["law"] - 0.3, slopes


def papers_loop(classifier, class_ids, augment_views, stages, cfg, seed):
    """Section 3.4 of the paper written out plainly, on raw pixels: for each stage grow the image
    (fresh U[0, 1) canvas, previous image pasted in the centre), a fresh Adam with cosine decay, then
    augment, forward, cross-entropy, backward, step, clamp to [0, 1]. Each image draws its canvas and
    its augmentations from its own generator, seeded from (seed, its class, the stage)."""
    targets = torch.tensor(class_ids)
    image = None
    for index, stage in enumerate(stages):
        generators = [torch.Generator().manual_seed(stream_seed(seed, c, index)) for c in class_ids]
        canvas = torch.cat([torch.rand(1, 3, stage.size, stage.size, generator=g) for g in generators])
        image = schedule.grow(image, stage, canvas).requires_grad_(True)
        optimizer = torch.optim.Adam([image], lr=float(cfg.lr), betas=tuple(cfg.betas))
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=stage.steps, eta_min=0.0)
        for _ in range(stage.steps):
            views = augment_views(image, Draws(generators))
            copies = len(views) // len(class_ids)
            # each image's mean cross-entropy over its copies, summed over the images
            loss = F.cross_entropy(classifier(views), targets.repeat_interleave(copies), reduction="sum") / copies
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            cosine.step()
            with torch.no_grad():
                image.clamp_(0, 1)
        image = image.detach()
    return image


def test_pixel_param_is_the_papers_loop():
    # both loops run here, in one process, from the same seed: the same random draws in the same
    # order. They may differ only in how a float sum is ordered (the loss is summed per view,
    # divided by all views and multiplied by the images), a few ulps per step; Adam's step is at most about lr per pixel,
    # so 9 steps cannot turn that into more than 1e-5. A change to the algorithm (a draw, an
    # operation, a step) moves pixels by ~lr = 1e-2.
    cfg = tiny_cfg(Path("/unused"))
    torch.manual_seed(0)
    classifier = models.build(cfg.model, "cpu", **models.PLAIN)
    plan = build.stages(cfg)
    assert len(plan) == 3 and sum(s.steps for s in plan) == 9
    ours = invert(classifier, [1, 2], build.augmentation(cfg), plan, build.loss(cfg, classifier), build.optimizer(cfg),
                  log_every=cfg.log_every, chunk=None, param=build.param(cfg, 2, "cpu"), seed=1)
    reference = papers_loop(classifier, [1, 2], build.augmentation(cfg), plan, cfg.schedule, seed=1)
    assert ours.shape == reference.shape == (2, 3, 32, 32)
    assert (ours - reference).abs().max() < 1e-5
    # and the tolerance is far below what a different run gives
    other = papers_loop(classifier, [1, 2], build.augmentation(cfg), plan, cfg.schedule, seed=2)
    assert (other - reference).abs().max() > 1e-2


class Probs(Observer):
    def __init__(self):
        self.probs = []

    def step_done(self, index, step, loss, probs):
        self.probs.append(probs.mean().item())


@pytest.mark.parametrize("preset", ["pii", "pii_fourier", "lucent", "maco", "deepinversion_noise"])
def test_each_method_preset_raises_the_target_probability(tiny_config, preset):
    # the embedded Lite0 (real weights) at 64 px: 2 stages x 30 steps (random crops of a 32 px
    # image need more than a few steps to move p clear of its start), or (no stages) one of 15
    cfg = tiny_config(f"experiment={preset}", "schedule.steps=30", "precision=fp32", "augmentation.ensemble.size=2")
    if not cfg.schedule.zoom:
        cfg.schedule.steps = 15
    if preset == "lucent":
        cfg.augmentation.pad.pixels = cfg.augmentation.shift.pixels = 4
    torch.manual_seed(0)
    classifier = models.build(cfg.model, "cpu", **models.PLAIN)
    recorder = Probs()
    invert(classifier, [980, 1], build.augmentation(cfg), build.stages(cfg), build.loss(cfg, classifier),
           build.optimizer(cfg), recorder, log_every=1, chunk=None, param=build.param(cfg, 2, "cpu"), seed=cfg.seed)
    k = 3
    assert sum(recorder.probs[-k:]) / k > sum(recorder.probs[:k]) / k


def test_spectral_slope_of_1_over_f_squared_and_of_white_noise():
    torch.manual_seed(0)
    size = 128
    amplitude = param_lib.power_law(size, 1.0)  # amplitude 1/f: power 1/f^2
    pink = torch.fft.irfft2(torch.polar(amplitude, torch.rand(size, size // 2 + 1) * 6.2832), s=(size, size))
    pink = (pink - pink.min()) / (pink.max() - pink.min())
    assert spectral_slope(pink.expand(3, -1, -1)) == pytest.approx(-2, abs=0.15)
    assert spectral_slope(torch.rand(3, size, size)) == pytest.approx(0, abs=0.15)


@pytest.mark.parametrize("kind", ["fourier", "maco"])
def test_resume_and_init_from_work_with_a_param(tmp_path, kind):
    clean = runner.run(tiny_cfg(tmp_path / "clean", f"param={kind}", "verifier=none"))
    killed = tmp_path / "killed"
    with stopped_after_stage(0), pytest.raises(KeyboardInterrupt):
        runner.run(as_hydra_run(tiny_cfg(killed, f"param={kind}", "verifier=none"), killed))
    assert set(resume.load_checkpoint(killed)["param"]) == {"spectrum" if kind == "fourier" else "phase"}
    resumed = runner.run(OmegaConf.merge(tiny_cfg(tmp_path / "x", "verifier=none"), {"resume": str(killed)}))
    assert resumed.param == kind
    assert torch.equal(resume.load_checkpoint(killed)["image"], resume.load_checkpoint(tmp_path / "clean")["image"])
    assert resumed.mean_probability == pytest.approx(clean.mean_probability)
    started = runner.run(tiny_cfg(tmp_path / "init", f"param={kind}", "verifier=none", f"init_from={tmp_path / 'clean'}"))
    assert started.param == kind and -4 < started.spectral_slope < 1
    assert all(c.spectral_slope is not None for c in started.classes)
