"""One inversion step on the CPU, measured: per-class time against classes per run and views per
chunk, the candidates of precision=auto, or torch.profiler's per-operator CPU time.

    python scripts/cpu_step.py batching --classes 1,4,8,20 --chunks all,16,32 experiment=pii augmentation.ensemble.size=8
    python scripts/cpu_step.py profile --size 224 --classes 8 experiment=pii precision=bf16 channels_last=true

Takes the same overrides as invert.py. A step is what the loop does (pii.core.inversion): render the
classes' images (the param), augment them, forward and backward the views (`chunk` at a time), one optimiser step.

`batching` times one step at every stage size of the schedule for each (classes per run, views per
chunk), each in turn over --rounds rounds (median), and prints the seconds per class of a whole run
(each stage's step time x its steps, over the classes), and each against the first row: the same
budget as a full run, at a fraction of its time.

`profile` runs --warmup steps, then one step under torch.profiler, and prints the operators by their
own (self) CPU time, --top of them, then the convolutions by kind of layer with their arithmetic rate
(to set against the machine's matmul peak, which scripts/benchmark.py prints).
"""

import argparse
import statistics
import time

import torch

from pii.core.draws import Draws
from pii.core.inversion import forward_backward
from pii.core.schedule import Stage
from pii.errors import ConfigError
from pii.models.device import resolve_device
from pii.run import build
from pii.run.cli import ScriptParser, script_main
from pii.run.compose import compose


class Step:
    """One inversion step of `classes` images at `size` px, `chunk` views at a time, with the run's pieces
    (pii.run.build): the param renders the image, the augmentation makes the views."""

    def __init__(self, pieces: build.Pieces, classes: int, size: int, chunk: int | None):
        self.pieces, self.classes, self.chunk = pieces, classes, chunk
        self.draws = Draws.seeded(int(pieces.cfg.seed), range(classes), 0)
        self.param = pieces.param(classes)
        self.param.grow(Stage(size, 1, None), self.draws)
        self.optimizer = pieces.make_optimizer(self.param.parameters())
        self.targets = torch.arange(classes)

    def __call__(self) -> float:
        start = time.perf_counter()
        image = self.param.render()
        views = self.pieces.augment(image, self.draws)
        targets = self.targets.repeat_interleave(len(views) // self.classes)
        self.optimizer.zero_grad(set_to_none=True)
        forward_backward(self.pieces.classifier, self.pieces.loss, views, targets, image,
                         min(self.chunk or len(views), len(views)))
        self.optimizer.step()
        return time.perf_counter() - start


def pieces_for(cfg, device, classes: int) -> build.Pieces:
    pieces = build.pieces(cfg, device, list(range(classes)))
    print(pieces.settings.line(), flush=True)
    return pieces


def batching(cfg, device, args) -> None:
    stages = build.stages(cfg)
    if args.sizes:  # a subset of the stages: the figures are then of those stages only
        stages = [s for s in stages if s.size in {int(size) for size in args.sizes.split(",")}]
        if not stages:
            raise ConfigError(f"--sizes {args.sizes}: none of the schedule's stage sizes {[s.size for s in build.stages(cfg)]}")
    classes = [int(c) for c in args.classes.split(",")]
    chunks = [None if c == "all" else int(c) for c in args.chunks.split(",")]
    pieces = pieces_for(cfg, device, max(classes))
    ensemble = pieces.augment.copies
    rows = [(n, c) for n in classes for c in chunks
            if (c is None and n * ensemble <= args.max_views) or (c is not None and c < n * ensemble)]
    steps = {(n, c, s.size): Step(pieces, n, s.size, c) for n, c in rows for s in stages}
    for step in steps.values():  # untimed: oneDNN makes its kernels for each shape
        step()
    times = {key: [] for key in steps}
    for _ in range(args.rounds):
        for key, step in steps.items():
            times[key].append(step())
    print(f"\n{cfg.model.name}, ensemble {ensemble}, stages timed {[s.size for s in stages]} x {stages[0].steps} steps; "
          f"{torch.get_num_threads()} threads; median of {args.rounds} rounds, alternating")
    print(f"{'classes/run':>11} {'views':>5} {'chunk':>5} {'s/class':>8} {'vs first':>8}  ms per view at each size")
    first = None
    for n, c in rows:
        per_class = sum(statistics.median(times[n, c, s.size]) * s.steps for s in stages) / n
        first = first or per_class
        sizes = " ".join(f"{statistics.median(times[n, c, s.size]) / (n * ensemble) * 1e3:.1f}" for s in stages)
        print(f"{n:>11} {n * ensemble:>5} {str(c or 'all'):>5} {per_class:>8.2f} {first / per_class:>7.2f}x  {sizes}",
              flush=True)


def profile(cfg, device, args) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    classes = int(args.classes.split(",")[0])
    pieces = pieces_for(cfg, device, classes)
    settings = pieces.settings
    chunk = None if settings.chunk == "auto" else int(settings.chunk)
    step = Step(pieces, classes, args.size, chunk)
    for _ in range(args.warmup):
        step()
    seconds = [step() for _ in range(args.warmup)]
    with profiler(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    print(f"\none step: {classes} classes x {pieces.augment.copies} views at {args.size} px, chunk {settings.chunk}; "
          f"unprofiled steps {', '.join(f'{s:.2f}' for s in seconds)} s; profiled self CPU total {total / 1e6:.2f} s")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=40))
    convolutions_by_kind(prof, total)


