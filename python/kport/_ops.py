"""The ops. Each passes its params struct's fields, in include/kport.h's order, to _ext.call;
the argument rules are the C library's (kp_last_error() says which one broke).

Outputs: pass ``out=`` (and ``lse=``...) to write in place, or get new tensors of the first
input's framework (numpy, torch, cupy) on its device. ``device=`` or ``stream=`` choose where
the op runs; without them host memory runs on kport.default_device() and device memory on its
own device, on the framework's current stream.
"""

from . import _ext, _targets

# kp_op (include/kport.h)
_PREFILL, _DECODE, _MLA, _GATE, _ALIGN, _GEMM, _COMBINE, _FORWARD = range(8)
_SCORING = {"softmax": 0, "sigmoid": 1}
_SCALE_LAYOUT = {"row": 0, "column": 1, 0: 0, 1: 1}  # kp_fp8_scale_layout
_KP_FP8_E4M3 = 4

#: DeepSeek-V3's routing: 256 experts in 8 groups, the best 4 groups, 8 experts, sigmoid scores.
DEEPSEEK_V3_ROUTING = dict(topk=8, n_group=8, topk_group=4, scoring="sigmoid", renormalize=True,
                           route_scale=2.5)

_call = _ext.call
_target = _targets.target


def _new(like, shape, dtype=None, zeros=False):
    """A new tensor of like's framework on like's device; dtype None: like's, else "float32"/"int32"."""
    module = type(like).__module__
    if module.startswith("torch"):
        import torch

        dt = like.dtype if dtype is None else getattr(torch, dtype)
        return (torch.zeros if zeros else torch.empty)(shape, dtype=dt, device=like.device)
    if module.startswith("cupy"):
        import cupy

        return (cupy.zeros if zeros else cupy.empty)(shape, dtype=like.dtype if dtype is None else dtype)
    import numpy as np

    if module.startswith("numpy"):
        dt = like.dtype if dtype is None else dtype
    else:  # another DLPack producer: numpy, when its memory is the host's
        if like.__dlpack_device__()[0] != _targets.KDL_CPU:
            raise TypeError(f"kport: cannot allocate outputs for {type(like).__name__} on device "
                            f"{like.__dlpack_device__()}: pass out=")
        dt = np.from_dlpack(like).dtype if dtype is None else dtype
    return (np.zeros if zeros else np.empty)(shape, dtype=dt)


def _fp8_bytes(w):
    """FP8 weights in a form DLPack carries: numpy arrays of ml_dtypes' float8_e4m3fn do not export,
    so they go as their bytes (uint8, which kport reads as e4m3 where a field takes FP8); torch
    exports float8_e4m3fn itself (DLPack's kDLFloat8_e4m3fn)."""
    # itemsize first: numpy builds str(dtype) in Python (~2.4 us a call), too slow for every weight
    if type(w).__module__.startswith("numpy") and w.dtype.itemsize == 1 and str(w.dtype) == "float8_e4m3fn":
        return w.view("uint8")
    return w


def attention_prefill(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, softmax_scale=None,
                      causal=False, window_left=-1, window_right=-1, out=None, lse=None, return_lse=False,
                      device=None, stream=None):
    """Varlen packed attention (FlashAttention's varlen layout).

    q [total_q, h_q, d], k [total_k, h_kv, d], v [total_k, h_kv, dv], cu_seqlens_q/k int32 [B+1];
    returns out [total_q, h_q, dv] (and lse f32 [h_q, total_q] with return_lse or lse=).
    causal is bottom-right aligned; softmax_scale defaults to d ** -0.5."""
    if softmax_scale is None:
        softmax_scale = q.shape[-1] ** -0.5
    if out is None:
        out = _new(q, (q.shape[0], q.shape[1], v.shape[2]))
    if lse is None and return_lse:
        lse = _new(q, (q.shape[1], q.shape[0]), "float32")
    _call(_PREFILL, _target(device, stream), q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
          max_seqlen_k, softmax_scale, int(causal), window_left, window_right)
    return (out, lse) if lse is not None else out


