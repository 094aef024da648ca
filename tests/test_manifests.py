"""Every stored result's command still composes. Each manifest.json under docs/ (found by walking the
folder) names, per file, the command that made it; each command in it is read as a shell reads it and
checked without running anything:

- `python invert.py ...` / `python train_invert.py ...`: composed against conf/ by the entry point's own
  preflight (pii.run.cli.preflight: Hydra's grammar, the schema's types, every job of a `-m` sweep),
  then range-checked (check_invert and the stage sizes; check_train_invert). What depends on the
  machine (the device, files named) is left out: a GPU result's command is checked on a CPU.
- `python scripts/<name>.py ...`: parsed by that script's own argparse parser (its `parser()`), then
  its Hydra overrides composed as invert.py's, and robust_claim's `--feedforward` as train_invert's.
- `make <target>`: the Makefile has the target, and the invert.py arguments of its recipe compose.
- `[bash] scripts/<name>.sh ...`: the script exists, bash reads it (`bash -n`), it takes that many
  arguments, and every variable set before it is one it reads (PARTS: parts it defines).
- `NAME=value` before a command: a variable the command's code reads, or torch's own (OpenMP's thread
  count, oneDNN's and ATen's instruction sets: pii.models.cpu.DISPATCH_VARIABLES); `taskset -c <core>`.

A manifest's command may stand for several: `;` separates commands, text around them (in parentheses,
after a comma) is a note, `<...>` and `...` stand for values the entry's note names (the key must still
exist), `[a | b]` is one of the alternatives and `[a]` is with or without `a`.
"""

import contextlib
import importlib.util
import io
import itertools
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from conftest import ROOT
from omegaconf import DictConfig, OmegaConf

from pii import CONF_DIR
from pii.errors import ConfigError
from pii.feedforward.config import SEARCHPATH, TRAIN_INVERT_CONF_DIR
from pii.models.cpu import DISPATCH_VARIABLES

DOCS = ROOT / "docs"
STAND_IN = "STAND_IN"  # what a placeholder of a command becomes
PLACEHOLDER = re.compile(r"<[^<>]*>|(?<!\S)\.\.\.(?!\S)")
# a command starts at `python <file>.py`, `[bash] <file>.sh` or `make <target>`, after text or a separator
START = re.compile(r"(?<![^\s;:(])(?:python (?P<python>\S+\.py)|(?:bash )?(?P<shell>\S+\.sh)|make (?P<make>[\w-]+))"
                   r"(?=\s|$)")
PREFIX = re.compile(r"(?:(?:[A-Z][A-Z0-9_]*=(?:\"[^\"]*\"|'[^']*'|\S+)|taskset -c \S+)\s+)*$")  # just before a start
END = re.compile(r"\s\(|\)|;|, ")  # where a command's arguments end: a note in parentheses, the next command, prose
CHOICE = re.compile(r"(?<=\s)\[([^\[\]]*)\](?=\s|$)")
TORCH_VARIABLES = {"OMP_NUM_THREADS", *DISPATCH_VARIABLES}


@dataclass(frozen=True)
class Command:
    kind: str  # python, shell or make
    target: str  # the file, or the make target
    env: tuple[tuple[str, str], ...]
    args: tuple[str, ...]

    def __str__(self) -> str:
        head = {"python": ["python"], "make": ["make"], "shell": []}[self.kind]
        return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in self.env), shlex.join([*head, self.target, *self.args])])


def manifests() -> list[Path]:
    return sorted(DOCS.rglob("manifest.json"))


def entries() -> list[tuple[str, str]]:
    """(manifest: file, command) of every entry of every manifest."""
    found = []
    for manifest in manifests():
        for name, entry in json.loads(manifest.read_text())["files"].items():
            found.append((f"{manifest.parent.relative_to(ROOT).as_posix()}: {name}", entry["command"]))
    return found


def commands(text: str) -> list[Command]:
    """The commands a manifest's `command` names, each alternative of a [a | b] on its own."""
    text = PLACEHOLDER.sub(STAND_IN, text)
    found = []
    for start in START.finditer(text):
        env = shlex.split(PREFIX.search(text[:start.start()]).group())  # NAME=value, taskset -c <core>
        end = END.search(text, start.end())
        rest = text[start.end():end.start() if end else len(text)]
        kind = next(k for k in ("python", "shell", "make") if start.group(k))
        pairs = tuple(tuple(v.split("=", 1)) for v in env if "=" in v)
        for args in alternatives(rest):
            found.append(Command(kind, start.group(kind), pairs, tuple(args)))
    return found


