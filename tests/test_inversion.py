"""The PII loop at a tiny size: it must actually optimise, and report events."""

import torch

from pii import augment, losses, models, schedule
from pii.inversion import invert
from pii.observers import Observer


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
    classifier = models.build(cfg.model)
    recorder = Recorder()
    stages = schedule.plan(classifier.input_size, cfg.schedule)
    image = invert(classifier, list(class_ids), augment.build(cfg.augmentation), stages,
                   losses.build(cfg.loss, classifier), cfg.schedule, recorder)
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
    cfg = tiny_config("model=timm", "model.name=vit_tiny_patch16_224", "model.weights=random",
                      "model.input_size=224", "schedule.stages=1")
    seen = []
    classifier = models.build(cfg.model)
    classifier.net.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[-1]))
    stages = schedule.plan(224, cfg.schedule)
    invert(classifier, [0], augment.build(cfg.augmentation), stages[:1], losses.build(cfg.loss, classifier), cfg.schedule)
    assert set(seen) == {224}
