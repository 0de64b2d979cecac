#!/usr/bin/env python3
"""Builds the hip plugin's kernels: one AMD GPU code object per (variant, arch), and
the self-contained kernel sources hiprtc compiles for any other arch at run time.

usage: build_code_objects.py --kernels DIR --hipcc HIPCC [--bundler CLANG_OFFLOAD_BUNDLER]
           (--variants-tool KP_GPU_VARIANTS | --variants-file FILE) --archs gfx90a,gfx940,gfx1030
           --out-c OUT.c --out-h OUT.h --out-blob OUT.bin --depfile OUT.d [--jobs N]

Variants: `kp-gpu-variants hip` (backends/gpu) prints one line per kernel variant the
planners can pick on a HIP device, "<source under kernels/>\t<-D options>\t<entry
points>"; --variants-file reads the same format from a file (lines starting with #
are comments; an empty entry-point field means "every kernel the code object holds").

Each variant is compiled once for every arch
    hipcc -x hip --genco -O3 --offload-arch=A1 --offload-arch=A2 ... -DKP_TARGET_HIP=1 -I KERNELS <options>
and the clang offload bundle hipcc writes is split into one ELF code object per arch
with clang-offload-bundler (without the bundler: one hipcc --no-gpu-bundle-output run
per arch). hipcc is always given the archs: without --offload-arch it runs
rocm_agent_enumerator, which crashes on a machine with no AMD GPU.

Compilations run in parallel; each result is kept in a content-addressed cache (the key
hashes hipcc's version, the archs, the options and the source with its includes
inlined), in $KPORT_KERNEL_BUILD_CACHE when set (CI shares it between builds), else
beside the outputs, so an unchanged variant is never compiled twice.

Outputs:
  OUT.bin   every code object, each at an 8-byte aligned offset
  OUT.c     the tables (kp_hip_code_objects, kp_hip_sources, kp_hip_archs); the blob is
            pulled in with .incbin, so no multi-megabyte C array is parsed
  OUT.h     their declarations
  OUT.d     every kernel source and header read, so editing one rebuilds this target
"""
import argparse
import concurrent.futures
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "kernels"))
from kp_inline import inline  # noqa: E402  (kernels/kp_inline.py: the one source inliner)


# KP_HIP_FIXED_OPTIONS of hip_rtc.h: MFMA tiles where the arch has them, <= 256 work-items
FIXED_OPTIONS = ["-O3", "-DKP_TARGET_HIP=1", "-DKP_HAS_MFMA", "--gpu-max-threads-per-block=256"]


