"""Robust classifiers: checkpoints in the forms people hold them load with the same logits, PGD
attacks within its budget, adversarial training runs, and natural vs robust is one sweepable key."""

import argparse

import pytest
import timm
import torch
from conftest import compose_config
from torch import nn

from pii import models
from pii.errors import ConfigError

MEAN, STD = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]  # not timm's: the loaded model must take them from the file


class InputNormalize(nn.Module):
    """The robustness library's normalisation layer: buffers new_mean, new_std of shape [3, 1, 1]."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("new_mean", torch.tensor(mean)[:, None, None])
        self.register_buffer("new_std", torch.tensor(std)[:, None, None])


class Attacker(nn.Module):
    def __init__(self, model, mean, std):
        super().__init__()
        self.model, self.normalize = model, InputNormalize(mean, std)


class AttackerModel(nn.Module):
    """The robustness library's saved module: the classifier twice (itself and inside the attacker)."""

    def __init__(self, model, mean, std):
        super().__init__()
        self.normalizer, self.model = InputNormalize(mean, std), model
        self.attacker = Attacker(model, mean, std)


def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet10t", num_classes=10).eval()


def robust_resnet_cfg(path):
    """model=resnet50_robust with the checkpoint at `path`, on a ResNet small enough for a test."""
    return compose_config(["model=resnet50_robust", f"model.weights={path}", "model.name=resnet10t",
                           "model.num_classes=10", "model.input_size=32", "output_dir=/x"]).model


def training_state(net: nn.Module) -> dict:
    """What a training script saves beside the weights: optimizer and schedule state after a step."""
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.rand(2, 3, 32, 32)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, 30)
    return {"optimizer": opt.state_dict(), "schedule": sched.state_dict(), "epoch": 90}


@pytest.mark.parametrize("weights_key", ["model", "state_dict"])  # newer files, older files
def test_robustness_library_checkpoint_loads_with_its_own_normalisation(tmp_path, weights_key):
    net = tiny_resnet()
    saved = nn.DataParallel(AttackerModel(net, MEAN, STD))  # keys module.model.*, module.attacker.model.*
    checkpoint = {weights_key: saved.state_dict(), **training_state(tiny_resnet())}
    assert {"module.normalizer.new_mean", "module.attacker.model.fc.weight"} <= set(checkpoint[weights_key])
    torch.save(checkpoint, tmp_path / "robust.pt")
    loaded = models.build(robust_resnet_cfg(tmp_path / "robust.pt"))
    assert loaded.mean.flatten().tolist() == pytest.approx(MEAN) and loaded.std.flatten().tolist() == pytest.approx(STD)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        expected = net((x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None])
        torch.testing.assert_close(loaded(x), expected)


def test_dataparallel_state_dict_under_state_dict_loads(tmp_path):
    """The free-adversarial-training ResNet-50's layout: ImageNet training script, DataParallel model."""
    net = tiny_resnet()
    checkpoint = {"epoch": 90, "arch": "resnet50", "state_dict": nn.DataParallel(net).state_dict(),
                  "best_prec1": torch.tensor(40.0), **training_state(tiny_resnet())}
    assert all(k.startswith("module.") for k in checkpoint["state_dict"])
    torch.save(checkpoint, tmp_path / "free.pth.tar")
    cfg = robust_resnet_cfg(tmp_path / "free.pth.tar")
    loaded = models.build(cfg)
    spec = models.model_spec(cfg)  # no normalisation in the file: timm's for the architecture
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        expected = net((x - torch.tensor(spec["mean"])[:, None, None]) / torch.tensor(spec["std"])[:, None, None])
        torch.testing.assert_close(loaded(x), expected)


class Opens:
    """Unpickling this would create a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def test_a_checkpoint_that_holds_objects_is_refused_in_one_line_naming_them(tmp_path):
    marker = tmp_path / "ran"
    checkpoint = {"model": nn.DataParallel(AttackerModel(tiny_resnet(), MEAN, STD)).state_dict(),
                  "args": argparse.Namespace(eps=3.0), "hook": Opens(marker)}
    torch.save(checkpoint, tmp_path / "objects.pt")
    with pytest.raises(ConfigError) as err:
        models.build(robust_resnet_cfg(tmp_path / "objects.pt"))
    message = str(err.value)
    assert "\n" not in message and "could run code" in message
    assert "argparse.Namespace" in message and "io.open" in message
    assert not marker.exists()


def test_without_a_file_the_robust_entry_never_falls_back_to_natural_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("PII_WEIGHTS_DIR", str(tmp_path))
    cfg = compose_config(["model=resnet50_robust", "output_dir=/x"]).model
    with pytest.raises(ConfigError, match="resnet50_robust.pt' does not exist"):
        models.build(cfg)


def test_adversarially_trained_inception_entry_needs_no_network_to_configure():
    cfg = compose_config(["model=inception_v3_adv", "output_dir=/x"]).model
    assert cfg.name == "inception_v3.tf_adv_in1k" and cfg.weights == "pretrained"
    assert models.model_spec(cfg)["input_size"] == 299