def alternatives(rest: str) -> list[list[str]]:
    """`rest` with each [a | b] replaced by each of a, b ([a]: a, or nothing), as argument lists."""
    choices = [[alt.strip() for alt in m.group(1).split("|")] for m in CHOICE.finditer(rest)]
    choices = [c if len(c) > 1 else [c[0], ""] for c in choices]
    parts = CHOICE.split(rest)[::2]  # the text between the brackets
    return [shlex.split("".join(itertools.chain.from_iterable(itertools.zip_longest(parts, picked, fillvalue=""))))
            for picked in itertools.product(*choices)]


def without_stand_ins(overrides) -> tuple[list[str], list[str]]:
    """(the overrides to compose, the keys whose value is a stand-in): a lone stand-in is dropped."""
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides if o.endswith(f"={STAND_IN}")]
    kept = [o for o in overrides if o != STAND_IN and not o.endswith(f"={STAND_IN}")]
    return kept, keys


def check_keys(cfg, keys: list[str], conf_dirs: list[Path]) -> None:
    """A key given a stand-in still exists: a value of the config or a config group."""
    for key in keys:
        parent, _, last = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        value = isinstance(node, DictConfig) and last in node.keys()  # keys(): one whose value is ??? too
        assert value or any((d / key).is_dir() for d in conf_dirs), f"{key}=<...> names a key that no longer exists"


def invert_job(cfg, overrides) -> None:
    from pii.run import build
    from pii.run.config import check_invert, check_stages

    check_invert(cfg)
    check_stages(cfg, [stage.size for stage in build.stages(cfg)])


def train_invert_job(cfg, overrides) -> None:
    from pii.feedforward.config import check_train_invert

    check_train_invert(cfg)


def preflight(args: list[str], train_invert: bool = False) -> None:
    """Compose `invert.py <args>` (train_invert.py's) and check every job, as the entry point does first."""
    from pii.run.cli import preflight as entry_preflight
    from pii.run.sweep import register_plugins

    register_plugins()  # the sweeper of `-m`, as invert.py registers it
    args, keys = without_stand_ins(args)
    if train_invert:
        cfg = entry_preflight([*args, SEARCHPATH], TRAIN_INVERT_CONF_DIR, "config", train_invert_job)
        check_keys(cfg, keys, [Path(TRAIN_INVERT_CONF_DIR), Path(CONF_DIR)])
    else:
        cfg = entry_preflight(args, CONF_DIR, "config", invert_job)
        check_keys(cfg, keys, [Path(CONF_DIR)])
    assert cfg is not None, f"{args}: not a command line that runs (a flag of Hydra's own)"


