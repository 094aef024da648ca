"""Bad input at the entry points, as a new user would type it.

Every row of BAD runs the real entry point in a process of its own (conftest.run_cli: forked from a
server that has imported torch, the script run as __main__): `invert.py`, `train_invert.py`,
`scripts/judge.py`, `scripts/report.py`, `scripts/leaderboard.py`, `scripts/digits_claim.py`. Each must
exit with code 2, print no traceback, print at most 2 lines on stderr that name the key or file, and
leave every file under the test's directory byte-identical (an earlier finished run, a stopped one,
damaged copies of them, a sweep, weights files): the checks run before anything is written, and a
new run is never started into a directory that holds one. Most rows fail in pii.run.cli.preflight
before the run's model is built; the rows of a valid tiny run (TINY) are refused just before Hydra starts.

The other tests: two runs started into one directory, a write refused half-way (a file-size limit),
non-finite weights and losses, Ctrl-C in a script, every numeric key's range.
"""

import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, Payload, as_hydra_run, file_bytes, run_cli, stopped_after_stage
from omegaconf import OmegaConf

from pii.errors import ConfigError
from pii.feedforward.config import compose_train_invert
from pii.run import runner
from tests.tiny import RANDOM_TINY, tiny_cfg

ENTRY = {"invert": ["invert.py"], "train": ["train_invert.py"], "judge": ["scripts/judge.py"],
         "report": ["scripts/report.py"], "digits": ["scripts/digits_claim.py"],
         "leaderboard": ["scripts/leaderboard.py"], "benchmark": ["scripts/benchmark.py"]}
MODEL = [a for a in RANDOM_TINY if not a.startswith("model.weights=")]  # the tiny test model, weights named per row
TINY = " ".join([*RANDOM_TINY, "verifier=none"])  # a valid tiny run: refused only for where it would write
TINY_JUDGE = ("verifier=timm verifier.timm.name=test_efficientnet verifier.timm.weights=random "
              "verifier.timm.num_classes=10 verifier.timm.input_size=32 device=cpu")

