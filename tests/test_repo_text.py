"""The project speaks of itself only. No tracked text file (code, comments, tests, configs, docs,
stored results) and no tracked file name tells of how it was developed (a development round, a
session, an issue, "today's", a loan of a machine, a plan for someone later), cites SPEC sections or
points outside the repository; docs name no absolute path of the machine that wrote them."""

import re
import subprocess

import pytest
from conftest import ROOT

SELF = "tests/test_repo_text.py"  # spells out the words it rejects

WORDS = [  # (what it is, pattern), everywhere
    ("a development round", re.compile(r"(?i)\bstop[ _-]?\d+\b|\b(?:development|review) rounds?\b|\bround \d+\b")),
    ("a session", re.compile(r"(?i)\bsessions?\b")),
    ("an issue", re.compile(r"(?i)\bissues?\b|\bissue's\b")),
    ("a relative date", re.compile(r"(?i)\btoday(?:'s)?\b")),
    ("a machine on loan", re.compile(r"(?i)\blent\b")),
    ("a plan for someone later", re.compile(r"(?i)\ba later\b[^.\n]{0,80}\bcould\b|\b(?:next|later|future) (?:session|round)\b")),
    ("a SPEC section", re.compile(r"\bSPEC\b|\bSPEC\.md\b")),
    ("a path outside the repository", re.compile(r"\.\./shared\b|/work/shared\b")),
    ("an absolute path of a development machine", re.compile(r"(?<![\w.~<-])/(?:work|root|home)/")),
]
DOC_WORDS = [  # in README.md and docs/ only: scripts may use /tmp, a document never should
    ("an absolute path", re.compile(r"(?<![\w.~<-])/tmp/")),
]
NAME = re.compile(r"(?i)(?:stop|round|session|issue)[_-]?\d+|session|issue")
ALLOWED = {  # (file, the exact text on the line) where a word means something else
    ("tests/test_feedforward_train.py", 'scope="session"'),  # pytest's fixture scope
}


def is_doc(path: str) -> bool:
    return path == "README.md" or path.startswith("docs/")


def problems(path: str, text: str) -> list[str]:
    """`path:line: what` for each line of `text` (the file at `path`) that breaks the rules, and the name itself."""
    found = [f"{path}: the file name tells of development"] if NAME.search(path) else []
    rules = WORDS + (DOC_WORDS if is_doc(path) else [])
    for number, line in enumerate(text.splitlines(), 1):
        if any(file == path and allowed in line for file, allowed in ALLOWED):
            continue
        found += [f"{path}:{number}: {what}: {line.strip()[:120]}" for what, pattern in rules if pattern.search(line)]
    return found


def tracked_text_files() -> list[tuple[str, str]]:
    proc = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("not a git checkout: the tracked files are git's list")
    files = []
    for path in filter(None, proc.stdout.decode().split("\0")):
        try:
            data = (ROOT / path).read_bytes()
        except OSError:  # listed but not in the working tree (deleted, not yet committed)
            continue
        if b"\0" in data:
            continue  # binary: an image, a checkpoint
        try:
            files.append((path, data.decode("utf-8")))
        except UnicodeDecodeError:
            continue
    return files


def test_tracked_text_files_speak_of_the_project_only():
    files = tracked_text_files()
    assert len(files) > 50 and any(path == "README.md" for path, _ in files)
    found = [p for path, text in files if path != SELF for p in problems(path, text)]
    assert found == [], "\n".join(found)


@pytest.mark.parametrize("path, line", [
    ("pii/core/param.py", "# as in " + "stop 19, the crops"),
    ("README.md", "Measured in the third " + "session on an H100"),
    ("tests/test_resume.py", '"""' + "Issue 9.1: resumed with fewer stages"),
    ("conf/experiment/fast.yaml", "# " + "today's recipe"),
    ("scripts/gpu_check.sh", "# on a " + "lent machine OUT is empty"),
    ("docs/gpu.md", "What a " + "later run could try: probing at the step's shape"),
    ("pii/eval/judge.py", '"""Judged quality (' + 'SPEC section 4)'),
    ("README.md", "the papers in " + "../shared/papers"),
    ("docs/results/leaderboard/leaderboard.json", '  "' + '/work/wt-m2/outputs/sweeps/x/0_pii"'),
    ("docs/performance.md", "python invert.py output_dir=" + "/tmp/run"),
])
def test_the_checker_rejects_a_planted_line(path, line):
    text = f"first line\n{line}\nlast line\n"
    assert [p.split(": ")[0] for p in problems(path, text)] == [f"{path}:2"]


def test_the_checker_rejects_a_development_file_name_and_keeps_legitimate_uses():
    assert problems("docs/results/gpu_h100_" + "stop20/gpu.txt", "") != []
    assert problems("docs/results/benchmark_" + "session.json", "") != []
    assert problems("scripts/gpu_check.sh", "SITE=${SITE:-/tmp/pii-site}") == []  # /tmp in a script is its business
    assert problems("tests/test_feedforward_train.py", '@pytest.fixture(scope="session")') == []
    assert problems("tests/test_other.py", '@pytest.fixture(scope="session")') != []  # allowed where listed only
    assert problems("docs/gpu.md", "the paper run stops after 7 stages; loss rounds to 0.000") == []
