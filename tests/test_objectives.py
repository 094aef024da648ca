"""Objectives past classes: each term raises what it names, layers by name with their layout found
(NCHW, NHWC, tokens with a class token), the network stopped after the last layer read, terms
that add up with their weights, and one line for every bad layer, unit and vector."""

import json

import pytest
import torch
from conftest import compose_config, run_cli
from torch import nn

from pii import models
from pii.core.inversion import invert
from pii.core.objectives import Channel, Class, Diversity, Direction, Neuron, Objective
from pii.errors import ConfigError
from pii.models import Classifier
from pii.models.layers import Reader, probe
from pii.models.layers import objective as layer_objective
from pii.run import build, runner
from pii.run.config import parse_units

DIGITS = ["model.weights=random", "augmentation=none", "schedule=none", "schedule.stages=1", "schedule.steps=12",
          "device=cpu", "precision=fp32", "channels_last=false", "verifier=none", "class_id=[1,2]"]


VECTOR = "objective.terms.target.vector=[" + ",".join(str((-1) ** i * (i % 5) / 4) for i in range(128)) + "]"


def digits_cfg(model: str, *overrides: str):
    return compose_config([f"model={model}", *DIGITS, *overrides])


def term_value(objective: Objective, classifier, image, units) -> torch.Tensor:
    """Each image's reported score (its target's activation, or probability) on the image as it is."""
    with torch.no_grad():
        _, score = objective.views_loss(classifier, image, torch.tensor(units), torch.arange(len(image)))
    return score


@pytest.mark.parametrize("overrides", [
    ["objective=channel", "objective.layer=layer2"],
    ["objective=neuron", "objective.layer=layer2"],
    ["objective=neuron", "objective.layer=layer2", "objective.terms.target.position=[0,1]"],
    ["objective=direction", "objective.layer=layer2", VECTOR, "objective.terms.target.cossim_power=2"],
    ["objective=layer", "objective.layer=layer2"],
    ["objective=logit", "class_id=[3,7]"],
    ["objective=class", "class_id=[3,7]"],
], ids=["channel", "neuron", "neuron-position", "direction", "layer", "logit", "class"])
def test_each_term_raises_its_target(overrides):
    units = ["objective.units=[1,5]"] if "objective.layer=layer2" in overrides else []
    cfg = digits_cfg("digits_cnn", *units, *overrides)
    torch.manual_seed(0)
    classifier = models.build(cfg.model, "cpu", **models.PLAIN)
    units = build.targets(cfg, 10)
    objective = build.loss(cfg, classifier)
    start = torch.rand(len(units), 3, 32, 32, generator=torch.Generator().manual_seed(0))
    image = invert(classifier, units, build.augmentation(cfg), build.stages(cfg), objective,
                   build.optimizer(cfg), image=start.clone(), log_every=10, chunk=None,
                   param=build.param(cfg, len(units), "cpu"), seed=0)
    before, after = term_value(objective, classifier, start, units), term_value(objective, classifier, image, units)
    assert (after > before).all(), f"{before} -> {after}"


def test_diversity_pulls_the_images_of_one_unit_apart():
    cfg = digits_cfg("digits_cnn", "objective=diversity", "objective.layer=layer2", "objective.units=[4]",
                     "objective.images_per_target=3", "objective.terms.target.weight=0")
    classifier = models.build(cfg.model, "cpu", **models.PLAIN)
    units = build.targets(cfg, 10)
    assert units == [4, 4, 4]
    objective = build.loss(cfg, classifier)
    assert [type(t) for t in objective.terms] == [Diversity] and not objective.splits_over_views
    start = torch.rand(1, 3, 32, 32).repeat(3, 1, 1, 1) + 0.01 * torch.rand(3, 3, 32, 32)

    def similarity(image):
        with torch.no_grad():
            return objective.views_loss(classifier, image, torch.tensor(units), torch.arange(3))[0]

    image = invert(classifier, units, build.augmentation(cfg), build.stages(cfg), objective, build.optimizer(cfg),
                   image=start.clamp(0, 1), log_every=10, chunk=None, param=build.param(cfg, 3, "cpu"), seed=0)
    assert similarity(image) < similarity(start.clamp(0, 1)) - 0.01
    # each copy of a unit draws from its own stream: the copies do not stay alike
    assert (image[0] - image[1]).abs().mean() > 0.01


