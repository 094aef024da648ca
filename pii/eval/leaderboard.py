"""The method leaderboard: runs of several methods on the same classes and budget,
one row per method and class list (seeds pooled), and a grid (rows = methods,
columns = classes). Reads only what runs leave on disk (metrics.json)."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from pii import CONF_DIR
from pii.errors import ConfigError
from pii.eval import results
from pii.eval.gallery import Job, grid
from pii.eval.results import METRICS, RunResult

log = logging.getLogger(__name__)


@functools.cache
def class_lists() -> dict[frozenset, str]:
    """The named class lists of conf/classes/, by their set of ids."""
    return {frozenset(OmegaConf.load(p).class_id): p.stem for p in sorted((Path(CONF_DIR) / "classes").glob("*.yaml"))}


@dataclass
class Row:
    method: str
    classes: str
    seeds: list[int] = field(default_factory=list)
    images: int = 0
    own_probability: float = 0.0  # sums until finish()
    slope: float = 0.0
    seconds_per_class: float | None = 0.0  # None once a run does not know its time (pii.eval.results)
    runs: int = 0
    judges: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, run: RunResult) -> None:
        self.seeds.append(run.seed)
        self.images += len(run.classes)
        self.runs += 1
        self.own_probability += sum(c.probability for c in run.classes)
        self.slope += sum(results.nan_if_none(c.spectral_slope) for c in run.classes)
        if self.seconds_per_class is not None and run.seconds_per_class is not None:
            self.seconds_per_class += run.seconds_per_class
        else:  # a time unknown for one run is unknown for the row: never shown as fast
            self.seconds_per_class = None
        for name, judged in (run.judge or {}).items():
            sums = self.judges.setdefault(name, {"top1": 0.0, "top5": 0.0, "mean_probability": 0.0, "images": 0})
            for key in ("top1", "top5", "mean_probability"):
                sums[key] += getattr(judged, key) * judged.images
            sums["images"] += judged.images

    def summary(self) -> dict:
        judges = {name: {k: (v / s["images"] if k != "images" else v) for k, v in s.items()}
                  for name, s in self.judges.items()}
        return {"method": self.method, "classes": self.classes, "seeds": sorted(self.seeds), "images": self.images,
                "judges": judges, "spectral_slope": self.slope / self.images,
                "own_probability": self.own_probability / self.images,
                "seconds_per_class": None if self.seconds_per_class is None else self.seconds_per_class / self.runs}


def find_runs(roots: list[Path]) -> list[tuple[Path, RunResult]]:
    """Every invert.py run (metrics.json) under `roots`; one that cannot be read is skipped with a warning."""
    runs = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise ConfigError(f"{root} is not a directory of runs")
        for path in sorted(root.rglob(METRICS)):
            try:
                runs.append((path.parent, results.read(path)))
            except ConfigError as err:  # damaged, newer, or another program's metrics.json (train_invert.py)
                log.warning("skipped: %s", err)
    if not runs:
        raise ConfigError(f"no finished runs (metrics.json) under {', '.join(map(str, roots))}")
    return runs


def class_ids(run: RunResult) -> frozenset[int]:
    return frozenset(c.class_id for c in run.classes)


def leaderboard(roots: list[Path]) -> tuple[list[dict], list[tuple[Path, RunResult]]]:
    lists = class_lists()
    rows: dict[tuple[str, str], Row] = {}
    runs = results.gather(find_runs(roots))  # the chunks of a class list (classes_per_job) as one run
    for _, run in runs:
        ids = class_ids(run)
        key = (run.method, lists.get(ids, f"{len(ids)} classes"))
        rows.setdefault(key, Row(*key)).add(run)
    return [row.summary() for row in rows.values()], runs


def markdown(summaries: list[dict]) -> str:
    judges = sorted({name for s in summaries for name in s["judges"]})
    head = ["method", "classes", "seeds"]
    for name in judges:
        head += [f"{name} top-1", f"{name} top-5", f"{name} mean p"]
    head += ["spectral slope", "own p", "s / class"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        cells = [s["method"], s["classes"], ",".join(map(str, s["seeds"]))]
        for name in judges:
            j = s["judges"].get(name)
            cells += [f"{j['top1']:.0%}", f"{j['top5']:.0%}", f"{j['mean_probability']:.2f}"] if j else ["-"] * 3
        cells += [f"{s['spectral_slope']:.2f}", f"{s['own_probability']:.2f}", seconds(s["seconds_per_class"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seconds(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.0f}"


def method_grid(runs: list[tuple[Path, RunResult]], cell: int = 96):
    """Rows = the runs (labelled by method, class list and seed), columns = classes."""
    lists = class_lists()
    jobs = []
    for run_dir, run in runs:
        label = [f"method={run.method}", f"classes={lists.get(class_ids(run), 'custom')}", f"seed={run.seed}"]
        jobs.append(Job(run_dir, label, run))
    return grid(jobs, cell)
