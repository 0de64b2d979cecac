"""Per-call cost of kport's Python binding: op call to C op call, excluding the kernel.

    python bench/python_overhead.py [--torch] [--ctypes]

For each op on tiny shapes (outputs passed in, so no allocation is counted), it times many calls
and subtracts the time spent inside the C op call (the extension's kport._ext.op_time()), leaving
what the binding itself costs: the Python wrapper, DLPack export, kp_tensor_from_dlpack and the
buffer wraps. --torch repeats it with torch CPU tensors and through kport.torch's custom ops
(torch's dispatcher included); --ctypes times the same prefill call made through ctypes, the
alternative this binding was chosen over. Prints a markdown table: the round with the smallest
overhead out of 20 rounds of 500 calls (on a shared 2-core machine a median measures the other
processes; the least-disturbed round measures the binding).
"""

import sys
import time

import numpy as np

import kport
from kport import _ext

ROUNDS, CALLS = 20, 500


def binding_cost(fn):
    """(wall per call, inside-C per call) in microseconds, from the round whose difference is least."""
    rounds = []
    fn()
    for _ in range(ROUNDS):
        c0, s0 = _ext.op_time()
        t0 = time.perf_counter()
        for _ in range(CALLS):
            fn()
        wall = time.perf_counter() - t0
        c1, s1 = _ext.op_time()
        rounds.append((wall / CALLS * 1e6, (s1 - s0) / max(c1 - c0, 1) * 1e6))
    return min(rounds, key=lambda r: r[0] - r[1])


def cases(xp, dev):
    """(name, call) for every op, tiny shapes, outputs given."""
    rng = np.random.default_rng(0)

    def arr(shape, dtype=np.float32):
        a = rng.standard_normal(shape).astype(dtype) if dtype == np.float32 else np.zeros(shape, dtype)
        return xp(a)

    T, H, D, E, K = 4, 2, 64, 8, 2
    q, k, v, o = arr((T, H, D)), arr((T, H, D)), arr((T, H, D)), arr((T, H, D))
    cu = xp(np.array([0, T], np.int32))
    qd, kc, vc, od = arr((1, 1, H, D)), arr((1, 16, H, D)), arr((1, 16, H, D)), arr((1, 1, H, D))
    bt, sl = xp(np.zeros((1, 1), np.int32)), xp(np.array([T], np.int32))
    qm, kvm, om = arr((1, 1, 2, 576)), arr((1, 64, 1, 576)), arr((1, 1, 2, 512))
    logits, ids, w = arr((T, E)), xp(np.zeros((T, K), np.int32)), arr((T, K))
    sorted_ids, offs, pos = xp(np.zeros(T * K, np.int32)), xp(np.zeros(E + 1, np.int32)), xp(np.zeros((T, K), np.int32))
    kport.moe_gate(logits, topk=K, topk_ids=ids, topk_weights=w, device=dev)
    kport.moe_align(ids, E, sorted_ids=sorted_ids, expert_offsets=offs, token_pos=pos, device=dev)
    a, wg, og = arr((T * K, D)), arr((E, D, D)), arr((T * K, D))
    ox, xf = arr((T, D)), arr((T, D))  # moe_forward's out may not overlap its x (KP_ERR_ALIASING)
    w13, w2 = arr((E, 2 * D, D)), arr((E, D, D))
    return [
        ("attention_prefill", lambda: kport.attention_prefill(q, k, v, cu, cu, T, T, out=o, device=dev)),
        ("attention_decode", lambda: kport.attention_decode(qd, kc, vc, bt, sl, out=od, device=dev)),
        ("mla_decode", lambda: kport.mla_decode(qm, kvm, bt, sl, 0.1352, out=om, device=dev)),
        ("moe_gate", lambda: kport.moe_gate(logits, topk=K, topk_ids=ids, topk_weights=w, device=dev)),
        ("moe_align", lambda: kport.moe_align(ids, E, sorted_ids=sorted_ids, expert_offsets=offs, token_pos=pos,
                                              device=dev)),
        ("grouped_gemm", lambda: kport.grouped_gemm(a, wg, offs, out=og, device=dev)),
        ("moe_combine", lambda: kport.moe_combine(og, pos, w, out=ox, device=dev)),
        ("moe_forward", lambda: kport.moe_forward(xf, logits, w13, w2, topk=K, out=ox, device=dev)),
    ]