# (entry point, arguments ({d} = the test's directory), what stderr must name)
BAD = [
    ("invert", "schedule.lr=-0.01", "schedule.lr"),
    ("invert", "schedule.lr=0", "schedule.lr"),
    ("invert", "schedule.lr=abc", "schedule.lr"),
    ("invert", "schedule.betas=[1.5,0.99]", "schedule.betas"),
    ("invert", "betas=[1.5,0.99]", "betas"),
    ("invert", "seed=abc", "seed"),
    ("invert", "augmentation.ensemble.size=abc", "augmentation.ensemble.size must be"),
    ("invert", "augmentation.ensemble.size=1.5", "augmentation.ensemble.size must be"),
    ("invert", "augmentation.ensemble.size=0", "augmentation.ensemble.size must be"),
    ("invert", "augmentation.jitter.max_shift=abc", "augmentation.jitter.max_shift must be"),
    ("invert", "augmentation.jitter.max_shift=-1", "augmentation.jitter.max_shift must be"),
    ("invert", "+augmentation.jitter.max_shfit=3", "augmentation.jitter (pii.core.augment.Jitter): got an unexpected "
     "keyword argument 'max_shfit'"),
    ("invert", "augmentation.jitter._target_=pii.core.augment.Jiter", "augmentation.jitter._target_"),
    ("invert", "augmentation.jitter=8", "augmentation.jitter.max_shift=8"),
    ("invert", "augmentation.color_shift.alpha=-1", "augmentation.color_shift.alpha must be"),
    ("invert", "experiment=fast augmentation.ensemble.box=[0.5]", "augmentation.ensemble.box must be"),
    ("invert", "experiment=fast augmentation.ensemble.box=[0,1]", "augmentation.ensemble.box must be"),
    ("invert", "experiment=lucent augmentation.scale_rotate.scale=[1.1,0.9]", "augmentation.scale_rotate.scale must be"),
    ("invert", "experiment=lucent augmentation.scale_rotate.degrees=-5", "augmentation.scale_rotate.degrees must be"),
    ("invert", "experiment=lucent augmentation.pad.pixels=-2", "augmentation.pad.pixels must be"),
    ("invert", "experiment=maco augmentation.noise.std=-0.1", "augmentation.noise.std must be"),
    # the flat keys each transform's key replaced: one line naming the new key
    ("invert", "augmentation.ensemble_size=8", "augmentation.ensemble.size=8"),
    ("invert", "augmentation.alpha=0.5", "augmentation.color_shift.alpha=0.5"),
    ("invert", "augmentation.color_shift=false", "augmentation.color_shift=null"),
    ("invert", "experiment=fast augmentation.crops=null", "augmentation.ensemble=null"),
    ("invert", "optimizer=sgd", "optimizer/sgd"),
    ("invert", "schedule.optimizer=nadam", "schedule.optimizer"),
    ("invert", "param._target_=pii.core.param.Nothing", "param._target_"),
    ("invert", "param=fourier param.decay=-1", "param.decay"),
    ("invert", "model.input_size=0", "model.input_size"),
    ("invert", "model.input_size=-5", "model.input_size"),
    ("invert", "model.std=[0,1,1]", "model.std"),
    ("invert", "device=meta", "device"),
    ("invert", "precision=fp16", "precision"),
    ("invert", "class_id=[980,980,1]", "class_id"),
    ("invert", "class_id=5000", "class_id"),
    ("invert", "class_id=abc", "class_id"),
    ("invert", "schedule.stages=0", "schedule.stages"),
    ("invert", "schedule.steps=-5", "schedule.steps"),
    ("invert", "loss.tv_weight=-1", "loss.tv_weight"),
    ("invert", "log_every=0", "log_every"),
    ("invert", "augmentation.chunk=0", "augmentation.chunk"),
    ("invert", "compile=maybe", "compile"),
    ("invert", "model=no_such_model", "model/no_such_model"),
    ("invert", "foo=1", "foo"),
    ("invert", "init_from={d}/truncated_png class_id=[1,2]", "truncated_png/1_class-1.png"),
    ("invert", "init_from={d}/missing_png class_id=[1,2]", "missing_png/1_class-1.png"),
    ("invert", "init_from={d}/earlier", "class 980"),
    ("invert", "init_from={d}/bad_metrics", "bad_metrics/metrics.json"),
    ("invert", "init_from={d}/nowhere", "nowhere"),
    ("invert", "resume={d}/truncated_checkpoint", "truncated_checkpoint/checkpoint.pt"),
    ("invert", "resume={d}/pickle_checkpoint", "could run code"),
    ("invert", "resume={d}/stopped schedule.stages=1", "schedule.stages=1"),
    ("invert", "resume={d}/nowhere", "nowhere"),
    ("invert", "resume={d}/stopped init_from={d}/earlier", "init_from"),
    ("invert", "model.weights={d}/nowhere.pth", "nowhere.pth"),
    ("invert", "model.weights={d}/earlier", "is a directory"),
    ("invert", "-m augmentation.ensemble.size=1,abc,0 hydra.sweep.dir={d}/sweep_out",
     "job 1 (augmentation.ensemble.size=abc)"),
    ("invert", "hydra.run.dir={d}/earlier/grid.png/run", "grid.png"),
    # a new run where one already is, finished or stopped, or where other files are; a sweep likewise
    ("invert", f"{TINY} hydra.run.dir={{d}}/earlier", "continue it with resume={d}/earlier"),
    ("invert", f"{TINY} hydra.run.dir={{d}}/stopped", "continue it with resume={d}/stopped"),
    ("invert", f"{TINY} hydra.run.dir={{d}}/only_truncated_png", "is not empty (it holds 1_class-1.png)"),
    ("invert", f"-m {TINY} seed=0,1 hydra.sweep.dir={{d}}/sweep", "hydra.sweep.dir"),
    # directories and names the system refuses
    ("invert", f"{TINY} hydra.run.dir={{d}}/{'x' * 300}/run", "File name too long"),
    ("invert", f"{TINY} hydra.run.dir=/proc/pii-test/run", "/proc/pii-test"),
    ("invert", "resume={d}/bad_yaml", "bad_yaml/.hydra/config.yaml"),
    # weights files: read before the run, with the key that names them
    ("invert", f"{' '.join(MODEL)} model.weights={{d}}/weights/nan.pth", "nan or inf in 1 tensors: conv_stem.weight"),
    ("invert", f"{' '.join(MODEL)} model.weights={{d}}/weights/not_tensors.pth", "values that are not tensors"),
    ("invert", f"{' '.join(MODEL)} model.weights={{d}}/weights/list.pth", "list.pth' is damaged or not a checkpoint"),
    ("invert", "model.weights={d}/earlier/metrics.json", "damaged or not a checkpoint"),
    ("invert", "verifier.efficientnet_lite2.weights={d}/nowhere.pth", "verifier.efficientnet_lite2.weights file"),
    # ranges that follow from what a key means
    ("invert", "experiment=fast augmentation.ensemble.box=[0.5,1.5]", "box must be [low, high] with 0 < low <= high <= 1"),
    ("invert", "schedule.stages=200", "schedule.stages=200 gives stages of"),
    ("invert", "experiment=lucent augmentation.shift.pixels=300", "augmentation.shift.pixels=300"),
    ("invert", "experiment=lucent augmentation.scale_rotate.degrees=270", "degrees must be a number in [0, 180]"),
    ("invert", "augmentation.color_shift.beta=100", "beta must be a number in [0, 80]"),
    ("invert", "model.mean=[2,0,0]", "model.mean"),
    ("invert", "schedule.lr=nan", "schedule.lr must be a finite number"),
    ("invert", "schedule.lr=100", "schedule.lr must be <= 10"),
    ("invert", "seed=-1", "seed"),
    ("invert", "seed=99999999999", "seed"),
    ("invert", "param=fourier param.decay=-1", "param.decay"),
    ("invert", "param=fourier param.sd=0", "param.sd"),
    ("invert", "param=maco param.spectrum={d}/nowhere.npy", "param.spectrum"),
    ("invert", "-m param=fourier param.decay=1,-1 hydra.sweep.dir={d}/sweep_out", "job 1 (param=fourier param.decay=-1)"),
    # Hydra's grammar: how to quote
    ("invert", "init_from={d}/x=y,z", "'init_from=\"{d}/x=y,z\"'"),
    ("invert", "model.weights={d}/a(1).pth", "'model.weights=\"{d}/a(1).pth\"'"),
    ("train", "schedule.batch_size=0", "schedule.batch_size"),
    ("train", "grid_images=0", "grid_images"),
    ("train", "conditions=[]", "conditions"),
    ("train", "conditions=[pixels]", "conditions"),
    ("train", "schedule.steps=0", "schedule.steps"),
    ("train", "schedule.steps=abc", "schedule.steps"),
    ("train", "generator.resolution=48", "generator.resolution"),
    ("train", "mode=explore", "mode"),
    ("train", "classifier.epochs=0", "classifier.epochs"),
    ("train", "data._target_=no.such.builder", "data._target_"),
    ("train", "+data.colour=1", "colour"),
    ("train", "-m schedule.steps=2,0 hydra.sweep.dir={d}/sweep_out", "job 1 (schedule.steps=0)"),
    ("train", "hydra.run.dir={d}/earlier/grid.png/run", "grid.png"),
    ("train", "hydra.run.dir={d}/earlier", "continue it with resume=true hydra.run.dir={d}/earlier"),
    ("train", "resume=true hydra.run.dir={d}/only_truncated_png", "no generator checkpoint"),
    ("train", "resume=true hydra.run.dir={d}/earlier", "is an invert.py run"),
    ("train", "resume=true hydra.run.dir={d}/train_damaged", "train_damaged/logits/checkpoint.pt"),
    ("train", "resume=true schedule.steps=5 hydra.run.dir={d}/train_ahead", "is at step 10, past schedule.steps=5"),
    ("train", "classifier.checkpoint={d}/nowhere.safetensors", "classifier.checkpoint"),
    ("train", "mode=analyse", "run_dir"),
    ("train", "mode=analyse run_dir={d}/earlier", "run_dir"),
    ("train", "schedule.lr_g=5", "schedule.lr_g"),
    ("train", "data.test_fraction=1.5", "data.test_fraction"),
    ("train", "seed=-3", "seed"),
    ("judge", "", "the following arguments are required: directory"),
    ("judge", "{d}/nowhere", "nowhere"),
    ("judge", "{d}/earlier/metrics.json", "metrics.json"),
    ("judge", "{d}/only_truncated_png", "only_truncated_png"),
    ("judge", "{d}/earlier verifier=none", "verifier"),
    ("judge", "{d}/earlier device=meta", "device"),
    ("judge", f"{{d}}/many_ids {TINY_JUDGE}", "1000 class ids are outside them: 10, 11, 12 and 997 more"),
    ("leaderboard", "{d}/earlier --out {d}/earlier/grid.png/x", "--out"),
    ("report", "", "multirun_dir"),
    ("report", "{d}/nowhere", "nowhere"),
    ("report", "{d}/earlier", "earlier"),
    ("report", "{d}/sweep --cell=abc", "--cell"),
    ("digits", "--skip-train --out {d} --architectures cnn,transformer", "--architectures"),
    ("digits", "--skip-train --out {d} --methods pii,dream", "--methods"),
]