def test_unit_images_are_measured_against_the_real_digits():
    """objective.real_images=digits: each image's unit activation over its largest on the digits test
    images, and those images in the reference of specificity."""
    from pii.eval import units as unit_measures
    from pii.models.digits import digits_split

    cfg = digits_cfg("digits_cnn", "objective=channel", "objective.layer=layer2", "objective.units=[1,5]",
                     "objective.real_images=digits")
    classifier = models.build(cfg.model, "cpu", **models.PLAIN)
    objective = build.loss(cfg, classifier)
    real = build.real_images(cfg, classifier.input_size)
    assert real.shape[1:] == (3, 32, 32) and len(real) == len(digits_split()[1][0])
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    report = unit_measures.unit_report(objective, classifier, image, [1, 5], [0.0, 0.0], real=real)
    means, on_real = (unit_measures.unit_means(objective, classifier, x, "layer2") for x in (image, real))
    for entry, row, unit in zip(report, means, [1, 5]):
        assert entry.vs_real == pytest.approx(float(row[unit] / on_real[:, unit].max()), rel=1e-3)
    assert build.real_images(digits_cfg("digits_cnn"), 32) is None


class ToNHWC(nn.Module):
    """A ConvNeXt / Swin style block output: channels last, normalised over them."""

    def __init__(self, channels):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1))


class ToNCHW(nn.Module):
    def forward(self, x):
        return x.permute(0, 3, 1, 2)


def nhwc_classifier(channels_last=False) -> Classifier:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), ToNHWC(8), ToNCHW(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 5))
    return Classifier(net, name="tiny-nhwc", input_size=12, fixed_size=False, mean=[0, 0, 0], std=[1, 1, 1],
                      num_classes=5, precision="fp32", channels_last=channels_last)


def test_nhwc_and_nchw_outputs_give_the_same_unit_activation():
    image = torch.rand(2, 3, 12, 12)
    values = {}
    for channels_last in (False, True):
        classifier = nhwc_classifier(channels_last)
        layers, _ = probe(classifier, ["1", "2"])
        assert (layers["1"].layout, layers["2"].layout) == ("nhwc", "nchw")
        assert layers["1"].units == layers["2"].units == 8 and layers["1"].grid == (12, 12)
        for name in ("1", "2"):  # the same tensor, channels last (a real NHWC output) and back
            for term in (Channel(name, 3, 1.0), Neuron(name, 3, [2, 7], 1.0)):
                objective = layer_objective([term], classifier)
                values[channels_last, name, type(term)] = term_value(objective, classifier, image, [0, 0])
    for kind in (Channel, Neuron):
        reference = values[False, "2", kind]
        for key in [(False, "1", kind), (True, "1", kind), (True, "2", kind)]:
            torch.testing.assert_close(values[key], reference, rtol=1e-5, atol=1e-6)
    # by hand: unit 3 of the NCHW tensor
    classifier = nhwc_classifier()
    with torch.no_grad():
        expected = classifier.net[2](classifier.net[1](classifier.net[0](image)))[:, 3]
    torch.testing.assert_close(values[False, "2", Channel], expected.mean((1, 2)))
    torch.testing.assert_close(values[False, "2", Neuron], expected[:, 2, 7])


@pytest.mark.parametrize("model, prefix", [("digits_vit", 1), ("digits_mixer", 0)])
def test_a_token_model_channel_is_a_feature_over_the_patch_tokens(model, prefix):
    cfg = digits_cfg(model)
    classifier = models.build(cfg.model, "cpu", **models.PLAIN)
    layers, _ = probe(classifier, ["blocks.1"])
    layer = layers["blocks.1"]
    assert layer.layout == "tokens" and layer.prefix == prefix and layer.units == 128
    grid = (4, 4) if model == "digits_vit" else (8, 8)
    assert layer.grid == grid
    seen = []

    def huge_class_token(module, args, output):
        output = output.clone()
        if prefix:  # the class token made huge in every feature: read, it would win every unit
            output[:, 0] = 1e6
        seen.append(output.detach())
        return output

    handle = classifier.net.blocks[1].register_forward_hook(huge_class_token)  # before the objective's hook
    image = torch.rand(2, 3, 32, 32)
    channel = term_value(layer_objective([Channel("blocks.1", 5, 1.0)], classifier), classifier, image, [0, 0])
    neuron = term_value(layer_objective([Neuron("blocks.1", 5, [1, 2], 1.0)], classifier), classifier, image, [0, 0])
    handle.remove()
    tokens = seen[-1][:, prefix:, 5]  # the last pass: the neuron term's, on the same image
    torch.testing.assert_close(channel, tokens.mean(1))
    assert channel.abs().max() < 100
    torch.testing.assert_close(neuron, tokens[:, 1 * grid[1] + 2])  # row by row


