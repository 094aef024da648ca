"""The frontier: judged quality against seconds per class, one point per method and budget (scripts/frontier.py).

Reads only what runs leave on disk (metrics.json), as the leaderboard does (pii.eval.leaderboard: the
same runs found, class-list chunks merged, figures pooled over seeds). A run's budget is the name of the
sweep folder that holds it: scripts/frontier.py runs each budget as its own sweep, <out>/sweeps/<budget>/.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pii.eval import provenance, results
from pii.eval.gallery import text_font
from pii.eval.leaderboard import Row, class_ids, class_lists, find_runs
from pii.eval.results import RunResult


def budget_of(run_dir: Path) -> str:
    """The budget a run belongs to: its sweep folder's name."""
    return Path(run_dir).resolve().parent.name


def points(roots: list[Path]) -> list[dict]:
    """One point per (method, budget, class list): the first judge's top-1 and mean probability of the
    target and the measured seconds per class over its runs (seeds pooled), in the order first found."""
    lists = class_lists()
    groups: dict[tuple[str, str, str], tuple[Row, list[tuple[Path, RunResult]]]] = {}
    for run_dir, run in results.gather(find_runs(roots)):
        ids = class_ids(run)
        key = (run.method, budget_of(run_dir), lists.get(ids, f"{len(ids)} classes"))
        row, runs = groups.setdefault(key, (Row(run.method, key[2]), []))
        row.add(run)
        runs.append((run_dir, run))
    found = []
    for (method, budget, classes), (row, runs) in groups.items():
        summary = row.summary()
        judge, judged = next(iter(summary["judges"].items()), (None, {}))
        first = runs[0][1]
        found.append({
            "method": method, "budget": budget, "classes": classes,
            "seconds_per_class": summary["seconds_per_class"],
            "judge": judge, "top1": judged.get("top1"), "mean_probability": judged.get("mean_probability"),
            "images": summary["images"], "seeds": summary["seeds"],
            # what the budget was, as the runs did it
            "steps": first.steps, "stages": len(first.stage_sizes), "copies": first.ensemble_size,
            "classes_per_run": first.config.get("classes_per_job") or len(first.classes),
            "runs": [provenance.portable(d, roots) for d, _ in runs]})
    return found


def seconds(value: float | None) -> str:
    """A time in a table: 3 figures (a small budget takes under a second per class), or unknown."""
    return "unknown" if value is None else f"{value:.3g}"


def knee(curve: list[tuple[float, float]], gain: float) -> int | None:
    """The index in `curve` ((seconds, mean p) of one method) of its cheapest point from which doubling the
    time adds less than `gain` to the mean p: the gain per doubling on the way to the next dearer point
    (log2 of the time ratio doublings). None: every measured step still pays, or fewer than two points."""
    order = sorted(range(len(curve)), key=lambda i: curve[i][0])
    for here, there in zip(order, order[1:]):
        (t0, p0), (t1, p1) = curve[here], curve[there]
        doublings = math.log2(t1 / t0) if t0 > 0 and t1 > t0 else 0.0
        if doublings == 0.0:  # the same time: the better of the two counts, not a doubling
            continue
        if (p1 - p0) / doublings < gain:
            return here
    return None


def knees(found: list[dict], gain: float) -> dict[str, dict]:
    """Per method and class list (`method` or `method, classes` when several lists ran): its knee point's
    budget and seconds per class, or None."""
    several = len({p["classes"] for p in found}) > 1
    curves: dict[str, list[dict]] = {}
    for p in found:
        if p["seconds_per_class"] is not None and p["mean_probability"] is not None:
            curves.setdefault(f"{p['method']}, {p['classes']}" if several else p["method"], []).append(p)
    out = {}
    for name, curve in curves.items():
        at = knee([(p["seconds_per_class"], p["mean_probability"]) for p in curve], gain)
        out[name] = None if at is None else {"budget": curve[at]["budget"],
                                             "seconds_per_class": curve[at]["seconds_per_class"]}
    return out


