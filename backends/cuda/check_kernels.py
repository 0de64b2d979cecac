#!/usr/bin/env python3
"""Static checks of the cuda plugin's kernels, with no GPU: what ptxas reported and what
the SASS holds, for the fatbins build_fatbins.py made (its WORKDIR: vNNN.fatbin,
vNNN.ptxas.txt, variants.tsv).

usage: check_kernels.py FATBIN_DIR [--cuobjdump PATH]      every variant
       check_kernels.py --ptxas REPORT                      one ptxas -v report
       check_kernels.py --sass LISTING --source SRC --options OPTS --kernel NAME
                                                            one kernel's SASS listing
       check_kernels.py --cubin CUBIN [--cuobjdump PATH]   every kernel of one cubin (the
                                                            sm_90a tier's self-test)
Exit status 0 when every check holds, 1 with one line per violation, 2 for bad usage or
a missing tool.

Checks:
  ptxas, every kernel of every variant and arch: 0 bytes of spill stores and loads;
  registers <= 255; static shared memory <= 48 KiB; no "Potential Performance Loss:
  wgmma ... serialized" (the sm_90a tier: an accumulator touched inside a wgmma group). Generation-2 kernels declare their
  work-group size and the blocks per SM the planner counts on (KP_LAUNCH_BOUNDS), so
  ptxas holds registers within 65536 / (threads x blocks) and would spill past it:
  "0 spill bytes" is the planner's occupancy, checked.
  SASS, generation-2 kernels (sources *_gen2.cl), sm_80 and sm_90a:
    - the tiled (tensor-core) kernels contain HMMA (mma.sync) and LDGSTS (cp.async),
      and the W8A8 one (moe_gemm_fp8_gen2.cl) the e4m3 MMA's lowering on sm_90a
      (F2FP.F16.E4M3.UNPACK_B feeding HMMA; QMMA where the arch has it) and no e4m3
      instruction on sm_80 (the tile layer's f16 decode),
      LDGSTS unless neither operand can be copied raw (e4m3 weights with f32
      activations: both are converted on their way into shared memory);
    - attention prefill contains HMMA, LDGSTS, LDSM.16.MT88 (V by ldmatrix.trans) and
      SHFL.BFLY (the online softmax's row max across a quad);
    - no kernel contains a scalar 16-bit global load (LDG.E.U16 / LDG.E.S16): every
      16-bit operand moves 16 bytes at a time;
    - paged and MLA decode store their outputs at least two columns at a time: an
      STG.E.64 and no STG.E.U16 (the wave tile's row stores, the decode's 4-column merge).
  SASS, sm_90a tier kernels (names with "sm90"; in a FATBIN_DIR the sources *_sm90.cl, built
  for sm_90a alone): HGMMA (wgmma), UTMALDG (TMA loads) and SYNCS (mbarrier waits); those
  named "e4m3" QGMMA.*.F32.E4M3.E4M3 (e4m3 wgmma) instead of HGMMA, and no e4m3 -> f16
  unpack (F2FP.F16.E4M3.UNPACK_B: operands decoded for a 16-bit MMA); those named "attn" or
  "attention" also an HGMMA with A from registers and B transposed (.tnspB: O += P V), and
  built with -DF3_PINGPONG=1 the consumers' ping-pong (BAR.SYNC / BAR.ARV on barriers by a
  register id over 256 threads, BAR.ARV and BAR.SYNC on 0x2), with =0 no BAR.ARV; with --cubin also their
  resource usage: no stack, no local memory (in a FATBIN_DIR the ptxas report's spill and
  stack line says the same).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")
ENTRY = re.compile(r"Compiling entry function '([^']+)' for '([^']+)'")
SERIALISED = re.compile(r"Potential Performance Loss: wgmma")
SM90_RS_TNSPB = re.compile(r"\bHGMMA\.\w+\.F32(?:\.BF16)?\s+R\d+,\s*R\d+,\s*gdesc\[\w+\]\.tnspB")
SCALAR16 = re.compile(r"\bLDG\.E\.(?:U16|S16)\b")
STG64 = re.compile(r"\bSTG\.E\.64\b")
STG16 = re.compile(r"\bSTG\.E\.(?:U16|S16)\b")
PP_SYNC_R = re.compile(r"\bBAR\.SYNC(?:\.DEFER_BLOCKING)?\s+R\d+,\s*0x100")
PP_ARV_R = re.compile(r"\bBAR\.ARV\s+R\d+,\s*0x100")
STATIC_SMEM_MAX = 48 * 1024
SASS_ARCHS = ("sm_80", "sm_90a")
SM90_ARCHS = ("sm_90a",)


def check_ptxas(text, where):
    """Problems in one ptxas -v report (one line each)."""
    problems, fn, arch, seen = [], "?", "?", 0
    for line in text.splitlines():
        m = ENTRY.search(line)
        if m:
            fn, arch = m.group(1), m.group(2)
            seen += 1
            continue
        m = SPILL.search(line)
        if m and (int(m.group(2)) or int(m.group(3))):
            problems.append("%s: %s (%s) spills: %s bytes stored, %s loaded" % (where, fn, arch, m.group(2),
                                                                                 m.group(3)))
        if SERIALISED.search(line):  # ptxas C7514/C7515..: every wgmma of the function waits for the last
            problems.append("%s: %s (%s) wgmma serialised by ptxas: %s" % (where, fn, arch,
                                                                        line.split("Performance Loss:")[-1].strip()))
        m = USED.search(line)
        if m:
            regs, smem = int(m.group(1)), int(m.group(2) or 0)
            if regs > 255:
                problems.append("%s: %s (%s) uses %d registers (> 255)" % (where, fn, arch, regs))
            if smem > STATIC_SMEM_MAX:
                problems.append("%s: %s (%s) declares %d bytes of static shared memory (> 48 KiB)" % (
                    where, fn, arch, smem))
    if seen == 0:
        problems.append("%s: no 'Compiling entry function' line: not a ptxas -v report" % where)
    return problems


def check_sass(sass, source, options, kernel, where, arch=None):
    """Problems in one generation-2 kernel's SASS listing (arch: "sm_90a", "sm_80" or unknown)."""
    problems = []
    if kernel.startswith("kp_grouped_gemm_fp8_gen2"):
        # W8A8: the tile layer's e4m3 unit. sm_90a takes mma.sync m16n8k32 e4m3, which ptxas
        # lowers to F2FP.F16.E4M3.UNPACK_B + HMMA.16816.F32 (QMMA on sm_89/sm_120); sm_80 decodes
        # in software (HMUL2) to f16 HMMA, so no e4m3 conversion can appear there
        e4m3 = re.search(r"\bF2FP\.F16\.E4M3\b|\bQMMA\.", sass)
        if arch == "sm_90a" and not e4m3:
            problems.append("%s: %s has no e4m3 MMA (F2FP.F16.E4M3 + HMMA or QMMA)" % (where, kernel))
        if arch == "sm_80" and e4m3:
            problems.append("%s: %s uses e4m3 instructions sm_80 does not have" % (where, kernel))
    if kernel.startswith(("kp_attention_prefill_gen2", "kp_attention_decode_gen2", "kp_mla_decode_gen2")):
        # FA2's loop (prefill, paged decode and MLA decode): tensor cores, cp.async, V
        # through ldmatrix.trans, quad shuffles
        for pattern, what in ((r"\bHMMA\.", "HMMA (tensor-core mma.sync)"), (r"\bLDGSTS\b", "LDGSTS (cp.async)"),
                              (r"\bLDSM\.16\.MT88\b", "LDSM.16.MT88 (ldmatrix.trans)"),
                              (r"\bSHFL\.BFLY\b", "SHFL.BFLY (row max by quad shuffles)")):
            if not re.search(pattern, sass):
                problems.append("%s: %s has no %s" % (where, kernel, what))
    if kernel.startswith(("kp_attention_decode_gen2", "kp_mla_decode_gen2")):
        # the epilogue (out / split-KV partials): two or four columns a store (the wave tile's
        # row stores, the decode's 4-column merge), never a 16-bit element alone
        if not STG64.search(sass):
            problems.append("%s: %s has no STG.E.64 (the epilogue's paired or 4-column stores)" % (where, kernel))
        m = STG16.search(sass)
        if m:
            problems.append("%s: %s stores 16-bit output elements one at a time (%s)" % (where, kernel, m.group(0)))
    if kernel.endswith("_tiled"):
        if not re.search(r"\bHMMA\.", sass):
            problems.append("%s: %s has no HMMA (tensor-core mma.sync)" % (where, kernel))
        raw_copy = not ("-DKP_GG_W_FP8" in options.split() and "-DKP_GG_A_F32" in options.split())
        if raw_copy and not re.search(r"\bLDGSTS\b", sass):
            problems.append("%s: %s has no LDGSTS (cp.async)" % (where, kernel))
    if "sm90" in kernel:
        # wgmma: ptxas writes HGMMA for 16-bit inputs and QGMMA for 8-bit ones
        # (QGMMA.64x128x32.F32.E4M3.E4M3); an e4m3 kernel must hold the e4m3 form
        mma = ((r"\bQGMMA\.\w+\.F32\.E4M3\.E4M3\b", "QGMMA ... E4M3.E4M3 (e4m3 wgmma.mma_async)") if "e4m3" in kernel
               else (r"\bHGMMA\.", "HGMMA (wgmma.mma_async)"))
        for pattern, what in (mma, (r"\bUTMALDG\b", "UTMALDG (TMA load)"),
                              (r"\bSYNCS\.PHASECHK\b", "SYNCS.PHASECHK (mbarrier wait)")):
            if not re.search(pattern, sass):
                problems.append("%s: %s has no %s" % (where, kernel, what))
        # an e4m3 wgmma kernel feeds the bytes to QGMMA as they are: an e4m3 -> f16 unpack
        # means the operands were decoded for a 16-bit MMA (the sm_80-style path) instead
        m = re.search(r"\bF2FP\.F16\.E4M3\.UNPACK_B\b", sass) if "e4m3" in kernel else None
        if m:
            problems.append("%s: %s decodes e4m3 to f16 (%s) instead of e4m3 wgmma" % (where, kernel, m.group(0)))
        if "attn" in kernel or "attention" in kernel:
            # FA3's O += P V: A (P) from registers, V read MN-major by the transpose bit
            # (HGMMA.64x128x16.F32.BF16 R24, R132, gdesc[UR4].tnspB, ...; f16: HGMMA.64x128x16.F32)
            if not SM90_RS_TNSPB.search(sass):
                problems.append("%s: %s has no HGMMA with A from registers and B transposed "
                                "(wgmma RS, imm-trans-b = 1: P V)" % (where, kernel))
            # FA3's ping-pong (-DF3_PINGPONG=1): the consumers take turns on named barriers 2
            # and 3 over 256 threads, synced and arrived on with the warpgroup's id in a register
            # (BAR.SYNC.DEFER_BLOCKING R2, 0x100 / BAR.ARV R12, 0x100), warpgroup 1's first
            # arrival and warpgroup 0's last sync on barrier 2 (BAR.ARV 0x2, 0x100); without it none
            pp = [o for o in options.split() if o.startswith("-DF3_PINGPONG=")]
            if pp and pp[-1] == "-DF3_PINGPONG=1":
                for pattern, what in ((PP_SYNC_R, "BAR.SYNC R.., 0x100 (a round's turn)"),
                                      (PP_ARV_R, "BAR.ARV R.., 0x100 (the other warpgroup's turn)"),
                                      (r"\bBAR\.SYNC(?:\.DEFER_BLOCKING)?\s+0x2,\s*0x100", "BAR.SYNC 0x2, 0x100"),
                                      (r"\bBAR\.ARV\s+0x2,\s*0x100", "BAR.ARV 0x2, 0x100")):
                    if not re.search(pattern, sass):
                        problems.append("%s: %s has no %s: the ping-pong is missing" % (where, kernel, what))
            elif pp and re.search(r"\bBAR\.ARV\b", sass):
                problems.append("%s: %s has BAR.ARV without -DF3_PINGPONG=1" % (where, kernel))
    m = SCALAR16.search(sass)
    if m:
        problems.append("%s: %s loads 16-bit scalars from global memory (%s)" % (where, kernel, m.group(0)))
    return problems