def attention_decode(q, k_cache, v_cache, block_table, seq_lens, *, softmax_scale=None, causal=True,
                     num_splits=0, out=None, lse=None, return_lse=False, k_scale=None, v_scale=None, device=None,
                     stream=None):
    """Paged-KV decode. q [B, s_q, h_q, d], k_cache [blocks, block_size, h_kv, d],
    v_cache [blocks, block_size, h_kv, dv], block_table int32 [B, max_blocks], seq_lens int32 [B];
    returns out [B, s_q, h_q, dv] (and lse f32 [B, h_q, s_q]). FP8 caches (e4m3, or raw uint8
    bytes) take f32 k_scale / v_scale [1] or [blocks]."""
    if softmax_scale is None:
        softmax_scale = q.shape[-1] ** -0.5
    if out is None:
        out = _new(q, (q.shape[0], q.shape[1], q.shape[2], v_cache.shape[3]))
    if lse is None and return_lse:
        lse = _new(q, (q.shape[0], q.shape[2], q.shape[1]), "float32")
    _call(_DECODE, _target(device, stream), q, k_cache, v_cache, block_table, seq_lens, out, lse, softmax_scale,
          int(causal), num_splits, k_scale, v_scale)
    return (out, lse) if lse is not None else out


def mla_decode(q, kv_cache, block_table, seq_lens, softmax_scale, *, head_dim_v=512, causal=True, num_splits=0,
               out=None, lse=None, return_lse=False, kv_scale=None, device=None, stream=None):
    """MLA decode (FlashMLA layout). q [B, s_q, h_q, 576], kv_cache [blocks, 64, 1, 576] (V = its
    first head_dim_v columns); returns out [B, s_q, h_q, head_dim_v] (and lse f32 [B, h_q, s_q]).
    The scale is explicit (DeepSeek-V3: 0.1352337788608801). An FP8 cache (e4m3, or raw uint8
    bytes) takes an f32 kv_scale [1] or [blocks]."""
    if out is None:
        out = _new(q, (q.shape[0], q.shape[1], q.shape[2], head_dim_v))
    if lse is None and return_lse:
        lse = _new(q, (q.shape[0], q.shape[2], q.shape[1]), "float32")
    _call(_MLA, _target(device, stream), q, kv_cache, block_table, seq_lens, out, lse, softmax_scale, int(causal),
          head_dim_v, num_splits, kv_scale)
    return (out, lse) if lse is not None else out


def moe_gate(logits, bias=None, *, topk, n_group=1, topk_group=1, scoring="softmax", renormalize=False,
             route_scale=1.0, topk_ids=None, topk_weights=None, device=None, stream=None):
    """Router: logits [T, E] (+ f32 bias [E], selection only) -> (topk_ids int32 [T, topk],
    topk_weights f32 [T, topk]). DeepSeek-V3: ``moe_gate(logits, bias, **kport.DEEPSEEK_V3_ROUTING)``."""
    if topk_ids is None:
        topk_ids = _new(logits, (logits.shape[0], topk), "int32")
    if topk_weights is None:
        topk_weights = _new(logits, (logits.shape[0], topk), "float32")
    _call(_GATE, _target(device, stream), logits, bias, topk_ids, topk_weights, topk, n_group, topk_group,
          _SCORING[scoring], int(renormalize), route_scale)
    return topk_ids, topk_weights


def moe_align(topk_ids, num_experts, block_size=1, *, sorted_ids=None, expert_offsets=None, token_pos=None,
              device=None, stream=None):
    """Sorts the T*k (token, slot) pairs by expert, stably, each expert padded to block_size rows.
    Returns (sorted_ids int32 [T*k + E*(block_size-1)], expert_offsets int32 [E+1], token_pos int32 [T, k])."""
    t, k = topk_ids.shape
    if sorted_ids is None:
        sorted_ids = _new(topk_ids, (t * k + num_experts * (block_size - 1),), "int32")
    if expert_offsets is None:
        expert_offsets = _new(topk_ids, (num_experts + 1,), "int32")
    if token_pos is None:
        token_pos = _new(topk_ids, (t, k), "int32")
    _call(_ALIGN, _target(device, stream), topk_ids, sorted_ids, expert_offsets, token_pos, num_experts, block_size)
    return sorted_ids, expert_offsets, token_pos


