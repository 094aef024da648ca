"""Every option of every config group composes with the real primary config, and each default is
written once: in the YAML files, never again in a schema or in the code a `_target_` names."""

import dataclasses
import importlib
import inspect
import pkgutil
import typing
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

import pii
from pii import CONF_DIR
from pii.core.param import Pixel
from pii.feedforward.config import SEARCHPATH, TRAIN_INVERT_CONF_DIR

# Each entry point's config root and what it composes with. A folder with its own config.yaml is another
# entry point's root (conf/train_invert), not a group; conf/hydra holds Hydra's own groups (its plugins'
# targets). An option may sit in a sub-folder: experiment=digits/pii.
ROOTS = {"invert": (CONF_DIR, ["output_dir=/x"]), "train_invert": (TRAIN_INVERT_CONF_DIR, ["output_dir=/x", SEARCHPATH])}
OPTIONS = [(program, group.name, str(option.relative_to(group).with_suffix("")))
           for program, (root, _) in ROOTS.items()
           for group in sorted(Path(root).iterdir())
           if group.is_dir() and group.name != "hydra" and not (group / "config.yaml").exists()
           for option in sorted(group.rglob("*.yaml"))]
LABELS = {"name"}  # a label for logs and tables, not an argument (pii.run.config.target)


def composed(program: str, overrides: list[str]) -> DictConfig:
    """`program`'s config as its entry point composes it (types checked, ranges not)."""
    root, fixed = ROOTS[program]
    with initialize_config_dir(config_dir=root, version_base="1.3"):
        return compose(config_name="config", overrides=[*overrides, *fixed])


