"""A sweep as the paper shows it: an ablation grid (rows = swept values,
columns = classes, or units for a unit objective: a layer sweep shows layers
as rows and units as columns) and a static HTML page with the grid and every
job's metrics and overrides. Reads only what runs leave on disk."""

from __future__ import annotations

import html
import logging
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from omegaconf import OmegaConf
from PIL import Image, ImageDraw, ImageFont

from pii.errors import ConfigError
from pii.eval import results
from pii.eval.results import METRICS, ClassResult, RunResult
from pii.files import read_yaml, write_atomic, write_text

log = logging.getLogger(__name__)

GRID = "ablation_grid.png"
PAGE = "report.html"
# A grid cell's side in px (--cell): from a readable thumbnail to over twice an ImageNet image; a grid
# of many runs and classes at the largest is already hundreds of MB in memory.
CELL_RANGE = (8, 512)


def check_cell(cell: int) -> int:
    low, high = CELL_RANGE
    if not low <= cell <= high:
        raise ConfigError(f"--cell must be {low}..{high} px (a grid cell's side), got {cell}")
    return cell


@dataclass
class Job:
    dir: Path
    overrides: list[str]
    result: RunResult | None  # None: the job did not finish

    @property
    def values(self) -> dict[str, str]:
        return dict(o.lstrip("+~").split("=", 1) for o in self.overrides if "=" in o)

    @property
    def classes(self) -> list[ClassResult]:
        return self.result.classes if self.result else []

    @property
    def cells(self) -> list[Cell]:
        """The job's images: one per class, or per unit of a unit objective."""
        if self.result is None:
            return []
        return [Cell(c.class_id, f"{c.class_id} {c.name}", c.image, c.probability, f"p={c.probability:.3f}")
                for c in self.classes] + \
               [Cell(u.unit, f"unit {u.unit}", u.image, u.activation,
                     f"a={u.activation:.2f}{' top' if u.top1 else ''}")
                for u in self.result.units or []]

    def image(self, target: int) -> Path | None:
        """The image of a class (or of a unit) that the job made, where it is on disk."""
        for cell in self.cells:
            if cell.target == target and cell.image and (self.dir / cell.image).is_file():
                return self.dir / cell.image
        return None


@dataclass
class Cell:
    """One image of a job: its target (a class id, or a unit), the column's header, the image
    relative to the job's directory, its score (target probability, or the unit's activation) and caption."""
    target: int
    header: str
    image: str | None
    score: float
    caption: str


def collect(multirun_dir: Path) -> list[Job]:
    """The sweep's jobs (sub-directories with .hydra/overrides.yaml), in job order; the finished chunks of
    one class list (classes_per_job) as one job, which has every class of them. A folder of sweeps (such as
    scripts/frontier.py's <out>/sweeps/, one per budget): every sweep's jobs, each marked `sweep=<its folder>`."""
    root = Path(multirun_dir).absolute()  # a merged class list names its other chunks' images by their paths
    if not root.is_dir():
        raise ConfigError(f"{multirun_dir} is not a directory; pass a multirun dir such as outputs/sweeps/<time>_<name>")
    if not any(root.glob("*/.hydra/overrides.yaml")):
        sweeps = sorted(d for d in root.iterdir() if d.is_dir() and any(d.glob("*/.hydra/overrides.yaml")))
        if sweeps:
            return [Job(job.dir, [f"sweep={sweep.name}", *job.overrides], job.result)
                    for sweep in sweeps for job in collect(sweep)]
    jobs = []
    for overrides in root.glob("*/.hydra/overrides.yaml"):
        job_dir = overrides.parent.parent
        result = None
        if (job_dir / METRICS).is_file():
            try:
                result = results.read(job_dir / METRICS)
            except ConfigError as err:  # one damaged job: shown as not finished, the others still reported
                log.warning("skipped: %s", err)
        try:
            values = read_yaml(overrides)
        except ConfigError as err:  # one damaged job: shown without its values, the others still reported
            log.warning("skipped: %s", err)
            values = []
        jobs.append(Job(job_dir, [str(v) for v in values] if OmegaConf.is_list(values) else [], result))
    if not jobs:
        raise ConfigError(f"{root} holds no Hydra jobs (no */.hydra/overrides.yaml); is it a multirun dir?")

    def order(job: Job):
        head = job.dir.name.split("_", 1)[0]
        return (int(head), "") if head.isdigit() else (1 << 30, job.dir.name)

    jobs = sorted(jobs, key=order)
    finished = {job.dir: job for job in jobs if job.result is not None}
    merged = {run_dir: run for run_dir, run in results.gather([(job.dir, job.result) for job in finished.values()])}
    chunk = "class_chunk="
    return [Job(job.dir, [o for o in job.overrides if not o.startswith(chunk)] if job.dir in merged else job.overrides,
                merged[job.dir] if job.dir in merged else job.result)
            for job in jobs if job.result is None or job.dir in merged]


