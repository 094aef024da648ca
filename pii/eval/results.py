"""What an invert.py run produces, as dataclasses, and metrics.json: written and read here only.

metrics.json is a `RunResult` as `dataclasses.asdict` makes it, with `schema_version` first;
a field that is None is left out of the file (a run not judged yet has no `judge`; a verdict
in metrics.json has no `image`). Everything else reads a run through `read(path) -> RunResult`.

Versions of metrics.json:
- none (files written before the version): each class's top classes are under `top5`, the
  key that a judge's verdict uses for its top-5 hit (a bool). Read as version 1.
- 1: `schema_version`; a class's top classes are `top5_classes` (a list of TopClass);
  `top5` is only ever a judge's top-5 hit (a verdict: a bool; a summary: the rate).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pii.errors import ConfigError
from pii.files import json_text, write_text

SCHEMA_VERSION = 1
METRICS = "metrics.json"


@dataclass
class TopClass:
    """One of a classifier's most probable classes for an image."""
    class_id: int
    name: str
    probability: float


@dataclass
class ClassResult:
    """One inverted class, as the inverted model sees its final image (pii.eval.judge.class_report)."""
    class_id: int
    name: str
    probability: float  # the model's probability for the target class
    top1: bool  # the target is the model's most probable class
    top5_classes: list[TopClass]  # the model's most probable classes (5, fewer if it has fewer), first the most
    start_probability: float | None = None  # the target's probability on the starting noise
    image: str | None = None  # the class's PNG, relative to the run directory
    spectral_slope: float | None = None  # of that image (pii.eval.judge.spectral_slope); photographs ~ -2 to -2.5

    @classmethod
    def from_dict(cls, d: dict) -> ClassResult:
        return cls(**{**d, "top5_classes": [TopClass(**t) for t in d["top5_classes"]]})


def image_names(stems: list[str]) -> list[str]:
    """Each image's PNG: `<stem>.png`; where a stem repeats (several images of one class or unit),
    `<stem>_<k>.png`, k = 0, 1, ... for each."""
    several = len(set(stems)) < len(stems)
    seen: dict[str, int] = {}
    names = []
    for stem in stems:
        k = seen.get(stem, 0)
        names.append(f"{stem}_{k}.png" if several else f"{stem}.png")
        seen[stem] = k + 1
    return names


@dataclass
class UnitResult:
    """One image made for a unit of a layer (pii.eval.units)."""
    layer: str
    unit: int
    activation: float  # the objective's target term on the final image, unaugmented (e.g. the channel's mean)
    start_activation: float | None = None  # on the starting noise
    top1: bool | None = None  # specificity: the unit is its layer's most activated after z-scoring each unit
    vs_real: float | None = None  # the unit's mean activation here over its largest on real images (objective.real_images)
    image: str | None = None  # the PNG, relative to the run directory: <layer>_<unit>.png
    spectral_slope: float | None = None


@dataclass
class Verdict:
    """A judge's verdict on one image."""
    class_id: int  # the target class
    name: str
    probability: float  # the judge's probability for the target class
    top1: bool  # a top-1 hit: the target is the judge's most probable class
    top5: bool  # a top-5 hit
    prediction: int  # the judge's most probable class
    prediction_name: str
    spectral_slope: float | None = None  # of the image, at its saved size
    image: str | None = None  # judge.json only: the image, relative to the judged directory


@dataclass
class JudgeSummary:
    """A judge's figures over the images it judged."""
    model: str
    input_size: int  # the judge sees each image resized to this
    images: int
    top1: float  # the share of top-1 hits
    top5: float  # the share of top-5 hits
    mean_probability: float  # of the target class
    spectral_slope: float | None = None  # the images' mean
    diversity: float | None = None  # several images of a class: their mean pairwise distance in the judge's features

    @classmethod
    def of(cls, model: str, input_size: int, verdicts: list[Verdict]) -> JudgeSummary:
        """The figures over `verdicts`: the shares of top-1 / top-5 hits, the mean target probability and slope."""
        n = len(verdicts)
        return JudgeSummary(model=model, input_size=input_size, images=n, top1=sum(v.top1 for v in verdicts) / n,
                            top5=sum(v.top5 for v in verdicts) / n,
                            mean_probability=sum(v.probability for v in verdicts) / n,
                            spectral_slope=sum(nan_if_none(v.spectral_slope) for v in verdicts) / n)


