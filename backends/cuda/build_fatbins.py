#!/usr/bin/env python3
"""Compiles every CUDA kernel variant the planners can pick into one fatbin each, and
writes the C table the cuda plugin embeds them through.

usage: build_fatbins.py --nvcc NVCC --kernels KERNELS_DIR --out-c OUT_C --out-h OUT_H
                        --depfile DEPFILE --workdir DIR
                        (--variants-exe EXE [--variants-arg cuda] | --variants-file FILE)
                        [--hip-dialect [--hip-include DIR]] [--jobs N]

The variant list is what `kp-gpu-variants cuda` prints (backends/gpu/gpu_variants_main.c),
one line per variant: "<source under kernels/>\\t<-D options>\\t<entry points>". Each
variant is one nvcc run:

    nvcc -x cu -fatbin -I<kernels> -DKP_TARGET_CUDA=1 <options>
         -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a
         -gencode arch=compute_80,code=compute_80

SASS for sm_80 and sm_90a, plus compute_80 PTX that newer GPUs JIT. A source with a line
"KP_ARCHS: sm_90a" (the sm_90a tier's kernels, kernels/moe/moe_gemm_sm90.cl) is built for
the archs it names alone, as SASS (-gencode arch=compute_90a,code=sm_90a), and always in
the CUDA dialect (its tile layer is CUDA-only, also in a --hip-dialect build). -gencode is explicit
(meson's CUDA arch helpers emit archs nvcc 13 rejects). nvcc's default fatbinary
settings compress PTX only, never the ELF images (fatbinary -compress: "ptx and debug
images"); that is pinned below with -Xfatbin=-compress=true, and the fatbin reader
(cuda_fatbin.c) reports a compressed ELF as such rather than misreading it.

--hip-dialect compiles the same sources through HIP's NVIDIA platform headers instead
(-DKP_TARGET_HIP=1 -D__HIP_PLATFORM_NVIDIA__ -I<hip include>): the kernels then go
through kp_dialect.h's HIP mapping, and the cuda backend runs them.

Variants compile in parallel (a thread pool of os.cpu_count() nvcc processes). Each
result is cached under $KPORT_KERNEL_BUILD_CACHE (shared between build trees, e.g. CI's
release and sanitizer builds) or WORKDIR/cache, keyed by a SHA-256 of nvcc's version,
the full command line and the text of the source and every header it includes. Cache
entries are written atomically (rename), so concurrent builds may share a directory.

It also embeds, as kp_cu_source_table, the text of every kernels/ source a variant uses,
with its "..." includes inlined (each header once, with #line markers, as
backends/opencl/embed_kernels.py does): cuda_rtc.c compiles a variant that is not
embedded (a tuned tile) from it at run time with NVRTC. NVRTC always builds the CUDA
dialect (KP_TARGET_CUDA), also in a --hip-dialect build.

Each variant's ptxas resource report (-Xptxas=-v: registers, spills, shared memory per
kernel and arch) is kept beside its fatbin as WORKDIR/vNNN.ptxas.txt, and
WORKDIR/variants.tsv indexes them; backends/cuda/check_kernels.py reads both.

Outputs: OUT_H declares kp_cu_fatbin_table and kp_cu_source_table; OUT_C defines them. The fatbins themselves
are copied to WORKDIR and pulled in with the assembler's .incbin (8-byte aligned,
read-only), which keeps a multi-megabyte table out of the C compiler's parser. OUT_C
carries each fatbin's SHA-256, so a changed fatbin changes the C file and recompiles
it. DEPFILE lists every kernels/ file and directory read, so editing a kernel, or
adding one, rebuilds.
"""
import argparse
import concurrent.futures
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "kernels"))
from kp_inline import inline  # noqa: E402  (kernels/kp_inline.py: the one source inliner)
GENCODE = [
    "-gencode", "arch=compute_80,code=sm_80",
    "-gencode", "arch=compute_90a,code=sm_90a",
    "-gencode", "arch=compute_80,code=compute_80",
]
CACHE_FORMAT = "kport-fatbin-3"  # bump when the key's recipe changes (2: the ptxas report is cached too;
# 3: the kernels directory's path left out, so a cache carried to another checkout hits)


ARCHS_LINE = re.compile(r"^\W*KP_ARCHS:\s*(sm_\w+(?:\s+sm_\w+)*)\s*$", re.M)


def source_gencode(path):
    """The -gencode flags of one source: its KP_ARCHS line's SASS archs, else GENCODE."""
    with open(path, encoding="utf-8") as f:
        m = ARCHS_LINE.search(f.read())
    if not m:
        return None
    out = []
    for arch in m.group(1).split():
        out += ["-gencode", "arch=compute_%s,code=%s" % (arch[3:], arch)]
    return out


