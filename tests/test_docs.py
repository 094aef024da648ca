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
