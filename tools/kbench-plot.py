#!@PYTHON@
"""kbench-plot: charts of kbench's JSON with matplotlib (docs/kbench.md, "--plot").

  kbench-plot run.json --out roof.png    % of roofline per row, grouped by backend/device
                                         (roof.png), and the roofline chart: arithmetic
                                         intensity against achieved TFLOP/s under each
                                         device's ceilings (roof-roofline.png)
  kbench-plot cmp.json --out cmp.png     speedup bars of `kbench --compare ... --format json`

kbench --plot FILE runs this. Reads kbench formats 1 and 2; .png, .svg or .pdf by name.
"""
import argparse
import json
import os
import sys

try:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # SVG text stays searchable text
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter
except ImportError as e:
    sys.exit(f"kbench-plot: needs matplotlib ({e}); Debian: apt-get install python3-matplotlib, or bash ci/setup")

# Colours by the ceiling a row is judged against ("unit"; format 1 files have only "bound").
UNIT_COLOURS = {"copy": "#3b75af", "bf16 matrix": "#ef8636", "fp8 matrix": "#c44e52", "f32 FMA": "#55a868"}
BOUND_COLOURS = {"memory": "#3b75af", "compute": "#ef8636"}
OP_MARKERS = "osD^v<>Xp"


def row_label(r, width=70):
    text = f"{r['op']} {r['shape']} {r['dtype']}"
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def devices_of(report):
    """(backend, device) in first-seen order, each with its rows and its roofline entry."""
    groups = {}
    for r in report["rows"]:
        groups.setdefault((r["backend"], r["device"]), []).append(r)
    roofs = {(f["backend"], f["device"]): f for f in report.get("rooflines", [])}
    return [(key, rows, roofs.get(key, {})) for key, rows in groups.items()]


def ceiling_text(f):
    method = (f.get("compute_method") or "").split(",")[0].split(";")[0].split(":")[0]
    parts = [f"copy {f['memory_gbps']:.0f} GB/s"] if f.get("memory_gbps") else []
    if f.get("compute_tflops"):
        parts.append(f"compute {f['compute_tflops']:.4g} TFLOP/s ({method})")
    return ", ".join(parts)


def compute_ceilings(report, f):
    """(label, TFLOP/s) of each distinct compute ceiling of a device."""
    method = (f.get("compute_method") or "").split(",")[0].split(";")[0].split(":")[0]
    units = [("bf16 matrix", f.get("compute_tflops")), ("fp8 matrix", f.get("fp8_tflops")),
             ("f32 FMA", f.get("f32_tflops"))]
    units = [(n, p) for n, p in units if p]
    if report.get("kbench", 1) < 2 or len({p for _, p in units}) == 1:  # one ceiling: say where it came from
        return [(f"compute {units[0][1]:.4g} TFLOP/s ({method})", units[0][1])] if units else []
    seen, out = set(), []
    for n, p in units:
        if p not in seen:
            seen.add(p)
            out.append((f"{n} {p:.4g} TFLOP/s ({method})", p))
    return out


def title_of(report, what):
    return (f"kbench: {what}, suite {report.get('suite') or '-'}\n"
            f"kport {report.get('kport_version', '?')}, commit {str(report.get('git_commit', '?'))[:10]}, "
            f"{report.get('date', '?')}, host {report.get('machine', {}).get('hostname', '?')}")