def grouped_gemm(a, w, expert_offsets=None, w_scale=None, *, a_scale=None, a_scale_layout="row", masked_m=None,
                 out=None, device=None, stream=None):
    """out[r] = a[r] @ w[e].T for the rows r of expert e (expert_offsets int32 [E+1]).
    a [M, K]; w [E, N, K] in a's dtype, or FP8 e4m3 (torch.float8_e4m3fn, or uint8 bytes) with
    w_scale f32 [E, ceil(N/128), K/128]. New outputs are zeros where no expert's rows reach.

    Masked layout (DeepGEMM's m_grouped_gemm_*_masked): masked_m int32 [E] instead of
    expert_offsets (exactly one of the two): a [E, max_m, K] or [E * max_m, K], out the same
    rank ([E, max_m, N] or [E * max_m, N]); expert e computes its first min(max(masked_m[e], 0),
    max_m) rows and leaves the rest of its rows of out untouched. Every dtype path applies
    (W8A8: a_scale's row is e * max_m + r).

    W8A8 (DeepGEMM's fp8_gemm_nt): a FP8 e4m3 (or uint8 bytes) with a_scale, f32 per token and
    group of 128 columns (kport.quantize_fp8's output): a_scale_layout "row" ([M, K/128]) or
    "column" ([K/128, M_pad], DeepGEMM's); w FP8 with w_scale. A new output is then float32
    (pass out= in bf16/f16 for those)."""
    if (expert_offsets is None) == (masked_m is None):
        raise TypeError("kport.grouped_gemm: give exactly one of expert_offsets (int32 [E+1]) and masked_m "
                        "(int32 [E], the masked [E, max_m, K] layout); " +
                        ("both were given" if masked_m is not None else "neither was given"))
    if out is None:
        out = _new(a, tuple(a.shape[:-1]) + (w.shape[1],), "float32" if a_scale is not None else None, zeros=True)
    _call(_GEMM, _target(device, stream), _fp8_bytes(a), _fp8_bytes(w), w_scale, expert_offsets, out, a_scale,
          _SCALE_LAYOUT[a_scale_layout], masked_m)
    return out


def moe_combine(expert_out, token_pos, topk_weights, *, out=None, device=None, stream=None):
    """out[t] = sum over slots s, in order, of topk_weights[t, s] * expert_out[token_pos[t, s]]."""
    if out is None:
        out = _new(expert_out, (token_pos.shape[0], expert_out.shape[1]))
    _call(_COMBINE, _target(device, stream), expert_out, token_pos, topk_weights, out)
    return out


def moe_forward(x, router_logits, w13, w2, bias=None, *, w13_scale=None, w2_scale=None, shared_w13=None,
                shared_w2=None, topk, n_group=1, topk_group=1, scoring="softmax", renormalize=False,
                route_scale=1.0, fp8_activations=False, activation_scale_ue8m0=False, shared_w13_scale=None,
                shared_w2_scale=None, out=None, device=None, stream=None):
    """The routed MoE layer in one call: gate -> align -> x @ w13.T -> SwiGLU -> @ w2.T -> combine,
    plus the shared expert (a dense SwiGLU MLP) when shared_w13/shared_w2 are given.
    x [T, hidden]; w13 [E, 2*inter, hidden] (gate rows, then up rows); w2 [E, hidden, inter];
    FP8 weights take w13_scale/w2_scale (DeepSeek-V3's weight_scale_inv, stacked); FP8 shared
    weights take shared_w13_scale [ceil(2*inter_s/128), hidden/128] / shared_w2_scale.

    fp8_activations=True: W8A8 (FP8 weights required): x and the SwiGLU output are quantized to
    e4m3 per token and 128-column group (f32 scales; power-of-two with activation_scale_ue8m0)
    and both GEMMs run on e4m3 x e4m3; an FP8 shared expert likewise, one in x's dtype stays so."""
    if out is None:
        out = _new(x, tuple(x.shape))
    _call(_FORWARD, _target(device, stream), x, router_logits, bias, _fp8_bytes(w13), w13_scale, _fp8_bytes(w2),
          w2_scale, _fp8_bytes(shared_w13), _fp8_bytes(shared_w2), out, topk, n_group, topk_group, _SCORING[scoring],
          int(renormalize), route_scale, _KP_FP8_E4M3 if fp8_activations else 0, int(activation_scale_ue8m0),
          shared_w13_scale, shared_w2_scale)
    return out


def op_kernel(op, *args, **kwargs):
    """The kernel ``op(*args, **kwargs)`` would run, without running it (kp_op_kernel): a string
    ``"<tier>:<kernel>"``, e.g. ``"gen2:grouped_gemm_gen2_rows"`` on a GPU or ``"cpu:avx512-bf16"``.
    op is one of kport's ops; the arguments are checked as the call would check them (kport.Error,
    nothing written); outputs it would allocate are allocated and left unwritten."""
    _ext.name_kernels(True)
    try:
        op(*args, **kwargs)
    finally:
        name = _ext.name_kernels(False)
    if name is None:
        raise TypeError(f"kport.op_kernel: {getattr(op, '__name__', op)!r} is not a kport op")
    return name
