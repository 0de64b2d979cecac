"""kport.grouped_gemm in the masked layout (masked_m; DeepGEMM's m_grouped_gemm_*_masked):
a [E, max_m, K] or [E * max_m, K], out of the same rank, expert e computes its first
min(max(masked_m[e], 0), max_m) rows and leaves every other row of out as it was. Checked
against a float64 numpy reference per element and overall, on every device present (cpu,
opencl on PoCL in CI): counts 0, partial, max_m, above max_m (clamped) and negative; both
ranks; f32, f16, W8A16 (e4m3 weights as bytes) and W8A8 (both a_scale layouts; bf16 in
test_torch.py). Then the argument errors: Python's for both/neither of expert_offsets and
masked_m, the C core's (kport.Error with its status) for bad shapes and dtypes, each
writing nothing."""

import numpy as np
import pytest

import kport
from test_numpy import E4M3, assert_close_f32, expect_w8a8_or_unsupported, fp8_bytes

E, MAX_M, K, N = 5, 6, 256, 40
COUNTS = np.array([0, 3, MAX_M, MAX_M + 4, -2], np.int32)  # none, partial, full, clamped, negative
POISON = 7.0


def rows_of(counts, max_m):
    """expert e's rows of the flat [E * max_m] layout: e * max_m + r for r < the clamped count."""
    return [np.arange(e * max_m, e * max_m + min(max(int(c), 0), max_m)) for e, c in enumerate(counts)]


def check_masked_out(out, ref_rows, counts, tol):
    """ref_rows(e, rows) -> float64 [len(rows), N]; out [E, max_m, N] or [E * max_m, N]."""
    flat = np.asarray(out).reshape(-1, out.shape[-1])
    owned = np.zeros(flat.shape[0], bool)
    refs, got = [], []
    for e, rows in enumerate(rows_of(counts, MAX_M)):
        owned[rows] = True
        if len(rows):
            refs.append(ref_rows(e, rows))
            got.append(flat[rows])
    assert_close_f32(np.concatenate(got), np.concatenate(refs), tol)
    assert (flat[~owned] == POISON).all(), "rows past an expert's count must keep their previous contents"


def poisoned(shape, dtype):
    return np.full(shape, POISON, dtype)


def shapes(rank3, last):
    return (E, MAX_M, last) if rank3 else (E * MAX_M, last)


@pytest.mark.parametrize("rank3", [True, False], ids=["3d", "2d"])
@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float16, 2e-3)], ids=["f32", "f16"])
def test_masked_rows_match_the_reference_and_the_rest_are_untouched(device, rng, rank3, dtype, tol):
    a = rng.standard_normal(shapes(rank3, K)).astype(dtype)
    w = rng.standard_normal((E, N, K)).astype(dtype)
    out = poisoned(shapes(rank3, N), dtype)
    got = kport.grouped_gemm(a, w, masked_m=COUNTS, out=out, device=device)
    assert got is out
    af, wf = a.reshape(-1, K).astype(np.float64), w.astype(np.float64)
    check_masked_out(out, lambda e, rows: af[rows] @ wf[e].T, COUNTS, tol)


