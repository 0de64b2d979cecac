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
arrays the compiler could not keep in VGPRs); some sources must hold a least count of
the instruction (MIN_COUNT) and some kernels stay within a VGPR budget (MAX_VGPRS). Before the real checks the checker runs
itself on doctored assembly (the instruction missing, a 4x4x4 left, a spill, scratch, VGPRs over budget)
and fails unless each is caught, so a checker that cannot fail fails the build.

The attention kernels' key loop (the loop, as LLVM's loop-header comments mark it, that
holds the most MFMAs; the innermost such) is also measured: its s_barrier, ds_write,
ds_read and ds_bpermute counts, beside the kernel's VGPRs and AGPRs, go into the stamp.
Where a case gives a bound, more s_barriers than that in the key loop fail: in the
prefill and the paged decode the one barrier is the stage's (tile t landed, tile t - 1
free); S -> P (kp_wt_acc_to_a) is a cross-lane transpose in registers on AMD, and P going
back through LDS between work-group barriers (two a 16-key step) fails here. The MLA
decode's P is shared by the two halves' waves through its tile, so its bound is its
schedule's: stage, halves' maxima, P written.

usage: check_hip_isa.py --hipcc HIPCC --kernels DIR --stamp OUT [--depfile D] [--verbose]
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
# the W8A8 grouped GEMM's tile on a 64 KiB-LDS device (gpu_grouped_gemm_gen2.c's W8A8 table:
# 64 x 64, 2 x 2 units of 32 = two waves, 2 stages); e4m3 decoded to f16 in registers, so
# its instruction is the f16 MFMA (kernels/common/kp_wave_tile_e4m3.h)
G8_HIP = ["-DKP_GG_A_FP8", "-DKP_GG_W_FP8", "-DG8_BM=64", "-DG8_BN=64", "-DG8_WM=2", "-DG8_WN=2", "-DG8_STAGES=2",
          "-DG8_MIN_BLOCKS=1"]
# sources whose assembly must hold at least this many of the instruction: the W8A8 GEMM's
# 32-k step is 2 (m-blocks) x 2 (16-k halves) MFMAs per 32 x 16 wave tile, 2 x 2 tiles a wave
MIN_COUNT = {"moe/moe_gemm_fp8_gen2.cl": 16}
# kernels whose VGPRs (.amdhsa_next_free_vgpr: VGPRs and AGPRs, one file on gfx90a/gfx940)
# must stay at or below this: 256 leaves room for two waves a SIMD
MAX_VGPRS = {"kp_grouped_gemm_fp8_gen2_tiled": 256}
# (source under kernels/, options, the dtype of the instruction it must hold[, the most
# s_barriers the key loop may hold])
CASES = [
    ("common/wave_selftest.cl", ["-DKP_DTYPE_BF16"], "bf16"),
    ("common/wave_selftest.cl", ["-DKP_DTYPE_F16"], "f16"),
    ("attention/attention_prefill_gen2.cl", ["-DKP_DTYPE_BF16"], "bf16", 1),
    ("attention/attention_prefill_gen2.cl", ["-DKP_DTYPE_F16", "-DA2_DQK=192", "-DA2_DV=128"], "f16", 1),
    # paged decode: one 16-row group (a 32-row AMD wave, its second m-block zero), Q in
    # registers; and d256 (Q fragments reloaded each step)
    ("attention/attention_decode_gen2.cl", ["-DKP_DTYPE_BF16", "-DD2_DQK=128", "-DD2_WM=1", "-DD2_WN=4",
                                             "-DD2_BN=64", "-DD2_STAGES=2"], "bf16", 1),
    ("attention/attention_decode_gen2.cl", ["-DKP_DTYPE_F16", "-DD2_DQK=256", "-DD2_WM=1", "-DD2_WN=4",
                                             "-DD2_BN=64", "-DD2_STAGES=2"], "f16", 1),
    # MLA decode, the 64-row tile (M2_WM even on AMD: a wave's 32 rows take two row groups).
    ("attention/mla_decode_gen2.cl", ["-DKP_DTYPE_BF16", "-DM2_DQK=576", "-DM2_DV=512", "-DM2_WM=4",
                                      "-DM2_BN=64", "-DM2_STAGES=2"], "bf16", 3),
    # ... and with an FP8 cache at the tile the planner gives 64-lane AMD waves (32 keys; 160
    # KiB of LDS at two row groups: gpu_mla_decode.c): about 500 of 512 VGPRs, no scratch. At
    # 64 keys 243-282 VGPRs spill (the dequantizing pass on top of O's 128 accumulators and
    # S). No AMD device with 64 KiB of LDS has an MLA tile (generation 1 runs there). Its
    # key loop holds one barrier more than the 16-bit cache's: the dequantizing pass's.
    ("attention/mla_decode_gen2.cl", ["-DKP_DTYPE_BF16", "-DM2_DQK=576", "-DM2_DV=512", "-DM2_WM=2",
                                      "-DM2_BN=32", "-DM2_STAGES=4", "-DATTN_KV_FP8"], "bf16", 4),
    ("moe/moe_gemm_gen2.cl", G2_HIP + ["-DKP_DTYPE_BF16"], "bf16"),
    ("moe/moe_gemm_gen2.cl", G2_HIP + ["-DKP_DTYPE_F16", "-DKP_GG_A_F32"], "f16"),
    ("moe/moe_gemm_gen2.cl", G2_HIP + ["-DKP_DTYPE_BF16", "-DKP_GG_W_FP8"], "bf16"),
    ("moe/moe_gemm_fp8_gen2.cl", G8_HIP + ["-DKP_DTYPE_BF16"], "f16"),
    ("moe/moe_gemm_fp8_gen2.cl", G8_HIP + ["-DKP_DTYPE_F32"], "f16"),
]


