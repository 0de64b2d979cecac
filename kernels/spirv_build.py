#!/usr/bin/env python3
"""Compiles one OpenCL kernel variant to SPIR-V and validates it; a failure fails the build.

usage: spirv_build.py CLANG LLVM_SPIRV SPIRV_VAL KERNELS_DIR SOURCE OUT_SPV DEPFILE [-DNAME[=V] ...]

  clang -cl-std=CL1.2 -target spir64 -O2 -Xclang -disable-llvm-passes -emit-llvm -c
  llvm-spirv --spirv-max-version=1.0      (SPIR-V 1.0: what OpenCL 2.1, the first IL consumer, takes)
  spirv-val --target-env opencl2.1

-disable-llvm-passes: LLVM 15's optimised IR trips llvm-spirv 15 (it cannot translate
`freeze`, and at -O2 it emits blocks before their dominators, which spirv-val rejects).
The front end still runs at -O2 (no optnone); the driver optimises the SPIR-V anyway.
"""
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
    with tempfile.TemporaryDirectory() as tmp:
        bc = os.path.join(tmp, "k.bc")
        run([clang, "-cl-std=CL1.2", "-target", "spir64", "-O2", "-Xclang", "-disable-llvm-passes",
             "-Xclang", "-finclude-default-header", "-emit-llvm", "-c", "-Werror",
             "-I", kdir, "-DKP_TARGET_OPENCL=1", *defines, "-MD", "-MF", depfile, "-MT", out,
             src, "-o", bc])
        run([llvm_spirv, "--spirv-max-version=1.0", bc, "-o", out])
        run([spirv_val, "--target-env", "opencl2.1", out])


if __name__ == "__main__":
    main()
