"""Interleaved A/B of one inversion step on the CPU: precision x channels_last, and bf16 with the
strided depthwise convs left in bf16 (`bf16_all_nhwc`), against fp32 NCHW in the same process; or,
with --network, the CPU's network changes one by one against timm's network, in one precision.

    python scripts/ab_cpu_step.py --json outputs/ab_cpu_step.json                       # glibc malloc as it comes
    python scripts/ab_cpu_step.py --keep-freed-memory --json outputs/ab_cpu_step_keep.json  # pii's CPU default
    python scripts/ab_cpu_step.py --keep-freed-memory --network fp32 --json outputs/ab_network_fp32.json

One step = jitter + ensemble 4 + ColorShift, forward, backward to the image, for 8 classes of
EfficientNet-Lite0, at 112, 168 and 224 px; every variant once per size in turn, 4 passes, the
first a warm-up. Prints each variant's seconds and its ratio to the first; --json writes the
timings (recorded in the manifest.json beside it: command, commit, date, hardware).
"""

import json
import time
from pathlib import Path

import torch

from pii import models
from pii.core.draws import Draws
from pii.core.precision import PRECISIONS
from pii.eval import provenance
from pii.models import cpu
from pii.run.build import augmentation
from pii.run.compose import compose
from pii.run.cli import ScriptParser, script_main


def parser() -> ScriptParser:
    """The command line, read without running by tests/test_manifests.py (the stored results' commands)."""
    parser = ScriptParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-freed-memory", action="store_true", help="pii.models.cpu.keep_freed_memory() first")
    parser.add_argument("--network", choices=PRECISIONS, help="time the CPU's network changes in this precision")
    parser.add_argument("--json", type=Path, help="write the timings here")
    return parser


def main(argv: list[str]) -> None:
    args = parser().parse_intermixed_args(argv)
    if args.keep_freed_memory:
        cpu.keep_freed_memory()
    cfg = compose(["augmentation.ensemble.size=4"])
    aug = augmentation(cfg)
    draws = Draws.seeded(0, range(8), 0)
    variants = network_variants(cfg, args.network) if args.network else layout_variants(cfg)
    times = {k: [] for k in variants}
    for rep in range(4):
        for size in [112, 168, 224]:
            for k, clf in variants.items():
                x = torch.rand(8, 3, size, size, requires_grad=True)
                t = time.perf_counter()
                torch.nn.functional.cross_entropy(clf(aug(x, draws)), torch.arange(8).repeat_interleave(aug.copies)).backward()
                if rep:  # the first pass warms up
                    times[k].append(time.perf_counter() - t)
    first = next(iter(times))
    print(f"keep_freed_memory={args.keep_freed_memory}")
    for k, v in times.items():
        print(f"{k:<22} {sum(v):6.2f} s   {sum(times[first]) / sum(v):.2f}x vs {first}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"keep_freed_memory": args.keep_freed_memory, "network": args.network,
                                         "seconds": times}, indent=1))
        provenance.record([args.json])


def layout_variants(cfg) -> dict:
    variants = {f"{p}_{'nhwc' if cl else 'nchw'}": models.build(cfg.model, "cpu", precision=p, channels_last=cl,
                                                                 compile=False, fold=False)
                for p in PRECISIONS for cl in [False, True]}
    variants["bf16_all_nhwc"] = all_bf16 = models.build(cfg.model, "cpu", precision="bf16", channels_last=True,
                                                        compile=False, fold=False, adapt=False)
    for name, change in cpu.network_changes("bf16", all_bf16.input_size):
        if name != "fp32_strided_dw_backward":  # the strided depthwise convs' backward in bf16 too
            change(all_bf16.net)
    return variants


def network_variants(cfg, precision: str) -> dict:
    """timm's network (BatchNorm folded, NHWC, as runs have it), then pii.models.device.adapt_network's
    changes added one at a time."""
    def timms():
        return models.build(cfg.model, "cpu", precision=precision, channels_last=True, compile=False, fold=True,
                            adapt=False)

    variants = {"timm": timms()}
    changes = cpu.network_changes(precision, variants["timm"].input_size)
    for count, (name, _) in enumerate(changes, 1):
        variants["+" + name] = classifier = timms()
        for _, change in changes[:count]:
            change(classifier.net)
    return variants


if __name__ == "__main__":
    script_main(main)