def swept_keys(jobs: list[Job]) -> list[str]:
    """The override keys whose value differs between jobs: what the rows show."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.values if k not in keys]
    return [k for k in keys if len({job.values.get(k) for job in jobs}) > 1]


def row_label(job: Job, keys: list[str]) -> str:
    """The swept values of `job`, each key without its group (tv_weight=0.3, ensemble.size=4)."""
    label = ", ".join(f"{k.split('.', 1)[-1]}={job.values.get(k, '-')}" for k in keys)
    return label or job.dir.name


def columns(jobs: list[Job]) -> list[tuple[int, str]]:
    """(target, header) of every class (or unit) any job made an image of, in first-seen order."""
    seen: dict[int, str] = {}
    for job in jobs:
        for cell in job.cells:
            seen.setdefault(cell.target, cell.header)
    return list(seen.items())


def text_font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _wrap(text: str, font, width: int) -> list[str]:
    chars = max(4, int(width / max(font.getlength("x"), 1)))
    return textwrap.wrap(text, chars) or [""]


def grid(jobs: list[Job], cell: int = 128, first: int | None = None) -> Image.Image:
    """Rows = jobs (labelled with their swept values), columns = classes (or units; the `first` ones
    only, when given); each image captioned with its target probability (or the unit's activation, and
    `top` where it is the most activated of its layer)."""
    keys, cols = swept_keys(jobs), columns(jobs)[:first]
    font, small = text_font(14), text_font(12)
    label_w, head_h, caption_h, pad = 200, 40, 18, 6
    width = label_w + len(cols) * (cell + pad) + pad
    height = head_h + len(jobs) * (cell + caption_h + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for c, (_, header) in enumerate(cols):
        x = label_w + pad + c * (cell + pad)
        for i, line in enumerate(_wrap(header, font, cell)[:2]):
            draw.text((x, 4 + 17 * i), line, fill="black", font=font)
    for r, job in enumerate(jobs):
        y = head_h + r * (cell + caption_h + pad)
        for i, line in enumerate(_wrap(row_label(job, keys), font, label_w - 2 * pad)[: cell // 17]):
            draw.text((pad, y + 17 * i), line, fill="black", font=font)
        captions = {e.target: e.caption for e in job.cells}
        for c, (target, _) in enumerate(cols):
            x = label_w + pad + c * (cell + pad)
            path = job.image(target)
            if path is None:
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(220, 220, 220))
                draw.text((x + 8, y + cell // 2 - 8), "not finished" if job.result is None else "missing",
                          fill="black", font=small)
                continue
            try:
                with Image.open(path) as img:
                    canvas.paste(img.convert("RGB").resize((cell, cell), Image.BILINEAR), (x, y))
            except (OSError, ValueError, SyntaxError) as err:  # a damaged PNG: a blank cell and one warning
                log.warning("skipped: cannot read image %r (%s: %s)", str(path), type(err).__name__, err)
            draw.text((x, y + cell + 2), captions[target], fill="black", font=small)
    return canvas


def _cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))


def page(jobs: list[Job], root: Path, title: str) -> str:
    """The report page (written into `root`): the grid, then one table row per job (overrides, metrics, images)."""
    keys, cols = swept_keys(jobs), columns(jobs)
    head = ["job", "swept", "overrides", "mean p", "top-1 rate", "seconds", "steps"]
    head += [f"p {header}" if header[0].isdigit() else header for _, header in cols] + ["images"]
    rows = []
    for job in jobs:
        r = job.result
        probs = {e.target: e.score for e in job.cells}
        images = "".join(
            f'<img src="{quote(Path(os.path.relpath(job.image(cid), root)).as_posix())}" width="64" height="64" alt="{cid}">'
            for cid, _ in cols if job.image(cid) is not None)
        figures = ([r.mean_probability, r.top1_rate, "unknown" if r.seconds is None else r.seconds, r.steps] if r
                   else ["not finished", "", "", ""])
        cells = [job.dir.name, row_label(job, keys), " ".join(job.overrides) or "(none)",
                 *figures] + [probs.get(cid, "") for cid, _ in cols]
        rows.append("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in cells) + f"<td>{images}</td></tr>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}} th{{background:#eee}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{len(jobs)} jobs; rows differ in: {html.escape(", ".join(keys) or "nothing")}.
Probabilities are the inverted model's own target-class probabilities.</p>
<img id="grid" src="{GRID}" alt="ablation grid">
<h2>Jobs</h2>
<table id="metrics"><thead><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in head)}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""


def write_report(multirun_dir: Path, cell: int = 128, first: int | None = None,
                 out: Path | None = None) -> tuple[Path, Path]:
    """Write ablation_grid.png (its `first` columns, when given) and report.html into `out` (default: the
    multirun dir); return their paths."""
    root = Path(multirun_dir)
    jobs = collect(root)
    out = out or root
    grid_path, page_path = out / GRID, out / PAGE
    image = grid(jobs, cell, first)
    write_atomic(grid_path, lambda f: image.save(f, format="png", optimize=True))
    write_text(page_path, page(jobs, out, f"Sweep {root.name}"))
    return grid_path, page_path
