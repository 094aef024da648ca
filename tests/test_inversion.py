"""The PII loop at a tiny size: it must actually optimise, and report events."""

from pathlib import Path

import pytest
import torch
from tiny import tiny_cfg

from pii import models
from pii.core.inversion import forward_backward, invert
from pii.core.observers import Observer
from pii.errors import ConfigError
from pii.run import build


class Recorder(Observer):
    def __init__(self):
        self.events, self.losses, self.probs = [], [], []

    def stage_started(self, index, stage, image):
        self.events.append(("start", index, tuple(image.shape)))

    def step_done(self, index, step, loss, probs):
        self.losses.append(loss)
        self.probs.append(probs)

    def stage_done(self, index, stage, image):
        self.events.append(("done", index, tuple(image.shape)))


def run_tiny(cfg, class_ids=(980, 1)):
    """Invert a few classes of the config's (random-weight) model; return the image and what was reported."""
    torch.manual_seed(0)
    classifier = models.build(cfg.model, "cpu", **models.PLAIN)
    recorder = Recorder()
    stages = build.stages(cfg)
    image = invert(classifier, list(class_ids), build.augmentation(cfg), stages,
                   build.loss(cfg, classifier), build.optimizer(cfg), recorder, log_every=1, chunk=None,
                   param=build.param(cfg, len(class_ids), "cpu"), seed=cfg.seed)
    return classifier, image, recorder


def assert_inversion_learns(recorder: Recorder, steps: int):
    """A few steps lower the loss and raise the target probability (averaged over steps to ride out augmentation noise)."""
    k = max(1, steps // 4)
    first, last = sum(recorder.losses[:k]) / k, sum(recorder.losses[-k:]) / k
    assert last < first, f"loss did not fall: {first:.3f} -> {last:.3f}"
    assert torch.stack(recorder.probs[-k:]).mean() > torch.stack(recorder.probs[:k]).mean()


def test_few_steps_lower_the_loss_and_raise_the_target(tiny_config):
    # Plain cross-entropy at one size: the loop itself must optimise (the e2e test covers full PII).
    cfg = tiny_config("augmentation=none", "schedule=none", "schedule.stages=1", "schedule.steps=20")
    classifier, image, recorder = run_tiny(cfg)
    assert_inversion_learns(recorder, 20)
    with torch.no_grad():
        start = classifier(torch.rand_like(image)).softmax(-1)[[0, 1], [980, 1]]
        end = classifier(image).softmax(-1)[[0, 1], [980, 1]]
    assert (end > 10 * start).all()


def test_stages_grow_and_classifier_stays_frozen(tiny_config):
    cfg = tiny_config("schedule.stages=3")
    classifier, image, recorder = run_tiny(cfg, class_ids=(1, 2, 5))
    assert [e for e in recorder.events if e[0] == "done"] == [
        ("done", 0, (3, 3, 32, 32)), ("done", 1, (3, 3, 48, 48)), ("done", 2, (3, 3, 64, 64))]
    assert len(recorder.losses) == 3 * 3 and recorder.probs[0].shape == (3,)
    assert image.min() >= 0 and image.max() <= 1 and not image.requires_grad
    assert all(p.grad is None for p in classifier.parameters())  # weights frozen: no gradient computed


def test_fixed_size_model_sees_its_own_input_size(tiny_config):
    # two stages: the first (149 px) is smaller than the ViT's 224 px and must be resized for it
    cfg = tiny_config("model=timm", "model.name=vit_tiny_patch16_224", "model.weights=random",
                      "model.input_size=224", "schedule.stages=2", "schedule.steps=1")
    given, seen = [], []
    classifier = models.build(cfg.model, "cpu", **models.PLAIN)
    classifier.register_forward_pre_hook(lambda m, args: given.append(args[0].shape[-1]))
    classifier.net.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[-1]))
    stages = build.stages(cfg)
    invert(classifier, [0], build.augmentation(cfg), stages, build.loss(cfg, classifier), build.optimizer(cfg),
           log_every=cfg.log_every, chunk=None, param=build.param(cfg, 1, "cpu"), seed=cfg.seed)
    assert set(given) == {149, 224} and set(seen) == {224}


