"""Speed of an inversion against the machine's peak, and against the paper's naive path.

    python scripts/benchmark.py experiment=fast                     # Lite0, 8 classes of benchmark20
    python scripts/benchmark.py --classes 4 --naive-classes 1 model=vit_b32 model.weights=random
    python scripts/benchmark.py class_id=[980,1] precision=fp32 channels_last=false
    python scripts/benchmark.py --compare-compile experiment=paper schedule.stages=1 schedule.steps=30  # GPU

Takes the same overrides as invert.py. Inverts the classes along the default
path (frozen weights, classes batched, precision / channels_last / views per
chunk as invert.py settles them: `auto` ones calibrated on this CPU, or read from
its cache (pii.models.calibration), printed with each candidate's time; compile)
and along a naive path like the paper's code (weights not frozen, one class per
run, fp32, no channels_last, all views at once; run for the first --naive-classes
classes, each run alone, so its seconds per class is the mean of those runs).
Reports seconds per class, steps/s, images/s (augmented views), peak memory,
achieved FLOP/s (torch's FlopCounterMode, one step per stage size) against the
peak of a large matmul measured in this run, and the warm-up (one step per
stage size before timing: compiling, autotuning). --compare-compile also times
the default path with compile=true (row `compiled`). The last line is
`speedup_vs_naive=<naive seconds per class / default seconds per class>`, for
the faster of default and compiled. --json also records the file in the
manifest.json beside it (command, commit, date, hardware).
"""

import argparse
from dataclasses import asdict

import torch
from omegaconf import OmegaConf

from pii.errors import ConfigError
from pii.eval import provenance
from pii.files import writable_file, write_json
from pii.models.classes import parse_class_ids
from pii.models.device import resolve_device
from pii.run.cli import ScriptParser, script_main
from pii.run import build, speed
from pii.run.compose import compose


def parser() -> ScriptParser:
    """The command line, read without running by tests/test_manifests.py (the stored results' commands)."""
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=8, help="first N classes of classes=benchmark20 "
                        "(ignored when class_id=... is given)")
    parser.add_argument("--naive-classes", type=int, default=2, help="classes run along the naive path")
    parser.add_argument("--peak-size", type=int, default=None,
                        help="matmul size for the peak (default 2048 on CPU, 8192 on CUDA)")
    parser.add_argument("--compare-compile", action="store_true",
                        help="time the default path both eager and compiled (row `compiled`; its warm-up is "
                             "the compile time)")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--unit", metavar="LAYER", help="instead: one step for a unit of LAYER (objective=channel; "
                        "the network stops after LAYER) against a class step, at the model's input size, and the ratio")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for invert.py")
    return parser


def main(argv: list[str]) -> None:
    args = parser().parse_intermixed_args(argv)
    if any(o.startswith("class_id=") for o in args.overrides):
        cfg = compose(args.overrides)
        class_ids = parse_class_ids(cfg.class_id, int(cfg.model.num_classes))
    else:
        cfg = compose(["classes=benchmark20", *args.overrides])
        class_ids = parse_class_ids(cfg.class_id, int(cfg.model.num_classes))[:args.classes]
    if args.naive_classes < 1 or args.classes < 1:
        raise ConfigError("--classes and --naive-classes must be >= 1")
    if args.json:  # checked before minutes of measuring, not after
        args.json = writable_file(args.json, "--json")
        provenance.read(args.json.parent)
    device = resolve_device(str(cfg.device), bool(cfg.cudnn_benchmark))
    if args.unit:
        return unit_step(args.overrides, cfg, class_ids, args.unit, device)

    if args.compare_compile:
        cfg = OmegaConf.merge(cfg, {"compile": False})
    default = speed.measure_path(cfg, class_ids, device, naive=False)  # first: it checks the config
    batched = [default]
    if args.compare_compile:
        batched.append(speed.measure_path(OmegaConf.merge(cfg, {"compile": True}), class_ids, device, naive=False))
        batched[-1].name = "compiled"
    peaks = {"fp32": speed.peak_matmul_flops(device, torch.float32, args.peak_size)}
    if any(r.precision == "bf16" for r in batched):
        peaks["bf16"] = speed.peak_matmul_flops(device, torch.bfloat16, args.peak_size)
    naive = speed.measure_path(cfg, class_ids[:args.naive_classes], device, naive=True)
    best = min(batched, key=lambda r: r.seconds_per_class)
    ratio = naive.seconds_per_class / best.seconds_per_class

    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"\nmodel {cfg.model.name} on {device}{threads}; param {default.param}; stages {default.stage_sizes}"
          f" x {cfg.schedule.steps} steps; ensemble {build.augmentation(cfg).copies}; classes {class_ids}")
    for name, flops in peaks.items():
        print(f"peak matmul {name}: {flops / 1e9:.1f} GFLOP/s")
    print(f"peak memory: {default.peak_memory_kind}")
    print(speed.format_settings(default.settings))
    print(speed.format_report([*batched, naive], peaks))
    print(f"default: {default.seconds:.1f} s for {default.classes} classes in one run; "
          f"naive: {naive.seconds:.1f} s for {naive.classes} classes, one run each")
    if args.json:
        write_json(args.json, {
            "overrides": args.overrides, "device": str(device), "threads": torch.get_num_threads(),
            "class_ids": class_ids, "peak_flops": peaks, "speedup_vs_naive": ratio, "fastest": best.name,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__,
            "paths": [{**vars(r), "settings": r.settings and asdict(r.settings),
                       "seconds_per_class": r.seconds_per_class, "steps_per_second": r.steps_per_second,
                       "images_per_second": r.images_per_second, "flops_per_second": r.flops_per_second}
                      for r in (*batched, naive)]})
        provenance.record([args.json], device)
    print(f"speedup_vs_naive={ratio:.2f}")


def unit_step(overrides: list[str], cfg, class_ids: list[int], layer: str, device: torch.device) -> None:
    """Prints a class step's seconds, a unit step's (as many images), and their ratio."""
    from pii import models

    unit_cfg = compose([*overrides, "objective=channel", f"objective.layer={layer}",
                        f"objective.units=first:{len(class_ids)}"])
    classifier = models.build(cfg.model, device, **{**models.PLAIN, "fold": True})
    class_s = speed.objective_step_seconds(cfg, classifier, class_ids, device)
    unit_s = speed.objective_step_seconds(unit_cfg, classifier, list(range(len(class_ids))), device)
    print(f"one step, {len(class_ids)} images x {build.augmentation(cfg).copies} views at {classifier.input_size} px "
          f"({classifier.name}, fp32, {device}): class {class_s:.3f} s, unit of {layer} {unit_s:.3f} s, "
          f"ratio {class_s / unit_s:.2f}")


if __name__ == "__main__":
    script_main(main)
