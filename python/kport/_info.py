"""python -m kport: the report tools/kport-info prints, from the same C calls.

    python -m kport            backends and devices as tables
    python -m kport --json     the same as JSON
    python -m kport --smoke    also runs a small MoE gate on the default device and checks it
"""

import json

from . import _ext

_CAPS = [(0x01, "f16"), (0x02, "bf16"), (0x04, "fp8"), (0x08, "matrix-units"), (0x10, "subgroups"),
         (0x20, "inline-ptx"), (0x40, "unified-memory"), (0x80, "checks-indices")]


def caps_string(caps):
    return ",".join(name for bit, name in _CAPS if caps & bit) or "-"


def tables(backends, devices, version):
    lines = [f"kport {version}", "", "Backends",
             "| backend | available | devices | reason / plugin |", "|---|---|---|---|"]
    for b in backends:
        where = (b["path"] or "built in") if b["available"] else b["reason"]
        lines.append(f"| {b['name']} | {'yes' if b['available'] else 'no'} | {b['device_count']} | {where} |")
    lines += ["", "Devices",
              "| # | backend | name | vendor | kind | arch | memory | CUs | subgroup | local mem | caps |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in devices:
        lines.append(f"| {d['index']} | {d['backend']} | {d['name']} | {d['vendor']} | {d['kind']} | {d['arch']} | "
                     f"{d['memory_bytes'] / 2**30:.1f} GiB | {d['compute_units']} | {d['subgroup_size']} | "
                     f"{d['local_mem_bytes'] // 1024} KiB | {caps_string(d['caps'])} |")
    return "\n".join(lines)


def as_json(backends, devices, version):
    """kport-info --json's layout: one line per backend and per device."""
    keys = ("index", "backend", "name", "vendor", "arch", "driver", "kind", "memory_bytes", "compute_units",
            "subgroup_size", "local_mem_bytes")
    rows = [{"name": b["name"], "available": b["available"], "devices": b["device_count"], "reason": b["reason"],
             "path": b["path"], "description": b["description"]} for b in backends]
    devs = [dict({k: d[k] for k in keys}, caps=caps_string(d["caps"])) for d in devices]
    line = lambda obj: json.dumps(obj, ensure_ascii=False)  # noqa: E731
    return "\n".join(["{", f'  "version": {line(version)},', '  "backends": [',
                      ",\n".join("    " + line(r) for r in rows), "  ],", '  "devices": [',
                      ",\n".join("    " + line(d) for d in devs), "  ]", "}"])


def smoke():
    """A 4-token softmax top-2 gate on the default device, checked against numpy."""
    import numpy as np

    import kport

    dev = kport.default_device()
    logits = np.random.default_rng(1).standard_normal((4, 16), dtype=np.float32)
    ids, _ = kport.moe_gate(logits, topk=2, device=dev)
    want = np.argsort(-logits, axis=1, kind="stable")[:, :2]
    name = f"{dev.info()['name']} ({dev.info()['backend']} backend)"
    if not np.array_equal(ids, want):
        return f"smoke: FAILED: the gate on {name} chose {ids.tolist()}, numpy {want.tolist()}", 1
    return f"smoke: ok: default device is {name}; a top-2 gate over 16 experts matched numpy", 0


def main(argv):
    if any(a not in ("--json", "--smoke") for a in argv):
        print(__doc__.strip())
        return 2
    version, backends, devices = _ext.version(), _ext.backends(), _ext.devices()
    print(as_json(backends, devices, version) if "--json" in argv else tables(backends, devices, version))
    if "--smoke" in argv:
        line, rc = smoke()
        print("\n" + line)
        return rc
    return 0
