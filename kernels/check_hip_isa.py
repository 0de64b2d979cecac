#!/usr/bin/env python3
"""kernels/check_hip_isa.py - build-time check of the AMD wave-level tile's ISA.

No AMD GPU exists in this workplace, so what can be checked without one is checked at
build time: each (source, options) below is compiled by hipcc for gfx90a (MI200) and
gfx940 (MI300; ROCm 5.2's clang-15 knows gfx940 but rejects gfx941/gfx942) as the HIP
plugin compiles it (-DKP_TARGET_HIP=1 -DKP_HAS_MFMA), device code only, to assembly; the
assembly must contain the native MFMA 16x16x16 instruction of its dtype, as that
architecture spells it (gfx940 drops bf16's _1k suffix)
(kernels/common/kp_wave_tile.h), must not contain the 4x4x4 mapping of kp_tile_mma.h,
must not spill VGPRs and must not use scratch (a kernel's private segment: register
arrays the compiler could not keep in VGPRs). Before the real checks the checker runs
itself on doctored assembly (the instruction missing, a 4x4x4 left, a spill, scratch)
and fails unless each is caught, so a checker that cannot fail fails the build.

usage: check_hip_isa.py --hipcc HIPCC --kernels DIR --stamp OUT [--depfile D]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

FIXED = ["-O3", "-DKP_TARGET_HIP=1", "-DKP_HAS_MFMA", "--gpu-max-threads-per-block=256"]
# architecture -> {dtype: the MFMA 16x16x16 instruction as its assembly spells it}
ARCHS = {
    "gfx90a": {"bf16": "v_mfma_f32_16x16x16bf16_1k", "f16": "v_mfma_f32_16x16x16f16"},
    "gfx940": {"bf16": "v_mfma_f32_16x16x16_bf16", "f16": "v_mfma_f32_16x16x16_f16"},
}
# the generation-2 grouped GEMM's tile on a 64 KiB-LDS device (gpu_grouped_gemm_gen2.c's
# table: the row AMD CDNA takes)
G2_HIP = ["-DG2_BM=64", "-DG2_BN=128", "-DG2_BK=32", "-DG2_WM=2", "-DG2_WN=4", "-DG2_STAGES=2", "-DG2_MIN_BLOCKS=1",
          "-DG2R_WARPS=8", "-DG2R_RPW=4"]
# (source under kernels/, options, the dtype of the instruction it must hold)
CASES = [
    ("common/wave_selftest.cl", ["-DKP_DTYPE_BF16"], "bf16"),
    ("common/wave_selftest.cl", ["-DKP_DTYPE_F16"], "f16"),
    ("attention/attention_prefill_gen2.cl", ["-DKP_DTYPE_BF16"], "bf16"),
    ("attention/attention_prefill_gen2.cl", ["-DKP_DTYPE_F16", "-DA2_DQK=192", "-DA2_DV=128"], "f16"),
    # paged decode: one 16-row group (a 32-row AMD wave, its second m-block zero), Q in
    # registers; and d256 (Q fragments reloaded each step)
    ("attention/attention_decode_gen2.cl", ["-DKP_DTYPE_BF16", "-DD2_DQK=128", "-DD2_WM=1", "-DD2_WN=4",
                                             "-DD2_BN=64", "-DD2_STAGES=2"], "bf16"),
    ("attention/attention_decode_gen2.cl", ["-DKP_DTYPE_F16", "-DD2_DQK=256", "-DD2_WM=1", "-DD2_WN=4",
                                             "-DD2_BN=64", "-DD2_STAGES=2"], "f16"),
    # MLA decode, the 64-row tile (M2_WM even on AMD: a wave's 32 rows take two row groups).
    # Its FP8-cache variant is left out: 243 VGPRs spill there (the dequantizing pass on top
    # of O's 128 accumulators); no AMD device today has the LDS to run it (the planner
    # finds no tile in 64 KiB)
    ("attention/mla_decode_gen2.cl", ["-DKP_DTYPE_BF16", "-DM2_DQK=576", "-DM2_DV=512", "-DM2_WM=4",
                                      "-DM2_BN=64", "-DM2_STAGES=2"], "bf16"),
    ("moe/moe_gemm_gen2.cl", G2_HIP + ["-DKP_DTYPE_BF16"], "bf16"),
    ("moe/moe_gemm_gen2.cl", G2_HIP + ["-DKP_DTYPE_F16", "-DKP_GG_A_F32"], "f16"),
    ("moe/moe_gemm_gen2.cl", G2_HIP + ["-DKP_DTYPE_BF16", "-DKP_GG_W_FP8"], "bf16"),
]


def problems(asm, want):
    """What is wrong with one kernel's assembly (an empty list: nothing)."""
    out = []
    if not re.search(r"^\s*" + re.escape(want) + r"\b", asm, re.M):
        out.append("no " + want)
    if re.search(r"^\s*v_mfma_f32_4x4x4", asm, re.M):
        out.append("v_mfma_f32_4x4x4 (the PTX-layout mapping) still issued")
    for m in re.finditer(r"\.vgpr_spill_count:\s*(\d+)", asm):
        if int(m.group(1)) != 0:
            out.append("%s VGPRs spilled" % m.group(1))
    for m in re.finditer(r"\.private_segment_fixed_size:\s*(\d+)", asm):
        if int(m.group(1)) != 0:
            out.append("%s bytes of scratch (private segment)" % m.group(1))
    return out


