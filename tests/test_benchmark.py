"""scripts/benchmark.py on a tiny budget: every figure printed, the last line machine-readable."""

import json
import re

from conftest import compose_config, run_cli


def test_benchmark_prints_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli("scripts/benchmark.py", "--classes", "2", "--naive-classes", "1", "--json", out, "--peak-size", "512",
                   "model=timm", "model.name=test_efficientnet", "model.weights=random", "schedule.stages=2",
                   "schedule.steps=2", "augmentation.ensemble.size=2", "precision=bf16", "channels_last=true",
                   "device=cpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"speedup_vs_naive=\d+\.\d+", lines[-1]), lines[-1]
    text = proc.stdout
    for figure in ("peak matmul fp32", "peak matmul bf16", "s/class", "steps/s", "images/s", "peak MB",
                   "GFLOP/s", "% peak", "device settings", "chunk"):
        assert figure in text, figure
    rows = {line.split()[0]: line.split() for line in lines if line.startswith(("default ", "naive "))}
    assert rows["default"][1:4] == ["2", "bf16", "True"] and rows["naive"][1:4] == ["1", "fp32", "False"]
    report = json.loads(out.read_text())
    default, naive = report["paths"]
    assert default["flops"] > 0 and default["peak_memory_mb"] > 0 and default["images"] == 2 * 2 * 2 * 2
    # the naive path also computes weight gradients: more FLOPs per image
    assert naive["flops"] / naive["images"] > default["flops"] / default["images"]
    assert float(lines[-1].split("=")[1]) == round(report["speedup_vs_naive"], 2)
    entry = json.loads((tmp_path / "manifest.json").read_text())["files"]["bench.json"]
    assert entry["command"].startswith("python scripts/benchmark.py --classes 2 ") and "threads" in entry["hardware"]


def test_the_benchmark_times_the_image_its_preset_names(monkeypatch):
    """experiment=fast is a Fourier image: both paths render it (an inverse FFT per step), not pixels."""
    import torch

    from pii.core.param import Fourier, Pixel
    from pii.run import build, speed

    made = []
    original = build.param
    monkeypatch.setattr(build, "param", lambda *args, **kwargs: made.append(original(*args, **kwargs)) or made[-1])
    cfg = compose_config(["experiment=fast", "model=timm", "model.name=test_efficientnet", "model.weights=random",
                          "schedule.stages=2", "schedule.steps=1", "augmentation.ensemble.size=2", "precision=fp32",
                          "channels_last=false", "verifier=none", "output_dir=/x"])
    assert cfg.param.name == "fourier"
    for naive in (False, True):
        made.clear()
        result = speed.measure_path(cfg, [1, 2], torch.device("cpu"), naive=naive)
        assert result.param == "fourier" and made and all(type(p) is Fourier for p in made), made
    pixels = compose_config(["experiment=pii", "output_dir=/x"])
    assert type(build.param(pixels, 1, "cpu")) is Pixel


def test_benchmark_bad_override_is_one_line_error():
    proc = run_cli("scripts/benchmark.py", "precision=fp8", "model=timm", "model.name=test_efficientnet",
                   "model.weights=random", timeout=120)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and last.startswith("error: ") and "precision" in last


def test_the_naive_path_runs_timms_network_as_the_papers_code_does():
    import torch
    from timm.layers import Conv2dSame

    from pii.models import cpu
    from pii.run import speed

    cfg = compose_config(["output_dir=/x"])  # Lite0: TF "same" padding, in-place ReLU6
    naive = speed.naive_classifier(cfg, torch.device("cpu"))
    assert any(type(m) is Conv2dSame for m in naive.modules())
    assert all(m.inplace for m in naive.modules() if isinstance(m, cpu.COPIED_IN_PLACE))
    assert all(p.requires_grad for p in naive.parameters())


def test_a_profiled_step_lists_the_convolutions_by_kind_with_their_rate():
    proc = run_cli("scripts/cpu_step.py", "profile", "--size", "64", "--classes", "1", "--warmup", "1",
                   "augmentation.ensemble.size=2", "precision=fp32", "channels_last=true", "augmentation.chunk=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = proc.stdout.split("convolutions ")[-1].strip().splitlines()[1:]
    rows = {" ".join(line.split()[:-4]): [float(x.rstrip("%")) for x in line.split()[-4:]] for line in table}
    # Lite0: 1x1 convolutions, the stem, depthwise 3x3 and 5x5, and the strided ones with their padding in the kernel
    assert {"1x1", "stem", "depthwise 3x3", "depthwise 4x4", "depthwise 5x5", "depthwise 6x6"} <= set(rows), rows
    assert all(forward + backward > 0 and rate > 0 for forward, backward, _, rate in rows.values()), rows
