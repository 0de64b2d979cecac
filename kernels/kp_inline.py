"""kernels/kp_inline.py — one kernel source as one self-contained text, for the
plugins that compile kernels at run time (OpenCL, hiprtc, NVRTC).

inline(path, root, seen, deps, out) appends path's lines to out with every
`#include "..."` replaced by the included file's text (searched beside the includer,
then in root, the kernels/ directory), each header once per source (seen), with #line
markers so a compiler's log points at the real file. deps (a set, or None) collects
every file read, for depfiles. `#include <...>` lines stay: the dialect guards those
(kp_dialect.h) for the run-time compilers that pre-include their own headers.
"""
import os
import re

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')


def inline(path, root, seen, deps, out):
    if deps is not None:
        deps.add(path)
    rel = os.path.relpath(path, root)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    out.append('#line 1 "%s"' % rel)
    for n, line in enumerate(lines, 1):
        m = INCLUDE.match(line)
        if not m:
            out.append(line)
            continue
        name = m.group(1)
        cands = [os.path.join(os.path.dirname(path), name), os.path.join(root, name)]
        found = next((os.path.normpath(c) for c in cands if os.path.isfile(c)), None)
        if found is None:
            raise SystemExit('%s:%d: include "%s" not found (searched %s)' % (rel, n, name, ", ".join(cands)))
        if found not in seen:
            seen.add(found)
            inline(found, root, seen, deps, out)
        out.append('#line %d "%s"' % (n + 1, rel))