def plot_roofline_pct(report, out):
    groups = devices_of(report)
    rows_total = sum(len(rows) for _, rows, _ in groups)
    top = max([100.0] + [r["roofline_pct"] for _, rows, _ in groups for r in rows
                         if r.get("status") == "ok" and r.get("roofline_pct") is not None])
    fig = plt.figure(figsize=(13, 1.4 + 0.27 * rows_total + 0.6 * len(groups)), layout="constrained")
    axes = fig.subplots(len(groups), 1, squeeze=False, sharex=True,
                        gridspec_kw={"height_ratios": [len(rows) + 1 for _, rows, _ in groups]})[:, 0]
    used = set()
    for ax, ((backend, device), rows, roof) in zip(axes, groups):
        for y, r in enumerate(rows):
            pct = r.get("roofline_pct")
            if r.get("status") == "ok" and pct is not None:
                unit = r.get("unit")
                colour = UNIT_COLOURS.get(unit) or BOUND_COLOURS.get(r.get("bound"), "#888888")
                used.add(unit if unit in UNIT_COLOURS else r.get("bound"))
                ax.barh(y, pct, color=colour, height=0.7)
                ax.text(pct + top * 0.01, y, f"{pct:.1f}%  {r['median_ms']:.3g} ms", va="center", fontsize=8)
            else:
                word = "no ceiling" if r.get("status") == "ok" else r.get("status", "?")
                bad = word == "FAIL"
                ax.text(top * 0.01, y, word, va="center", fontsize=8, color="#c00000" if bad else "#777777",
                        fontweight="bold" if bad else "normal")
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([row_label(r) for r in rows], fontsize=8)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.axvline(100, color="#444444", linewidth=1)
        ax.grid(axis="x", color="#dddddd")
        ax.set_axisbelow(True)
        ax.set_title(f"{backend}: {device}\n{ceiling_text(roof)}", fontsize=9, loc="left")
    axes[-1].set_xlim(0, top * 1.25)
    axes[-1].set_xlabel("% of the row's ceiling: min(unit peak, intensity \u00d7 copy bandwidth)")
    names = {"copy": "memory-bound: % of copy GB/s", "memory": "memory-bound", "compute": "compute-bound",
             "bf16 matrix": "compute-bound: % of bf16 matrix peak", "fp8 matrix": "compute-bound: % of FP8 matrix peak",
             "f32 FMA": "compute-bound: % of f32 FMA peak"}
    handles = [Patch(color=UNIT_COLOURS.get(u) or BOUND_COLOURS[u], label=names[u])
               for u in ["copy", "memory", "bf16 matrix", "fp8 matrix", "f32 FMA", "compute"] if u in used]
    if handles:
        axes[0].legend(handles=handles, loc="lower right", bbox_to_anchor=(1, 1.0), fontsize=8, ncol=2, frameon=False)
    fig.suptitle(title_of(report, "% of roofline per op"), x=0.01, ha="left", fontsize=11)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_roofline_chart(report, out):
    groups = devices_of(report)
    cols = min(2, len(groups))
    nrows = (len(groups) + cols - 1) // cols
    fig = plt.figure(figsize=(7.5 * cols, 1.0 + 5 * nrows), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False)
    ops = sorted({r["op"] for _, rows, _ in groups for r in rows})
    for i, ((backend, device), rows, roof) in enumerate(groups):
        ax = axes[i // cols][i % cols]
        pts = [r for r in rows if r.get("status") == "ok" and (r.get("flops") or 0) > 0 and (r.get("bytes") or 0) > 0
               and (r.get("tflops") or 0) > 0]
        ai = [r["flops"] / r["bytes"] for r in pts]
        bw = roof.get("memory_gbps") or 0
        peaks = compute_ceilings(report, roof)
        ridges = [p * 1e3 / bw for _, p in peaks] if bw else []
        x0 = min(ai + ridges + [1.0]) / 4
        x1 = max(ai + ridges + [10.0]) * 4
        top = max([p for _, p in peaks] + [r["tflops"] for r in pts] + [1e-3])
        if bw:  # the roof: the memory slope up to the last ridge, each compute ceiling from its ridge on
            xr = max(ridges) if ridges else x1
            ax.plot([x0, xr], [bw * x0 / 1e3, bw * xr / 1e3], color=UNIT_COLOURS["copy"], linewidth=2,
                    label=f"copy {bw:.0f} GB/s (measured)")
        sheet = roof.get("datasheet_memory_gbps")
        if sheet:
            ax.plot([x0, x1], [sheet * x0 / 1e3, sheet * x1 / 1e3], color=UNIT_COLOURS["copy"], linestyle=":",
                    linewidth=1, label=f"datasheet {sheet:.0f} GB/s")
        colours = ["#ef8636", "#c44e52", "#55a868"]
        for j, (label, p) in enumerate(peaks):
            ax.hlines(p, p * 1e3 / bw if bw else x0, x1, color=colours[j % 3], linewidth=2, label=label)
        for j, op in enumerate(ops):
            sel = [(a, r) for a, r in zip(ai, pts) if r["op"] == op]
            if sel:
                ax.scatter([a for a, _ in sel], [r["tflops"] for _, r in sel], marker=OP_MARKERS[j % len(OP_MARKERS)],
                           s=36, zorder=3, label=op, edgecolors="black", linewidths=0.4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(x0, x1)
        lows = [r["tflops"] for r in pts] + ([bw * x0 / 1e3] if bw else [])
        ax.set_ylim(max(min(lows + [top]) / 4, top * 1e-7), top * 3)
        ax.grid(which="both", color="#eeeeee")
        ax.set_xlabel("arithmetic intensity (FLOP/byte)")
        ax.set_ylabel("achieved TFLOP/s")
        no_flops = sorted({r["op"] for r in rows if not (r.get("flops") or 0)})
        note = f"\nnot shown (no FLOPs): {', '.join(no_flops)}" if no_flops else ""
        ax.set_title(f"{backend}: {device}{note}", fontsize=10, loc="left")
        ax.legend(fontsize=7, loc="lower right")
    for j in range(len(groups), nrows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle(title_of(report, "roofline"), x=0.01, ha="left", fontsize=11)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_speedups(cmp, out):
    rows = cmp["rows"]
    fig = plt.figure(figsize=(12, 1.6 + 0.3 * len(rows)), layout="constrained")
    ax = fig.subplots()
    both = [r["speedup"] for r in rows if r.get("speedup")]
    lo, hi = min(both + [1.0]), max(both + [1.0])
    lo, hi = lo / 1.6, hi * 1.6
    for y, r in enumerate(rows):
        s = r.get("speedup")
        if s:
            ax.barh(y, s - 1 if s >= 1 else 1 - s, left=1 if s >= 1 else s, height=0.7,
                    color="#55a868" if s >= 1 else "#c44e52")
            ax.text(max(s, 1) * 1.02, y, f"{s:.2f}x  ({r['a_ms']:.3g} / {r['b_ms']:.3g} ms)", va="center", fontsize=8)
        else:
            word = ("only in B" if r.get("a_status") is None else "only in A" if r.get("b_status") is None
                    else f"A {r.get('a_status')}, B {r.get('b_status')}")
            ax.text(1.02, y, word, va="center", fontsize=8, color="#777777")
    ax.set_xscale("log")
    ax.set_xlim(lo, hi * 1.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([row_label(r) for r in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.axvline(1, color="#444444", linewidth=1)
    geo = cmp.get("geomean_speedup")
    if geo:
        ax.axvline(geo, color="#444444", linestyle="--", linewidth=1, label=f"geometric mean {geo:.2f}x")
        ax.legend(fontsize=8, loc="lower right", bbox_to_anchor=(1, 1.0), frameon=False)
    times = FuncFormatter(lambda v, _: f"{v:g}x")
    ax.xaxis.set_major_formatter(times)
    ax.xaxis.set_minor_formatter(times if hi / lo < 20 else FuncFormatter(lambda v, _: ""))
    ax.grid(axis="x", which="both", color="#eeeeee")
    ax.set_axisbelow(True)
    ax.set_xlabel("speedup of B over A (A ms / B ms; right of 1: B is faster)")
    fig.suptitle(f"kbench compare\nA: {cmp.get('a_label') or cmp.get('a')}  ({os.path.basename(str(cmp.get('a')))})\n"
                 f"B: {cmp.get('b_label') or cmp.get('b')}  ({os.path.basename(str(cmp.get('b')))})",
                 x=0.01, ha="left", fontsize=10)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", help="a kbench report, or kbench --compare --format json output")
    ap.add_argument("--out", required=True, help="the chart to write (.png, .svg, .pdf)")
    args = ap.parse_args()
    try:
        with open(args.json, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"kbench-plot: {args.json}: {e}")
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        sys.exit(f"kbench-plot: {args.json}: not kbench JSON (no rows)")
    if not data["rows"]:
        sys.exit(f"kbench-plot: {args.json}: no rows to plot")
    try:
        if "kbench_compare" in data or "geomean_speedup" in data:
            plot_speedups(data, args.out)
            return
        stem, ext = os.path.splitext(args.out)
        plot_roofline_pct(data, args.out)
        plot_roofline_chart(data, f"{stem}-roofline{ext or '.png'}")
    except (KeyError, TypeError, ValueError, OSError) as e:
        sys.exit(f"kbench-plot: {args.json}: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
