"""Robust classifiers: checkpoints in the forms people hold them load with the same logits, PGD
attacks within its budget, adversarial training runs, and natural vs robust is one sweepable key."""

import argparse
import json

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
    loaded = models.build(robust_resnet_cfg(tmp_path / "robust.pt"), "cpu", **models.PLAIN)
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
    loaded = models.build(cfg, "cpu", **models.PLAIN)
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
        models.build(robust_resnet_cfg(tmp_path / "objects.pt"), "cpu", **models.PLAIN)
    message = str(err.value)
    assert "\n" not in message and "could run code" in message
    assert "argparse.Namespace" in message and "io.open" in message
    assert not marker.exists()


def test_without_a_file_the_robust_entry_never_falls_back_to_natural_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("PII_WEIGHTS_DIR", str(tmp_path))
    cfg = compose_config(["model=resnet50_robust", "output_dir=/x"]).model
    with pytest.raises(ConfigError, match="resnet50_robust.pt' does not exist"):
        models.build(cfg, "cpu", **models.PLAIN)


def test_adversarially_trained_inception_entry_needs_no_network_to_configure():
    cfg = compose_config(["model=inception_v3_adv", "output_dir=/x"]).model
    assert cfg.name == "inception_v3.tf_adv_in1k" and cfg.weights == "pretrained"
    assert models.model_spec(cfg)["input_size"] == 299


# --- PGD and adversarial training ------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_data():
    from pii.models.digits import digits_split

    return digits_split()


