import math

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf

from pii.core import augment
from pii.core.draws import Draws
from pii.errors import ConfigError
from pii.run import build
from pii.run.config import check_invert

# every transform of conf/augmentation/pii.yaml on, each drawing something (pii.yaml holds every key, so a
# preset or a command line that turns one on keeps the file's order)
EVERY = ["'augmentation.pad={_target_:pii.core.augment.Pad,pixels:2,value:0.5}'",
         "'augmentation.shift={_target_:pii.core.augment.Shift,pixels:2}'",
         "augmentation.jitter.max_shift=3", "augmentation.ensemble=null",
         "'augmentation.ensemble={_target_:pii.core.augment.Crops,size:3,box:[0.5,1.0],centre_std:0.15}'",
         "'augmentation.scale_rotate={_target_:pii.core.augment.ScaleRotate,scale:[0.9,1.1],degrees:10}'",
         "'augmentation.flip={_target_:pii.core.augment.Flip,p:0.5}'",
         "'augmentation.noise={_target_:pii.core.augment.Noise,std:0.1}'"]
ORDER = ["Pad", "Shift", "Jitter", "Crops", "ScaleRotate", "Flip", "ColorShift", "Noise"]  # the paper's and the YAML's


def augmentation(*overrides: str) -> augment.Augmentation:
    """The augmentation invert.py builds from conf/ with `overrides` (quoted as on a shell's command line)."""
    return build.augmentation(compose_config([o.strip("'") for o in overrides] + ["output_dir=/x"]))


def names(pieces) -> list[str]:
    return [type(p).__name__ for p in pieces]


def draws(images: int, stage: int = 0) -> Draws:
    """The random streams of `images` images (classes 0, 1, ...), seed 0."""
    return Draws.seeded(0, range(images), stage)


def test_color_shift_ranges_per_copy_and_channel():
    alpha, beta = 0.5, 0.3
    # Half the pixels are 0 (output = mu), half are 1 (output = sigma + mu).
    x = torch.zeros(512, 3, 2, 2)
    x[..., 1, :] = 1
    out = augment.ColorShift(alpha, beta)(x, draws(512))
    mu = out[..., 0, 0]
    sigma = out[..., 1, 0] - mu
    assert mu.abs().max() <= alpha and mu.min() < -0.45 and mu.max() > 0.45
    assert sigma.min() >= math.exp(-beta) - 1e-6 and sigma.max() <= math.exp(beta) + 1e-6
    assert sigma.log().min() < -0.27 and sigma.log().max() > 0.27  # spans the whole log range
    assert (mu[:, 0] != mu[:, 1]).all()  # each channel its own draw
    assert torch.equal(out[..., 0, 0], out[..., 0, 1])  # one draw per copy and channel, not per pixel


def test_color_shift_is_redrawn_every_call_and_not_clamped():
    x = torch.full((4, 3, 8, 8), 0.5)
    shift, streams = augment.ColorShift(1.0, 1.0), draws(4)
    a, b = shift(x, streams), shift(x, streams)
    assert not torch.allclose(a, b)
    many = torch.cat([shift(x, streams) for _ in range(20)])
    assert many.min() < 0 or many.max() > 1


def test_jitter_rolls_each_image_by_its_own_offset_wrapping_around():
    x = torch.arange(2 * 3 * 10 * 10, dtype=torch.float).view(2, 3, 10, 10)
    jitter, streams = augment.Jitter(4), draws(2)
    seen = set()
    for _ in range(30):
        y = jitter(x, streams)
        offsets = []
        for image, rolled in zip(x, y):
            matches = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                       if torch.equal(rolled, torch.roll(image, (dy, dx), (-2, -1)))]
            assert len(matches) == 1  # a pure roll: every pixel kept, those pushed off one edge re-enter at the other
            offsets.append(matches[0])
        seen.add(tuple(offsets))
    assert len({first for first, _ in seen}) > 5
    assert any(first != second for first, second in seen)  # the images are rolled apart


def test_an_image_draws_the_same_whatever_else_is_in_its_batch():
    # the views of class 5 alone and of class 5 between classes 3 and 7: one stream per image,
    # seeded from (seed, class, stage)
    every = augmentation(*EVERY)
    assert len(every) == 8
    x = torch.rand(3, 3, 16, 16)
    together = every(x, Draws.seeded(0, [3, 5, 7], 0))
    alone = every(x[1:2], Draws.seeded(0, [5], 0))
    assert together.shape == (9, 3, 18, 18) and alone.shape == (3, 3, 18, 18)  # padded by 2, cropped by 2
    torch.testing.assert_close(together[3:6], alone, atol=1e-6, rtol=0)
    for other in (Draws.seeded(1, [5], 0), Draws.seeded(0, [5], 1), Draws.seeded(0, [6], 0)):  # seed, stage, class
        assert (every(x[1:2], other) - alone).abs().max() > 0.1


