#!/usr/bin/env python3
"""Compiles one OpenCL kernel variant to SPIR-V and validates it; a failure fails the build.

usage: spirv_build.py CLANG LLVM_SPIRV SPIRV_VAL KERNELS_DIR SOURCE OUT_SPV DEPFILE [-DNAME[=V] ...]

Besides OUT_SPV it writes OUT_SPV.json, the manifest the OpenCL plugin embeds the
module by (backends/opencl/embed_spirv.py): the source (path under KERNELS_DIR), the
exact -D flags the module was compiled with (-DKP_TARGET_OPENCL=1 first, then the
command line's, in order) and the compile-time options (-cl-std=CL1.2). It is written
only after spirv-val accepted the module, so an embedded module is a validated one.

  clang -cl-std=CL1.2 -target spir64 -O2 -Xclang -disable-llvm-passes -emit-llvm -c
  llvm-spirv --spirv-max-version=1.0      (SPIR-V 1.0: what OpenCL 2.1, the first IL consumer, takes)
  spirv-val --target-env opencl2.1

-disable-llvm-passes: LLVM 15's optimised IR trips llvm-spirv 15 (it cannot translate
`freeze`, and at -O2 it emits blocks before their dominators, which spirv-val rejects).
The front end still runs at -O2 (no optnone); the driver optimises the SPIR-V anyway.
"""
import json
import os
import subprocess
import sys
import tempfile


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.stderr.write("%s\n%s" % (" ".join(cmd), r.stdout))
        sys.exit(1)


def main():
    if len(sys.argv) < 8:
        sys.exit(__doc__)
    clang, llvm_spirv, spirv_val, kdir, src, out, depfile = sys.argv[1:8]
    defines = sys.argv[8:]
    all_defines = ["-DKP_TARGET_OPENCL=1", *defines]
    manifest = out + ".json"
    if os.path.exists(manifest):
        os.unlink(manifest)  # never a stale manifest beside a module that failed
    with tempfile.TemporaryDirectory() as tmp:
        bc = os.path.join(tmp, "k.bc")
        run([clang, "-cl-std=CL1.2", "-target", "spir64", "-O2", "-Xclang", "-disable-llvm-passes",
             "-Xclang", "-finclude-default-header", "-emit-llvm", "-c", "-Werror",
             "-I", kdir, *all_defines, "-MD", "-MF", depfile, "-MT", out,
             src, "-o", bc])
        run([llvm_spirv, "--spirv-max-version=1.0", bc, "-o", out])
        run([spirv_val, "--target-env", "opencl2.1", out])
    with open(manifest + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"source": os.path.relpath(os.path.abspath(src), os.path.abspath(kdir)).replace(os.sep, "/"),
                   "defines": all_defines, "compile_options": ["-cl-std=CL1.2"],
                   "spv": os.path.abspath(out)}, f, indent=1)
    os.replace(manifest + ".tmp", manifest)


if __name__ == "__main__":
    main()