def functions(sass):
    """{function name: its SASS text} of a cuobjdump -sass listing."""
    out, name, lines = {}, None, []
    for line in sass.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            if name:
                out[name] = "\n".join(lines)
            name, lines = m.group(1), []
        elif name:
            lines.append(line)
    if name:
        out[name] = "\n".join(lines)
    return out


def find_cuobjdump(given):
    if given:
        return given
    for cand in (shutil.which("cuobjdump"), "/usr/local/cuda/bin/cuobjdump"):
        if cand and os.path.isfile(cand):
            return cand
    try:  # PyPI's nvidia-cuda-cuobjdump and -nvdisasm (ci/setup installs them)
        import nvidia.cu13 as cu13  # noqa: F401
        for d in cu13.__path__:
            cand = os.path.join(d, "bin", "cuobjdump")
            if os.path.isfile(cand):
                return cand
    except ImportError:
        pass
    return None


def check_dir(fatbin_dir, cuobjdump):
    index = os.path.join(fatbin_dir, "variants.tsv")
    if not os.path.isfile(index):
        sys.exit("check_kernels.py: %s not found (build_fatbins.py writes it)" % index)
    problems, checked_sass = [], 0
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(cuobjdump) + os.pathsep + env.get("PATH", "")  # nvdisasm beside it
    with open(index, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]

    def disassemble(tag):  # cuobjdump (and the nvdisasm it runs) is most of the time: one per core
        return subprocess.run([cuobjdump, "-sass", os.path.join(fatbin_dir, tag + ".fatbin")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    sass_tags = [row[0] for row in rows if row[1].endswith(("_gen2.cl", "_sm90.cl"))]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        listings_of = dict(zip(sass_tags, pool.map(disassemble, sass_tags)))
    for tag, source, options, kernels in rows:
        where = "%s %s [%s]" % (tag, source, options)
        with open(os.path.join(fatbin_dir, tag + ".ptxas.txt"), encoding="utf-8") as f:
            problems += check_ptxas(f.read(), where)
        if not source.endswith(("_gen2.cl", "_sm90.cl")):
            continue
        # one cuobjdump per fatbin: its listing has an ELF per arch, "code for sm_XX" ahead of each
        p = listings_of[tag]
        if p.returncode != 0:
            problems.append("%s: cuobjdump -sass failed: %s" % (where, p.stdout.strip()[-300:]))
            continue
        parts = re.split(r"^\s*code for (sm_\w+)\s*$", p.stdout, flags=re.M)[1:]
        listings = dict(zip(parts[0::2], parts[1::2]))  # arch -> its SASS
        for arch in SM90_ARCHS if source.endswith("_sm90.cl") else SASS_ARCHS:  # the tier: sm_90a SASS alone
            fns = functions(listings.get(arch, ""))
            for kernel in kernels.split():
                if kernel not in fns:
                    problems.append("%s: no %s SASS of %s" % (where, arch, kernel))
                    continue
                problems += check_sass(fns[kernel], source, options, kernel, "%s %s" % (where, arch), arch)
                checked_sass += 1
    return problems, len(rows), checked_sass


RES_USAGE = re.compile(r"Function (\S+):\s*\n\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def check_cubin(cubin, cuobjdump):
    """Problems in one cubin: each kernel's SASS (check_sass) and resource usage."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(cuobjdump) + os.pathsep + env.get("PATH", "")
    out = {}
    for flag in ("-sass", "-res-usage"):
        p = subprocess.run([cuobjdump, flag, cubin], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        if p.returncode != 0:
            return ["%s: cuobjdump %s failed: %s" % (cubin, flag, p.stdout.strip()[-300:])], 0
        out[flag] = p.stdout
    fns = functions(out["-sass"])
    problems = []
    for kernel, sass in sorted(fns.items()):
        problems += check_sass(sass, cubin, "", kernel, cubin)
    for name, regs, stack, _smem, local in RES_USAGE.findall(out["-res-usage"]):
        if int(stack) or int(local):
            problems.append("%s: %s uses %s bytes of stack and %s of local memory (spills)" % (cubin, name, stack, local))
        if int(regs) > 255:
            problems.append("%s: %s uses %s registers (> 255)" % (cubin, name, regs))
    if not fns:
        problems.append("%s: no kernel in the SASS listing" % cubin)
    return problems, len(fns)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fatbin_dir", nargs="?")
    ap.add_argument("--cuobjdump")
    ap.add_argument("--ptxas")
    ap.add_argument("--sass")
    ap.add_argument("--cubin")
    ap.add_argument("--source", default="moe/moe_gemm_gen2.cl")
    ap.add_argument("--options", default="")
    ap.add_argument("--kernel")
    args = ap.parse_args()
    if args.ptxas:
        with open(args.ptxas, encoding="utf-8") as f:
            problems, what = check_ptxas(f.read(), args.ptxas), "1 ptxas report"
    elif args.sass:
        if not args.kernel:
            ap.error("--sass needs --kernel")
        with open(args.sass, encoding="utf-8") as f:
            problems, what = check_sass(f.read(), args.source, args.options, args.kernel, args.sass), "1 SASS listing"
    elif args.cubin:
        tool = find_cuobjdump(args.cuobjdump)
        if not tool:
            print("check_kernels.py: no cuobjdump (bash ci/setup installs it)")
            return 2
        problems, n = check_cubin(args.cubin, tool)
        what = "%d kernels of %s" % (n, os.path.basename(args.cubin))
    elif args.fatbin_dir:
        tool = find_cuobjdump(args.cuobjdump)
        if not tool:
            print("check_kernels.py: no cuobjdump (PATH, /usr/local/cuda/bin, or pip's nvidia-cuda-cuobjdump and "
                  "nvidia-cuda-nvdisasm: bash ci/setup installs them)")
            return 2
        problems, n, nsass = check_dir(args.fatbin_dir, tool)
        what = "%d variants' ptxas reports, %d generation-2 SASS listings" % (n, nsass)
    else:
        ap.error("give FATBIN_DIR, --ptxas, --sass or --cubin")
    for p in problems:
        print("FAIL " + p)
    print("check_kernels.py: %s: %d problems" % (what, len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