@dataclass
class JudgeResult(JudgeSummary):
    """A judge's figures and its verdict on each image, in the order of the classes."""
    classes: list[Verdict] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict) -> JudgeResult:
        return cls(**{**d, "classes": [Verdict(**v) for v in d["classes"]]})


@dataclass
class StageTime:
    """Wall seconds of one stage (pii.core.observers.StageTimer)."""
    size: int
    steps: int
    first_step_seconds: float | None = None  # compiling and autotuning for the stage's new size happen here
    seconds: float | None = None


@dataclass
class RunResult:
    """One invert.py run: metrics.json."""
    model: str  # the inverted classifier
    device: str
    seconds: float | None  # of inversion (not loading, not judging), over all stages, a resume's earlier ones
    #                        included; None where a resumed run's checkpoint did not keep the earlier time
    seconds_per_class: float | None
    steps: int  # over all stages
    stage_sizes: list[int]
    ensemble_size: int
    param: str  # the image parametrization (pii.core.param)
    spectral_slope: float | None  # the mean over the classes' images
    mean_probability: float  # the inverted model's own probability for the targets, over classes
    top1_rate: float  # the share of classes that are the inverted model's top-1
    classes: list[ClassResult]
    config: dict  # the run's resolved config
    first_stage: int = 1  # the stage this process started at (> 1: resumed)
    stage_seconds: list[StageTime] | None = None  # the stages this process ran
    judge: dict[str, JudgeResult] | None = None  # by judge name ({}: no judge); None until judged
    # precision, channels_last and views per chunk as the run used them, and where they came from (config,
    # the CUDA policy, a calibration on this CPU or its cache) with the candidates' seconds per view
    # (pii.models.calibration.DeviceSettings); None in runs made before it was recorded
    device_settings: dict | None = None
    units: list[UnitResult] | None = None  # a unit objective's images (then `classes` is empty)
    specificity: float | None = None  # the share of `units` whose unit is the most activated of its layer
    diversity: float | None = None  # mean pairwise feature distance of the images of one target (several per target)

    @property
    def method(self) -> str:
        """The method a preset names (`method`), else the parametrization's name."""
        return str(self.config.get("method") or (self.config.get("param") or {}).get("name", "pixel"))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @classmethod
    def from_dict(cls, d: dict) -> RunResult:
        stages, judges, units = d.get("stage_seconds"), d.get("judge"), d.get("units")
        result = cls(**{"seconds": None, "seconds_per_class": None,  # written as absent where unknown (to_dict)
                        **d, "classes": [ClassResult.from_dict(c) for c in d["classes"]],
                        "units": None if units is None else [UnitResult(**u) for u in units],
                        "stage_seconds": None if stages is None else [StageTime(**t) for t in stages],
                        "judge": None if judges is None else {k: JudgeResult.from_dict(j) for k, j in judges.items()}})
        if not all(isinstance(c.class_id, int) and isinstance(c.image, str) for c in result.classes):
            raise TypeError("a class entry without an integer class_id and an image name")
        for name in ("seconds", "seconds_per_class", "mean_probability", "top1_rate"):  # what tables add up and rank
            value = getattr(result, name)
            if value is None and (name.startswith("seconds") or result.units is not None):
                continue  # a unit run's images have no class probability
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} is {value!r}, not a number >= 0")
        return result


# What differs between the jobs that are chunks of one class list, besides their classes
PER_JOB_KEYS = ("class_chunk", "output_dir", "resume")


def chunk_key(run: RunResult) -> str | None:
    """The same for every chunk of one class list (a sweep with classes_per_job): the run's config but for
    PER_JOB_KEYS; None for a run that inverted its whole class list."""
    if run.config.get("class_chunk") is None:
        return None
    return json.dumps({k: v for k, v in run.config.items() if k not in PER_JOB_KEYS}, sort_keys=True, default=str)


