"""Interleaved A/B of one inversion step on the CPU (jitter + ensemble 4 + ColorShift, forward,
backward to the image; 8 classes; 112/168/224 px; 3 rounds):
precision x channels_last, and bf16 with strided depthwise convs left in bf16 (`bf16_all`).

    python docs/results/ab_cpu_step.py                      # glibc malloc as it comes
    python docs/results/ab_cpu_step.py --keep-freed-memory  # pii.models.cpu.keep_freed_memory() (the default in pii)
"""
import json, sys, time, torch  # noqa: E401
sys.path.insert(0, '.')
from pii.models import cpu
from pii import models
from pii.run.build import augmentation  # noqa: E402
from pii.run.compose import compose  # noqa: E402

keep = "--keep-freed-memory" in sys.argv
if keep:
    cpu.keep_freed_memory()
cfg = compose(["augmentation.ensemble_size=4"])
aug = augmentation(cfg)
paths = {f"{p}_{'nhwc' if cl else 'nchw'}": models.build(cfg.model, "cpu", precision=p, channels_last=cl)
         for p in ["fp32", "bf16"] for cl in [False, True]}
paths["bf16_all_nhwc"] = models.build(cfg.model, "cpu", precision="bf16", channels_last=True)
for module in paths["bf16_all_nhwc"].modules():
    if "forward" in vars(module):
        del module.forward  # back to the class's forward: the strided depthwise convs run in bf16 too
times = {k: [] for k in paths}
for rep in range(4):
    for size in [112, 168, 224]:
        for k, clf in paths.items():
            x = torch.rand(8, 3, size, size, requires_grad=True)
            t = time.perf_counter()
            torch.nn.functional.cross_entropy(clf(aug(x)), torch.arange(8).repeat_interleave(4)).backward()
            if rep:  # round 0 warms up
                times[k].append(time.perf_counter() - t)
base = sum(times["fp32_nchw"])
print(f"keep_freed_memory={keep}")
for k, v in times.items():
    print(f"{k:<14} {sum(v):6.2f} s   {base / sum(v):.2f}x vs fp32_nchw", flush=True)
with open(f"docs/results/ab_cpu_step{'_keep' if keep else ''}.json", "w") as f:
    json.dump({"keep_freed_memory": keep, "seconds": times}, f, indent=1)