@pytest.mark.parametrize("rank3", [True, False], ids=["3d", "2d"])
def test_masked_fp8_weights_w8a16(device, rng, rank3):
    a = rng.standard_normal(shapes(rank3, K)).astype(np.float16)
    w = fp8_bytes(rng, (E, N, K))
    w_scale = rng.uniform(0.01, 0.1, (E, 1, K // 128)).astype(np.float32)
    out = poisoned(shapes(rank3, N), np.float16)
    kport.grouped_gemm(a, w, None, w_scale, masked_m=COUNTS, out=out, device=device)
    af = a.reshape(-1, K).astype(np.float64)
    wf = E4M3[w] * np.repeat(w_scale, 128, axis=2)  # N < 128: one scale block of rows
    check_masked_out(out, lambda e, rows: af[rows] @ wf[e].T, COUNTS, 2e-3)


@pytest.mark.parametrize("rank3,layout", [(True, "row"), (False, "column")], ids=["3d-row", "2d-column"])
def test_masked_w8a8_a_scale_indexed_by_the_flat_row(device, rng, rank3, layout):
    m = E * MAX_M
    a = fp8_bytes(rng, shapes(rank3, K))
    w = fp8_bytes(rng, (E, N, K))
    w_scale = rng.uniform(0.01, 0.1, (E, 1, K // 128)).astype(np.float32)
    a_scale = (2.0 ** rng.integers(-10, 11, (m, K // 128))).astype(np.float32)  # row e * max_m + r
    scale_arg = a_scale if layout == "row" else np.ascontiguousarray(np.pad(a_scale, ((0, 2), (0, 0))).T)
    out = poisoned(shapes(rank3, N), np.float32)
    expect_w8a8_or_unsupported(device, lambda: kport.grouped_gemm(
        a, w, None, w_scale, a_scale=scale_arg, a_scale_layout=layout, masked_m=COUNTS, out=out, device=device))
    av = E4M3[a.reshape(m, K)] * np.repeat(a_scale, 128, axis=1)
    wv = E4M3[w] * np.repeat(w_scale, 128, axis=2)
    check_masked_out(out, lambda e, rows: av[rows] @ wv[e].T, COUNTS, 1e-5)


def test_a_new_masked_output_has_a_rank_and_zeros_past_the_counts(device, rng):
    a = rng.standard_normal((E, MAX_M, K)).astype(np.float32)
    w = rng.standard_normal((E, N, K)).astype(np.float32)
    out = kport.grouped_gemm(a, w, masked_m=COUNTS, device=device)
    assert out.shape == (E, MAX_M, N) and out.dtype == np.float32
    for e, rows in enumerate(rows_of(COUNTS, MAX_M)):
        r = len(rows)
        if r:
            assert_close_f32(out[e, :r], a[e, :r].astype(np.float64) @ w[e].T.astype(np.float64))
        assert (out[e, r:] == 0).all()


def test_masked_argument_errors_write_nothing(device, rng):
    a = rng.standard_normal((E, MAX_M, K)).astype(np.float32)
    w = rng.standard_normal((E, N, K)).astype(np.float32)
    offsets = np.arange(0, E * MAX_M + 1, MAX_M, dtype=np.int32)
    out = poisoned((E, MAX_M, N), np.float32)
    with pytest.raises(TypeError, match="exactly one of expert_offsets .* both were given"):
        kport.grouped_gemm(a, w, offsets, masked_m=COUNTS, out=out, device=device)
    with pytest.raises(TypeError, match="exactly one of expert_offsets .* neither was given"):
        kport.grouped_gemm(a, w, out=out, device=device)

    def core_error(status, words, **kw):
        args = dict(a=a, w=w, masked_m=COUNTS, out=out)
        args.update(kw)
        with pytest.raises(kport.Error) as err:
            kport.grouped_gemm(args.pop("a"), args.pop("w"), device=device, **args)
        assert err.value.status == status, err.value
        assert all(word in err.value.message for word in words), err.value.message
        assert (out == POISON).all(), "a call that fails writes nothing"

    core_error("KP_ERR_INVALID_DTYPE", ["masked_m"], masked_m=COUNTS.astype(np.int64))
    core_error("KP_ERR_INVALID_SHAPE", ["masked_m"], masked_m=np.zeros(E + 1, np.int32))  # [E] only
    core_error("KP_ERR_INVALID_SHAPE", ["out", "dims"], out=out.reshape(E * MAX_M, N))  # ranks differ
    core_error("KP_ERR_INVALID_SHAPE", ["E of w", "masked_m"], w=w[:4])  # 5 counts, 4 experts
    core_error("KP_ERR_INVALID_SHAPE", ["multiple of E"], a=a.reshape(E * MAX_M, K)[:-1],
               out=out.reshape(E * MAX_M, N)[:-1])
    with pytest.raises(TypeError, match="masked_m must be a tensor"):
        kport.grouped_gemm(a, w, masked_m=[1, 2, 3, 4, 5], out=out, device=device)
    assert (out == POISON).all()