def kernel_vgprs(asm):
    """{kernel: its VGPRs} from the assembly's kernel descriptors."""
    out = {}
    for m in re.finditer(r"^\s*\.amdhsa_kernel\s+(\S+)(.*?)^\s*\.end_amdhsa_kernel", asm, re.M | re.S):
        v = re.search(r"\.amdhsa_next_free_vgpr\s+(\d+)", m.group(2))
        if v:
            out[m.group(1)] = int(v.group(1))
    return out


def key_loop(asm):
    """The key loop's instruction lines. LLVM's comments place each basic block in its
    innermost loop ("in Loop: Header=BB0_48", or a header's "Parent Loop BB0_9 ... =>This
    Loop Header"); a loop's lines are its blocks' and its inner loops' (the layout need not
    be contiguous: the latch may come first). Of the loops, the one with the most MFMAs,
    the innermost of those. [] when no loop holds an MFMA."""
    parent, own, cur = {}, {}, None
    lines = asm.splitlines()
    for i, ln in enumerate(lines):
        m = re.match(r"^(?:\.L(BB\w+)|; %bb\.\d+):(.*)$", ln)
        if m:
            cur = None
            h = re.search(r"in Loop: Header=(BB\w+)", m.group(2))
            if h:
                cur = h.group(1)
            else:  # a header: its comment lines follow the label
                par, k, txt = None, i, m.group(2)
                while True:
                    p = re.search(r"Parent Loop (BB\w+)", txt)
                    par = p.group(1) if p else par
                    if "Loop Header" in txt:
                        cur = m.group(1)
                        parent[cur] = par
                        break
                    k += 1
                    if k >= len(lines) or not re.match(r"^\s+;", lines[k]):
                        break
                    txt = lines[k]
            continue
        if cur and re.match(r"^\s+[a-z_]", ln):
            own.setdefault(cur, []).append(ln)
    body = {}
    for loop, ins in own.items():
        x = loop
        while x:
            body.setdefault(x, []).extend(ins)
            x = parent.get(x)
    best, best_n = [], 0
    for loop, ins in body.items():
        n = sum(1 for x in ins if re.match(r"^\s*v_mfma", x))
        if n > best_n or (n == best_n and n > 0 and len(ins) < len(best)):
            best, best_n = ins, n
    return best


def stats(asm):
    """The key loop's s_barrier, ds_write, ds_read, ds_bpermute counts; the kernel's
    .vgpr_count (on gfx90a/gfx940 the unified file: architectural VGPRs plus AGPRs) and
    .agpr_count."""
    body = key_loop(asm)
    count = lambda pat: sum(1 for x in body if re.match(r"^\s*" + pat, x))
    regs = lambda key: max([int(v) for v in re.findall(r"^\s*-?\s*\." + key + r":\s*(\d+)", asm, re.M)] or [-1])
    return {"loop": len(body) > 0, "s_barrier": count(r"s_barrier\b"), "ds_write": count(r"ds_write"),
            "ds_read": count(r"ds_read"), "ds_bpermute": count(r"ds_bpermute"),
            "vgpr": regs("vgpr_count"), "agpr": regs("agpr_count")}


