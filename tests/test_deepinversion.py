"""DeepInversion after PII: the BatchNorm-statistics penalty, and starting from a run's images."""

import pytest
import timm
import torch
from torch import nn

from pii.core import losses
from pii.core.objectives import L2, BatchNorm, Class, Objective, TotalVariation
from pii.errors import ConfigError
from pii.eval import results
from pii.models import Classifier
from pii.run import outputs, resume, runner
from tests.tiny import made_up_result, tiny_cfg


def bn_first_classifier() -> Classifier:
    net = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    return Classifier(net, name="tiny-bn", input_size=16, fixed_size=False, mean=[0, 0, 0], std=[1, 1, 1],
                      num_classes=5, precision="fp32", channels_last=False)


def test_penalty_is_zero_at_the_running_statistics_and_positive_elsewhere():
    torch.manual_seed(0)
    classifier = bn_first_classifier()
    batch = torch.rand(6, 3, 16, 16)
    # make every BatchNorm's running statistics those of this very batch
    features = batch
    for layer in classifier.net[:3]:  # BatchNorm, Conv, BatchNorm
        if isinstance(layer, nn.BatchNorm2d):
            layer.running_mean.copy_(features.mean((0, 2, 3)))
            layer.running_var.copy_(features.var((0, 2, 3), unbiased=False))
        features = layer(features)
    stats = losses.BatchNormStatistics(classifier)
    assert len(stats.layers) == 2
    classifier(batch)
    assert stats.penalty().item() == pytest.approx(0.0, abs=1e-5)
    classifier(batch * 0.5 + 0.3)
    assert stats.penalty().item() > 0.1


def test_deepinversion_loss_adds_the_penalty_and_refuses_models_without_batchnorm():
    classifier = bn_first_classifier()
    loss = Objective([Class(1.0), TotalVariation(0.05), L2(1e-4), BatchNorm(0.01)], classifier)
    image = torch.rand(2, 3, 16, 16, requires_grad=True)
    targets = torch.tensor([1, 2])
    views_loss, _ = loss.views_loss(classifier, image, targets, torch.arange(2))
    total = views_loss + loss.image_loss(image)
    ce = nn.functional.cross_entropy(classifier(image), targets)
    assert total.item() > ce.item()
    total.backward()
    assert image.grad.abs().sum() > 0

    vit = Classifier(timm.create_model("test_vit", num_classes=5), name="test_vit", input_size=160,
                     fixed_size=True, mean=[0.5] * 3, std=[0.5] * 3, num_classes=5, precision="fp32",
                     channels_last=False)
    with pytest.raises(ConfigError, match="needs a model with BatchNorm.*test_vit has none"):
        Objective([Class(1.0), BatchNorm(0.01)], vit)


def test_deepinversion_starts_from_a_pii_run_images(tmp_path, monkeypatch):
    pii_images = torch.rand(2, 3, 32, 32)
    (tmp_path / "pii").mkdir()
    finished = made_up_result({1: "1_a.png", 2: "2_b.png"})
    outputs.save_images(tmp_path / "pii", pii_images, finished)
    results.write(tmp_path / "pii" / results.METRICS, finished)
    init = resume.load_images(tmp_path / "pii", [2, 1])
    assert init.shape == (2, 3, 32, 32) and (init[1] - pii_images[0]).abs().max() <= 1 / 255

    first_images = []
    monkeypatch.setattr(outputs.Saver, "stage_started", lambda self, i, s, img: first_images.append(img.clone()),
                        raising=False)
    di = runner.run(tiny_cfg(tmp_path / "di", "experiment=deepinversion", f"init_from={tmp_path / 'pii'}",
                             "schedule.steps=3"))
    assert di.stage_sizes == [32] and di.config["loss"]["bn_weight"] > 0
    assert torch.allclose(first_images[0], resume.load_images(tmp_path / "pii", [1, 2]))
    with pytest.raises(ConfigError, match="no image for class"):
        resume.load_images(tmp_path / "pii", [3])
