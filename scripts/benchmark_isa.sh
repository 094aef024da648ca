#!/usr/bin/env bash
# The pixel preset's benchmark under each instruction-set setting, for precision=auto and the
# fixed settings it chooses among: what docs/performance.md's "Chosen on the machine that runs"
# table reports. Each setting calibrates afresh (its own cache directory).
#
#   bash scripts/benchmark_isa.sh [out dir] [extra overrides...]
#
# Instruction sets (ISAS, default all three): the CPU's own (native); AVX-512 without its bf16
# instructions (avx512: oneDNN emulates bf16, at about half fp32's speed); AVX2 (no AVX-512, no
# bf16 kernels), by oneDNN's and ATen's dispatch variables. Settings per instruction set: auto;
# bf16 + channels_last + all views at once (the fixed CPU default auto replaced); fp32 +
# channels_last + all views at once. Under AVX2 the fixed bf16 setting is left out: its
# convolutions fall back to reference kernels, tens of times slower (auto's calibration times it
# briefly and prints the figure).
#
#   ISAS=avx512 bash scripts/benchmark_isa.sh docs/results/cpu-speed/isa
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-outputs/benchmark_isa}
shift || true
mkdir -p "$out"
python=${PYTHON:-python}
common=(--naive-classes 1 experiment=pii schedule.steps=20 "$@")
for isa in ${ISAS:-native avx512 avx2}; do
    case $isa in
        native) env=() ;;
        avx512) env=(ONEDNN_MAX_CPU_ISA=AVX512_CORE ATEN_CPU_CAPABILITY=avx512) ;;
        avx2) env=(ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2) ;;
        *) echo "ISAS: unknown instruction set '$isa'; use native, avx512 or avx2" >&2; exit 2 ;;
    esac
    cache=$(mktemp -d)  # a fresh calibration per instruction set
    settings=(auto bf16 fp32)
    [ "$isa" = avx2 ] && settings=(auto fp32)
    for setting in "${settings[@]}"; do
        case $setting in
            auto) overrides=() ;;
            *) overrides=(precision=$setting channels_last=true augmentation.chunk=100000) ;;
        esac
        echo "== $isa $setting"
        env "${env[@]}" PII_CACHE="$cache" "$python" scripts/benchmark.py "${common[@]}" "${overrides[@]}" \
            --json "$out/${isa}_$setting.json" | tail -n 25
    done
done