@pytest.fixture(scope="module")
def natural_linear(digits_data):
    """A naturally trained classifier of digits, small enough to train in a second: one linear layer."""
    (x, y), _ = digits_data
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    clf = models.Classifier(net, name="linear", input_size=32, fixed_size=False, mean=[0.5] * 3, std=[0.5] * 3,
                            num_classes=10, precision="fp32", channels_last=False)
    net.requires_grad_(True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(100):
        loss = nn.functional.cross_entropy(clf(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return clf.requires_grad_(False)


@pytest.mark.parametrize("norm, epsilon", [("linf", 0.1), ("l2", 3.0)])
def test_pgd_drops_a_natural_models_accuracy_within_epsilon(natural_linear, digits_data, norm, epsilon):
    from pii.models.robust import PGD, distance, robust_accuracy
    from pii.models.training import accuracy

    _, (x, y) = digits_data
    attack = PGD(norm, epsilon, steps=10, step_size=2.5 * epsilon / 10)
    clean = accuracy(natural_linear, x, y)
    attacked = robust_accuracy(natural_linear, x, y, attack)
    assert clean > 0.9 and attacked < clean / 3, (clean, attacked)
    torch.manual_seed(0)
    x_adv = attack(natural_linear, x, y)
    assert distance(x, x_adv, norm).max() <= epsilon * (1 + 1e-5)
    assert 0 <= x_adv.min() and x_adv.max() <= 1
    noise = PGD(norm, epsilon, steps=0, step_size=0.0)  # the random start alone: the ascent does the damage
    assert robust_accuracy(natural_linear, x, y, noise) > attacked + 0.3
    assert not any(p.grad is not None for p in natural_linear.parameters())


def test_the_evaluation_attack_is_stronger_at_the_same_epsilon():
    from pii.models.robust import PGD

    robust = compose_config(["robust=linf", "output_dir=/x"]).robust
    train, evaluate = PGD.training(robust), PGD.evaluation(robust)
    assert evaluate.epsilon == train.epsilon and evaluate.steps > train.steps and evaluate.norm == train.norm
    assert PGD.training(compose_config(["output_dir=/x"]).robust) is None  # robust=none: natural training
    # epsilon (and the step with it) warms up over the first `warmup` share of training, then stays
    assert train.at(0).epsilon == 0 and train.at(1.0) == train == train.at(train.warmup)
    assert train.at(train.warmup / 2).epsilon == pytest.approx(train.epsilon / 2)
    assert train.at(train.warmup / 2).step_size == pytest.approx(train.step_size / 2)


class RecordingPGD:
    """A PGD that records where in training each batch it attacks was."""

    def __init__(self, attack):
        self.attack, self.progress = attack, []

    def at(self, progress):
        self.progress.append(progress)
        return self.attack.at(progress)


def test_a_tiny_robust_training_step_trains_on_attacked_batches(digits_data):
    from pii.models.digits import train
    from pii.models.robust import PGD
    from pii.run.digits import model_config

    (x, y), _ = digits_data
    cfg = model_config("digits_cnn", "random")
    attack = RecordingPGD(PGD("linf", 0.1, steps=2, step_size=0.08, warmup=0.5))
    robust = train(cfg, x[:32], y[:32], epochs=1, seed=0, batch_size=16, attack=attack)
    natural = train(cfg, x[:32], y[:32], epochs=1, seed=0, batch_size=16)
    assert attack.progress == [0.0, 0.5]  # every batch, at its share of the training
    weights = dict(robust.net.named_parameters())
    assert all(torch.isfinite(p).all() for p in weights.values())
    assert any(not torch.equal(p, weights[name]) for name, p in natural.net.named_parameters())


def test_a_robust_digits_model_is_reused_only_by_runs_that_would_train_the_same_one(tmp_path):
    from pii.run import digits

    epochs = {"vit": 1}
    digits.train_all(tmp_path, epochs, which=["vit"], robust="linf")  # the fastest architecture, one epoch
    tag = compose_config(["robust=linf", "output_dir=/x"]).robust.tag
    assert [p.name for p in tmp_path.glob("*.pt")] == [f"vit{tag}.pt"]  # the name the model config loads
    assert digits.is_trained(tmp_path, "vit", epochs, robust="linf")
    assert not digits.is_trained(tmp_path, "vit", epochs, robust="none")  # no natural one
    assert not digits.is_trained(tmp_path, "vit", {"vit": 2}, robust="linf")  # other epochs
    assert not digits.is_trained(tmp_path, "vit", epochs, seed=1, robust="linf")
    assert not digits.is_trained(tmp_path, "vit", epochs, robust="l2")


def test_a_robust_small_cnn_is_cached_apart_from_the_natural_one(tmp_path):
    from pii.feedforward import classifier as classifier_lib
    from pii.feedforward import data as data_lib
    from pii.feedforward.config import compose_train_invert

    paths = {}
    for robust in ("linf", "none"):
        cfg = compose_train_invert(["output_dir=unused", "generator.resolution=8", "classifier.width=4",
                                    "classifier.epochs=1", f"classifier.cache_dir={tmp_path}", f"robust={robust}"])
        paths[robust] = classifier_lib.checkpoint_path(cfg.classifier, cfg.data, 8, cfg.robust)
        if robust == "linf":  # trains adversarially and records how
            classifier_lib.build(cfg.classifier, None, data_lib.build(cfg.data, 8), 8, torch.device("cpu"),
                                 data_cfg=cfg.data, robust_cfg=cfg.robust)
    assert paths["none"] != paths["linf"] and paths["linf"].is_file()

    record = json.loads(paths["linf"].with_suffix(".json").read_text())["settings"]["robust"]
    assert record == {"norm": "linf", "epsilon": 0.1, "steps": 2, "step_size": 0.125, "warmup": 0.5}
    # robust=none keys the file as before robust training existed: cached natural classifiers stay valid
    assert paths["none"] == classifier_lib.checkpoint_path(cfg.classifier, cfg.data, 8)


# --- natural vs robust: one key, swept and grouped ---------------------------------------------

def test_natural_vs_robust_is_one_key_in_an_invert_sweep_grouped_in_wandb(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from wandb_file import run_record

    digits_dir = tmp_path / "digits"
    digits_dir.mkdir()
    tag = compose_config(["robust=linf", "output_dir=/x"]).robust.tag
    for seed, name in enumerate(["cnn.pt", f"cnn{tag}.pt"]):  # stand-ins for the natural and robust CNN
        torch.manual_seed(seed)
        torch.save(timm.create_model("resnet10t", num_classes=10).state_dict(), digits_dir / name)
    sweep = tmp_path / "sweep"
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "invert.py", "-m", "robust=none,linf", "model=digits_cnn", "class_id=[1]",
           "schedule.stages=1", "schedule.steps=2", "augmentation.ensemble.size=2", "verifier=none", "device=cpu",
           "logger=wandb", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}"]
    env = {**os.environ, "PII_DIGITS_DIR": str(digits_dir), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = {}
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        (wandb_file,) = (sweep / job).glob("wandb/offline-run-*/run-*.wandb")
        run = run_record(wandb_file)
        config = {u.key: json.loads(u.value_json) for u in run.config.update}
        seen[config["choices"]["robust"]] = (Path(metrics["config"]["model"]["weights"]).name, run.run_group)
    assert seen == {"none": ("cnn.pt", "sweep"), "linf": (f"cnn{tag}.pt", "sweep")}


def test_a_robust_job_of_a_model_without_a_robust_version_is_refused_before_the_sweep_runs():
    from pii import CONF_DIR
    from pii.run.cli import check_invert_job, preflight

    with pytest.raises(ConfigError, match=r"1 of the sweep's 2 jobs are bad.*robust=linf.*model=resnet50_robust"):
        preflight(["-m", "robust=none,linf", "model=efficientnet_lite0"], CONF_DIR, "config", check_invert_job)


def test_train_invert_sweeps_natural_against_robust_with_one_key():
    from pii.feedforward.classifier import checkpoint_path
    from pii.feedforward.cli import check_job
    from pii.run.cli import preflight
    from pii.feedforward.config import SEARCHPATH, TRAIN_INVERT_CONF_DIR, compose_train_invert

    # every job checked, none bad: the sweep's config comes back (its hydra.sweep.dir is claimed next)
    assert preflight(["-m", "robust=none,linf,l2", SEARCHPATH], TRAIN_INVERT_CONF_DIR, "config", check_job) is not None
    jobs = [compose_train_invert(["output_dir=unused", f"robust={r}"]) for r in ("none", "linf", "l2")]
    assert len({checkpoint_path(c.classifier, c.data, 32, c.robust) for c in jobs}) == 3  # three classifiers