def script_parser(path: Path):
    """scripts/<name>.py's argparse parser, from its `parser()`; the module is imported, not run."""
    spec = importlib.util.spec_from_file_location(f"scripts_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # as when it runs: its folder first (robust_claim imports digits_claim)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    assert hasattr(module, "parser"), f"{path.name} exposes no parser()"
    return module.parser()


def check_python(command: Command) -> None:
    path = ROOT / command.target
    assert path.is_file(), f"{command.target} does not exist"
    if command.target == "invert.py":
        return preflight(list(command.args))
    if command.target == "train_invert.py":
        return preflight(list(command.args), train_invert=True)
    assert path.parent == ROOT / "scripts", f"{command.target}: not an entry point nor a script of scripts/"
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = script_parser(path).parse_intermixed_args(list(command.args))
    except (SystemExit, ConfigError) as err:
        said = str(err) if isinstance(err, ConfigError) else stderr.getvalue().strip().splitlines()[-1]
        pytest.fail(f"{command.target} refuses its arguments: {said}")
    if command.target == "scripts/frontier.py":
        return frontier_sweeps(args)
    if getattr(args, "overrides", None):
        preflight(args.overrides)
    if getattr(args, "feedforward", None):
        preflight(shlex.split(args.feedforward), train_invert=True)


def frontier_sweeps(args) -> None:
    """scripts/frontier.py: each budget's invert.py sweep, as the script plans it (pii.run.frontier.planned)."""
    from pii.run.frontier import SETTINGS, planned, settings

    if args.report:
        return
    for _, argv in planned(args, settings(args.budgets or SETTINGS), Path("sweeps")):
        preflight([a for a in argv if not a.startswith("hydra.sweep.dir=")])


def make_recipe(target: str) -> list[str]:
    """The recipe lines of a Makefile target."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    heads = [i for i, line in enumerate(lines) if re.match(rf"{re.escape(target)}\s*:", line)]
    assert heads, f"the Makefile has no target {target!r}"
    recipe = []
    for line in lines[heads[0] + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def check_make(command: Command) -> None:
    for line in make_recipe(command.target):
        words = shlex.split(line)
        if any(w.endswith("invert.py") for w in words):
            at = next(i for i, w in enumerate(words) if w.endswith("invert.py"))
            args = [w for w in words[at + 1:] if not w.startswith("$(")]  # $(ARGS): what the user adds
            preflight([*args, *command.args], train_invert=words[at].endswith("train_invert.py"))


def check_shell(command: Command) -> None:
    path = ROOT / command.target
    assert path.is_file(), f"{command.target} does not exist"
    text = path.read_text()
    syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    # what the script itself takes: its positional parameters outside the functions it defines
    top = re.sub(r"(?ms)^\w+\(\)\s*\{.*?^\}", "", text)
    if not re.search(r'"\$@"|\$\{@', top):
        takes = max((int(n) for n in re.findall(r"\$\{?(\d)", top)), default=0)
        assert len(command.args) <= takes, f"{command.target} takes {takes} arguments, given {list(command.args)}"
    for name, value in command.env:
        assert re.search(rf"\$\{{?{name}\b", text), f"{command.target} does not read {name}"
        if name == "PARTS":
            parts = set(re.findall(r"^part (\w+)", text, re.M))
            assert set(value.split()) <= parts, f"PARTS={value!r}: {command.target}'s parts are {sorted(parts)}"


@cache
def code_text() -> str:
    return "\n".join(p.read_text() for p in sorted((ROOT / "pii").rglob("*.py")))


def check_env(command: Command) -> None:
    """Each variable set before a python command is torch's own or read by the project's code."""
    if command.kind != "python":
        return
    own = code_text() + (ROOT / command.target).read_text()
    for name, _ in command.env:
        assert name in TORCH_VARIABLES or f'"{name}"' in own, f"{name}: a variable nothing reads"


CHECKS = {"python": check_python, "make": check_make, "shell": check_shell}


@cache
def verdict(command: Command) -> str | None:
    """None if `command` composes, else why not (one check per distinct command, however often it is named)."""
    try:
        check_env(command)
        CHECKS[command.kind](command)
    except ConfigError as err:
        return f"{command}: error: {err}"
    except (AssertionError, pytest.fail.Exception) as err:
        return f"{command}: {err}"
    return None


def test_manifests_are_found_and_each_names_a_command():
    found = manifests()
    assert DOCS / "results" / "leaderboard" / "manifest.json" in found and DOCS / "figures" / "manifest.json" in found
    bare = [where for where, command in entries() if not commands(command)]
    assert bare == [], "entries whose command names no command this test can read"


@pytest.mark.parametrize("where,command", entries(), ids=[where for where, _ in entries()])
def test_each_stored_command_composes_with_the_current_conf(where, command):
    bad = [why for c in commands(command) if (why := verdict(c))]
    assert bad == [], f"{where}: " + "; ".join(bad)


def test_reading_a_command_splits_commands_placeholders_and_alternatives():
    text = ("OMP_NUM_THREADS=1 taskset -c <core> python invert.py -m experiment=fast seed=<s> "
            "[schedule.precision=fp32 | compile=false | ]; make run  (python scripts/report.py <dir>), "
            "then PARTS=\"tests paper\" scripts/gpu_check.sh OUT")
    assert [str(c) for c in commands(text)] == [
        "OMP_NUM_THREADS=1 python invert.py -m experiment=fast seed=STAND_IN schedule.precision=fp32",
        "OMP_NUM_THREADS=1 python invert.py -m experiment=fast seed=STAND_IN compile=false",
        "OMP_NUM_THREADS=1 python invert.py -m experiment=fast seed=STAND_IN",
        "make run", "python scripts/report.py STAND_IN", "PARTS='tests paper' scripts/gpu_check.sh OUT"]
    assert [c.args for c in commands("python invert.py [augmentation.color_shift=null] seed=0")] == [
        ("augmentation.color_shift=null", "seed=0"), ("seed=0",)]


@pytest.mark.parametrize("command,why", [
    ("python invert.py experiment=nonexistent", "experiment"),
    ("python invert.py -m experiment=fast seed=0,abc", "seed"),
    ("python invert.py recipe=<method>", "recipe"),
    ("python train_invert.py precision=fp32", "precision"),
    ("python scripts/benchmark.py --no-such-flag experiment=pii", "--no-such-flag"),
    ("python scripts/benchmark_quality.py schedule.steps=0", "schedule.steps"),
    ("python scripts/robust_claim.py --feedforward schedule.nothing=1", "schedule.nothing"),
    ("NO_SUCH_VARIABLE=1 python invert.py", "NO_SUCH_VARIABLE"),
    ("make nothing", "nothing"),
    ("PARTS=nothing scripts/gpu_check.sh OUT", "PARTS"),
    ("scripts/gpu_check.sh OUT extra", "takes 1 arguments"),
])
def test_a_command_that_no_longer_composes_fails_by_name(command, why):
    (read,) = commands(command)
    verdict.cache_clear()
    assert why in (verdict(read) or "")


def test_make_run_composes_and_every_script_exposes_its_parser():
    assert verdict(Command("make", "run", (), ())) is None  # the Makefile's `invert.py experiment=fast`
    for path in sorted((ROOT / "scripts").glob("*.py")):
        assert script_parser(path).prog, path.name