def read_variants(args):
    if args.variants_tool:
        r = subprocess.run([args.variants_tool, "hip"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True)
        if r.returncode != 0:
            sys.exit("%s hip failed (%d): %s" % (args.variants_tool, r.returncode, r.stderr.strip()))
        text = r.stdout
        origin = os.path.basename(args.variants_tool) + " hip"
    else:
        with open(args.variants_file, encoding="utf-8") as f:
            text = f.read()
        origin = args.variants_file
    variants = []
    seen = set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            sys.exit("%s:%d: expected 'source<TAB>options<TAB>kernels', got %r" % (origin, n, line))
        source, options, kernels = fields[0].strip(), fields[1].strip(), fields[2].strip()
        if (source, options) in seen:
            continue
        seen.add((source, options))
        variants.append((source, options, kernels.split()))
    if not variants:
        sys.exit("%s: no variants" % origin)
    return variants


def elf_kernels(data):
    """Names of the kernels an AMDGPU code object holds: global STT_FUNC symbols with a
    '<name>.kd' descriptor beside them."""
    import struct
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    secs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    funcs, kds = set(), set()
    for s in secs:
        if s[1] != 2:  # SHT_SYMTAB
            continue
        strtab = secs[s[6]]
        for off in range(s[4], s[4] + s[5], 24):
            st_name, st_info = struct.unpack_from("<IB", data, off)
            end = data.index(b"\0", strtab[4] + st_name)
            name = data[strtab[4] + st_name:end].decode()
            if st_info & 0xF == 2:  # STT_FUNC
                funcs.add(name)
            elif st_info & 0xF == 1 and name.endswith(".kd"):
                kds.add(name[:-3])
    return sorted(funcs & kds)


class Builder:
    def __init__(self, args, version):
        self.args = args
        self.archs = args.archs.split(",")
        self.version = version
        self.lock = threading.Lock()
        self.done = 0
        self.compiled = 0
        self.total = 0

    def key(self, text, options):
        h = hashlib.sha256()
        for part in (self.version, ",".join(self.archs), " ".join(FIXED_OPTIONS), options,
                     "bundler" if self.args.bundler else "direct", text):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()[:32]

    def compile(self, source, options, text, cache_dir):
        key = self.key(text, options)
        paths = {a: os.path.join(cache_dir, "%s-%s.hsaco" % (key, a)) for a in self.archs}
        status = "cached"
        if not all(os.path.isfile(p) for p in paths.values()):
            status = "built"
            self.build(source, options, paths)
        blobs = {}
        for a, p in paths.items():
            with open(p, "rb") as f:
                blobs[a] = f.read()
        with self.lock:
            self.done += 1
            self.compiled += status == "built"
            print("[%d/%d] %s %s %s" % (self.done, self.total, status, source, options or "(no options)"), flush=True)
        return blobs

    def build(self, source, options, paths):
        a = self.args
        # the same fixed options as hiprtc (KP_HIP_FIXED_OPTIONS in hip_rtc.h)
        base = [a.hipcc, "-x", "hip", "--genco"] + FIXED_OPTIONS + ["-I", a.kernels] + options.split()
        src = os.path.join(a.kernels, source)
        with tempfile.TemporaryDirectory(prefix="kp-hip-") as tmp:
            if a.bundler:
                bundle = os.path.join(tmp, "k.bundle")
                run(base + ["--offload-arch=%s" % x for x in self.archs] + [src, "-o", bundle], source, options)
                triples = bundle_targets(bundle)
                targets, outs = [], []
                for x in self.archs:
                    t = next((t for t in triples if t.endswith("--" + x)), None)
                    if t is None:
                        sys.exit("%s %s: no %s entry in the offload bundle (it holds: %s)"
                                 % (source, options, x, ", ".join(triples)))
                    targets.append(t)
                    outs.append(os.path.join(tmp, x + ".hsaco"))
                run([a.bundler, "-type=o", "-unbundle", "-input=" + bundle, "-targets=" + ",".join(targets)]
                    + ["-output=" + o for o in outs], source, options)
            else:
                outs = []
                for x in self.archs:
                    outs.append(os.path.join(tmp, x + ".hsaco"))
                    run(base + ["--offload-arch=" + x, "--no-gpu-bundle-output", src, "-o", outs[-1]], source, options)
            for x, o in zip(self.archs, outs):
                with open(o, "rb") as f:
                    if f.read(4) != b"\x7fELF":
                        sys.exit("%s %s: the %s code object is not an ELF file" % (source, options, x))
                tmpname = paths[x] + ".tmp%d" % os.getpid()
                shutil.copyfile(o, tmpname)
                os.replace(tmpname, paths[x])  # atomic: a shared cache never holds half a file


def run(cmd, source, options):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if r.returncode != 0:
        sys.exit("compiling %s (%s) failed (%d):\n  %s\n%s" % (source, options, r.returncode, " ".join(cmd), r.stdout))


def bundle_targets(path):
    """The triples of a clang offload bundle ("hipv4-amdgcn-amd-amdhsa--gfx90a", ...)."""
    import struct
    with open(path, "rb") as f:
        data = f.read()
    magic = b"__CLANG_OFFLOAD_BUNDLE__"
    if not data.startswith(magic):
        sys.exit("%s: not a clang offload bundle" % path)
    n, = struct.unpack_from("<Q", data, len(magic))
    off, out = len(magic) + 8, []
    for _ in range(n):
        _, _, tlen = struct.unpack_from("<QQQ", data, off)
        out.append(data[off + 24:off + 24 + tlen].decode())
        off += 24 + tlen
    return out


def c_string(text):
    parts = []
    for line in text.split("\n"):
        esc = line.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t").replace("??", "?\\?")
        parts.append('    "%s\\n"' % esc)
    return "\n".join(parts)


def c_quote(s):
    return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kernels", required=True)
    p.add_argument("--hipcc", default="")
    p.add_argument("--sources-only", action="store_true",
                   help="no hipcc: embed the sources only (every arch then goes through hiprtc)")
    p.add_argument("--bundler", default="")
    p.add_argument("--variants-tool", default="")
    p.add_argument("--variants-file", default="")
    p.add_argument("--archs", default="gfx90a,gfx940,gfx1030")
    p.add_argument("--out-c", required=True)
    p.add_argument("--out-h", required=True)
    p.add_argument("--out-blob", required=True)
    p.add_argument("--depfile", required=True)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 4)
    args = p.parse_args()
    if bool(args.variants_tool) == bool(args.variants_file):
        sys.exit("give exactly one of --variants-tool, --variants-file")
    args.kernels = os.path.abspath(args.kernels)
    t0 = time.time()

    variants = read_variants(args)
    deps = set()
    texts = {}  # source -> inlined text
    for source, _, _ in variants:
        if source not in texts:
            out = []
            path = os.path.join(args.kernels, source)
            if not os.path.isfile(path):
                sys.exit("variant source %s: no such file under %s" % (source, args.kernels))
            inline(path, args.kernels, set(), deps, out)
            texts[source] = "\n".join(out) + "\n"

    if args.sources_only:
        version = ""
        b = Builder(args, version)
        b.archs = []
        results = [{} for _ in variants]
    else:
        if not args.hipcc:
            sys.exit("--hipcc is required unless --sources-only")
        version, b, results = compile_all(args, variants, texts)
    write_outputs(args, variants, texts, version, b, results, deps, t0)