def test_terms_add_up_with_their_weights():
    cfg = digits_cfg("digits_cnn")
    classifier = models.build(cfg.model, "cpu", **models.PLAIN)
    image, units = torch.rand(2, 3, 32, 32), torch.tensor([1, 2])

    def loss(*terms):
        with torch.no_grad():
            return layer_objective(list(terms), classifier).views_loss(classifier, image, units, torch.arange(2))[0]

    one, two = loss(Channel("layer2", 12, 1.0)), loss(Channel("layer2", 40, 1.0))
    torch.testing.assert_close(loss(Channel("layer2", 12, 1.0), Channel("layer2", 40, weight=-1.0)), one - two)
    torch.testing.assert_close(loss(Class(0.5), Channel("layer2", 12, weight=3.0)),
                               0.5 * loss(Class(1.0)) + 3 * one)
    # on the command line: a channel minus another, one more term in the list
    cfg = digits_cfg("digits_cnn", "objective=channel", "objective.layer=layer2", "objective.units=[12]",
                     "+objective.terms.minus={_target_: pii.core.objectives.Channel, layer: layer2, unit: 40, "
                     "weight: -1}")
    with torch.no_grad():
        got = build.loss(cfg, classifier).views_loss(classifier, image, torch.tensor([12, 12]), torch.arange(2))[0]
    torch.testing.assert_close(got, one - two)


def test_the_network_stops_after_the_last_layer_read_and_gives_the_same_activation():
    cfg = digits_cfg("digits_cnn")
    classifier = models.build(cfg.model, "cpu", **models.PLAIN)
    layers, order = probe(classifier, ["layer1", "layer2"])
    ran = []
    handle = classifier.net.layer3.register_forward_hook(lambda *args: ran.append(True))
    image = torch.rand(2, 3, 32, 32)
    short = Reader(classifier, layers, order, logits=False)
    logits, acts = short(classifier, image)
    short.remove()
    assert logits is None and not ran  # nothing after layer2 ran
    whole = Reader(classifier, layers, order, logits=True)
    full_logits, full = whole(classifier, image)
    whole.remove()
    handle.remove()
    assert ran and full_logits.shape == (2, 10)
    for name in ("layer1", "layer2"):
        torch.testing.assert_close(acts[name].values, full[name].values)
    # the classifier used for anything else (reports, judges) runs whole, hooks or not
    reader = Reader(classifier, layers, order, logits=False)
    assert classifier(image).shape == (2, 10)
    reader.remove()
    # the backward of a stopped pass reaches the image
    x = image.clone().requires_grad_(True)
    objective = layer_objective([Channel("layer2", 3, 1.0)], classifier)
    assert objective.read.stop == "layer2"
    loss, _ = objective.views_loss(classifier, x, torch.tensor([0, 0]), torch.arange(2))
    loss.backward()
    assert x.grad.abs().sum() > 0


def test_objective_class_is_the_default_and_the_loss_group_weights_its_priors():
    cfg = compose_config(["loss=deepinversion"])
    assert cfg.objective.terms.target._target_ == "pii.core.objectives.Class" and cfg.objective.units is None
    weights = {name: float(node.weight) for name, node in cfg.objective.terms.items()}
    assert weights == {"target": 1.0, "tv": 0.05, "l2": 0.0001, "batchnorm": 0.01}
    assert parse_units("first:16") == list(range(16)) and parse_units([0, 5, 9]) == [0, 5, 9]