# Files read back, whoever wrote them; records that must not lie; scripts that must refuse before they
# work; messages that name the key. Each is exactly one line on stderr.
GUARDED = [
    # the resume checkpoint, entry by entry
    ("invert", "resume={d}/ckpt_rng_list", "its rng is list"),
    ("invert", "resume={d}/ckpt_rng_float", "its rng is Tensor torch.float32"),
    ("invert", "resume={d}/ckpt_stage_negative", "its stage is -1, not a stage index 0..2"),
    ("invert", "resume={d}/ckpt_stage_past", "its stage is 7, not a stage index 0..2"),
    ("invert", "resume={d}/ckpt_stage_text", "its stage is 'two'"),
    ("invert", "resume={d}/ckpt_image_nan", "its image holds nan or inf"),
    ("invert", "resume={d}/ckpt_seconds_negative", "its seconds are -5.0"),
    ("invert", "resume={d}/ckpt_param_int", "its param is not a state of finite float tensors"),
    ("invert", "resume={d}/ckpt_image_size", "its image is [3, 24, 24], not stage 1's 3 x 16 x 16 px"),
    ("invert", "resume={d}/ckpt_other_classes", "holds classes 3, 4, not the run's 1, 2"),
    # a run of the other program
    ("invert", "resume={d}/train_ahead", "is a train_invert.py run; continue it with: python train_invert.py "
     "resume=true hydra.run.dir={d}/train_ahead"),
    ("invert", "resume={d}/not_a_run_config", "it has no class_id or model"),
    ("train", "resume=true hydra.run.dir={d}/stopped", "is an invert.py run; continue it with: python invert.py "
     "resume={d}/stopped"),
    # train_invert resume=true with what its checkpoints were trained under changed
    ("train", "resume=true seed=3 schedule.steps=20 hydra.run.dir={d}/train_ahead", "seed=3 (the run has 0)"),
    ("train", "resume=true schedule.lr_g=0.002 schedule.steps=20 hydra.run.dir={d}/train_ahead", "schedule.lr_g=0.002"),
    ("train", "resume=true loss.pixel_l1=1.0 schedule.steps=20 hydra.run.dir={d}/train_ahead", "loss.pixel_l1=1.0"),
    ("train", "resume=true data.test_fraction=0.5 schedule.steps=20 hydra.run.dir={d}/train_ahead",
     "data.test_fraction=0.5"),
    # param.spectrum
    ("invert", "param=maco param.spectrum={d}/spectra/text.npy", "is not a .npy file"),
    ("invert", "param=maco param.spectrum={d}/spectra/archive.npz", "is not a .npy file"),
    ("invert", "param=maco param.spectrum={d}/spectra/nan.npy", "holds nan, inf or negative values"),
    ("invert", "param=maco param.spectrum={d}/spectra/negative.npy", "holds nan, inf or negative values"),
    ("invert", "param=maco param.spectrum={d}/spectra/strings.npy", "holds <U1 values"),
    ("invert", "param=maco param.spectrum={d}/spectra/objects.npy", "cannot be read (Object arrays"),
    ("invert", "param=maco param.spectrum={d}/spectra/truncated.npy", "cannot be read"),
    # messages that name the key
    ("invert", "verifier=timm", "verifier.timm.name is not set"),
    ("invert", "model=timm", "model.name is not set"),
    ("invert", f"{' '.join(MODEL)} model.weights={{d}}/weights/pickle.pth", "could run code"),
    ("invert", "verifier.efficientnet_lite2.weights={d}/weights/pickle.pth", "verifier.efficientnet_lite2.weights"),
    # scripts: refused before they measure or write anything
    ("benchmark", "--json {d}/earlier", "--json"),
    ("benchmark", "--json /proc/pii-test/b.json", "--json '/proc/pii-test/b.json' cannot be written"),
    ("benchmark", "--json {d}/earlier/grid.png/b.json", "--json"),
    ("benchmark", "--json {d}/bad_manifest/b.json", "bad_manifest/manifest.json"),
    ("leaderboard", "{d}/earlier --grid {d}/earlier", "--grid '{d}/earlier' is a directory"),
    ("leaderboard", "{d}/earlier --grid {d}/earlier/grid.png/x.jpg", "--grid"),
    ("leaderboard", "{d}/earlier --out {d}/bad_manifest", "bad_manifest/manifest.json"),
    ("leaderboard", "{d}/earlier --out {d}/md_is_a_dir", "md_is_a_dir/leaderboard.md' is a directory"),
    ("leaderboard", "{d}/earlier --cell 1000000", "--cell must be 8..512 px"),
    ("leaderboard", "{d}/earlier --cell 4", "--cell must be 8..512 px"),
    ("report", "{d}/sweep --cell 60000", "--cell must be 8..512 px"),
    ("report", "{d}/sweep --cell=0", "--cell must be 8..512 px"),
]