def test_ensemble_puts_copies_of_one_image_together():
    x = torch.arange(2.0).view(2, 1, 1, 1).expand(2, 3, 4, 4)
    y = augment.Ensemble(3)(x, draws(2))
    assert y.shape == (6, 3, 4, 4) and y[:3].eq(0).all() and y[3:].eq(1).all()


def test_the_yaml_names_the_transforms_and_their_order():
    """conf/augmentation/pii.yaml's keys, in order, each built by its `_target_`: the paper's set (jitter,
    ensemble, ColorShift); a preset or a command line that turns one on keeps the file's order; null is off."""
    pii = augmentation()
    assert names(pii) == ["Jitter", "Ensemble", "ColorShift"] and pii.copies == 32
    assert (pii[0].max_shift, pii[2].alpha, pii[2].beta) == (32, 1.0, 1.0)
    every = augmentation(*EVERY)
    assert names(every) == ORDER and every.copies == 3
    assert names(augmentation("augmentation.color_shift=null", "augmentation.jitter=null")) == ["Ensemble"]
    assert names(augmentation("'augmentation.noise={_target_:pii.core.augment.Noise,std:0.1}'",
                              "'augmentation.pad={_target_:pii.core.augment.Pad,pixels:2,value:0.5}'")) == \
        ["Pad", "Jitter", "Ensemble", "ColorShift", "Noise"]  # the file's order, not the command line's
    assert names(augmentation("augmentation=no_color_shift")) == ["Jitter", "Ensemble"]
    assert names(augmentation("augmentation=none")) == ["Ensemble"] and augmentation("augmentation=none").copies == 1


def test_the_views_are_each_transform_applied_in_that_order():
    """The views are the transforms applied one after the other in the file's order, with the same draws:
    a transform skipped, or two swapped, gives other views."""
    every, x = augmentation(*EVERY), torch.rand(2, 3, 16, 16)
    views = every(x, Draws.seeded(0, [3, 5], 0))
    by_hand, streams = x, Draws.seeded(0, [3, 5], 0)
    for piece in every:
        by_hand = piece(by_hand, streams)
    assert torch.equal(views, by_hand) and views.shape == (6, 3, 18, 18)
    pieces = list(every)
    for changed in (pieces[:-1], [*pieces[:5], pieces[6], pieces[5], pieces[7]]):  # noise left out; flip after ColorShift
        other = augment.Augmentation(*changed)(x, Draws.seeded(0, [3, 5], 0))
        assert other.shape != views.shape or (other - views).abs().max() > 0.01