def test_a_unit_run_writes_layer_unit_images_and_their_activations(tmp_path):
    from tiny import tiny_cfg

    cfg = tiny_cfg(tmp_path, "objective=channel", "objective.layer=blocks.1", "objective.units=[0,3]",
                   "verifier=efficientnet_lite0")
    result = runner.run(cfg)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["blocks.1_0.png", "blocks.1_3.png", "grid.png"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [(u["layer"], u["unit"]) for u in metrics["units"]] == [("blocks.1", 0), ("blocks.1", 3)]
    assert all(isinstance(u["activation"], float) and isinstance(u["start_activation"], float) for u in metrics["units"])
    assert metrics["classes"] == [] and metrics["judge"] == {} and 0 <= metrics["specificity"] <= 1
    assert result.units[0].image == "blocks.1_0.png"


def test_several_images_of_a_class_each_get_a_file_and_the_judge_finds_them(tmp_path):
    from tiny import tiny_cfg

    from pii.eval.judge import find_inversions

    result = runner.run(tiny_cfg(tmp_path, "objective=class_diversity", "objective.terms.diversity.layer=blocks.1",
                                 "objective.images_per_target=2", "class_id=[1,7]", "verifier=none"))
    names = ["1_class-1_0.png", "1_class-1_1.png", "7_class-7_0.png", "7_class-7_1.png"]  # the tiny model's names
    assert [entry.image for entry in result.classes] == names
    assert all((tmp_path / name).is_file() for name in names) and result.diversity is None
    assert [(p.name, c) for p, c in find_inversions(tmp_path)] == list(zip(names, [1, 1, 7, 7]))


def test_the_gallery_shows_layers_as_rows_and_units_as_columns(tmp_path):
    from tiny import tiny_cfg

    from pii.eval import gallery, results

    jobs = []
    for layer in ["blocks.1", "blocks.2"]:
        override = f"objective.layer={layer}"
        result = runner.run(tiny_cfg(tmp_path / layer, "objective=channel", override, "objective.units=[0,3]",
                                     "verifier=none"))
        assert results.read(tmp_path / layer / "metrics.json").units == result.units  # a finished unit run reads back
        jobs.append(gallery.Job(tmp_path / layer, ["objective=channel", override], result))
    assert gallery.columns(jobs) == [(0, "unit 0"), (3, "unit 3")]
    assert [gallery.row_label(job, gallery.swept_keys(jobs)) for job in jobs] == ["layer=blocks.1", "layer=blocks.2"]
    assert jobs[1].image(3) == tmp_path / "blocks.2" / "blocks.2_3.png"
    assert gallery.grid(jobs, cell=32).size[1] > 2 * 32
    assert "unit 3" in gallery.page(jobs, tmp_path, "layers")


BAD = [
    (["objective=channel", "objective.layer=layer22"], "objective.layer 'layer22' is not a layer of resnet10t; did you mean"),
    (["objective=channel", "objective.layer=layer2", "objective.units=[3,128]"], "unit 128 is out of range"),
    (["objective=channel", "objective.layer=layer2", "objective.units=first:x"], "objective.units must be"),
    (["objective=neuron", "objective.layer=layer2", "objective.units=[1]", "objective.terms.target.position=[9,0]"],
     "not in layer 'layer2'"),
    (["objective=direction", "objective.layer=layer2", "objective.terms.target.vector=[1,2]"],
     "objective.vector has 2 values and layer 'layer2' has 128 units"),
    (["objective=direction", "objective.layer=layer2", "objective.terms.target.vector=/nonexistent.npy"],
     "is not a file"),
    (["objective=channel", "objective.layer=layer2", "objective.units=null"], "set objective.units"),
    (["objective=judged_top1"], "sweep_metric=judged_top1"),
    (["objective=channel", "objective.layer=layer2", "objective.real_images=mnist"], "objective.real_images must be"),
]


@pytest.mark.parametrize("overrides, message", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_layers_units_and_vectors_get_one_line(tmp_path, overrides, message):
    result = run_cli("invert.py", "model=digits_cnn", *DIGITS, "schedule.steps=1", f"hydra.run.dir={tmp_path}",
                     *overrides)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and lines[-1].startswith("error: ") and message in lines[-1], result.stderr
    assert "Traceback" not in result.stderr


def test_the_direction_vector_is_read_from_a_file(tmp_path):
    import numpy as np

    vector = np.zeros(128, dtype=np.float32)
    vector[7] = 1
    np.save(tmp_path / "v.npy", vector)
    cfg = digits_cfg("digits_cnn")
    classifier = models.build(cfg.model, "cpu", **models.PLAIN)
    image = torch.rand(2, 3, 32, 32)
    direction = layer_objective([Direction("layer2", str(tmp_path / "v.npy"), 0.0, 1.0)], classifier)
    channel = layer_objective([Channel("layer2", 7, 1.0)], classifier)
    torch.testing.assert_close(term_value(direction, classifier, image, [0, 0]),
                               term_value(channel, classifier, image, [0, 0]))
    with pytest.raises(ConfigError, match="vector"):
        Direction("layer2", [[1, 2]], 0.0, 1.0)


def test_feature_accentuation_starts_from_the_photo_and_stays_near_it(tmp_path):
    from tiny import tiny_cfg

    from pii.files import read_png
    from pii.run.outputs import save_png

    ramp = torch.linspace(0, 1, 40)
    photo = torch.stack([ramp[None].expand(30, -1), ramp[:30, None].expand(-1, 40), torch.full((30, 40), 0.5)])
    save_png(photo, tmp_path / "photo.png")  # not square: its centre square is taken
    cfg = tiny_cfg(tmp_path / "run", "objective=accentuate", f"objective.photo={tmp_path / 'photo.png'}",
                   "objective.layer=blocks.1", "objective.units=[0,3]", "verifier=none", "schedule=none",
                   "schedule.stages=1", "schedule.steps=5")
    result = runner.run(cfg)
    expected = build.photo(cfg, 32, "cpu")[0]
    for entry in result.units:
        image = read_png(tmp_path / "run" / entry.image)
        distance = (image - expected).abs().mean()
        assert 0 < distance < 0.1, distance  # changed, and still the photo (noise is 0.3 away)
    with pytest.raises(ConfigError, match="objective.photo"):
        runner.run(tiny_cfg(tmp_path / "none", "objective=accentuate", "objective.layer=blocks.1",
                            "objective.units=[0]", "verifier=none"))
