import math

import pytest
import torch
from omegaconf import OmegaConf

from pii import CONF_DIR
from pii.core import augment
from pii.core.draws import Draws
from pii.errors import ConfigError

# conf/augmentation/pii.yaml's values, the arguments of augment.build (but `chunk`, the loop's)
PII = {k: v for k, v in OmegaConf.to_container(OmegaConf.load(f"{CONF_DIR}/augmentation/pii.yaml")).items()
       if k != "chunk"}


def pieces(**changes):
    return [type(m) for m in augment.build(**{**PII, **changes})]


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


# every piece, each drawing something
EVERYTHING = {**PII, "pad": 2, "shift": 2, "jitter": 3, "crops": [0.5, 1.0], "scale": [0.9, 1.1], "degrees": 10,
              "flip": True, "noise": 0.1, "ensemble_size": 3}


def test_an_image_draws_the_same_whatever_else_is_in_its_batch():
    # the views of class 5 alone and of class 5 between classes 3 and 7: one stream per image,
    # seeded from (seed, class, stage)
    every = augment.build(**EVERYTHING)
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


def test_build_full_set_and_switches():
    assert pieces() == [augment.Jitter, augment.Ensemble, augment.ColorShift]
    assert pieces(jitter=0, flip=True, color_shift=False, ensemble_size=1) == [augment.Ensemble, augment.Flip]
    assert augment.ColorShift not in pieces(alpha=0.0, beta=0.0)  # alpha = beta = 0 is no ColorShift at all


def test_ensemble_size_below_one_is_a_config_error():
    from conftest import compose_config

    from pii.run.config import check_invert

    with pytest.raises(ConfigError, match="ensemble_size must be >= 1"):
        check_invert(compose_config(["augmentation.ensemble_size=0"]))


def test_lucent_and_maco_pieces_compose_in_order():
    lucent = augment.build(**{**PII, "jitter": 0, "color_shift": False, "pad": 12, "shift": 12, "scale": [0.9, 1.1],
                              "degrees": 10, "ensemble_size": 4})
    assert [type(p).__name__ for p in lucent] == ["Pad", "Shift", "Ensemble", "ScaleRotate"]
    x = torch.rand(2, 3, 40, 40, requires_grad=True)
    views = lucent(x, draws(2))
    assert views.shape == (8, 3, 52, 52)  # pad 12 a side, then a crop 12 px smaller (as lucent: 224 -> 236)
    views.sum().backward()
    assert x.grad.abs().sum() > 0
    maco = augment.build(**{**PII, "jitter": 0, "color_shift": False, "crops": [0.5, 1.0], "noise": 0.01,
                            "ensemble_size": 6})
    assert [type(p).__name__ for p in maco] == ["Crops", "Noise"]
    views = maco(x, draws(2))
    assert views.shape == (12, 3, 40, 40)
    assert not torch.equal(views[0], views[1])  # each copy is its own crop


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


def test_scale_rotate_identity_and_bad_ranges():
    from conftest import compose_config

    from pii.run.config import check_invert

    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(augment.ScaleRotate((1.0, 1.0), 0.0)(x, draws(2)), x, atol=1e-5, rtol=0)
    for key, bad in (("scale", "[1.1,0.9]"), ("crops", "[0,1]"), ("crops", "[0.5]")):  # at config time
        with pytest.raises(ConfigError, match=f"augmentation.{key} must be \\[low, high\\]"):
            check_invert(compose_config([f"augmentation.{key}={bad}", "output_dir=/x"]))