def problems(asm, want, max_bar=None):
    """What is wrong with one kernel's assembly (an empty list: nothing)."""
    out = []
    for k, v in kernel_vgprs(asm).items():
        if v > MAX_VGPRS.get(k, 512):
            out.append("%s uses %d VGPRs, more than %d" % (k, v, MAX_VGPRS.get(k, 512)))
    if max_bar is not None:
        st = stats(asm)
        if not st["loop"]:
            out.append("no key loop found (no loop header holds an MFMA)")
        elif st["s_barrier"] > max_bar:
            out.append("%d s_barrier in the key loop, at most %d (P through LDS between work-group barriers?)"
                       % (st["s_barrier"], max_bar))
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
    good = ("\tv_mfma_f32_16x16x16f16 a[0:3], v[0:1], v[2:3], a[0:3]\n  .vgpr_spill_count: 0\n"
            "\t.amdhsa_kernel kp_grouped_gemm_fp8_gen2_tiled\n\t\t.amdhsa_next_free_vgpr 140\n\t.end_amdhsa_kernel\n")
    doctored = {
        "missing": "\tv_add_f32 v0, v1, v2\n  .vgpr_spill_count: 0\n",
        "4x4x4": good + "\tv_mfma_f32_4x4x4f16 a[0:3], v[0:1], v[2:3], a[0:3]\n",
        "spill": good.replace("count: 0", "count: 3"),
        "scratch": good + "    .private_segment_fixed_size: 16\n",
        "vgprs": good.replace("next_free_vgpr 140", "next_free_vgpr 300"),
    }
    if problems(good, "v_mfma_f32_16x16x16f16"):
        return "the checker rejects good assembly"
    for name, asm in doctored.items():
        if not problems(asm, "v_mfma_f32_16x16x16f16"):
            return "the checker misses doctored assembly (%s)" % name
    # a key loop (inside an outer loop) with its stage barrier, then with P's two more
    loop = (".LBB0_1:  ; =>This Loop Header: Depth=1\n\ts_nop 0\n"
            ".LBB0_2:  ;   in Loop: Header=BB0_3 Depth=2\n\ts_barrier\n%s\ts_branch .LBB0_3\n"
            ".LBB0_3:  ;   Parent Loop BB0_1 Depth=1\n          ; =>  This Inner Loop Header: Depth=2\n"
            "\tv_mfma_f32_16x16x16f16 a[0:3], v[0:1], v[2:3], a[0:3]\n\ts_cbranch_scc1 .LBB0_2\n"
            "; %%bb.4:  ;   in Loop: Header=BB0_1 Depth=1\n"
            "\ts_barrier\n\ts_barrier\n\ts_cbranch_scc0 .LBB0_1\n  .vgpr_spill_count: 0\n")
    one, three = loop % "", loop % "\tds_write_b16 v0, v1\n\ts_barrier\n\ts_barrier\n\tds_read_b64 v[0:1], v2\n"
    st = stats(three)
    if problems(one, "v_mfma_f32_16x16x16f16", 1) or (st["s_barrier"], st["ds_write"], st["ds_read"]) != (3, 1, 1):
        return "the checker misreads a key loop"
    if not problems(three, "v_mfma_f32_16x16x16f16", 1) or not problems(good, "v_mfma_f32_16x16x16f16", 1):
        return "the checker misses P's barriers in the key loop (or a missing key loop)"
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hipcc", required=True)
    ap.add_argument("--kernels", required=True)
    ap.add_argument("--stamp", required=True)
    ap.add_argument("--depfile")
    ap.add_argument("--verbose", action="store_true", help="print the table (the stamp's lines)")
    a = ap.parse_args()
    err = self_test()
    if err:
        print("check_hip_isa: " + err, file=sys.stderr)
        return 1
    deps, lines, failed = set(), [], False
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(arch, c[0], c[1], ARCHS[arch][c[2]], c[3] if len(c) > 3 else None) for arch in ARCHS for c in CASES]
        for i, (arch, src, opts, want, max_bar) in enumerate(jobs):
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
            bad = problems(asm, want, max_bar)
            if n < MIN_COUNT.get(src, 1):
                bad.append("%d x %s, fewer than %d" % (n, want, MIN_COUNT[src]))
            if bad:
                print("check_hip_isa: %s: %s" % (tag, "; ".join(bad)), file=sys.stderr)
                failed = True
            st = stats(asm)
            loop = ("; key loop: %(s_barrier)d s_barrier, %(ds_write)d ds_write, %(ds_read)d ds_read, "
                    "%(ds_bpermute)d ds_bpermute" % st) if max_bar is not None else ""
            vgprs = ", ".join("%s %d" % kv for kv in kernel_vgprs(asm).items())
            lines.append("%s: %d x %s; VGPRs (unified: with the AGPRs) %s, %d AGPRs%s%s"
                         % (tag, n, want, vgprs, st["agpr"], loop, (" FAIL: " + "; ".join(bad)) if bad else ""))
    if a.verbose:
        print("\n".join(lines))
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