def die(msg):
    sys.exit("build_fatbins.py: " + msg)


def read_variants(args):
    if args.variants_file:
        with open(args.variants_file, encoding="utf-8") as f:
            text = f.read()
        origin = args.variants_file
    else:
        cmd = [args.variants_exe] + ([args.variants_arg] if args.variants_arg else [])
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            die("%s failed (%d):\n%s" % (" ".join(cmd), p.returncode, p.stderr))
        text = p.stdout
        origin = " ".join(cmd)
    variants, seen = [], set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            die("%s:%d: expected 'source<TAB>options<TAB>kernels', got %r" % (origin, n, line))
        source, options, kernels = parts
        if (source, options) in seen:
            die("%s:%d: variant listed twice: %s %s" % (origin, n, source, options))
        seen.add((source, options))
        if not kernels.split():
            die("%s:%d: %s %s lists no kernel" % (origin, n, source, options))
        variants.append((source, options, " ".join(kernels.split())))
    if not variants:
        die("%s listed no variant" % origin)
    return variants


def include_closure(path, kernels_dir, seen):
    """The source and every kernels/ header it includes ("..." includes, recursively)."""
    path = os.path.normpath(path)
    if path in seen:
        return
    seen[path] = None
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for name in INCLUDE.findall(text):
        for cand in (os.path.join(os.path.dirname(path), name), os.path.join(kernels_dir, name)):
            if os.path.isfile(cand):
                include_closure(cand, kernels_dir, seen)
                break
        # not found here: a system or toolkit header, covered by nvcc's version


def c_text(text):
    """text as adjacent C string literals, one per line (no trigraphs, no raw tabs)."""
    parts = []
    for line in text.split("\n"):
        esc = line.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t").replace("??", "?\\?")
        parts.append('    "%s\\n"' % esc)
    return "\n".join(parts)