def test_a_class_gets_the_same_image_whatever_else_is_in_its_batch():
    # one batch of four classes, or two of two, same seed: each image draws its canvas and its
    # augmentations from its own streams, and its gradient is that of its own loss. What remains is
    # how batched kernels round (a convolution's sums are ordered by its blocking, which depends on
    # the batch): measured 6e-7 here after 9 steps (3 stages x 3 steps, fp32) with AVX-512. Adam
    # divides a gradient by its size, so a pixel whose gradient is near zero can have its step
    # flipped by rounding (1e-4 with oneDNN held to SSE4.1): the largest difference stays far
    # below one Adam step (lr = 1e-2) and what another seed gives (tenths), the mean at rounding
    cfg = tiny_cfg(Path("/unused"), "precision=fp32")
    torch.manual_seed(0)
    classifier = models.build(cfg.model, "cpu", **models.PLAIN)
    stages = build.stages(cfg)

    def images(class_ids, seed=cfg.seed):
        return invert(classifier, class_ids, build.augmentation(cfg), stages, build.loss(cfg, classifier),
                      build.optimizer(cfg), log_every=cfg.log_every, chunk=None,
                      param=build.param(cfg, len(class_ids), "cpu"), seed=seed)

    together = images([1, 2, 3, 4])
    split = torch.cat([images([1, 2]), images([3, 4])])
    for other in (split, images([4, 3, 2, 1]).flip(0)):  # nor its place in the batch
        difference = (other - together).abs()
        assert difference.max() < 1e-3 and difference.mean() < 1e-6
    assert (images([1, 2, 3, 4], seed=1) - together).abs().amax((1, 2, 3)).min() > 0.1


def chunk_gradient(classifier, loss_fn, views_of, image, per_chunk):
    """The image gradient of one step whose views go `per_chunk` at a time."""
    image = image.clone().requires_grad_(True)
    views = views_of(image)
    targets = torch.tensor([1, 2]).repeat_interleave(len(views) // 2)
    loss, probs = forward_backward(classifier, loss_fn, views, targets, image, per_chunk)
    return image.grad, loss, probs


def test_chunked_views_give_the_unchunked_gradient():
    # augmentation.chunk trades speed for memory and must not change the result
    cfg = tiny_cfg(Path("/unused"), "loss=tv", "precision=fp32")
    classifier = models.build(cfg.model, "cpu", **models.PLAIN)
    loss_fn = build.loss(cfg, classifier)
    image = torch.rand(2, 3, 32, 32)
    torch.manual_seed(1)
    shifts = torch.rand(10, 3, 1, 1)
    views_of = lambda x: x.repeat_interleave(5, dim=0) * 2 - shifts  # noqa: E731 - a fixed "augmentation"
    whole = chunk_gradient(classifier, loss_fn, views_of, image, per_chunk=10)
    for per_chunk in (1, 3, 4):
        chunked = chunk_gradient(classifier, loss_fn, views_of, image, per_chunk)
        torch.testing.assert_close(chunked[0], whole[0], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(chunked[1], whole[1])
        torch.testing.assert_close(chunked[2], whole[2])
    assert whole[0].abs().sum() > 0


def test_chunking_is_refused_where_the_loss_needs_every_view_at_once(tiny_config):
    cfg = tiny_config("loss=deepinversion", "augmentation.chunk=1")
    classifier = models.build(cfg.model, "cpu", **models.PLAIN)
    with pytest.raises(ConfigError, match="augmentation.chunk"):
        invert(classifier, [1, 2], build.augmentation(cfg), build.stages(cfg),
               build.loss(cfg, classifier), build.optimizer(cfg), log_every=cfg.log_every, chunk=1,
               param=build.param(cfg, 2, "cpu"), seed=cfg.seed)


def test_the_loop_reports_every_log_every_steps_and_each_stage_end(tiny_config):
    cfg = tiny_config("schedule.stages=2", "schedule.steps=7")
    classifier = models.build(cfg.model, "cpu", **models.PLAIN)
    steps = []

    class Steps(Observer):
        def step_done(self, index, step, loss, probs):
            steps.append((index, step))

    invert(classifier, [1], build.augmentation(cfg), build.stages(cfg),
           build.loss(cfg, classifier), build.optimizer(cfg), Steps(), log_every=3, chunk=None,
           param=build.param(cfg, 1, "cpu"), seed=cfg.seed)
    assert steps == [(0, 0), (0, 3), (0, 6), (1, 0), (1, 3), (1, 6)]