def ctypes_prefill(dev_index):
    """The prefill call made through ctypes over libkport's C API: the alternative binding."""
    import ctypes

    lib = ctypes.CDLL(_ext.__file__)  # libkport is loaded already: the extension links it

    class Tensor(ctypes.Structure):
        _fields_ = [("buffer", ctypes.c_void_p), ("offset", ctypes.c_size_t), ("dtype", ctypes.c_int),
                    ("ndim", ctypes.c_int32), ("shape", ctypes.c_int64 * 4), ("strides", ctypes.c_int64 * 4)]

    class Prefill(ctypes.Structure):
        _fields_ = [(n, Tensor) for n in ("q", "k", "v", "out", "lse", "cu_seqlens_q", "cu_seqlens_k")] + [
            ("max_seqlen_q", ctypes.c_int32), ("max_seqlen_k", ctypes.c_int32), ("softmax_scale", ctypes.c_float),
            ("causal", ctypes.c_int32), ("window_left", ctypes.c_int32), ("window_right", ctypes.c_int32)]

    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    dev = ctypes.c_void_p()
    assert lib.kp_device_open(dev_index, ctypes.byref(dev)) == 0
    stream = ctypes.c_void_p()
    assert lib.kp_stream_create(dev, ctypes.byref(stream)) == 0
    rng = np.random.default_rng(0)
    q, k, v, o = (rng.standard_normal((4, 2, 64)).astype(np.float32) for _ in range(4))
    cu = np.array([0, 4], np.int32)
    from_dlpack, buffer_free, prefill = lib.kp_tensor_from_dlpack, lib.kp_buffer_free, lib.kp_attention_prefill

    def call():
        p = Prefill()
        names = ("q", "k", "v", "out", "cu_seqlens_q", "cu_seqlens_k")
        capsules = [x.__dlpack__() for x in (q, k, v, o, cu, cu)]
        for name, cap in zip(names, capsules):
            if from_dlpack(ctypes.c_void_p(get_pointer(cap, b"dltensor")), dev, ctypes.byref(getattr(p, name))):
                raise RuntimeError("kp_tensor_from_dlpack failed")
        p.max_seqlen_q = p.max_seqlen_k = 4
        p.softmax_scale, p.window_left, p.window_right = 0.125, -1, -1
        st = prefill(stream, ctypes.byref(p))
        for name in names:
            buffer_free(ctypes.c_void_p(getattr(p, name).buffer))
        if st:
            raise RuntimeError(st)

    def kernel_only():  # the same C op call with the tensors already made
        p = Prefill()
        caps = [x.__dlpack__() for x in (q, k, v, o, cu, cu)]
        for name, cap in zip(("q", "k", "v", "out", "cu_seqlens_q", "cu_seqlens_k"), caps):
            from_dlpack(ctypes.c_void_p(get_pointer(cap, b"dltensor")), dev, ctypes.byref(getattr(p, name)))
        p.max_seqlen_q = p.max_seqlen_k = 4
        p.softmax_scale, p.window_left, p.window_right = 0.125, -1, -1
        ref = ctypes.byref(p)
        t0 = time.perf_counter()
        for _ in range(CALLS):
            prefill(stream, ref)
        return (time.perf_counter() - t0) / CALLS * 1e6

    call()
    rounds = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(CALLS):
            call()
        rounds.append(((time.perf_counter() - t0) / CALLS * 1e6, kernel_only()))
    return min(rounds, key=lambda r: r[0] - r[1])


def main(argv):
    dev = kport.device("cpu")
    info = dev.info()
    print(f"kport Python binding overhead, {info['name']} ({info['arch']}), Python {sys.version.split()[0]}, "
          f"numpy {np.__version__}; microseconds per call, least-disturbed of {ROUNDS} rounds x {CALLS} calls\n")
    print("| op | tensors | wall | inside the C call | binding overhead |\n|---|---|---|---|---|")
    rows = [("numpy", lambda a: a)]
    if "--torch" in argv:
        import importlib

        import torch

        importlib.import_module("kport.torch")  # registers torch's fast DLPack exporter
        rows.append(("torch cpu", lambda a: torch.from_numpy(a)))
    for label, xp in rows:
        for name, fn in cases(xp, dev):
            wall, inside = binding_cost(fn)
            print(f"| {name} | {label} | {wall:.2f} | {inside:.2f} | **{wall - inside:.2f}** |")
    if "--torch" in argv:
        import torch

        from kport.torch import _overhead_cases

        for name, fn in _overhead_cases(dev):
            wall, inside = binding_cost(fn)
            print(f"| {name} | torch.ops.kport (custom op, allocates) | {wall:.2f} | {inside:.2f} | "
                  f"**{wall - inside:.2f}** |")
    if "--ctypes" in argv:
        wall, kernel = ctypes_prefill(dev.index)
        print(f"| attention_prefill | numpy, through ctypes | {wall:.2f} | {kernel:.2f} | **{wall - kernel:.2f}** |")


if __name__ == "__main__":
    main(sys.argv[1:])