def cli(entry: str, args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return run_cli(*ENTRY[entry], *args, timeout=timeout)


def snapshot(root: Path) -> dict[Path, str]:
    """Every file under `root` and its hash: what must be byte-identical after a refused start."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def earlier(tmp_path_factory) -> Path:
    """An earlier finished tiny run, a stopped one, damaged copies of them, and a two-job sweep."""
    d = tmp_path_factory.mktemp("bad_inputs")
    runner.run(as_hydra_run(tiny_cfg(d / "earlier", "verifier=none"), d / "earlier"))
    with stopped_after_stage(0), pytest.raises(KeyboardInterrupt):
        runner.run(as_hydra_run(tiny_cfg(d / "stopped", "verifier=none"), d / "stopped"))
    for name in ("truncated_png", "missing_png", "bad_metrics"):
        shutil.copytree(d / "earlier", d / name)
    png = (d / "earlier" / "1_class-1.png").read_bytes()
    (d / "truncated_png" / "1_class-1.png").write_bytes(png[: len(png) // 2])
    (d / "missing_png" / "1_class-1.png").unlink()
    (d / "bad_metrics" / "metrics.json").write_text('{"classes": [')
    (d / "only_truncated_png").mkdir()
    (d / "only_truncated_png" / "1_class-1.png").write_bytes(png[: len(png) // 2])
    for name in ("truncated_checkpoint", "pickle_checkpoint"):
        shutil.copytree(d / "stopped", d / name)
    ckpt = (d / "stopped" / "checkpoint.pt").read_bytes()
    (d / "truncated_checkpoint" / "checkpoint.pt").write_bytes(ckpt[: len(ckpt) // 2])
    import pickle

    (d / "pickle_checkpoint" / "checkpoint.pt").write_bytes(pickle.dumps({"stage": Payload()}))
    for job in ("0_seed=0", "1_seed=1"):
        shutil.copytree(d / "earlier", d / "sweep" / job)
        (d / "sweep" / job / ".hydra" / "overrides.yaml").write_text(f"- {job.split('_', 1)[1]}\n")
    shutil.copytree(d / "stopped", d / "bad_yaml")
    (d / "bad_yaml" / ".hydra" / "config.yaml").write_text("model: [unclosed\n")
    (d / "train_damaged" / "logits").mkdir(parents=True)  # a train_invert run whose generator checkpoint is damaged
    (d / "train_damaged" / ".hydra").mkdir()
    (d / "train_damaged" / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (d / "train_damaged" / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    (d / "train_damaged" / "logits" / "checkpoint.pt").write_bytes(ckpt[: len(ckpt) // 2])
    shutil.copytree(d / "train_damaged" / ".hydra", d / "train_ahead" / ".hydra")  # its checkpoint is at step 10
    (d / "train_ahead" / "logits").mkdir()
    torch.save({"step": 10, **{key: {} for key in ("G", "D", "G_ema", "opt_g", "opt_d")}},
               d / "train_ahead" / "logits" / "checkpoint.pt")
    (d / "weights").mkdir()
    import timm

    state = timm.create_model("test_efficientnet", num_classes=10).state_dict()
    state["conv_stem.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, d / "weights" / "nan.pth")
    torch.save({"conv_stem.weight": 3, "note": "not weights"}, d / "weights" / "not_tensors.pth")
    torch.save([torch.zeros(1)], d / "weights" / "list.pth")
    (d / "many_ids").mkdir()  # 1000 images numbered past the judge's 10 classes
    tiny_png = (d / "earlier" / "1_class-1.png").read_bytes()
    for class_id in range(10, 1010):
        (d / "many_ids" / f"{class_id}_x.png").write_bytes(tiny_png)
    damaged_checkpoints(d)
    train_config = OmegaConf.to_container(compose_train_invert(["seed=0"]), resolve=False)
    train_config.pop("hydra", None)
    OmegaConf.save(OmegaConf.create(train_config), d / "train_ahead" / ".hydra" / "config.yaml")  # as Hydra saves it
    shutil.copytree(d / "stopped" / ".hydra", d / "not_a_run_config" / ".hydra")
    (d / "not_a_run_config" / ".hydra" / "config.yaml").write_text("seed: 0\n")
    spectra(d / "spectra")
    torch.save({"conv_stem.weight": Payload()}, d / "weights" / "pickle.pth")
    (d / "bad_manifest").mkdir()
    (d / "bad_manifest" / "manifest.json").write_text('{"files": ')
    (d / "md_is_a_dir" / "leaderboard.md").mkdir(parents=True)
    return d


def damaged_checkpoints(d: Path) -> None:
    """Copies of the stopped run whose checkpoint has one entry wrong: d/ckpt_<what>."""
    checkpoint = torch.load(d / "stopped" / "checkpoint.pt", weights_only=True)
    damage = {"rng_list": {"rng": [1, 2, 3]}, "rng_float": {"rng": checkpoint["rng"].float()},
              "stage_negative": {"stage": -1}, "stage_past": {"stage": 7}, "stage_text": {"stage": "two"},
              "image_nan": {"image": torch.full_like(checkpoint["image"], float("nan"))},
              "seconds_negative": {"seconds": -5.0}, "param_int": {"param": {"pixels": torch.zeros(2, dtype=torch.long)}},
              "image_size": {"image": torch.rand(2, 3, 24, 24)}, "other_classes": {"class_ids": [3, 4]}}
    for name, entries in damage.items():
        shutil.copytree(d / "stopped", d / f"ckpt_{name}")
        torch.save({**checkpoint, **entries}, d / f"ckpt_{name}" / "checkpoint.pt")


def spectra(folder: Path) -> None:
    """param.spectrum files that are not magnitude spectra."""
    import numpy as np

    folder.mkdir()
    (folder / "text.npy").write_text("0.1 0.2 0.3\n")
    np.savez(folder / "archive.npz", a=np.ones((3, 8, 5)))
    np.save(folder / "nan.npy", np.full((3, 8, 5), np.nan, dtype=np.float32))
    np.save(folder / "negative.npy", -np.ones((3, 8, 5), dtype=np.float32))
    np.save(folder / "strings.npy", np.full((3, 8, 5), "a"))
    np.save(folder / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    whole = folder / "whole.npy"
    np.save(whole, np.ones((3, 8, 5), dtype=np.float32))
    (folder / "truncated.npy").write_bytes(whole.read_bytes()[:100])
    whole.unlink()


@pytest.mark.parametrize("entry,args,names", BAD, ids=[f"{e}:{a}" for e, a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(earlier, entry, args, names):
    refused(earlier, entry, args, names, max_lines=1)


@pytest.mark.parametrize("entry,args,names", GUARDED, ids=[f"{e}:{a}" for e, a, _ in GUARDED])
def test_what_is_read_back_or_written_last_is_checked_first(earlier, entry, args, names):
    refused(earlier, entry, args, names, max_lines=1)


def refused(earlier: Path, entry: str, args: str, names: str, max_lines: int) -> None:
    """`entry args` exits 2 with at most `max_lines` lines on stderr naming `names`, no traceback, and
    every file under `earlier` byte-identical."""
    before = file_bytes(earlier)
    args = args.format(d=earlier).split()
    if entry == "invert" and not any(a.startswith(("hydra.run.dir", "resume=", "-m")) for a in args):
        args.append(f"hydra.run.dir={earlier / 'earlier'}")  # the earlier run's dir: it must stay untouched
    if entry == "train" and not any(a.startswith(("hydra.run.dir", "-m")) for a in args):
        args.append(f"hydra.run.dir={earlier / 'earlier'}")
    proc = run_cli(*ENTRY[entry], *args, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert 1 <= len(lines) <= max_lines, lines
    assert names.format(d=earlier) in proc.stderr, lines
    assert "this ran at load time" not in proc.stdout + proc.stderr
    assert file_bytes(earlier) == before


def test_duplicate_class_ids_are_refused_before_anything_runs(tiny_config):
    """class_id=[980,980,1] would write both 980 images to one file: refused."""
    from pii.errors import ConfigError
    from pii.run.config import check_invert

    with pytest.raises(ConfigError, match="class_id lists 980 twice"):
        runner.run(tiny_config("class_id=[980,980,1]"))
    with pytest.raises(ConfigError, match="class_id lists 1 twice"):
        check_invert(tiny_config("class_id=[1,2,1]"))


def broken_statistics(path: Path) -> str:
    """Weights of the tiny test model, all finite, with one BatchNorm's running variance below 0: the
    model gives nan from that layer on. Returns the BatchNorm's name."""
    import timm

    state = timm.create_model("test_efficientnet", num_classes=10).state_dict()
    name = next(key for key in state if key.endswith("running_var"))
    state[name][0] = -1.0
    torch.save(state, path)
    return name.removesuffix(".running_var")


def test_weights_that_give_nan_fail_in_the_run_and_its_log_says_where(tmp_path):
    """What can only be seen with the model built (its outputs) stops the run before any inversion:
    one line naming the layer; the new run's directory keeps .hydra/ and a log that ends with it."""
    weights = tmp_path / "weights.pth"
    layer = broken_statistics(weights)
    proc = cli("invert", [*MODEL, f"model.weights={weights}", "verifier=none", f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: model.weights {str(weights)!r}: model test_efficientnet gives nan or inf")
    assert f"first at layer {layer!r}" in line
    assert (tmp_path / "run" / "invert.log").read_text().strip().endswith(line)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".hydra", "invert.log"]


@pytest.mark.parametrize("fold", [True, False])
def test_nan_in_the_weights_or_their_outputs_stops_before_inverting(tmp_path, fold):
    """With the BatchNorm folding on and off: weights that hold nan are named by their tensor; finite
    weights whose outputs are nan by the first layer that gives them. Nothing is written."""
    import timm

    nan = tmp_path / "nan.pth"
    state = timm.create_model("test_efficientnet", num_classes=10).state_dict()
    state["bn1.weight"][0] = float("inf")
    torch.save(state, nan)
    with pytest.raises(ConfigError, match=r"holds nan or inf in 1 tensors: bn1.weight; the weights are damaged"):
        runner.run(tiny_cfg(tmp_path / "a", f"model.weights={nan}", f"fold_batchnorm={fold}", "verifier=none"))
    broken = tmp_path / "broken.pth"
    layer = broken_statistics(broken)
    with pytest.raises(ConfigError, match=f"gives nan or inf on an ordinary image, first at layer '{layer}'"):
        runner.run(tiny_cfg(tmp_path / "b", f"model.weights={broken}", f"fold_batchnorm={fold}", "verifier=none"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_diverging_inversion_stops_at_the_step_it_diverged():
    """A loss or an image that becomes nan or inf stops the run with the stage and step; the stage
    is not saved. (schedule.lr=1e37 is refused by the checks: the loop is driven directly.)"""
    from pii import models
    from pii.core.inversion import invert
    from pii.core.observers import Observer
    from pii.run import build

    class Stages(Observer):
        done = []

        def stage_done(self, index, stage, image):
            self.done.append(index)

    cfg = tiny_cfg("unused", "param=fourier", "schedule.lr=1e37", "precision=fp32")
    classifier = models.build(cfg.model, "cpu", **models.PLAIN)
    stages = build.stages(cfg)
    observer = Stages()
    with pytest.raises(ConfigError, match=r"became nan or inf at stage 1 of 3 \(16 px\), step \d+.*lower schedule.lr"):
        invert(classifier, [1, 2], build.augmentation(cfg), stages, build.loss(cfg, classifier), build.optimizer(cfg),
               observer, log_every=cfg.log_every, chunk=None, param=build.param(cfg, 2, "cpu"), seed=cfg.seed)
    assert observer.done == []


def test_metrics_and_every_json_are_strict(tmp_path):
    """No NaN literal in any JSON pii writes: a value that is not a number is null."""
    from pii.eval import results
    from pii.files import write_json
    from tests.tiny import made_up_result

    result = made_up_result({1: "1_class-1.png"})
    result.spectral_slope = float("nan")
    results.write(tmp_path / "metrics.json", result)
    write_json(tmp_path / "other.json", {"a": [float("inf"), 1.5]})

    def refuse(constant):
        raise AssertionError(f"{constant} in strict JSON")

    assert json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse)["spectral_slope"] is None
    assert json.loads((tmp_path / "other.json").read_text(), parse_constant=refuse) == {"a": [None, 1.5]}
    assert results.read(tmp_path / "metrics.json").spectral_slope is None


def test_judge_skips_a_damaged_png_and_judges_the_others(earlier, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(earlier / "earlier", runs / "good")
    shutil.copytree(earlier / "truncated_png", runs / "damaged")
    proc = run_cli("scripts/judge.py", runs, "device=cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if "skipped" in line]
    assert len(warnings) == 1 and "damaged/1_class-1.png" in warnings[0]
    judged = json.loads((runs / "judge.json").read_text())
    assert judged["overall"]["efficientnet_lite2"]["images"] == 3  # 2 good + 1 of the damaged run's 2


def test_report_shows_a_job_with_damaged_metrics_as_unfinished(earlier, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(earlier / "sweep", sweep)
    (sweep / "1_seed=1" / "metrics.json").write_text("{")
    shutil.copytree(earlier / "sweep" / "0_seed=0", sweep / "2_seed=2")
    (sweep / "2_seed=2" / ".hydra" / "overrides.yaml").write_text("- [seed=2\n")  # YAML that does not parse
    proc = cli("report", [str(sweep)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped" in proc.stderr and "1_seed=1/metrics.json" in proc.stderr
    assert "2_seed=2/.hydra/overrides.yaml" in proc.stderr and "Traceback" not in proc.stderr
    assert (sweep / "ablation_grid.png").is_file() and (sweep / "report.html").is_file()


def test_a_killed_run_is_continued_by_resume(earlier, tmp_path):
    """What the README promises: a stopped run keeps its finished stages and `resume=` finishes it."""
    stopped = tmp_path / "stopped"
    shutil.copytree(earlier / "stopped", stopped)
    assert torch.load(stopped / "checkpoint.pt", weights_only=True)["stage"] == 0
    proc = run_cli("invert.py", f"resume={stopped}", "device=cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (stopped / "metrics.json").is_file() and (stopped / "1_class-1.png").is_file()


def test_two_runs_started_into_one_directory(tmp_path):
    """One takes the directory's lock and finishes; the other is refused with one line and leaves
    the first one's files as that run wrote them."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    procs = {seed: subprocess.Popen([sys.executable, "invert.py", *RANDOM_TINY, "verifier=none", f"seed={seed}",
                                     f"hydra.run.dir={out}"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True) for seed in (1, 2)}
    errors = {seed: proc.communicate(timeout=600)[1] for seed, proc in procs.items()}
    codes = {seed: proc.returncode for seed, proc in procs.items()}
    assert sorted(codes.values()) == [0, 2], errors
    (winner,) = [seed for seed, code in codes.items() if code == 0]
    (refused,) = [seed for seed, code in codes.items() if code == 2]
    (line,) = errors[refused].strip().splitlines()
    assert "another run" in line or "already holds a run" in line, line
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["seed"] == winner and OmegaConf.load(out / ".hydra" / "overrides.yaml")[-1] == f"seed={winner}"
    assert {c["image"] for c in metrics["classes"]} <= {p.name for p in out.iterdir()}
    assert sorted(p.name for p in (out / "stages").iterdir()) == ["stage1_16px.png", "stage2_24px.png", "stage3_32px.png"]
    assert not list(out.rglob("*.tmp")) and not (out / ".pii.lock").exists()


def file_size_limit(limit: int):
    """A child's file-size limit (RLIMIT_FSIZE): a write past `limit` bytes fails as on a full disk."""

    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_refused_write_keeps_the_earlier_checkpoint_and_says_how_to_resume(earlier, tmp_path):
    """The checkpoint of the next stage cannot be written (a file-size limit stands in for a full
    disk): one line with the resume command, the same line in invert.log, no partial file, and the
    earlier checkpoint as it was; resumed without the limit, the run finishes."""
    stopped = tmp_path / "stopped"
    shutil.copytree(earlier / "stopped", stopped)
    checkpoint = (stopped / "checkpoint.pt").read_bytes()
    limit = len(checkpoint) + 4096  # the stage-1 checkpoint fits; stage 2's, at 24 px, does not
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "invert.py", f"resume={stopped}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, preexec_fn=file_size_limit(limit))
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line == (f"error: cannot write {str(stopped / 'checkpoint.pt')!r} (File too large); finished stages are "
                    f"saved; continue with: python invert.py resume={stopped}")
    assert line in (stopped / "invert.log").read_text()
    assert (stopped / "checkpoint.pt").read_bytes() == checkpoint
    assert not [p for p in stopped.rglob("*") if p.name.endswith(".tmp")] and not (stopped / "metrics.json").exists()
    proc = subprocess.run([sys.executable, "invert.py", f"resume={stopped}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((stopped / "metrics.json").read_text())["first_stage"] == 2


def test_ctrl_c_in_a_script_is_one_line(earlier, tmp_path):
    """scripts/judge.py interrupted while it loads its judge: exit 130, one line, no traceback."""
    runs = tmp_path / "runs"
    shutil.copytree(earlier / "truncated_png", runs / "damaged")
    proc = subprocess.Popen([sys.executable, "scripts/judge.py", str(runs), *TINY_JUDGE.split()], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    lines = []
    while time.monotonic() < deadline and not any("skipped" in line for line in lines):
        lines.append(proc.stderr.readline())  # the warning comes once the script's main runs
        if not lines[-1]:  # the script ended before it
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 130), "".join(lines) + err  # 0: it finished before the signal came (a fast machine)
    assert "Traceback" not in out + err
    if proc.returncode == 130:
        (line,) = err.strip().splitlines()
        assert line.endswith("interrupted")


def test_a_state_dict_that_does_not_fit_names_the_first_keys(tmp_path):
    """Missing, unexpected and reshaped keys: the first few of each, and how many."""
    import timm

    from pii.models.weights import load_weights

    net = timm.create_model("test_efficientnet", num_classes=10)
    state = {f"extra.{i}": torch.zeros(1) for i in range(40)}
    state.update({k: v for k, v in net.state_dict().items() if not k.startswith("blocks.")})
    state["classifier.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "w.pth")
    missing = len([k for k in net.state_dict() if k.startswith("blocks.")])
    with pytest.raises(ConfigError) as err:
        load_weights(net, tmp_path / "w.pth")
    message = str(err.value)
    assert f"{missing} keys missing from the file (blocks.0.0.conv.weight, " in message
    assert f"and {missing - 3} more" in message
    assert "40 unexpected keys (extra.0, extra.1, extra.2 and 37 more)" in message
    assert "1 of another shape (classifier.weight [3, 3] in the file, [10, " in message and len(message) < 600


NOT_A_SETTING = {"class_id"}  # checked against the model (pii.models.classes)
# a term's weight may be any finite number, negative too: one channel minus another (docs/objectives.md)
SIGNED = re.compile(r"objective\.terms\.\w+\.weight")


def numeric_keys(values: dict, prefix: str = ""):
    """(key, value) of every number in a config's plain dict (lists aside: their checks are their own)."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key in ("hydra", "kwargs") or path in NOT_A_SETTING:  # kwargs: timm's arguments of a model, timm checks them
            continue
        if isinstance(value, dict):
            yield from numeric_keys(value, f"{path}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield path, value


@pytest.mark.parametrize("program", ["invert", "train_invert"])
def test_every_numeric_key_has_its_range_checked(program):
    """Each number of every option of every config group is refused at -1e9, each float also at nan,
    by the check the preflight runs, with a message naming the key."""
    from conftest import compose_config

    from pii.feedforward.config import check_train_invert, compose_train_invert
    from pii.run.config import check_invert

    conf = ROOT / "conf" / ("train_invert" if program == "train_invert" else "")
    compose, check = (compose_train_invert, check_train_invert) if program == "train_invert" else (
        compose_config, check_invert)
    # presets and class lists set the same keys; train_invert.py and frontier.py have their own configs
    skip = ("hydra", "train_invert", "frontier", "experiment", "recipe", "classes")
    options = [f"{group.name}={option.stem}" for group in sorted(conf.iterdir()) if group.is_dir()
               and group.name not in skip for option in sorted(group.glob("*.yaml"))]
    unchecked, tried = [], set()
    for option in options:
        cfg = compose([option, "output_dir=x", *(["class_id=1"] if program == "invert" else [])])
        for key, value in numeric_keys(OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)):
            bad_values = [-10**9, float("nan")] if isinstance(value, float) else [-10**9]
            for bad in ([float("nan")] if SIGNED.fullmatch(key) else bad_values):
                if (key, str(bad)) in tried:
                    continue
                tried.add((key, str(bad)))
                broken = OmegaConf.merge(cfg, {})
                OmegaConf.update(broken, key, bad)
                try:
                    check(broken)
                    unchecked.append(f"{key}={bad}")
                except ConfigError as err:
                    if key not in str(err):
                        unchecked.append(f"{key}={bad}: {err}")
    assert len(tried) > 20
    assert unchecked == []


def test_a_command_run_with_a_variable_torch_reads_at_import_gets_it(tmp_path):
    """conftest.run_cli forks its commands from a server that imported torch already; a variable that
    torch reads at import (threads, instruction set) would be ignored there, so such a command runs in
    a real interpreter, and gets it."""
    script = tmp_path / "show.py"
    script.write_text("import torch\nprint(torch.get_num_threads(), torch.backends.cpu.get_cpu_capability())\n")
    threads, capability = run_cli(script, env={"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "default"}).stdout.split()
    assert (threads, capability) == ("1", "DEFAULT")


def test_a_run_too_large_for_the_memory_is_refused_saying_how_many_classes_fit(tmp_path):
    """1000 classes of 32 views at 512 px need hundreds of GB: refused once the model is built, before
    any inversion, in one line naming how many classes fit and classes_per_job; the new run's directory
    keeps .hydra/ and a log that ends with the line."""
    out = tmp_path / "run"
    many = "class_id=[" + ",".join(map(str, range(1000))) + "]"
    args = [a for a in MODEL if not a.startswith(("class_id=", "model.num_classes=", "model.input_size="))]
    proc = cli("invert", [*args, many, "model.num_classes=1000", "model.input_size=512", "model.weights=random",
                          "augmentation.ensemble.size=32", "augmentation.chunk=8", "precision=fp32",
                          "channels_last=false", "verifier=none", f"hydra.run.dir={out}"])
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: 1000 classes x 32 views at 512 px need ~") and " are available" in line
    assert re.search(r"at most \d+ classes fit in one run: split class_id with classes_per_job=\d+", line), line
    assert (out / "invert.log").read_text().strip().endswith(line)
    assert sorted(p.name for p in out.iterdir()) == [".hydra", "invert.log"]


def test_views_are_chunked_to_fit_the_memory_and_give_the_same_images(tmp_path, monkeypatch):
    """With memory for the views and 3 views in the classifier at once, chunk=auto splits the 4 views of
    a step at the largest stage in 2 chunks of 2 (the same gradient: the same images as all at once);
    an explicit chunk that does not fit, or memory short of one view, is refused naming the key."""
    from pii import models
    from pii.models import device
    from pii.run import build

    cfg = tiny_cfg(tmp_path / "whole", "verifier=none", "precision=fp32", "channels_last=false",
                   "augmentation.chunk=auto")
    classifier = models.build(cfg.model, "cpu", precision=cfg.precision, channels_last=cfg.channels_last, compile=False,
                              fold=bool(cfg.fold_batchnorm))
    augment = build.augmentation(cfg)
    size = build.stages(cfg)[-1].size
    image = torch.rand(1, 3, size, size, requires_grad=True)
    per_class, views = device.saved_bytes(lambda: augment(image, device.Draws.seeded(0, [1], 0)))
    per_class += views.nelement() * 4 + 8 * image.nelement() * 4
    per_view, _ = device.saved_bytes(lambda: classifier(views[:1].detach().requires_grad_(), eager=True))

    def memory(classes, view_count):
        return int((classes * per_class + view_count * per_view) / device.MEMORY_BUDGET) + 1, "a test's figure"

    whole = runner.run(cfg)
    monkeypatch.setattr(device, "available_memory", lambda dev: memory(2, 3.5))
    split = runner.run(tiny_cfg(tmp_path / "split", "verifier=none", "precision=fp32", "channels_last=false",
                                "augmentation.chunk=auto"))
    assert whole.device_settings["chunk"] == 4 and split.device_settings["chunk"] == 2
    assert split.mean_probability == pytest.approx(whole.mean_probability, abs=1e-4)
    with pytest.raises(ConfigError, match=r"augmentation.chunk=4 views at 32 px need .*set augmentation.chunk=3 or auto"):
        runner.run(tiny_cfg(tmp_path / "c", "verifier=none", "precision=fp32", "channels_last=false",
                            "augmentation.chunk=4"))
    monkeypatch.setattr(device, "available_memory", lambda dev: memory(1.5, 1))
    with pytest.raises(ConfigError, match=r"2 classes x 2 views at 32 px .* at most 1 classes fit .*classes_per_job=1"):
        runner.run(tiny_cfg(tmp_path / "d", "verifier=none", "precision=fp32", "channels_last=false"))  # as measured above
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()
