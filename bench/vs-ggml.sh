#!/usr/bin/env bash
# bench/vs-ggml.sh GGML_DIR [KPORT_BUILD_DIR] — kport's CPU backend side by side with
# ggml's, on ggml's own `test-backend-ops perf` cases and with ggml's FLOP counts, one
# table on stdout (markdown). A benchmark, not part of CI.
#
#   GGML_DIR          a ggml checkout (https://github.com/ggml-org/ggml) with
#                     test-backend-ops built, CPU only, e.g.
#                       cmake -S GGML_DIR -B GGML_DIR/build -DCMAKE_BUILD_TYPE=Release -DGGML_BUILD_TESTS=ON
#                       cmake --build GGML_DIR/build --target test-backend-ops
#                     For an AVX2-only comparison on an AVX-512 machine build it with
#                       -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF
#                     and run this script with KPORT_CPU_SIMD=avx2.
#   KPORT_BUILD_DIR   kport's build directory (default: build): libkport.so from it.
# Environment: GGML_TBO=path of test-backend-ops (default GGML_DIR/build/bin/test-backend-ops);
# KPORT_CPU_SIMD, KPORT_NUM_THREADS as for any kport program. Both sides use every core
# this process may use (ggml: hardware_concurrency; kport: the affinity mask).
#
# The cases (ggml's names and parameters; kport runs the same shapes in f16):
#   FLASH_ATTN_EXT f16 K/V, d 256 (32/2 heads) prefill 512 queries and decode, d 128
#   (32/8 heads) decode; ggml's q is f32, kport's f16 (its q, k, v share a dtype).
#   Decode runs through kport's paged decode (64-key cache blocks).
#   MUL_MAT_ID f16 weights, 128 experts, top 8, 768 x 2048, 1..512 tokens; ggml converts
#   its f32 activations to f16 inside the op, kport takes f16 rows.
# FLOPs are ggml's: 2 * h_q * nb * (hsk + hsv) * kv for attention (every key counted,
# mask or not), 2 * m * k * n * n_used for MUL_MAT_ID.
set -euo pipefail
ggml=${1:?usage: bench/vs-ggml.sh GGML_DIR [KPORT_BUILD_DIR]}
build=${2:-build}
cd "$(dirname "$0")/.."
tbo=${GGML_TBO:-$ggml/build/bin/test-backend-ops}
[ -x "$tbo" ] || { echo "vs-ggml: $tbo not found: build ggml's test-backend-ops first (see this script's header)" >&2; exit 1; }
[ -e "$build/core/libkport.so" ] || { echo "vs-ggml: $build/core/libkport.so not found: build kport first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -Iinclude -o "$tmp/vs_ggml_kport" bench/vs_ggml_kport.c -L"$build/core" -lkport -Wl,-rpath,"$PWD/$build/core" -lm

# case lines: kport's arguments | ggml's op | a regex over ggml's parameter string
cases=()
fa() { # hsk hsv nh nr kv nb
  cases+=("fa $*|FLASH_ATTN_EXT|^hsk=$1,hsv=$2,nh=$3,nr23=\\[$4,1\\],kv=$5,nb=$6,.*type_K=f16,type_V=f16")
}
mmid() { # n_mats n_used m n k (the plain op, not ggml's fused variant, whose parameters go on)
  cases+=("mmid $*|MUL_MAT_ID|^type_a=f16,type_b=f32,n_mats=$1,n_used=$2,b=0,m=$3,n=$4,k=$5\$")
}
fa 256 256 2 16 10000 512
fa 256 256 2 16 10000 1
fa 128 128 8 4 4096 1
fa 128 128 8 4 16384 1
for n in 1 4 8 32 64 128 256 512; do mmid 128 8 768 "$n" 2048; done

cpu=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -1)
echo "# kport cpu vs ggml cpu ($(date -u +%Y-%m-%d), ${cpu:-unknown cpu}, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg) at start)"
echo
echo "ggml $(git -C "$ggml" rev-parse --short HEAD 2>/dev/null || echo '(commit unknown)'): $tbo; kport: $build"
echo
echo "| case (ggml's) | ggml GFLOP/s | kport GFLOP/s | kport / ggml | kport level |"
echo "|---|---:|---:|---:|---|"
for c in "${cases[@]}"; do
  IFS='|' read -r args op regex <<<"$c"
  gline=$("$tbo" perf -b CPU -o "$op" -p "$regex" 2>/dev/null | grep -E 'GFLOPS' | head -1 || true)
  g=$(echo "$gline" | sed -n 's/.* \([0-9.]*\) GFLOPS.*/\1/p')
  kline=$("$tmp/vs_ggml_kport" $args)
  k=$(echo "$kline" | sed -n 's/.* | \([0-9.]*\) GFLOP\/s | .*/\1/p')
  level=$(echo "$kline" | sed 's/.* | //')
  name=$(echo "$kline" | cut -d'|' -f2 | sed 's/^ *//; s/ *$//')
  ratio=$(awk -v k="$k" -v g="$g" 'BEGIN { if (g > 0 && k > 0) printf "%.2fx", k / g; else print "-" }')
  echo "| $name | ${g:--} | ${k:--} | $ratio | $level |"
done
