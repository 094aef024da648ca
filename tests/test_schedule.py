from functools import partial

import pytest
import torch

from pii.core import schedule
from pii.errors import ConfigError


def plan(size, **kw):
    return schedule.plan(size, **{**dict(stages=7, steps=400, zoom=True, centering=True), **kw})


def test_stage_sizes_224_and_384():
    assert [s.size for s in plan(224)] == [56, 84, 112, 140, 168, 196, 224]
    assert [s.size for s in plan(384)] == [96, 144, 192, 240, 288, 336, 384]
    assert all(s.steps == 400 for s in plan(224))


def test_zoom_and_centering_paste_halfway_with_border_of_half_a_step():
    stages = plan(224)
    assert stages[0].paste is None
    # step = 28, border 14 in all: 56 -> 70 inside 84, halfway between the two sizes
    assert [s.paste for s in stages[1:]] == [70, 98, 126, 154, 182, 210]
    assert [s.paste for s in plan(384)[1:3]] == [120, 168]


def test_ablation_schedules():
    zoom = plan(224, centering=False)
    assert [s.paste for s in zoom[1:]] == [s.size for s in zoom[1:]]
    centre = plan(224, zoom=False)
    assert [s.paste for s in centre[1:]] == [s.size for s in centre[:-1]]
    (only,) = plan(224, zoom=False, centering=False)
    assert (only.size, only.steps) == (224, 7 * 400)


def test_grow_pastes_previous_image_in_the_centre_of_fresh_noise():
    torch.manual_seed(0)
    stage = plan(224)[1]  # 84 px canvas, 70 px patch
    previous = torch.full((2, 3, 56, 56), 0.25)
    grown = schedule.grow(previous, stage, torch.rand(2, 3, stage.size, stage.size))
    assert grown.shape == (2, 3, 84, 84)
    assert torch.allclose(grown[..., 7:77, 7:77], torch.full((2, 3, 70, 70), 0.25))
    border = torch.cat([grown[..., :7, :].flatten(), grown[..., 77:, :].flatten(), grown[..., :, :7].flatten()])
    assert border.min() >= 0 and border.max() < 1 and border.std() > 0.2  # uniform noise, not the patch


def test_first_stage_is_uniform_noise():
    from pii.core.draws import Draws
    from pii.core.param import Pixel

    stage = plan(224)[0]
    x = Pixel(3).canvas(stage.size, Draws.seeded(0, [1, 2, 3], 0))
    assert x.shape == (3, 3, 56, 56) and 0 <= x.min() and x.max() < 1 and abs(x.mean() - 0.5) < 0.02
    assert not torch.equal(x[0], x[1])  # each image its own noise


def test_optimizer_is_the_one_given_with_cosine_decay_to_zero():
    p = torch.zeros(1, requires_grad=True)
    opt, sched = schedule.optimizer([p], 10, partial(torch.optim.Adam, lr=0.01, betas=(0.5, 0.99)))
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["betas"] == (0.5, 0.99)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01) and opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


@pytest.mark.parametrize("option,kind", [("adam", torch.optim.Adam), ("nadam", torch.optim.NAdam)])
def test_every_optimizer_option_builds_its_class_with_the_schedules_lr_and_betas(option, kind):
    from conftest import compose_config

    from pii.run import build

    cfg = compose_config([f"optimizer={option}", "schedule.lr=0.2", "schedule.betas=[0.8,0.9]", "output_dir=/x"])
    opt, _ = schedule.optimizer([torch.zeros(1, requires_grad=True)], 10, build.optimizer(cfg))
    assert type(opt) is kind and opt.defaults["lr"] == 0.2 and tuple(opt.defaults["betas"]) == (0.8, 0.9)


@pytest.mark.parametrize("key,value", [("steps", -1), ("steps", 0), ("stages", 0)])
def test_bad_budget_is_a_config_error(key, value):
    from conftest import compose_config

    from pii.run.config import check_invert

    with pytest.raises(ConfigError, match=f"schedule.{key}"):
        check_invert(compose_config([f"schedule.{key}={value}"]))
