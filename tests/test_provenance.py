"""pii.eval.provenance: what a result records about where it comes from."""

import json
import subprocess
from pathlib import Path

from pii.eval import provenance


def test_record_writes_each_file_into_its_folders_manifest_and_replaces_an_entry(tmp_path, monkeypatch):
    for name in provenance.DISPATCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "a.json").write_text("{}")
    provenance.record([tmp_path / "a.json", tmp_path / "b.md"], argv=["scripts/leaderboard.py", "outputs/sweeps/x"])
    entries = json.loads((tmp_path / provenance.MANIFEST).read_text())["files"]
    assert set(entries) == {"a.json", "b.md"}
    entry = entries["a.json"]
    assert entry["command"] == "python scripts/leaderboard.py outputs/sweeps/x"
    assert entry["hardware"].endswith(f"torch {provenance.torch.__version__}") and entry["date"].endswith("Z")
    head = subprocess.run(["git", "-C", str(provenance.REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a checkout: its commit, marked when tracked files changed since
        assert entry["commit"].split("+")[0] == head.stdout.strip()
    provenance.record([tmp_path / "a.json"], argv=["x.py"], hardware="NVIDIA H100", commit="abc1234")
    entries = json.loads((tmp_path / provenance.MANIFEST).read_text())["files"]
    assert entries["a.json"]["hardware"] == "NVIDIA H100" and entries["a.json"]["commit"] == "abc1234"
    assert entries["b.md"] == entry  # the other entry kept


def test_the_command_names_the_instruction_set_it_was_held_to(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert provenance.command(["scripts/benchmark.py", "experiment=pii"]) == (
        "ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python scripts/benchmark.py experiment=pii")


def test_commit_outside_git_is_the_given_one_or_unknown(monkeypatch, tmp_path):
    monkeypatch.setattr(provenance, "REPO", tmp_path)  # a copied tree, no .git above it
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.delenv("PII_COMMIT", raising=False)
    assert provenance.commit() == "unknown"
    monkeypatch.setenv("PII_COMMIT", "4badf6e")
    assert provenance.commit() == "4badf6e"


def test_paths_in_results_are_relative(tmp_path, monkeypatch):
    sweep = tmp_path / "outputs" / "sweeps" / "2026_methods"
    assert provenance.portable(sweep / "0_pii", [tmp_path / "elsewhere", sweep]) == "2026_methods/0_pii"
    assert provenance.portable(tmp_path / "other" / "run", [sweep]) == "run"
    monkeypatch.chdir(tmp_path)
    command = provenance.command([str(provenance.REPO / "scripts" / "benchmark.py"), "--json",
                                  str(tmp_path / "out" / "b.json"), "experiment=fast"])
    assert command == "python scripts/benchmark.py --json out/b.json experiment=fast"
    assert str(Path(tmp_path)) not in command