def convolutions_by_kind(prof, total: float) -> None:
    """The convolutions' self CPU time by kind of layer, forward and backward, and their arithmetic
    rate: the multiply-adds of the backward to the input (those of the forward too) over the time."""
    rows = {}
    for event in prof.key_averages(group_by_input_shape=True):
        if event.key not in ("aten::mkldnn_convolution", "aten::convolution_backward"):
            continue
        backward = event.key == "aten::convolution_backward"
        weight = event.input_shapes[2 if backward else 1]
        channels_in = event.input_shapes[1 if backward else 0][1]
        kind = ("stem" if channels_in <= 3 else "1x1" if weight[2:] == [1, 1] else  # the stem reads the image
                f"depthwise {weight[2]}x{weight[3]}" if weight[1] == 1 else f"{weight[2]}x{weight[3]}")
        row = rows.setdefault(kind, {"forward": 0.0, "backward": 0.0, "flop": 0.0})
        row["backward" if backward else "forward"] += event.self_cpu_time_total / 1e6
        if backward:  # the gradient's shape is the output's: N x Cout x H x W, each of Cin/groups x kh x kw terms
            n, c_out, h, w = event.input_shapes[0]
            row["flop"] += 2 * 2 * n * c_out * h * w * weight[1] * weight[2] * weight[3] * event.count
    print(f"\n{'convolutions':<16} {'forward ms':>10} {'backward ms':>11} {'share':>6} {'GFLOP/s':>8}")
    for kind, row in sorted(rows.items(), key=lambda kv: -(kv[1]["forward"] + kv[1]["backward"])):
        seconds = row["forward"] + row["backward"]
        print(f"{kind:<16} {row['forward'] * 1e3:>10.2f} {row['backward'] * 1e3:>11.2f} {seconds / total * 1e6:>6.0%} "
              f"{row['flop'] / seconds / 1e9:>8.1f}")


def parser() -> ScriptParser:
    """The command line, read without running by tests/test_manifests.py (the stored results' commands)."""
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["batching", "profile"])
    parser.add_argument("--classes", default="1,4,8,20", help="classes per run (profile: the first)")
    parser.add_argument("--chunks", default="all", help="views per chunk to time, e.g. all,16,32 (batching)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (batching)")
    parser.add_argument("--sizes", help="time only these stage sizes, e.g. 112,224 (batching; default: every stage)")
    parser.add_argument("--max-views", type=int, default=10**6,
                        help="no row with more views than this in one chunk (batching: bounds the memory)")
    parser.add_argument("--size", type=int, default=224, help="image size (profile)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before the profiled one (profile)")
    parser.add_argument("--top", type=int, default=15, help="operators listed (profile)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for invert.py")
    return parser


def main(argv: list[str]) -> None:
    args = parser().parse_intermixed_args(argv)
    cfg = compose(["device=cpu", *args.overrides])
    if args.rounds < 1:
        raise ConfigError("--rounds must be >= 1")
    device = resolve_device(str(cfg.device))
    torch.manual_seed(int(cfg.seed))
    (batching if args.mode == "batching" else profile)(cfg, device, args)


if __name__ == "__main__":
    script_main(main)