def compile_all(args, variants, texts):
    r = subprocess.run([args.hipcc, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True)
    version = r.stdout
    cache_dir = os.environ.get("KPORT_KERNEL_BUILD_CACHE") or os.path.join(
        os.path.dirname(os.path.abspath(args.out_blob)), "hip-code-object-cache")
    cache_dir = os.path.join(cache_dir, "hip")
    os.makedirs(cache_dir, exist_ok=True)

    b = Builder(args, version)
    b.total = len(variants)
    print("hip: %d variants x %s, %d jobs, cache %s" % (len(variants), args.archs, args.jobs, cache_dir), flush=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        futs = [ex.submit(b.compile, s, o, texts[s], cache_dir) for s, o, _ in variants]
        results = [f.result() for f in futs]
    return version, b, results


def write_outputs(args, variants, texts, version, b, results, deps, t0):
    # The blob and the table, in variant order then arch order.
    blob = bytearray()
    rows = []
    for (source, options, kernels), blobs in zip(variants, results):
        for arch in b.archs:
            data = blobs[arch]
            held = elf_kernels(data)
            if not kernels:
                kernels = held
            missing = [k for k in kernels if k not in held]
            if missing:
                sys.exit("%s (%s) for %s lacks kernel(s) %s (it holds %s)"
                         % (source, options, arch, " ".join(missing), " ".join(held)))
            while len(blob) % 8:
                blob.append(0)
            rows.append((arch, source, options, " ".join(kernels), len(blob), len(data)))
            blob += data
    with open(args.out_blob, "wb") as f:
        f.write(blob)
    digest = hashlib.sha256(blob).hexdigest()[:16]

    with open(args.out_h, "w", encoding="utf-8") as h:
        h.write("""/* Generated by backends/hip/build_code_objects.py — do not edit. */
#ifndef KP_HIP_CODE_OBJECTS_H
#define KP_HIP_CODE_OBJECTS_H

#include <stddef.h>

/* One AMD GPU code object (an ELF file, 8-byte aligned) of a kernel variant for one arch. */
typedef struct kp_hip_code_object {
    const char *arch;            /* "gfx90a" */
    const char *source;          /* path under kernels/ */
    const char *options;         /* the variant's -D options, as the planners spell them */
    const char *kernels;         /* the entry points, space-separated */
    const unsigned char *data;
    size_t size;
} kp_hip_code_object;

/* A kernel source with its includes inlined (hiprtc's input for other archs). */
typedef struct kp_hip_source {
    const char *name; /* path under kernels/ */
    const char *text;
    size_t length;
} kp_hip_source;

extern const kp_hip_code_object kp_hip_code_objects[]; /* kp_hip_code_object_count entries, then a zeroed one */
extern const size_t kp_hip_code_object_count;
extern const kp_hip_source kp_hip_sources[];
extern const size_t kp_hip_source_count;
extern const char *const kp_hip_archs[]; /* the archs every variant is embedded for, then NULL */
extern const size_t kp_hip_arch_count;
extern const char kp_hip_code_objects_compiler[]; /* the first line of `hipcc --version` */

#endif
""")

    with open(args.out_c, "w", encoding="utf-8") as c:
        c.write("/* Generated by backends/hip/build_code_objects.py — do not edit. */\n")
        c.write("/* blob sha256 %s, %d bytes */\n" % (digest, len(blob)))
        c.write('#include "%s"\n\n' % os.path.basename(args.out_h))
        blob_path = os.path.abspath(args.out_blob).replace("\\", "\\\\").replace('"', '\\"')
        c.write('__asm__(".pushsection .rodata.kp_hip_code_blob, \\"a\\"\\n"\n'
                '        ".balign 16\\n"\n'
                '        ".type kp_hip_code_blob_, @object\\n"\n'
                '        "kp_hip_code_blob_:\\n"\n'
                '        ".incbin \\"%s\\"\\n"\n'
                '        ".size kp_hip_code_blob_, %d\\n"\n'
                '        ".popsection\\n");\n' % (blob_path, len(blob)))
        c.write("extern const unsigned char kp_hip_code_blob_[] __attribute__((visibility(\"hidden\")));\n\n")
        c.write("const kp_hip_code_object kp_hip_code_objects[] = {\n")
        for arch, source, options, kernels, off, size in rows:
            c.write("    {%s, %s, %s, %s, kp_hip_code_blob_ + %d, %d},\n"
                    % (c_quote(arch), c_quote(source), c_quote(options), c_quote(kernels), off, size))
        c.write("    {0, 0, 0, 0, 0, 0}, /* the end */\n")
        c.write("};\nconst size_t kp_hip_code_object_count = %d;\n\n" % len(rows))
        for i, (source, text) in enumerate(sorted(texts.items())):
            c.write("static const char kp_hip_text_%d[] = /* %s */\n%s;\n\n" % (i, source, c_string(text)))
        c.write("const kp_hip_source kp_hip_sources[] = {\n")
        for i, (source, _) in enumerate(sorted(texts.items())):
            c.write("    {%s, kp_hip_text_%d, sizeof kp_hip_text_%d - 1},\n" % (c_quote(source), i, i))
        c.write("};\nconst size_t kp_hip_source_count = %d;\n\n" % len(texts))
        c.write("const char *const kp_hip_archs[] = {%s};\n" % ", ".join([c_quote(a) for a in b.archs] + ["0"]))
        c.write("const size_t kp_hip_arch_count = %d;\n" % len(b.archs))
        first = version.strip().splitlines()[0] if version.strip() else "hipcc"
        c.write("const char kp_hip_code_objects_compiler[] = %s;\n" % c_quote(first))

    with open(args.depfile, "w", encoding="utf-8") as d:
        d.write("%s: %s\n" % (args.out_c.replace(" ", "\\ "),
                              " ".join(sorted(x.replace(" ", "\\ ") for x in deps))))

    if not b.archs:
        print("hip: sources only (%d kernel sources for hiprtc, no code objects), %.1f s" % (len(texts), time.time() - t0))
        return
    print("hip: %d code objects (%d variants x %d archs, %.1f MiB), %d compiled, %d from the cache, %.1f s"
          % (len(rows), len(variants), len(b.archs), len(blob) / 1048576.0, b.compiled, len(variants) - b.compiled,
             time.time() - t0), flush=True)


if __name__ == "__main__":
    main()
