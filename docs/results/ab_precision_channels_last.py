"""Interleaved A/B of precision x channels_last: one inversion step (jitter+ensemble+ColorShift, fwd, bwd to the image)."""
import sys, time, json, torch; sys.path.insert(0,'.')
from pii.cli import compose
from pii import models, augment
cfg = compose(["augmentation.ensemble_size=4"])
aug = augment.build(cfg.augmentation)
configs = {(p, cl): models.build(cfg.model, "cpu", precision=p, channels_last=cl) for p in ["fp32", "bf16"] for cl in [False, True]}
times = {k: [] for k in configs}
for rep in range(3):
    for size in [112, 168, 224]:
        for k, clf in configs.items():
            x = torch.rand(8, 3, size, size, requires_grad=True)
            t = time.perf_counter()
            torch.nn.functional.cross_entropy(clf(aug(x)), torch.arange(8).repeat_interleave(4)).backward()
            times[k].append(time.perf_counter() - t)
base = sum(times[("fp32", False)])
for k, v in times.items():
    print(k, "total %.1f s" % sum(v), "speed vs fp32/NCHW %.2fx" % (base / sum(v)), flush=True)
json.dump({f"{p}_channels_last={cl}": v for (p, cl), v in times.items()}, open("/tmp/measure/ab.json", "w"))