def nvcc_version(nvcc):
    p = subprocess.run([nvcc, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        die("%s --version failed:\n%s" % (nvcc, p.stdout))
    return p.stdout


def c_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def atomic_copy(src, dst):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dst), prefix=".tmp-")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nvcc", required=True)
    ap.add_argument("--kernels", required=True)
    ap.add_argument("--out-c", required=True)
    ap.add_argument("--out-h", required=True)
    ap.add_argument("--depfile", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--variants-exe")
    ap.add_argument("--variants-arg", default="cuda")
    ap.add_argument("--variants-file")
    ap.add_argument("--hip-dialect", action="store_true")
    ap.add_argument("--hip-include", default="/usr/include")
    ap.add_argument("--hip-shim", help="searched before --hip-include (hip_nvidia_shim/: see its README)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    if bool(args.variants_exe) == bool(args.variants_file):
        die("give exactly one of --variants-exe and --variants-file")

    t0 = time.time()
    kernels_dir = os.path.abspath(args.kernels)
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    cache_dir = os.environ.get("KPORT_KERNEL_BUILD_CACHE") or os.path.join(workdir, "cache")
    export_dir = os.environ.get("KPORT_KERNEL_CACHE_EXPORT")
    os.makedirs(cache_dir, exist_ok=True)
    variants = read_variants(args)
    version = nvcc_version(args.nvcc)

    hip_shim_text = []
    if args.hip_dialect:
        hip_inc = os.path.abspath(args.hip_include)
        if not os.path.isfile(os.path.join(hip_inc, "hip", "hip_runtime.h")):
            die("--hip-dialect: no hip/hip_runtime.h under %s (Debian: libamdhip64-dev)" % hip_inc)
        dialect = ["-DKP_TARGET_HIP=1", "-D__HIP_PLATFORM_NVIDIA__", "-D__HIP_DISABLE_CPP_FUNCTIONS__", "-I" + hip_inc]
        if args.hip_shim and os.path.isdir(args.hip_shim):
            shim = os.path.abspath(args.hip_shim)
            dialect.insert(2, "-I" + shim)
            for dirpath, dirnames, filenames in os.walk(shim):  # part of the cache key
                for fn in sorted(filenames):
                    with open(os.path.join(dirpath, fn), "rb") as f:
                        hip_shim_text.append(fn.encode() + f.read())
    else:
        hip_inc = None
        dialect = ["-DKP_TARGET_CUDA=1"]
    # -Xfatbin=-compress=true: fatbinary's documented default, "compress ptx and debug
    # images" (not ELF): the SASS stays readable by cuda_fatbin.c. Written out so a
    # changed default cannot silently compress the ELF images.
    # -Xptxas=-v: ptxas's resource report per kernel and arch (registers, spills, shared
    # memory), kept beside each fatbin for backends/cuda/check_kernels.py
    base = [args.nvcc, "-x", "cu", "-fatbin", "-Xfatbin=-compress=true", "-Xptxas=-v", "-I" + kernels_dir] + dialect

    deps = set()
    for dirpath, dirnames, filenames in os.walk(kernels_dir):
        deps.add(dirpath)
        for fn in filenames:
            if fn.endswith((".cl", ".h")):
                deps.add(os.path.join(dirpath, fn))

    extra_key = hashlib.sha256(b"\0".join(hip_shim_text)).hexdigest() if hip_shim_text else ""
    if hip_inc:  # the HIP headers' version stands for their whole tree
        for name in ("hip/hip_version.h", "hip/nvidia_detail/nvidia_hip_runtime.h"):
            p = os.path.join(hip_inc, name)
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    extra_key += name + hashlib.sha256(f.read()).hexdigest()

    texts = {}  # source -> its text with the includes inlined (kp_cu_source_table)
    for source, _, _ in variants:
        path = os.path.join(kernels_dir, source)
        if source not in texts and os.path.isfile(path):
            out = []
            inline(os.path.normpath(path), kernels_dir, set(), None, out)
            texts[source] = "\n".join(out) + "\n"

    jobs = []
    for i, (source, options, kernels) in enumerate(variants):
        src = os.path.join(kernels_dir, source)
        if not os.path.isfile(src):
            die("variant %d: %s not found under %s" % (i, source, kernels_dir))
        closure = {}
        include_closure(src, kernels_dir, closure)
        archs = source_gencode(src)
        if archs is None:
            cmd = base + shlex.split(options) + GENCODE + [src]
        else:  # the sm_90a tier: its archs alone, the CUDA dialect
            cmd = [a for a in base if a not in dialect] + ["-DKP_TARGET_CUDA=1"] + shlex.split(options) + archs + [src]
        h = hashlib.sha256()
        where = [a.replace(kernels_dir, "<kernels>") for a in cmd[1:]]  # not nvcc's or the checkout's path
        for part in (CACHE_FORMAT, version, extra_key, "\0".join(where)):
            h.update(part.encode() + b"\0")
        for path in closure:
            h.update(os.path.relpath(path, kernels_dir).encode() + b"\0")
            with open(path, "rb") as f:
                h.update(f.read() + b"\0")
        jobs.append((i, source, options, kernels, cmd, h.hexdigest()))

    lock = threading.Lock()
    done = [0]
    stats = {"cached": 0, "built": 0}

    def run(job):
        i, source, options, kernels, cmd, key = job
        cached = os.path.join(cache_dir, key[:2], key + ".fatbin")
        report = os.path.join(cache_dir, key[:2], key + ".ptxas")
        t = time.time()
        how = "cached"
        if not os.path.isfile(cached) or not os.path.isfile(report):
            how = "built"
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(cached), prefix=".tmp-", suffix=".fatbin")
            os.close(fd)
            p = subprocess.run(cmd + ["-o", tmp], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if p.returncode != 0 or os.path.getsize(tmp) == 0:
                os.unlink(tmp)
                raise RuntimeError("nvcc failed (%d) for %s %s:\n$ %s\n%s" % (
                    p.returncode, source, options, " ".join(shlex.quote(c) for c in cmd), p.stdout))
            os.chmod(tmp, 0o644)  # a shared cache: readable by the other build trees
            fd, rtmp = tempfile.mkstemp(dir=os.path.dirname(report), prefix=".tmp-", suffix=".ptxas")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(p.stdout)
            os.chmod(rtmp, 0o644)
            os.replace(rtmp, report)  # the report first: a fatbin in the cache always has one
            os.replace(tmp, cached)
        if export_dir:  # ci/gpu-carry --kernels: exactly this tree's entries, to carry
            for f in (cached, report):
                os.makedirs(os.path.join(export_dir, key[:2]), exist_ok=True)
                atomic_copy(f, os.path.join(export_dir, key[:2], os.path.basename(f)))
        out = os.path.join(workdir, "v%03d.fatbin" % i)
        atomic_copy(cached, out)
        atomic_copy(report, os.path.join(workdir, "v%03d.ptxas.txt" % i))
        with lock:
            done[0] += 1
            stats[how] += 1
            print("[%d/%d] %s %s %s (%.1f s)" % (done[0], len(jobs), how, source, options, time.time() - t),
                  flush=True)
        return out

    outs = [None] * len(jobs)
    errors = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futs = {pool.submit(run, j): j[0] for j in jobs}
        for fut in concurrent.futures.as_completed(futs):
            try:
                outs[futs[fut]] = fut.result()
            except Exception as e:  # report every failing variant, not just the first
                errors.append(str(e))
    if errors:
        die("%d of %d variants failed:\n%s" % (len(errors), len(jobs), "\n".join(errors)))

    # ---- the C table -----------------------------------------------------------
    guard = "KPORT_CUDA_FATBINS_H"
    hdr = [
        "/* Generated by backends/cuda/build_fatbins.py: do not edit. */",
        "#ifndef " + guard,
        "#define " + guard,
        "#include <stddef.h>",
        "",
        "/* One kernel variant: kernels/<source> compiled with <options> into a fatbin",
        " * (sm_80 and sm_90a SASS, compute_80 PTX). kernels: its entry points, space-separated. */",
        "typedef struct kp_cu_fatbin {",
        "    const char *source;",
        "    const char *options;",
        "    const char *kernels;",
        "    const unsigned char *data; /* 8-byte aligned */",
        "    size_t size;",
        "} kp_cu_fatbin;",
        "",
        "#define KP_CU_FATBIN_COUNT %d" % len(jobs),
        "#define KP_CU_FATBIN_DIALECT %s /* the kernels' dialect mapping */" % c_str("hip" if hip_inc else "cuda"),
        "#define KP_CU_FATBIN_ARCHS \"sm_80 sm_90a compute_80\"",
        "extern const kp_cu_fatbin kp_cu_fatbin_table[KP_CU_FATBIN_COUNT];",
        "",
        "/* A kernel source with its includes inlined: what NVRTC compiles for a variant",
        " * that is not embedded (cuda_rtc.c). */",
        "typedef struct kp_cu_source {",
        "    const char *name; /* path under kernels/ */",
        "    const char *text;",
        "    size_t length;",
        "} kp_cu_source;",
        "",
        "#define KP_CU_SOURCE_COUNT %d" % len(texts),
        "extern const kp_cu_source kp_cu_source_table[KP_CU_SOURCE_COUNT];",
        "",
        "#endif",
        "",
    ]
    src = [
        "/* Generated by backends/cuda/build_fatbins.py: do not edit. */",
        '#include "%s"' % os.path.basename(args.out_h),
        "",
    ]
    for (i, source, options, kernels, cmd, key), out in zip(jobs, outs):
        if '"' in out or "\\" in out:
            die("the build directory path %r cannot be named in an .incbin" % out)
        with open(out, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        src += [
            "/* %s %s: sha256 %s */" % (source, options.replace("*/", "* /"), digest),
            '__asm__(".pushsection .rodata.kp_cu_fatbin,\\"a\\",@progbits\\n"',
            '        ".balign 8\\n"',
            '        "kp_cu_fatbin_%d:\\n"' % i,
            '        ".incbin \\"%s\\"\\n"' % out,
            '        ".popsection\\n");',
            "extern const unsigned char kp_cu_fatbin_%d[] __attribute__((visibility(\"hidden\")));" % i,
            "",
        ]
    src.append("const kp_cu_fatbin kp_cu_fatbin_table[KP_CU_FATBIN_COUNT] = {")
    for (i, source, options, kernels, cmd, key), out in zip(jobs, outs):
        src.append("    {%s, %s, %s, kp_cu_fatbin_%d, %d}," % (
            c_str(source), c_str(options), c_str(kernels), i, os.path.getsize(out)))
    src += ["};", ""]
    for i, (name, text) in enumerate(sorted(texts.items())):
        src += ["static const char kp_cu_source_%d[] = /* %s */" % (i, name), c_text(text) + ";", ""]
    src.append("const kp_cu_source kp_cu_source_table[KP_CU_SOURCE_COUNT] = {")
    for i, (name, _) in enumerate(sorted(texts.items())):
        src.append("    {%s, kp_cu_source_%d, sizeof kp_cu_source_%d - 1}," % (c_str(name), i, i))
    src += ["};", ""]

    # the index check_kernels.py reads: vNNN <TAB> source <TAB> options <TAB> kernels
    index = "".join("v%03d\t%s\t%s\t%s\n" % (i, source, options, kernels)
                    for (i, source, options, kernels, cmd, key) in jobs)
    with open(os.path.join(workdir, "variants.tsv"), "w", encoding="utf-8") as f:
        f.write(index)
    for path, lines in ((args.out_h, hdr), (args.out_c, src)):
        text = "\n".join(lines)
        old = None
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                old = f.read()
        if old != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    with open(args.depfile, "w", encoding="utf-8") as f:
        f.write("%s: %s\n" % (args.out_c.replace(" ", "\\ "),
                              " ".join(d.replace(" ", "\\ ") for d in sorted(deps))))
    total = sum(os.path.getsize(o) for o in outs)
    print("build_fatbins: %d variants (%d built, %d cached), %.1f MiB of fatbins, %d sources for NVRTC, %.1f s, "
          "cache %s" % (len(jobs), stats["built"], stats["cached"], total / 1048576.0, len(texts), time.time() - t0,
                        cache_dir), flush=True)


if __name__ == "__main__":
    main()