def self_test():
    good = "\tv_mfma_f32_16x16x16f16 a[0:3], v[0:1], v[2:3], a[0:3]\n  .vgpr_spill_count: 0\n"
    doctored = {
        "missing": "\tv_add_f32 v0, v1, v2\n  .vgpr_spill_count: 0\n",
        "4x4x4": good + "\tv_mfma_f32_4x4x4f16 a[0:3], v[0:1], v[2:3], a[0:3]\n",
        "spill": good.replace("count: 0", "count: 3"),
        "scratch": good + "    .private_segment_fixed_size: 16\n",
    }
    if problems(good, "v_mfma_f32_16x16x16f16"):
        return "the checker rejects good assembly"
    for name, asm in doctored.items():
        if not problems(asm, "v_mfma_f32_16x16x16f16"):
            return "the checker misses doctored assembly (%s)" % name
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hipcc", required=True)
    ap.add_argument("--kernels", required=True)
    ap.add_argument("--stamp", required=True)
    ap.add_argument("--depfile")
    a = ap.parse_args()
    err = self_test()
    if err:
        print("check_hip_isa: " + err, file=sys.stderr)
        return 1
    deps, lines, failed = set(), [], False
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(arch, src, opts, ARCHS[arch][dt]) for arch in ARCHS for src, opts, dt in CASES]
        for i, (arch, src, opts, want) in enumerate(jobs):
            s, d = os.path.join(tmp, "k%d.s" % i), os.path.join(tmp, "k%d.d" % i)
            cmd = [a.hipcc, "--offload-arch=" + arch, "-x", "hip", "--cuda-device-only", "-S"] + FIXED + opts + [
                "-I", a.kernels, "-I", os.path.join(a.kernels, os.path.dirname(src)),
                os.path.join(a.kernels, src), "-o", s, "-MD", "-MF", d]
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            tag = "%s %s (%s)" % (src, " ".join(opts), arch)
            if r.returncode != 0:
                print("check_hip_isa: %s: hipcc failed:\n%s" % (tag, r.stdout[-4000:]), file=sys.stderr)
                failed = True
                continue
            if os.path.exists(d):
                txt = open(d).read().replace("\\\n", " ")
                deps.update(p for p in txt.split(":", 1)[-1].split()
                            if p.endswith((".h", ".cl")) and os.path.abspath(p).startswith(os.path.abspath(a.kernels)))
            asm = open(s).read()
            n = len(re.findall(r"^\s*" + re.escape(want) + r"\b", asm, re.M))
            bad = problems(asm, want)
            if bad:
                print("check_hip_isa: %s: %s" % (tag, "; ".join(bad)), file=sys.stderr)
                failed = True
            lines.append("%s: %d x %s%s" % (tag, n, want, (" FAIL: " + "; ".join(bad)) if bad else ""))
    if failed:
        return 1
    with open(a.stamp, "w") as f:
        f.write("\n".join(lines) + "\n")
    if a.depfile:
        with open(a.depfile, "w") as f:
            f.write("%s: %s\n" % (a.stamp, " ".join(sorted(deps))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