def merge(parts: list[tuple[Path, RunResult]]) -> RunResult:
    """The run that chunks of one class list add up to (each (run dir, result), in any order): every class
    in the list's order, with its image as a path from the chunk's dir, and the figures over all of them
    computed as one run computes its own (time: the chunks' inversion seconds added)."""
    parts = sorted(parts, key=lambda part: part[1].config.get("class_chunk") or 0)
    runs = [run for _, run in parts]
    classes = [replace(entry, image=str(Path(run_dir) / entry.image))
               for run_dir, run in parts for entry in run.classes]
    n, first = len(classes), runs[0]
    seconds = None if any(run.seconds is None for run in runs) else sum(run.seconds for run in runs)
    judges = {}
    for name in (first.judge or {}):
        if all(name in (run.judge or {}) for run in runs):
            verdicts = [v for run in runs for v in run.judge[name].classes]
            judged = first.judge[name]
            judges[name] = JudgeResult(**vars(JudgeSummary.of(judged.model, judged.input_size, verdicts)),
                                       classes=verdicts)
    slopes = [entry.spectral_slope for entry in classes]
    return RunResult(model=first.model, device=first.device, seconds=seconds,
                     seconds_per_class=None if seconds is None else seconds / n,
                     steps=first.steps, stage_sizes=first.stage_sizes, ensemble_size=first.ensemble_size,
                     param=first.param, spectral_slope=None if None in slopes else sum(slopes) / n,
                     mean_probability=sum(e.probability for e in classes) / n,
                     top1_rate=sum(e.top1 for e in classes) / n, classes=classes,
                     config={**first.config, "class_chunk": None, "resume": None},
                     judge=judges if first.judge is not None else None)


def gather(runs: list[tuple[Path, RunResult]]) -> list[tuple[Path, RunResult]]:
    """`runs` (run dir, result) with the chunks of each class list merged into one (`merge`; its dir: the
    first chunk's), in the order first seen; other runs as they are."""
    groups: dict[object, list[tuple[Path, RunResult]]] = {}
    for index, (run_dir, run) in enumerate(runs):
        groups.setdefault(chunk_key(run) or index, []).append((run_dir, run))
    return [parts[0] if len(parts) == 1 and chunk_key(parts[0][1]) is None else (parts[0][0], merge(parts))
            for parts in groups.values()]


@dataclass
class JudgedDirectory:
    """judge.json (scripts/judge.py): every inversion under a directory, judged."""
    root: str
    runs: dict[str, dict[str, JudgeResult]] = field(default_factory=dict)  # by run dir (relative to root), judge
    overall: dict[str, JudgeSummary] = field(default_factory=dict)  # by judge, over every run


def to_dict(result) -> dict:
    """A result as plain JSON values, its None fields left out (`dataclasses.asdict`)."""
    return asdict(result, dict_factory=lambda items: {k: v for k, v in items if v is not None})


def to_json(result, **first) -> str:
    """A result as indented strict JSON (pii.files.json_text), the keys of `first` before its own."""
    return json_text({**first, **to_dict(result)})


def write(path: Path, result: RunResult) -> None:
    """metrics.json: `result` with schema_version first, written whole or not at all."""
    write_text(path, to_json(result, schema_version=SCHEMA_VERSION))


def read(path: Path, key: str = "") -> RunResult:
    """A run's metrics.json; a one-line ConfigError naming `key` (e.g. init_from) and the file if it is
    missing, damaged, not an invert.py metrics.json, or written by a newer pii (a newer schema_version)."""
    path, where = Path(path), f"{key}=" if key else ""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{where}{path.parent}: no {path.name} there; "
                          f"pass the output directory of a finished run") from None
    except (OSError, ValueError) as err:
        raise damaged(path, where, err) from None
    if not isinstance(data, dict) or not {"classes", "config"} <= set(data):
        raise ConfigError(f"{where}{str(path)!r} is not the metrics.json of an invert.py run "
                          f"(it has no classes and config)")
    version = data.pop("schema_version", 0)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ConfigError(f"{where}{str(path)!r} has schema_version {version!r}; this pii reads versions up to "
                          f"{SCHEMA_VERSION}: update pii to read it")
    try:
        return RunResult.from_dict(data if version else upgrade(data))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise damaged(path, where, err) from None


def damaged(path: Path, where: str, err: Exception) -> ConfigError:
    return ConfigError(f"{where}{str(path)!r} is damaged ({type(err).__name__}: {str(err)[:80]})")


def upgrade(data: dict) -> dict:
    """A metrics.json without schema_version, as version 1: `top5` -> `top5_classes`; keys added
    since (param, spectral_slope) get the value they stood for then."""
    for entry in data["classes"]:
        if isinstance(entry, dict) and "top5" in entry:
            entry["top5_classes"] = entry.pop("top5")
    config = data["config"] if isinstance(data["config"], dict) else {}
    data.setdefault("param", str((config.get("param") or {}).get("name", "pixel")))
    data.setdefault("spectral_slope", None)
    return data


def nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value