class Darken(torch.nn.Module):
    """A transform made for the test below: every view times `factor`."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        return x * self.factor


def test_a_new_transform_is_a_class_and_a_line_of_yaml(tmp_path):
    """No list of transforms to edit: a key whose `_target_` names the class, in an option of the
    augmentation group or on the command line, is built and applied after the keys before it."""
    (tmp_path / "augmentation").mkdir()
    (tmp_path / "augmentation" / "darker.yaml").write_text(
        f"defaults:\n  - pii\n  - _self_\n\ndarken: {{_target_: {__name__}.Darken, factor: 0.5}}\n")
    cfg = compose_config(["augmentation=darker", f"hydra.searchpath=[file://{tmp_path}]", "output_dir=/x"])
    check_invert(cfg)
    darker = build.augmentation(cfg)
    assert names(darker) == ["Jitter", "Ensemble", "ColorShift", "Darken"] and darker[-1].factor == 0.5
    x, streams = torch.rand(2, 3, 8, 8), lambda: Draws.seeded(0, [1, 2], 0)
    plain = augment.Augmentation(*darker[:-1])(x, streams())
    torch.testing.assert_close(darker(x, streams()), plain * 0.5)
    on_the_command_line = augmentation(f"+augmentation.darken={{_target_:{__name__}.Darken,factor:0.25}}")
    assert names(on_the_command_line) == names(darker) and on_the_command_line[-1].factor == 0.25


@pytest.mark.parametrize("overrides,message", [
    (["augmentation.ensemble.size=0"], "augmentation.ensemble.size must be a whole number >= 1, got 0 "
                                       "(pii.core.augment.Ensemble)"),
    (["augmentation.ensemble.size=1.5"], "augmentation.ensemble.size must be a whole number >= 1, got 1.5"),
    (["augmentation.jitter.max_shift=abc"], "augmentation.jitter.max_shift must be a whole number >= 0, got 'abc'"),
    (["augmentation.color_shift.alpha=-1"], "augmentation.color_shift.alpha must be a number in [0, inf]"),
    (["augmentation.color_shift.beta=100"], "augmentation.color_shift.beta must be a number in [0, 80]"),
    (["+augmentation.jitter.max_shfit=3"], "augmentation.jitter (pii.core.augment.Jitter): got an unexpected keyword "
                                           "argument 'max_shfit'"),
    (["~augmentation.color_shift.beta"], "augmentation.color_shift (pii.core.augment.ColorShift): missing a required "
                                         "argument: 'beta'"),
    (["augmentation.jitter._target_=pii.core.augment.Jiter"], "augmentation.jitter._target_='pii.core.augment.Jiter' "
                                                              "cannot be loaded"),
    (["~augmentation.jitter._target_"], "augmentation.jitter has no _target_"),
    (["experiment=fast", "augmentation.ensemble.box=[0,1]"], "augmentation.ensemble.box must be [low, high] with "
                                                             "0 < low <= high <= 1"),
    (["experiment=fast", "augmentation.ensemble.box=[0.5]"], "augmentation.ensemble.box must be [low, high]"),
    (["experiment=lucent", "augmentation.scale_rotate.scale=[1.1,0.9]"], "augmentation.scale_rotate.scale must be "
                                                                         "[low, high] with 0 < low <= high"),
    (["experiment=lucent", "augmentation.scale_rotate.degrees=270"], "augmentation.scale_rotate.degrees must be a "
                                                                     "number in [0, 180]"),
    (["experiment=lucent", "augmentation.pad.pixels=-2"], "augmentation.pad.pixels must be a whole number >= 0"),
    (["experiment=lucent", "augmentation.pad.value=2"], "augmentation.pad.value must be a number in [0, 1]"),
    (["experiment=maco", "augmentation.noise.std=-0.1"], "augmentation.noise.std must be a number in [0, inf]"),
    (["experiment=deepinversion", "augmentation.flip.p=2"], "augmentation.flip.p must be a number in [0, 1] "
                                                            "(a probability)"),
])
def test_a_bad_transform_argument_is_one_config_error_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        check_invert(compose_config([*overrides, "output_dir=/x"]))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_lucent_and_maco_pieces_compose_in_order():
    lucent = augmentation("experiment=lucent")
    assert names(lucent) == ["Pad", "Shift", "Ensemble", "ScaleRotate"]
    x = torch.rand(2, 3, 40, 40, requires_grad=True)
    views = lucent(x, draws(2))
    assert views.shape == (8, 3, 52, 52)  # pad 12 a side, then a crop 12 px smaller (as lucent: 224 -> 236)
    views.sum().backward()
    assert x.grad.abs().sum() > 0
    maco = augmentation("experiment=maco")
    assert names(maco) == ["Crops", "Noise"] and maco.copies == 6
    views = maco(x, draws(2))
    assert views.shape == (12, 3, 40, 40)
    assert not torch.equal(views[0], views[1])  # each copy is its own crop


def test_color_shift_of_zero_strength_is_no_color_shift():
    """sweep_color_shift's alpha = beta = 0 is the run without ColorShift: the same views, the same draws after."""
    x = torch.rand(2, 3, 8, 8)
    zero = augmentation("augmentation.color_shift.alpha=0", "augmentation.color_shift.beta=0",
                        "'augmentation.noise={_target_:pii.core.augment.Noise,std:0.1}'")
    off = augmentation("augmentation.color_shift=null", "'augmentation.noise={_target_:pii.core.augment.Noise,std:0.1}'")
    assert torch.equal(zero(x, draws(2)), off(x, draws(2)))


def test_crops_of_the_whole_image_give_the_image_and_copies_stay_together():
    x = torch.rand(2, 3, 16, 16)
    crops = augment.Crops(3, (1.0, 1.0), centre_std=0.0)(x, draws(2))
    torch.testing.assert_close(crops, x.repeat_interleave(3, dim=0), atol=1e-5, rtol=0)


def test_crops_sample_what_roi_align_samples():
    # The crops are drawn as boxes in the image and resampled bilinearly: the same samples as
    # torchvision's roi_align (aligned) of those boxes, boxes reaching past the border included.
    from torchvision.ops import roi_align

    x = torch.rand(2, 3, 24, 24)
    crops = augment.Crops(4, (0.5, 1.0), centre_std=0.15)(x, draws(2))
    streams = draws(2)
    centre = 0.5 + streams.randn(4, 2) * 0.15
    side = 0.5 + 0.5 * streams.rand(4, 1)
    index = torch.arange(2).repeat_interleave(4)[:, None].float()
    boxes = torch.cat([index, torch.cat([centre - side / 2, centre + side / 2], 1) * 24], 1)
    inside = ((centre - side / 2 >= 0) & (centre + side / 2 <= 1)).all(1)
    assert 0 < inside.sum() < 8  # both kinds of box are checked
    expected = roi_align(x, boxes, output_size=(24, 24), aligned=True)
    torch.testing.assert_close(crops[inside], expected[inside], atol=1e-5, rtol=0)
    # past the border both give zeros, but roi_align holds the edge value for the last pixel's
    # width where bilinear fades to zero: a band one sample wide
    differ = (crops[~inside] - expected[~inside]).abs() > 1e-5
    assert (differ.flatten(1).sum(1) <= 4 * 24 * 3).all()  # at most one line of samples per edge


def test_scale_rotate_of_no_zoom_and_no_rotation_is_the_image():
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(augment.ScaleRotate((1.0, 1.0), 0.0)(x, draws(2)), x, atol=1e-5, rtol=0)
