"""The docs a newcomer reads: a short README that links every docs page, links that resolve, and
stored results that each say where they come from (command, commit, date, hardware) and are cited."""

import json
import re
from pathlib import Path

import pytest
from conftest import ROOT

DOCS = ROOT / "docs"
STORED = [DOCS / "results", DOCS / "figures"]
NOT_RESULTS = ("manifest.json", "README.md")  # what a folder says about its results
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")  # markdown links and images: ](target) or ](target#anchor)


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def stored_files() -> list[Path]:
    return sorted(p for folder in STORED for p in folder.rglob("*") if p.is_file() and p.name not in NOT_RESULTS)


def test_the_readme_fits_a_newcomer_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert readme.index("make run") < readme.index("make test") < readme.index("## ")  # the two commands first
    linked = {(ROOT / target).resolve() for target in LINK.findall(readme)}
    unlinked = [p.relative_to(ROOT).as_posix() for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert unlinked == []


def test_every_relative_link_in_the_docs_resolves():
    broken = []
    for page in pages():
        for target in LINK.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


@pytest.mark.parametrize("folder", sorted({p.parent for p in stored_files()}), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_each_stored_result_names_its_command_commit_date_and_hardware(folder):
    manifest = folder / "manifest.json"
    assert manifest.is_file(), f"{folder.relative_to(ROOT)} has no manifest.json"
    entries = json.loads(manifest.read_text())["files"]
    files = {p.name for p in folder.iterdir() if p.is_file() and p.name not in NOT_RESULTS}
    assert sorted(files - set(entries)) == [], "files with no manifest entry"
    assert sorted(set(entries) - files) == [], "manifest entries with no file"
    for name, entry in entries.items():
        assert entry["command"].strip() and entry["hardware"].strip(), name
        assert re.fullmatch(r"[0-9a-f]{7,40}(\+uncommitted)?", entry["commit"]), (name, entry["commit"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\d(T\d\d:\d\d:\d\dZ)?", entry["date"]), (name, entry["date"])


def test_every_stored_result_is_cited():
    """A result is cited by its path or, inside a run's own folder (docs/results/gpu/<run>/), by the
    folder's; a figure by its path. Nothing sits in docs/ that no page, config or code points to."""
    docs = "\n".join(p.read_text() for p in pages())
    text = "\n".join([docs, *(p.read_text() for p in [*ROOT.glob("conf/**/*.yaml"), *ROOT.glob("pii/**/*.py"),
                                                       *ROOT.glob("scripts/*")] if p.is_file())])
    uncited = []
    for path in stored_files():
        relative, in_docs = path.relative_to(ROOT).as_posix(), path.relative_to(DOCS).as_posix()
        folder = path.parent.relative_to(DOCS).as_posix()
        by_folder = path.parent.parent != DOCS / "results" and folder != "figures"  # a run's own folder
        # a page may name a file after linking its folder's manifest; docs/ pages link relative to docs/
        cited = relative in text or in_docs in docs or (path.name in docs and f"{folder}/" in docs)
        if not cited and not (by_folder and f"{folder}/" in text):
            uncited.append(relative)
    assert uncited == []


def load(relative: str) -> dict:
    return json.loads((ROOT / relative).read_text())


def test_the_readme_caption_quotes_the_stored_make_run():
    """The caption under make run's image says what its stored run says: Lite0's p, Lite2's p and
    top-1, the seconds, the settings, the commit and date; and the image is that run's."""
    readme = (ROOT / "README.md").read_text()
    caption = readme.split("(docs/figures/make_run_volcano.png)", 1)[1].strip().split("\n\n", 1)[0]
    metrics = load("docs/results/make-run/metrics.json")
    entry = load("docs/results/make-run/manifest.json")["files"]["metrics.json"]
    image = load("docs/figures/manifest.json")["files"]["make_run_volcano.png"]
    (volcano,) = metrics["classes"]
    (judged,) = metrics["judge"]["efficientnet_lite2"]["classes"]
    assert volcano["class_id"] == judged["class_id"] == 980 and judged["top1"]
    crops, decay = metrics["config"]["augmentation"]["ensemble"], metrics["config"]["param"]["decay"]
    for figure in [f"p(volcano) = {volcano['probability']:.3f}", f"(p = {judged['probability']:.2f}, top-1)",
                   f"{metrics['seconds']:.0f} s for this one class", f"1/f^{decay:g} spectrum",
                   f"{metrics['config']['schedule']['stages']} stages x {metrics['config']['schedule']['steps']} steps",
                   f"each of the {crops['size']} copies a random crop of "
                   f"{crops['box'][0]:.0%}-{crops['box'][1]:.0%}".replace("%-", "-"),
                   f"{entry['date'][:10]}, commit {entry['commit'][:7]}"]:
        assert figure in caption
    assert entry["command"].startswith("python invert.py experiment=fast")  # what make run runs
    assert (image["command"], image["commit"], image["date"]) == (entry["command"], entry["commit"], entry["date"])


def cluster_tolerance() -> tuple[str, list[str]]:
    """docs/cluster.md quotes the bounds that tests/test_inversion.py and tests/test_cluster.py assert."""
    bounds = {re.search(r"assert difference\.max\(\) < (\S+) and difference\.mean\(\) < (\S+)\n",
                        (ROOT / "tests" / name).read_text()).groups() for name in ("test_inversion.py", "test_cluster.py")}
    (largest, mean), = bounds
    return "docs/cluster.md", [f"less than {largest} in any pixel and {mean} on average after 9 steps, what "
                               "`tests/test_inversion.py` and `tests/test_cluster.py` assert"]


def robust_feedforward() -> tuple[str, list[str]]:
    natural, robust = (load("docs/results/robust/robust_feedforward.json")["feedforward"]["results"][k] for k in ("natural", "robust"))
    return "docs/robust.md", [f"with {robust['psnr'] - natural['psnr']:.1f} dB more PSNR and "
                              f"{robust['ssim'] - natural['ssim']:.3f} more SSIM"]


def polarity_judge() -> tuple[str, list[str]]:
    runs = load("docs/results/digits/claim_polarity_judge.json")["runs"]
    judged = {run: by["digits_judge"] for run, by in runs.items()}

    def row(arch: str, key: str, form: str, methods=("pii", "pii_no_color_shift", "plain_ce")) -> str:
        return " / ".join(format(judged[f"{arch}/{m}"][key], form) for m in methods)

    names = {"cnn": "CNN", "vit": "ViT", "mixer": "Mixer"}
    # the sentence's reading: ColorShift's own top-1 gain only for the CNN, its mean-p gain for all three
    gain = {a: [judged[f"{a}/pii"][k] - judged[f"{a}/pii_no_color_shift"][k] for k in ("top1", "mean_probability")]
            for a in names}
    assert {a for a, (top1, _) in gain.items() if top1 > 0} == {"cnn"} and all(p > 0 for _, p in gain.values())
    top1 = ", ".join(f"{row(a, 'top1', '.0%')} ({n})" for a, n in names.items())
    mean_p = ", ".join(f"{row(a, 'mean_probability', '.2f', methods=('pii', 'pii_no_color_shift'))} ({n})"
                       for a, n in names.items())
    return "docs/evaluation.md", [top1, mean_p]


def bf16_under_avx2() -> tuple[str, list[str]]:
    """One range for the bf16 probes against the fastest fp32 setting, from the calibration of the AVX2 row."""
    per_view = load("docs/results/cpu-speed/isa/avx2_auto.json")["paths"][0]["settings"]["seconds_per_view"]
    fp32 = min(v for k, v in per_view.items() if k.startswith("fp32/"))
    ratios = [v / fp32 for k, v in per_view.items() if k.startswith("bf16/")]
    quoted = f"{min(ratios):.0f}-{max(ratios):.0f}x"
    text = (DOCS / "performance.md").read_text()
    assert set(re.findall(r"\b\d+-\d+x\b", text)) == {quoted}, "another range for the same slowdown"
    return "docs/performance.md", [f"bf16 {quoted} slower per view"]


@pytest.mark.parametrize("quoted", [cluster_tolerance, robust_feedforward, polarity_judge, bf16_under_avx2],
                         ids=lambda f: f.__name__)
def test_the_docs_quote_their_stored_figures(quoted):
    """Each figure as the page prints it, computed from its stored file (or the tests), line breaks aside."""
    page, figures = quoted()
    text = (ROOT / page).read_text()
    for figure in figures:
        assert " ".join(figure.split()) in " ".join(text.split()), (page, figure)