def markdown(found: list[dict], bends: dict[str, dict | None], gain: float) -> str:
    judges = sorted({p["judge"] for p in found if p["judge"]})
    head = ["method", "budget", "classes", "steps", "copies", "classes / run", "s / class", "judged top-1",
            "judged mean p", "images"]
    lines = [f"Judged by {', '.join(judges) or 'no judge (verifier=none)'} (each run's first judge); seconds per "
             f"class measured on the machine of manifest.json.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in sorted(found, key=lambda p: (p["method"], p["classes"], p["seconds_per_class"] or math.inf)):
        judged = p["judge"] is not None
        lines.append("| " + " | ".join([
            p["method"], p["budget"], p["classes"], str(p["steps"]), str(p["copies"]), str(p["classes_per_run"]),
            seconds(p["seconds_per_class"]), f"{p['top1']:.0%}" if judged else "-",
            f"{p['mean_probability']:.3f}" if judged else "-", str(p["images"])]) + " |")
    lines += ["", f"Knee: per method, the cheapest point from which doubling the time adds less than {gain} to the "
                  f"judged mean p (on the way to its next dearer point).", ""]
    for name, at in bends.items():
        lines.append(f"- {name}: " + (f"{at['budget']} ({seconds(at['seconds_per_class'])} s per class)" if at else
                                      "none: every measured doubling still adds more"))
    return "\n".join(lines)


COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def log_ticks(low: float, high: float) -> list[float]:
    """1, 2, 5 x powers of ten within [low, high]."""
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
             for m in (1, 2, 5)]
    return [t for t in ticks if low <= t <= high]


def plot(found: list[dict], bends: dict[str, dict | None], panel: int = 480) -> Image.Image:
    """Two panels over seconds per class (log): the judged mean p (left) and the judged top-1 (right), one
    coloured line and marker per method (and class list); each knee ringed."""
    font, small = text_font(16), text_font(13)
    drawn = [p for p in found if p["seconds_per_class"] and p["mean_probability"] is not None]
    names = list(bends) or sorted({p["method"] for p in drawn})
    several = len({p["classes"] for p in found}) > 1

    def curve_of(p: dict) -> str:
        return f"{p['method']}, {p['classes']}" if several else p["method"]

    times = [p["seconds_per_class"] for p in drawn] or [1.0]
    low, high = min(times) / 1.3, max(times) * 1.3
    if high / low < 4:
        middle = math.sqrt(low * high)
        low, high = middle / 2, middle * 2
    left, top, bottom, gap = 70, 40, 60, 90
    legend_w = 190
    width, height = left + 2 * panel + gap + legend_w, top + panel + bottom
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for index, (key, title) in enumerate((("mean_probability", "judged mean p(target)"), ("top1", "judged top-1"))):
        x0 = left + index * (panel + gap)

        def at(seconds: float, value: float) -> tuple[float, float]:
            x = x0 + (math.log(seconds) - math.log(low)) / (math.log(high) - math.log(low)) * panel
            return x, top + (1 - value) * panel

        draw.rectangle([x0, top, x0 + panel, top + panel], outline="black")
        for value in np.linspace(0, 1, 5):
            y = at(low, value)[1]
            draw.line([x0, y, x0 + panel, y], fill="#e6e6e6")
            draw.text((x0 - 8, y), f"{value:.2f}", fill="black", font=small, anchor="rm")
        for tick in log_ticks(low, high):
            x = at(tick, 0)[0]
            draw.line([x, top, x, top + panel], fill="#e6e6e6")
            draw.text((x, top + panel + 6), f"{tick:g}", fill="black", font=small, anchor="mt")
        draw.rectangle([x0, top, x0 + panel, top + panel], outline="black")
        draw.text((x0 + panel / 2, top + panel + 28), "seconds per class (log scale)", fill="black", font=font,
                  anchor="mt")
        draw.text((x0 + panel / 2, top - 10), title, fill="black", font=font, anchor="mb")
        for number, name in enumerate(names):
            colour = COLOURS[number % len(COLOURS)]
            curve = sorted((p for p in drawn if curve_of(p) == name), key=lambda p: p["seconds_per_class"])
            xy = [at(p["seconds_per_class"], p[key]) for p in curve]
            if len(xy) > 1:
                draw.line(xy, fill=colour, width=3)
            for p, (x, y) in zip(curve, xy):
                draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour)
                bend = bends.get(name)
                if bend and bend["budget"] == p["budget"]:
                    draw.ellipse([x - 10, y - 10, x + 10, y + 10], outline="black", width=2)
    x0, y0 = left + 2 * panel + gap + 20, top + 10
    for number, name in enumerate(names):
        colour, y = COLOURS[number % len(COLOURS)], y0 + 24 * number
        draw.line([x0, y + 8, x0 + 28, y + 8], fill=colour, width=3)
        draw.ellipse([x0 + 9, y + 3, x0 + 19, y + 13], fill=colour)
        draw.text((x0 + 36, y + 8), name, fill="black", font=font, anchor="lm")
    y = y0 + 24 * len(names) + 8
    draw.ellipse([x0 + 4, y, x0 + 24, y + 20], outline="black", width=2)
    draw.text((x0 + 36, y + 10), "knee", fill="black", font=font, anchor="lm")
    return image
