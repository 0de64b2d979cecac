"""kport with numpy alone (no torch): each op against a float64 numpy reference, errors that
write nothing, strided views, allocation of outputs, and python -m kport."""

import os
import subprocess
import sys

import numpy as np
import pytest

import kport


def assert_close_f32(out, ref, tol=1e-5):
    """Relative L2 <= tol (DESIGN §5: f32 1e-5, f16 2e-3) and every element within 2 tol of the output's scale."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    assert np.isfinite(out).all()
    l2 = np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30)
    worst = np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30)
    assert l2 <= tol and worst <= 2 * tol, f"relative L2 {l2:.3g}, worst element {worst:.3g}"


def ref_prefill(q, k, v, cu_q, cu_k, scale, causal):
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    h_q, h_kv = q.shape[1], k.shape[1]
    out = np.zeros((q.shape[0], h_q, v.shape[2]))
    for b in range(len(cu_q) - 1):
        qs, ks = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        lq, lk = cu_q[b + 1] - cu_q[b], cu_k[b + 1] - cu_k[b]
        for h in range(h_q):
            s = q[qs, h] @ k[ks, h * h_kv // h_q].T * scale
            if causal:
                s[np.arange(lk)[None, :] > np.arange(lq)[:, None] + (lk - lq)] = -np.inf
            p = np.exp(s - s.max(1, keepdims=True))
            out[qs, h] = (p / p.sum(1, keepdims=True)) @ v[ks, h * h_kv // h_q]
    return out


@pytest.mark.parametrize("causal", [False, True])
def test_attention_prefill_matches_softmax_attention(device, rng, causal):
    cu_q = np.array([0, 1, 6, 13], np.int32)  # lengths 1, 5, 7
    cu_k = np.array([0, 3, 8, 20], np.int32)  # longer keys: causal is bottom-right aligned
    q = rng.standard_normal((13, 4, 64), dtype=np.float32)
    k = rng.standard_normal((20, 2, 64), dtype=np.float32)  # GQA 4:2
    v = rng.standard_normal((20, 2, 64), dtype=np.float32)
    out = kport.attention_prefill(q, k, v, cu_q, cu_k, 7, 12, causal=causal, device=device)
    assert out.shape == (13, 4, 64) and out.dtype == np.float32
    assert_close_f32(out, ref_prefill(q, k, v, cu_q, cu_k, 64 ** -0.5, causal))


def test_moe_gate_softmax_topk(device, rng):
    logits = rng.standard_normal((9, 16), dtype=np.float32)
    ids, weights = kport.moe_gate(logits, topk=3, renormalize=True, device=device)
    want = np.argsort(-logits, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(ids, want)
    p = np.exp(logits - logits.max(1, keepdims=True))
    chosen = np.take_along_axis(p, want, 1)
    assert_close_f32(weights, chosen / chosen.sum(1, keepdims=True))


def test_moe_align_sorts_pairs_by_expert_stably(device, rng):
    ids = rng.integers(0, 6, (7, 2)).astype(np.int32)
    sorted_ids, offsets, pos = kport.moe_align(ids, 6, block_size=1, device=device)
    order = np.argsort(ids.reshape(-1), kind="stable")
    np.testing.assert_array_equal(sorted_ids, order)
    np.testing.assert_array_equal(offsets, np.concatenate([[0], np.cumsum(np.bincount(ids.reshape(-1), minlength=6))]))
    np.testing.assert_array_equal(sorted_ids[pos.reshape(-1)], np.arange(14))


def test_grouped_gemm_and_combine(device, rng):
    a = rng.standard_normal((10, 128), dtype=np.float32)
    w = rng.standard_normal((3, 24, 128), dtype=np.float32)
    offsets = np.array([0, 4, 4, 9], np.int32)  # expert 1 has no rows; row 9 belongs to none
    out = np.full((10, 24), 7.0, np.float32)
    kport.grouped_gemm(a, w, offsets, out=out, device=device)
    ref = np.concatenate([a[0:4] @ w[0].T, a[4:9] @ w[2].T]).astype(np.float64)
    assert_close_f32(out[:9], ref)
    assert (out[9] == 7.0).all(), "a row outside every expert's range must stay untouched"

    pos = rng.integers(0, 9, (5, 2)).astype(np.int32)
    weights = rng.random((5, 2), dtype=np.float32)
    combined = kport.moe_combine(out, pos, weights, device=device)
    assert_close_f32(combined, (weights[:, :, None] * out[pos].astype(np.float64)).sum(1))


def test_inputs_may_be_strided_views_and_outputs_write_only_their_view(device, rng):
    qkv = rng.standard_normal((6, 3, 2, 64), dtype=np.float32)  # a packed projection, viewed per part
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    cu = np.array([0, 6], np.int32)
    packed = np.full((6, 2, 2, 64), -5.0, np.float32)
    kport.attention_prefill(q, k, v, cu, cu, 6, 6, causal=True, out=packed[:, :, 0], device=device)
    assert_close_f32(packed[:, :, 0], ref_prefill(q, k, v, cu, cu, 64 ** -0.5, True))
    assert (packed[:, :, 1] == -5.0).all()


def test_a_bad_shape_raises_with_the_status_and_writes_nothing(device, rng):
    q = rng.standard_normal((4, 2, 64), dtype=np.float32)
    v_bad = rng.standard_normal((4, 1, 64), dtype=np.float32)  # one head where k has two
    cu = np.array([0, 4], np.int32)
    out = np.full((4, 2, 64), 3.0, np.float32)
    with pytest.raises(kport.Error) as err:
        kport.attention_prefill(q, q, v_bad, cu, cu, 4, 4, out=out, device=device)
    assert err.value.status == "KP_ERR_INVALID_SHAPE"
    assert "v.shape[1]" in err.value.message and err.value.message in str(err.value)
    assert (out == 3.0).all()


def test_bad_dtypes_values_and_objects_raise(device, rng):
    logits64 = rng.standard_normal((4, 8))  # float64: no kport dtype
    ids = np.full((4, 2), -1, np.int32)
    with pytest.raises(kport.Error) as err:
        kport.moe_gate(logits64, topk=2, topk_ids=ids, device=device)
    assert err.value.status == "KP_ERR_INVALID_DTYPE"
    with pytest.raises(kport.Error) as err:
        kport.moe_gate(logits64.astype(np.float32), topk=9, topk_ids=ids, device=device)  # topk > E
    assert err.value.status == "KP_ERR_INVALID_ARGUMENT" and "topk" in err.value.message
    assert (ids == -1).all()
    with pytest.raises(TypeError, match="logits must be a tensor with __dlpack__"):
        kport.moe_gate([[1.0, 2.0]], topk=1, topk_ids=ids[:1, :1], topk_weights=np.zeros((1, 1), np.float32),
                       device=device)


def test_expert_ids_out_of_range_are_rejected_where_the_device_checks_indices(rng):
    dev = kport.device("cpu")  # KP_CAP_CHECKS_INDICES: the CPU backend checks index contents
    ids = np.array([[0, 1], [7, 2]], np.int32)
    sorted_ids = np.full(4, -9, np.int32)
    with pytest.raises(kport.Error) as err:
        kport.moe_align(ids, 4, sorted_ids=sorted_ids, device=dev)
    assert err.value.status == "KP_ERR_INVALID_ARGUMENT"
    assert (sorted_ids == -9).all()


def test_outputs_are_numpy_and_round_trip_through_dlpack(rng):
    logits = rng.standard_normal((3, 8), dtype=np.float32)
    ids, weights = kport.moe_gate(logits, topk=2)
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int32 and weights.dtype == np.float32
    view = np.from_dlpack(weights)
    assert np.shares_memory(view, weights)


def test_fp8_weights_as_raw_bytes(device, rng):
    # e4m3 bytes 0x38 = 1.0 and 0xb8 = -1.0; block scales [E, ceil(N/128), K/128]
    w = np.where(rng.random((2, 8, 128)) < 0.5, 0x38, 0xB8).astype(np.uint8)
    scale = np.array([[[0.5]], [[2.0]]], np.float32)
    a = rng.standard_normal((5, 128)).astype(np.float16)  # FP8 weights take f16/bf16 activations
    offsets = np.array([0, 2, 5], np.int32)
    out = kport.grouped_gemm(a, w, offsets, scale, device=device)
    assert out.dtype == np.float16
    wf, af = np.where(w == 0x38, 1.0, -1.0) * scale, a.astype(np.float64)
    assert_close_f32(out, np.concatenate([af[:2] @ wf[0].T, af[2:] @ wf[1].T]), tol=2e-3)


def test_python_m_kport_prints_the_backends_and_devices():
    text = subprocess.run([sys.executable, "-m", "kport", "--smoke"], capture_output=True, text=True, check=True).stdout
    assert text.startswith("kport " + kport.version())
    for d in kport.devices():
        assert f"| {d['index']} | {d['backend']} | {d['name']} |" in text
    assert "smoke: ok" in text


# ---- FP8 activations (W8A8): e4m3 bytes and their f32 per-group scales ----

def e4m3_table():
    """The 256 e4m3fn bytes decoded (0x7f/0xff NaN)."""
    b = np.arange(256)
    e, m = (b >> 3) & 15, (b & 7).astype(np.float64)
    v = np.where(e == 0, m / 8 * 2.0 ** -6, (1 + m / 8) * 2.0 ** (e - 7))
    v[(e == 15) & (b & 7 == 7)] = np.nan
    return np.where(b & 0x80, -v, v)


E4M3 = e4m3_table()


def e4m3_round(v):
    """Nearest e4m3 value (ties to the even code), saturated at 448."""
    mags = E4M3[:0x7f]
    a = np.minimum(np.abs(v), 448.0)
    i = np.clip(np.searchsorted(mags, a), 1, 0x7e)
    lo, hi = mags[i - 1], mags[i]
    pick_hi = (hi - a < a - lo) | ((hi - a == a - lo) & (i % 2 == 0))
    return np.sign(v) * np.where(pick_hi, hi, lo)


def quantize_groups(x, ue8m0=False):
    """kp_quantize_fp8's rule (amax, scale and quotient in f32, as kport computes them):
    dequantized values (float64), scales [T, K/128]."""
    g = x.astype(np.float32).reshape(x.shape[0], -1, 128)
    amax = np.maximum(np.abs(g).max(2), np.float32(1e-10))
    s = amax / np.float32(448.0)
    if ue8m0:
        s = (2.0 ** np.ceil(np.log2(amax.astype(np.float64) / 448.0))).astype(np.float32)
    q = e4m3_round((g / s[:, :, None]).astype(np.float64))
    return (q * s[:, :, None].astype(np.float64)).reshape(x.shape), s.astype(np.float64)


def expect_w8a8_or_unsupported(device, run):
    """W8A8 runs on every backend; a GPU backend declines it (KP_ERR_UNSUPPORTED) only when
    KPORT_GPU_KERNELS forces generation 1, which has no W8A8 kernel."""
    backend = next(d["backend"] for d in kport.devices() if d["index"] == device.index)
    try:
        return run()
    except kport.Error as err:
        if backend == "cpu" or err.status != "KP_ERR_UNSUPPORTED" or "gen1" not in os.environ.get("KPORT_GPU_KERNELS", ""):
            raise
        pytest.skip(f"{backend} declines W8A8 under KPORT_GPU_KERNELS=gen1: {err.message}")


@pytest.mark.parametrize("layout", ["row", "column"])
def test_grouped_gemm_fp8_activations_with_a_scale(device, rng, layout):
    m, k, n = 9, 256, 40
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    a[(a & 0x7F) == 0x7F] = 0x38  # no NaN
    w = rng.integers(0, 256, (2, n, k)).astype(np.uint8) & 0xBF  # |w| < 2
    w[(w & 0x7F) == 0x7F] = 0x38
    w_scale = rng.uniform(0.01, 0.1, (2, 1, 2)).astype(np.float32)
    a_scale = (2.0 ** rng.integers(-10, 11, (m, 2))).astype(np.float32)  # 2^-10..2^10 per token group
    offsets = np.array([0, 4, 9], np.int32)
    scale_arg = a_scale if layout == "row" else np.ascontiguousarray(np.pad(a_scale, ((0, 3), (0, 0))).T)  # [K/128, 12]
    out = expect_w8a8_or_unsupported(device, lambda: kport.grouped_gemm(
        a, w, offsets, w_scale, a_scale=scale_arg, a_scale_layout=layout, device=device))
    assert out.dtype == np.float32 and out.shape == (m, n)
    av = E4M3[a] * np.repeat(a_scale, 128, axis=1)
    wv = E4M3[w] * np.repeat(w_scale, 128, axis=2).repeat(128, axis=1)[:, :n]
    assert_close_f32(out, np.concatenate([av[:4] @ wv[0].T, av[4:] @ wv[1].T]), tol=1e-5)
    with pytest.raises(kport.Error) as err:  # an e4m3 a without its scales: refused, nothing written
        kport.grouped_gemm(a, w, offsets, w_scale, out=np.full((m, n), 7.0, np.float32), device=device)
    assert err.value.status == "KP_ERR_INVALID_ARGUMENT" and "a_scale" in err.value.message


def dequant(w, s):
    """e4m3 bytes [..., N, K] times their 128x128 block scales [..., ceil(N/128), K/128]."""
    full = np.repeat(np.repeat(s, 128, axis=-2), 128, axis=-1)
    return E4M3[w] * full[..., :w.shape[-2], :]


def mlp_w8a8(xq, d13, d2, ue8m0):
    """One expert in W8A8 on a quantized row: SwiGLU in float64, h quantized, h @ w2.T."""
    inter = d13.shape[0] // 2
    gu = d13 @ xq
    h = gu[:inter] / (1 + np.exp(-gu[:inter])) * gu[inter:]
    hq, _ = quantize_groups(h[None], ue8m0)
    return d2 @ hq[0]


def ref_moe_w8a8(x, logits, w13, s13, w2, s2, topk, ue8m0, shared=None):
    """Softmax top-k routing (renormalized), experts in W8A8 (both quantizations), float64;
    shared = (w13, s13, w2, s2) of an FP8 shared expert, run the same way."""
    t, hidden = x.shape
    d13, d2 = dequant(w13, s13), dequant(w2, s2)
    xq, _ = quantize_groups(x.astype(np.float64), ue8m0)
    out = np.zeros((t, hidden))
    p = np.exp(logits - logits.max(1, keepdims=True))
    for tok in range(t):
        ids = np.argsort(-logits[tok], kind="stable")[:topk]
        wts = p[tok, ids] / p[tok, ids].sum()
        for e, wt in zip(ids, wts):
            out[tok] += wt * mlp_w8a8(xq[tok], d13[e], d2[e], ue8m0).astype(np.float16)  # y stored in x's dtype
        if shared is not None:
            out[tok] += mlp_w8a8(xq[tok], dequant(shared[0], shared[1]), dequant(shared[2], shared[3]), ue8m0)
    return out


def fp8_bytes(rng, shape):
    b = rng.integers(0, 256, shape).astype(np.uint8) & 0xBF  # |w| < 2
    b[(b & 0x7F) == 0x7F] = 0x38
    return b


@pytest.mark.parametrize("ue8m0,shared", [(False, False), (True, False), (False, True)])
def test_moe_forward_fp8_activations(device, rng, ue8m0, shared):
    t, hidden, inter, experts, topk = 6, 256, 128, 4, 2
    x = rng.uniform(-1, 1, (t, hidden)).astype(np.float16)
    x[:, 7] *= 30  # an outlier channel
    logits = rng.standard_normal((t, experts)).astype(np.float32)
    w13 = rng.integers(0, 256, (experts, 2 * inter, hidden)).astype(np.uint8) & 0xBF
    w2 = rng.integers(0, 256, (experts, hidden, inter)).astype(np.uint8) & 0xBF
    w13[(w13 & 0x7F) == 0x7F] = 0x38
    w2[(w2 & 0x7F) == 0x7F] = 0x38
    s13 = rng.uniform(0.005, 0.02, (experts, 2, 2)).astype(np.float32)
    s2 = rng.uniform(0.005, 0.02, (experts, 2, 1)).astype(np.float32)
    args = dict(w13_scale=s13, w2_scale=s2, topk=topk, renormalize=True, device=device)
    sh = None
    if shared:  # DeepSeek-V3's FP8 shared expert (inter_s 128), in the same W8A8 path
        sh = (fp8_bytes(rng, (256, hidden)), rng.uniform(0.005, 0.02, (2, 2)).astype(np.float32),
              fp8_bytes(rng, (hidden, 128)), rng.uniform(0.005, 0.02, (2, 1)).astype(np.float32))
        args.update(shared_w13=sh[0], shared_w13_scale=sh[1], shared_w2=sh[2], shared_w2_scale=sh[3])
    out8 = expect_w8a8_or_unsupported(device, lambda: kport.moe_forward(
        x, logits, w13, w2, fp8_activations=True, activation_scale_ue8m0=ue8m0, **args))
    out16 = kport.moe_forward(x, logits, w13, w2, **args)
    ref = ref_moe_w8a8(x, logits, w13, s13, w2, s2, topk, ue8m0, sh)
    # h's e4m3 rounding may flip next to a tie (kport's f32 h vs the float64 one): one such
    # element moves a token's output by ~0.5%; skipping a quantization moves it by ~3%
    assert_close_f32(out8, ref, tol=5e-3)
    diff = np.linalg.norm(out8.astype(np.float64) - out16) / np.linalg.norm(out16.astype(np.float64))
    assert 3e-3 < diff < 0.15, f"W8A8 vs W8A16: relative L2 {diff:.3g}"  # the quantizations' effect
    with pytest.raises(kport.Error) as err:  # W8A8 needs FP8 weights: refused, nothing written
        dense = np.zeros((experts, 2 * inter, hidden), np.float16)
        kport.moe_forward(x, logits, dense, np.zeros((experts, hidden, inter), np.float16), topk=topk,
                          fp8_activations=True, out=np.full_like(x, 5.0), device=device)
    assert err.value.status == "KP_ERR_INVALID_ARGUMENT" and "FP8 e4m3 w13 and w2" in err.value.message


def test_op_kernel_names_the_kernel_without_running(device, rng):
    a = rng.standard_normal((8, 128), dtype=np.float32)
    w = rng.standard_normal((4, 32, 128), dtype=np.float32)
    offsets = np.array([0, 2, 4, 6, 8], np.int32)
    out = np.full((8, 32), 7.0, np.float32)
    name = kport.op_kernel(kport.grouped_gemm, a, w, offsets, out=out, device=device)
    backend = device.info()["backend"]
    if backend == "cpu":
        assert name.startswith("cpu:") and name != "cpu:", name
    else:  # f32 runs generation 1; 8 rows over 4 experts: the decode-sized kernel
        assert name == "gen1:grouped_gemm_small", name
    assert (out == 7.0).all(), "naming the kernel must not run it"
    assert kport.op_kernel(kport.moe_gate, a, topk=2, device=device).split(":")[0] in ("cpu", "gen1")
    with pytest.raises(kport.Error) as e:  # the call's own checks, as when it runs
        kport.op_kernel(kport.grouped_gemm, a, w[:, :, :64], offsets, out=out, device=device)
    assert e.value.status == "KP_ERR_INVALID_SHAPE"
    with pytest.raises(TypeError):
        kport.op_kernel(len, [1])