def targets(node, key: str = ""):
    """(key, node) of every dict of a config (as plain containers) that names a `_target_`."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield key, node
        for name, item in node.items():
            yield from targets(item, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from targets(item, f"{key}[{i}]")


def defaults_in_code(cfg: DictConfig, ours: str = "pii.") -> list[str]:
    """The arguments of our `_target_`s (their module's name starts with `ours`) that a YAML key sets
    but that also have a default in code."""
    found = []
    for key, node in targets(OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)):
        made = get_object(node["_target_"])
        if not made.__module__.startswith(ours):  # torch.optim's defaults are torch's
            continue
        parameters = inspect.signature(made).parameters
        for name in sorted(set(node) - {"_target_"} - LABELS):
            if name in parameters and parameters[name].default is not inspect.Parameter.empty:
                found.append(f"{key}.{name}: {node['_target_']} has a default ({parameters[name].default!r}) "
                             f"for what the YAML sets; remove it from the code")
    return found


@pytest.mark.parametrize("program,group,option", OPTIONS, ids=[f"{p}:{g}={o}" for p, g, o in OPTIONS])
def test_every_option_composes_and_its_targets_take_their_values_from_the_yaml(program, group, option):
    cfg = composed(program, [f"{group}={option}"])
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert defaults_in_code(cfg) == []


def test_a_default_in_code_for_a_yaml_key_is_found():
    cfg = composed("train_invert", [])
    cfg.data._target_ = f"{__name__}.digits_with_a_default"
    assert defaults_in_code(cfg, ours=__name__) == [f"data.split_seed: {__name__}.digits_with_a_default has a default (0) for "
                                     f"what the YAML sets; remove it from the code"]


def digits_with_a_default(resolution, test_fraction, split_seed=0):
    """The data builder with a second default for data.split_seed (read by the test above, never called)."""


def schemas() -> set[type]:
    """The dataclasses of pii's modules that Hydra's ConfigStore holds (every module imported, so each
    registers its own), and the schemas their fields nest."""
    for module in pkgutil.walk_packages(pii.__path__, "pii."):
        importlib.import_module(module.name)

    def stored(repo: dict):
        for item in repo.values():
            if isinstance(item, dict):
                yield from stored(item)
            elif isinstance(item.node, DictConfig):
                yield OmegaConf.get_type(item.node)

    def inside(hint) -> set[type]:  # the dataclasses a field's type names (Optional[ModelConfig], Dict[str, ...])
        return ({hint} if dataclasses.is_dataclass(hint) else set()) | {t for a in typing.get_args(hint) for t in inside(a)}

    def nested(schema: type) -> set[type]:
        return {schema} | {s for hint in typing.get_type_hints(schema).values() for inner in inside(hint)
                           for s in nested(inner)}

    return {s for schema in stored(ConfigStore.instance().repo)
            if dataclasses.is_dataclass(schema) and schema.__module__.startswith("pii.") for s in nested(schema)}


def test_every_schema_holds_types_only():
    """One source for each default: the YAML files hold the values, the schemas only the types (a
    field with a value would be a second default, and one a YAML file could drift from)."""
    found = schemas()
    assert {s.__name__ for s in found} >= {"InvertConfig", "TrainInvertConfig", "ModelConfig", "SmallCNNConfig",
                                           "GeneratorConfig", "FourierParam", "WandbLoggerConfig", "RobustConfig"}
    for schema in found:
        for f in dataclasses.fields(schema):
            if f.default_factory is not dataclasses.MISSING:  # a nested schema: its own fields are checked
                assert dataclasses.is_dataclass(f.default_factory), (schema.__name__, f.name)
            else:
                assert f.default == "???", f"{schema.__name__}.{f.name} has a default ({f.default!r}): put it in conf/"


def test_defaults_are_the_papers_settings():
    cfg = compose_config(["output_dir=/tmp/x"])
    assert cfg.model.name == "tf_efficientnet_lite0" and cfg.model.weights.startswith("package:")
    assert (cfg.schedule.stages, cfg.schedule.steps, cfg.schedule.zoom, cfg.schedule.centering) == (7, 400, True, True)
    assert (cfg.schedule.lr, list(cfg.schedule.betas)) == (0.01, [0.5, 0.99])
    a = cfg.augmentation
    assert (a.jitter.max_shift, a.ensemble.size, a.color_shift.alpha, a.color_shift.beta) == (32, 32, 1.0, 1.0)
    assert [k for k in a if a[k] is not None] == ["chunk", "jitter", "ensemble", "color_shift"]  # no flip, lucent's, MACO's
    assert cfg.loss.tv_weight == 0.0


def test_fast_preset_keeps_the_algorithm_and_shrinks_the_budget():
    """`make run`'s preset: pii_fourier (the leaderboard's winner) at the frontier's cheapest point that keeps
    top-1 >= 95% on benchmark20: fewer steps per stage, more crops per step; the paper's pixels stay `experiment=pii`."""
    paper, fast = compose_config(["output_dir=/x"]), compose_config(["experiment=fast", "output_dir=/x"])
    fourier = compose_config(["experiment=pii_fourier", "output_dir=/x"])
    assert fast == compose_config(["experiment=pii_fourier", "augmentation.ensemble.size=8", "schedule.steps=25",
                                   "output_dir=/x"])
    assert fast.schedule.steps * fast.augmentation.ensemble.size < fourier.schedule.steps * fourier.augmentation.ensemble.size
    assert fast.schedule.steps < paper.schedule.steps and fast.augmentation.ensemble.size < paper.augmentation.ensemble.size
    for key in ("stages", "zoom", "centering", "betas"):  # PII's schedule and optimiser
        assert fast.schedule[key] == paper.schedule[key]
    assert fast.augmentation.color_shift == paper.augmentation.color_shift
    assert fast.augmentation.jitter == paper.augmentation.jitter
    assert fast.param.name == "fourier" and paper.param.name == "pixel"
    pixels = compose_config(["experiment=pii", "output_dir=/x"])
    assert pixels.param.name == "pixel" and pixels.schedule.steps == fourier.schedule.steps
    # fewer steps, larger steps: Adam's ~lr-sized updates add up to the paper's per-stage budget
    assert pixels.schedule.lr * pixels.schedule.steps == pytest.approx(paper.schedule.lr * paper.schedule.steps)


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
    cfg = compose_config(["augmentation.ensemble.size=8", "augmentation.color_shift.alpha=0.5",
                          "augmentation.color_shift.beta=0.25", "schedule.stages=3", "schedule.steps=10", "loss=tv", "loss.tv_weight=0.1",
                          "device=cpu", "seed=3", "class_id=[980,10,970]", "output_dir=/x"])
    assert cfg.augmentation.ensemble.size == 8 and cfg.loss.tv_weight == 0.1 and list(cfg.class_id) == [980, 10, 970]
