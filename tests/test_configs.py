"""Every option of every config group composes with the real primary config."""

from pathlib import Path

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf

from pii import CONF_DIR
from pii.core.param import Pixel

# A folder with its own config.yaml is another entry point's config root (conf/train_invert), not a group;
# conf/hydra holds Hydra's own groups. An option may sit in a sub-folder: experiment=digits/pii.
GROUPS = sorted(p.name for p in Path(CONF_DIR).iterdir()
                if p.is_dir() and p.name != "hydra" and not (p / "config.yaml").exists())
OPTIONS = [(g, str(p.relative_to(Path(CONF_DIR) / g).with_suffix(""))) for g in GROUPS
           for p in sorted((Path(CONF_DIR) / g).rglob("*.yaml"))]


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(group, option):
    cfg = compose_config([f"{group}={option}", "output_dir=/tmp/x"])
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert cfg.class_id is not None


def test_defaults_are_the_papers_settings():
    cfg = compose_config(["output_dir=/tmp/x"])
    assert cfg.model.name == "tf_efficientnet_lite0" and cfg.model.weights.startswith("package:")
    assert (cfg.schedule.stages, cfg.schedule.steps, cfg.schedule.zoom, cfg.schedule.centering) == (7, 400, True, True)
    assert (cfg.schedule.lr, list(cfg.schedule.betas)) == (0.01, [0.5, 0.99])
    a = cfg.augmentation
    assert (a.ensemble_size, a.color_shift, a.alpha, a.beta, a.jitter, a.flip) == (32, True, 1.0, 1.0, 32, False)
    assert cfg.loss.tv_weight == 0.0


def test_fast_preset_keeps_the_algorithm_and_shrinks_the_budget():
    """`make run`'s preset: the leaderboard's winner, pii_fourier; the paper's pixels at that budget stay `experiment=pii`."""
    paper, fast = compose_config(["output_dir=/x"]), compose_config(["experiment=fast", "output_dir=/x"])
    assert fast == compose_config(["experiment=pii_fourier", "output_dir=/x"])
    assert fast.schedule.steps < paper.schedule.steps and fast.augmentation.ensemble_size < paper.augmentation.ensemble_size
    for key in ("stages", "zoom", "centering", "betas"):  # PII's schedule and optimiser
        assert fast.schedule[key] == paper.schedule[key]
    assert fast.augmentation.color_shift and fast.augmentation.alpha == 1.0
    assert fast.augmentation.jitter == paper.augmentation.jitter
    assert fast.param.name == "fourier" and paper.param.name == "pixel"
    pixels = compose_config(["experiment=pii", "output_dir=/x"])
    assert pixels.param.name == "pixel" and pixels.schedule.steps == fast.schedule.steps
    # fewer steps, larger steps: Adam's ~lr-sized updates add up to the paper's per-stage budget
    assert pixels.schedule.lr * pixels.schedule.steps == pytest.approx(paper.schedule.lr * paper.schedule.steps)


def test_every_schema_holds_types_only():
    """One source for each default: the YAML files hold the values, the schemas only the types (a
    field with a value would be a second default, and one a YAML file could drift from)."""
    import dataclasses

    from pii.run import config

    schemas = [config.InvertConfig, config.TrainInvertConfig, config.AugmentationConfig, config.ScheduleConfig,
               config.LossConfig, config.ModelConfig, config.PixelParam, config.FourierParam, config.MacoParam,
               config.AdamParams, config.GeneratorConfig, config.DiscriminatorConfig, config.GanLossConfig,
               config.TrainScheduleConfig]
    for schema in schemas:
        for f in dataclasses.fields(schema):
            if f.default_factory is not dataclasses.MISSING:  # a nested schema: its own fields are checked
                assert dataclasses.is_dataclass(f.default_factory), (schema.__name__, f.name)
            else:
                assert f.default == "???", f"{schema.__name__}.{f.name} has a default ({f.default!r}): put it in conf/"


def test_every_key_has_a_value_from_the_yaml_files():
    """With types-only schemas, a key no YAML file sets stays missing (???): found here, not where it is read."""
    for overrides in ([], ["experiment=fast"], ["experiment=maco"], ["param=fourier"], ["verifier=none"]):
        assert OmegaConf.missing_keys(compose_config([*overrides, "output_dir=/x"])) == set(), overrides
    from pii.feedforward.config import compose_train_invert

    assert OmegaConf.missing_keys(compose_train_invert(["output_dir=/x"])) == set()


def test_the_shipped_parametrizations_and_optimizers_build_from_their_files():
    from pii.run import build

    cfg = compose_config(["param=fourier", "optimizer=nadam", "output_dir=/x"])
    param = build.param(cfg, 2, "cpu")
    assert type(param).__name__ == "Fourier" and (param.decay, param.sd, param.decorrelate) == (1.0, 0.01, True)
    opt = build.optimizer(cfg)([torch.zeros(1, requires_grad=True)])
    assert isinstance(opt, torch.optim.NAdam) and opt.defaults["lr"] == cfg.schedule.lr
    assert tuple(opt.defaults["betas"]) == tuple(cfg.schedule.betas)


class Grey(Pixel):
    """A parametrization made for the test below: pixels whose fresh canvas is one grey level."""

    def __init__(self, batch, device, *, level):
        super().__init__(batch, device)
        self.level = level

    def canvas(self, size, draws):
        return torch.full((self.batch, 3, size, size), self.level, device=self.device)


def test_a_new_parametrization_or_optimizer_is_a_class_and_a_yaml_file(tmp_path):
    """No dispatch table to edit: a file whose `_target_` names the class is all it takes."""
    from pii.run import build
    from pii.run.config import check_invert

    (tmp_path / "optimizer").mkdir()
    (tmp_path / "optimizer" / "sgd.yaml").write_text("_target_: torch.optim.SGD\nlr: ${schedule.lr}\nmomentum: 0.9\n")
    (tmp_path / "param").mkdir()
    (tmp_path / "param" / "grey.yaml").write_text(f"_target_: {__name__}.Grey\nname: grey\nlevel: 0.25\n")
    cfg = compose_config(["optimizer=sgd", "param=grey", f"hydra.searchpath=[file://{tmp_path}]", "output_dir=/x"])
    check_invert(cfg)
    param = build.param(cfg, 2, "cpu")
    assert torch.equal(param.canvas(4, draws=None), torch.full((2, 3, 4, 4), 0.25)) and cfg.method == "grey"
    opt = build.optimizer(cfg)([torch.zeros(1, requires_grad=True)])
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9 and opt.defaults["lr"] == 0.01


@pytest.mark.parametrize("overrides,message", [
    (["param._target_=pii.core.param.NoSuchParam"], "param._target_='pii.core.param.NoSuchParam' cannot be loaded"),
    (["optimizer._target_=torch.optim.Adamm"], "optimizer._target_='torch.optim.Adamm' cannot be loaded"),
    (["+param.decay=1.0"], "param (pii.core.param.Pixel): got an unexpected keyword argument 'decay'"),
    (["param=fourier", "param.decay=-1"], "param.decay must be >= 0, got -1.0"),
])
def test_a_bad_target_or_argument_is_one_config_error_line(overrides, message):
    from pii.errors import ConfigError
    from pii.run.config import check_invert

    with pytest.raises(ConfigError) as err:
        check_invert(compose_config([*overrides, "output_dir=/x"]))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_names_users_type():
    cfg = compose_config(["augmentation.ensemble_size=8", "augmentation.alpha=0.5", "augmentation.beta=0.25",
                          "schedule.stages=3", "schedule.steps=10", "loss=tv", "loss.tv_weight=0.1",
                          "device=cpu", "seed=3", "class_id=[980,10,970]", "output_dir=/x"])
    assert cfg.augmentation.ensemble_size == 8 and cfg.loss.tv_weight == 0.1 and list(cfg.class_id) == [980, 10, 970]
