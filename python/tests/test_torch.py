"""kport with PyTorch tensors: each op against an independent torch reference (SDPA for
prefill, straightforward torch for paged and MLA decode, DeepSeek-V3's gate, grouped GEMM in
bf16 and FP8, the MoE layer's SwiGLU and combine), errors, DLPack round trips, and the
torch.library ops under torch.compile."""

import numpy as np
import pytest

import kport
from conftest import require_torch

torch = require_torch()
import kport.torch  # noqa: E402,F401  (registers torch.ops.kport)

F = torch.nn.functional


@pytest.fixture
def on(device):
    """(kport device, torch device): torch.cuda tensors on a cuda device, host tensors elsewhere."""
    info = device.info()
    if info["backend"] == "cuda":
        return device, torch.device("cuda", info["backend_device"])
    return device, torch.device("cpu")


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def rand(gen, shape, dev, dtype=torch.bfloat16, scale=1.0):
    return (torch.randn(shape, generator=gen) * scale).to(dtype).to(dev)


def assert_close(out, ref, dtype):
    """DESIGN §5: relative L2 within f32 1e-5, f16 2e-3, bf16 1.6e-2, and every element within
    a bound scaled to the output (a norm alone would let one wrong element through)."""
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    out, ref = out.double().cpu(), ref.double().cpu()
    assert torch.isfinite(out).all()
    l2 = ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()
    worst = ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
    assert l2 <= tol and worst <= 4 * tol, f"relative L2 {l2:.3g}, worst element {worst:.3g} (tol {tol})"


# ---- attention ----

def visible(lq, lk, window=(-1, -1)):
    """[lq, lk] keys each query sees: causal bottom-right aligned, optional sliding window."""
    i = torch.arange(lq)[:, None] + (lk - lq)
    j = torch.arange(lk)[None, :]
    mask = j <= i
    if window[0] >= 0:
        mask &= j >= i - window[0]
    return mask


@pytest.mark.parametrize("d,dv", [(128, 128), (192, 128)])
def test_attention_prefill_matches_torch_sdpa(on, gen, d, dv):
    dev, tdev = on
    lens_q, lens_k, h_q, h_kv = [1, 9, 33], [4, 9, 40], 8, 2
    cu_q = torch.tensor(np.cumsum([0] + lens_q), dtype=torch.int32, device=tdev)
    cu_k = torch.tensor(np.cumsum([0] + lens_k), dtype=torch.int32, device=tdev)
    q = rand(gen, (sum(lens_q), h_q, d), tdev)
    k = rand(gen, (sum(lens_k), h_kv, d), tdev)
    v = rand(gen, (sum(lens_k), h_kv, dv), tdev)
    scale = d ** -0.5
    out, lse = kport.attention_prefill(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), softmax_scale=scale,
                                       causal=True, return_lse=True, device=dev)
    refs, lses = [], []
    for b, (lq, lk) in enumerate(zip(lens_q, lens_k)):
        qs, ks = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        qb = q[qs].float().transpose(0, 1)
        kb = k[ks].float().repeat_interleave(h_q // h_kv, 1).transpose(0, 1)
        vb = v[ks].float().repeat_interleave(h_q // h_kv, 1).transpose(0, 1)
        mask = visible(lq, lk).to(tdev)
        refs.append(F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, scale=scale).transpose(0, 1))
        lses.append(torch.logsumexp((qb @ kb.transpose(1, 2) * scale).masked_fill(~mask, -torch.inf), -1))
    assert_close(out, torch.cat(refs), torch.bfloat16)
    assert_close(lse, torch.cat(lses, 1), torch.float16)  # f32 lse from bf16 inputs


def paged(gen, tdev, seq_lens, block_size, h_kv, d, dtype=torch.bfloat16):
    """A paged cache holding each sequence's keys in shuffled blocks, and its block table."""
    blocks_each = [(n + block_size - 1) // block_size for n in seq_lens]
    num_blocks = sum(blocks_each) + 2  # spare blocks no sequence uses
    cache = rand(gen, (num_blocks, block_size, h_kv, d), tdev, dtype)
    order = torch.randperm(num_blocks, generator=gen)
    table = torch.zeros((len(seq_lens), max(blocks_each)), dtype=torch.int32)
    used = 0
    for b, nb in enumerate(blocks_each):
        table[b, :nb] = order[used:used + nb]
        used += nb
    return cache, table.to(tdev)


def gather(cache, table, b, n):
    """Sequence b's first n cache rows, through the block table."""
    return cache[table[b].long()].flatten(0, 1)[:n]


def ref_decode(q, keys, values, scale, causal):
    """q [s_q, h_q, d] against keys [n, h_kv, d], values [n, h_kv, dv], in f32."""
    s_q, h_q, n = q.shape[0], q.shape[1], keys.shape[0]
    keys = keys.float().repeat_interleave(h_q // keys.shape[1], 1).transpose(0, 1)
    values = values.float().repeat_interleave(h_q // values.shape[1], 1).transpose(0, 1)
    s = q.float().transpose(0, 1) @ keys.transpose(1, 2) * scale
    if causal:
        s = s.masked_fill(~visible(s_q, n).to(s.device), -torch.inf)
    return (s.softmax(-1) @ values).transpose(0, 1)


def test_paged_decode_matches_gathered_attention(on, gen):
    dev, tdev = on
    seq_lens, h_q, h_kv, d, bs = [1, 17, 40], 8, 2, 128, 16
    k_cache, table = paged(gen, tdev, seq_lens, bs, h_kv, d)
    v_cache = rand(gen, k_cache.shape, tdev)
    q = rand(gen, (3, 1, h_q, d), tdev)
    lens = torch.tensor(seq_lens, dtype=torch.int32, device=tdev)
    out = kport.attention_decode(q, k_cache, v_cache, table, lens, device=dev)
    ref = torch.stack([ref_decode(q[b], gather(k_cache, table, b, n), gather(v_cache, table, b, n), d ** -0.5, True)
                       for b, n in enumerate(seq_lens)])
    assert_close(out, ref, torch.bfloat16)


def test_mla_decode_two_query_tokens_matches_torch(on, gen):
    dev, tdev = on
    seq_lens, h_q, scale = [70, 5], 16, 0.1352337788608801
    kv, table = paged(gen, tdev, seq_lens, 64, 1, 576)
    q = rand(gen, (2, 2, h_q, 576), tdev)  # s_q = 2: multi-token prediction, causal
    lens = torch.tensor(seq_lens, dtype=torch.int32, device=tdev)
    out, lse = kport.mla_decode(q, kv, table, lens, scale, return_lse=True, device=dev)
    assert out.shape == (2, 2, h_q, 512) and lse.shape == (2, h_q, 2)
    ref = torch.stack([ref_decode(q[b], gather(kv, table, b, n), gather(kv, table, b, n)[..., :512], scale, True)
                       for b, n in enumerate(seq_lens)])
    assert_close(out, ref, torch.bfloat16)


# ---- MoE ----

def ref_gate(logits, bias, topk, n_group, topk_group, scoring, renormalize, route_scale):
    """DeepSeek-V3's gate (inference/model.py semantics), in float64."""
    logits = logits.double()
    scores = logits.sigmoid() if scoring == "sigmoid" else logits.softmax(-1)
    biased = scores + bias.double() if bias is not None else scores
    if n_group > 1:
        grouped = biased.view(logits.shape[0], n_group, -1)
        group_score = grouped.topk(2, -1).values.sum(-1) if bias is not None else grouped.amax(-1)
        keep = torch.zeros_like(group_score, dtype=torch.bool).scatter_(1, group_score.topk(topk_group, -1).indices,
                                                                        True)
        biased = grouped.masked_fill(~keep[..., None], -torch.inf).flatten(1)
    ids = biased.topk(topk, -1).indices
    weights = scores.gather(1, ids)
    if renormalize:
        weights = weights / weights.sum(-1, keepdim=True)
    return ids.int(), (weights * route_scale).float()


@pytest.mark.parametrize("routing", [
    dict(topk=4, n_group=4, topk_group=2, scoring="sigmoid", renormalize=True, route_scale=2.5),  # V3, scaled
    dict(topk=2, n_group=1, topk_group=1, scoring="softmax", renormalize=False, route_scale=1.0),  # Mixtral
])
def test_moe_gate_matches_deepseek_v3_reference(on, gen, routing):
    dev, tdev = on
    logits = rand(gen, (37, 32), tdev, torch.float32)
    bias = rand(gen, (32,), tdev, torch.float32, 0.1) if routing["scoring"] == "sigmoid" else None
    ids, weights = kport.moe_gate(logits, bias, **routing, device=dev)
    want_ids, want_weights = ref_gate(logits.cpu(), None if bias is None else bias.cpu(), **routing)
    torch.testing.assert_close(ids.cpu(), want_ids, rtol=0, atol=0)
    assert_close(weights, want_weights, torch.float32)


def test_moe_align_is_a_stable_sort_by_expert(on, gen):
    dev, tdev = on
    ids = torch.randint(0, 8, (11, 3), generator=gen, dtype=torch.int32).to(tdev)
    sorted_ids, offsets, pos = kport.moe_align(ids, 8, device=dev)
    flat = ids.flatten().cpu()
    assert torch.equal(sorted_ids.cpu(), torch.sort(flat, stable=True).indices.int())
    assert torch.equal(offsets.cpu()[1:], torch.bincount(flat, minlength=8).cumsum(0).int())
    assert torch.equal(sorted_ids.cpu()[pos.flatten().cpu().long()], torch.arange(33, dtype=torch.int32))


def fp8_blocks(w):
    """w [E, N, K] f32 -> (e4m3 weights, f32 scales [E, ceil(N/128), K/128]): DeepSeek-V3's
    weight_scale_inv layout, each 128x128 block scaled to e4m3's range."""
    e, n, k = w.shape
    nb = (n + 127) // 128
    padded = F.pad(w, (0, 0, 0, nb * 128 - n)).view(e, nb, 128, k // 128, 128)
    scale = padded.abs().amax((2, 4)).clamp_min(1e-12) / 448.0
    q = (padded / scale[:, :, None, :, None]).view(e, nb * 128, k)[:, :n].to(torch.float8_e4m3fn)
    return q, scale.float()


def dequant(q, scale):
    e, n, k = q.shape
    s = scale.repeat_interleave(128, 1)[:, :n].repeat_interleave(128, 2)[:, :, :k]
    return q.float() * s


@pytest.mark.parametrize("weights", ["bf16", "fp8"])
def test_grouped_gemm_matches_per_expert_matmul(on, gen, weights):
    dev, tdev = on
    a = rand(gen, (19, 256), tdev)
    w = torch.randn((3, 200, 256), generator=gen) * 0.1
    offsets = torch.tensor([0, 7, 7, 19], dtype=torch.int32, device=tdev)  # expert 1 gets no rows
    if weights == "fp8":
        wq, scale = fp8_blocks(w)
        out = kport.grouped_gemm(a, wq.to(tdev), offsets, scale.to(tdev), device=dev)
        wf = dequant(wq, scale)
    else:
        wq = w.to(torch.bfloat16)
        out = kport.grouped_gemm(a, wq.to(tdev), offsets, device=dev)
        wf = wq.float()
    af = a.float().cpu()
    ref = torch.cat([af[:7] @ wf[0].T, af[7:] @ wf[2].T])
    assert out.dtype == torch.bfloat16
    assert_close(out, ref, torch.bfloat16)


@pytest.mark.parametrize("weights", ["bf16", "fp8"])
def test_grouped_gemm_masked_layout_bf16(on, gen, weights):
    """masked_m [E] instead of offsets: a [E, max_m, K], expert e's first min(count, max_m) rows
    computed (0, partial, max_m, clamped), the rest of out as it was."""
    dev, tdev = on
    e, max_m = 4, 5
    counts = torch.tensor([0, 2, max_m, max_m + 3], dtype=torch.int32)
    a = rand(gen, (e, max_m, 256), tdev)
    w = torch.randn((e, 200, 256), generator=gen) * 0.1
    out = torch.full((e, max_m, 200), 3.0, dtype=torch.bfloat16, device=tdev)
    if weights == "fp8":
        wq, scale = fp8_blocks(w)
        kport.grouped_gemm(a, wq.to(tdev), None, scale.to(tdev), masked_m=counts.to(tdev), out=out, device=dev)
        wf = dequant(wq, scale)
    else:
        wq = w.to(torch.bfloat16)
        kport.grouped_gemm(a, wq.to(tdev), masked_m=counts.to(tdev), out=out, device=dev)
        wf = wq.float()
    af, out = a.double().cpu(), out.cpu()
    rows = [min(int(c), max_m) for c in counts]
    assert_close(torch.cat([out[i, :r] for i, r in enumerate(rows)]),
                 torch.cat([af[i, :r] @ wf[i].double().T for i, r in enumerate(rows)]), torch.bfloat16)
    assert all((out[i, r:] == 3.0).all() for i, r in enumerate(rows)), "rows past a count must stay untouched"


def test_moe_combine_sums_weighted_rows_in_slot_order(on, gen):
    dev, tdev = on
    expert_out = rand(gen, (20, 64), tdev)
    pos = torch.randint(0, 20, (6, 3), generator=gen, dtype=torch.int32).to(tdev)
    w = torch.rand((6, 3), generator=gen).to(tdev)
    out = kport.moe_combine(expert_out, pos, w, device=dev)
    ref = (w.cpu()[..., None] * expert_out.cpu().float()[pos.cpu().long()]).sum(1)
    assert_close(out, ref, torch.bfloat16)


def swiglu_mlp(x, w13, w2):
    """The expert MLP: (silu(x @ w1.T) * (x @ w3.T)) @ w2.T, w13 = [w1; w3]."""
    gate, up = (x @ w13.T).chunk(2, -1)
    return (F.silu(gate) * up) @ w2.T


def ref_moe(x, logits, bias, w13, w2, shared_w13, shared_w2, routing):
    ids, weights = ref_gate(logits, bias, **routing)
    out = swiglu_mlp(x, shared_w13, shared_w2)
    for t in range(x.shape[0]):
        for slot in range(ids.shape[1]):
            e = ids[t, slot]
            out[t] += weights[t, slot] * swiglu_mlp(x[t], w13[e], w2[e])
    return out


@pytest.mark.parametrize("weights", ["bf16", "fp8"])
def test_moe_forward_matches_torch_swiglu_experts(on, gen, weights):
    dev, tdev = on
    routing = dict(topk=4, n_group=4, topk_group=2, scoring="sigmoid", renormalize=True, route_scale=2.5)
    T, hidden, inter, E = 9, 256, 128, 16
    x = rand(gen, (T, hidden), tdev)
    logits = rand(gen, (T, E), tdev, torch.float32)
    bias = rand(gen, (E,), tdev, torch.float32, 0.1)
    w13, w2 = torch.randn((E, 2 * inter, hidden), generator=gen) * 0.05, torch.randn((E, hidden, inter), generator=gen) * 0.05
    sw13, sw2 = rand(gen, (2 * inter, hidden), tdev, scale=0.05), rand(gen, (hidden, inter), tdev, scale=0.05)
    if weights == "fp8":
        (q13, s13), (q2, s2) = fp8_blocks(w13), fp8_blocks(w2)
        out = kport.moe_forward(x, logits, q13.to(tdev), q2.to(tdev), bias, w13_scale=s13.to(tdev),
                                w2_scale=s2.to(tdev), shared_w13=sw13, shared_w2=sw2, **routing, device=dev)
        w13f, w2f = dequant(q13, s13), dequant(q2, s2)
    else:
        b13, b2 = w13.to(torch.bfloat16), w2.to(torch.bfloat16)
        out = kport.moe_forward(x, logits, b13.to(tdev), b2.to(tdev), bias, shared_w13=sw13, shared_w2=sw2,
                                **routing, device=dev)
        w13f, w2f = b13.float(), b2.float()
    ref = ref_moe(x.float().cpu(), logits.cpu(), bias.cpu(), w13f, w2f, sw13.float().cpu(), sw2.float().cpu(), routing)
    assert_close(out, ref, torch.bfloat16)


# ---- errors, DLPack, torch.library ----

def test_bad_inputs_raise_and_leave_outputs_untouched(on, gen):
    dev, tdev = on
    q = rand(gen, (4, 2, 64), tdev)
    cu = torch.tensor([0, 4], dtype=torch.int32, device=tdev)
    out = torch.full((4, 2, 64), 5.0, dtype=torch.bfloat16, device=tdev)
    with pytest.raises(kport.Error) as err:  # q's dtype is bf16, k's f32
        kport.attention_prefill(q, q.float(), q, cu, cu, 4, 4, out=out, device=dev)
    assert err.value.status == "KP_ERR_INVALID_DTYPE"
    with pytest.raises(kport.Error) as err:  # cu_seqlens must be int32
        kport.attention_prefill(q, q, q, cu.long(), cu, 4, 4, out=out, device=dev)
    assert err.value.status == "KP_ERR_INVALID_DTYPE"
    assert (out == 5.0).all()
    with pytest.raises(kport.Error):  # through the custom op too
        torch.ops.kport.moe_gate(torch.zeros((2, 4), device=tdev), None, 5)


def test_outputs_written_in_place_share_memory_and_round_trip(on, gen):
    dev, tdev = on
    logits = rand(gen, (5, 16), tdev, torch.float32)
    ids = torch.empty((5, 2), dtype=torch.int32, device=tdev)
    weights = torch.empty((5, 2), device=tdev)
    ptr = ids.data_ptr()
    got_ids, got_w = kport.moe_gate(logits, topk=2, topk_ids=ids, topk_weights=weights, device=dev)
    assert got_ids is ids and ids.data_ptr() == ptr
    assert torch.equal(ids.cpu(), logits.cpu().topk(2).indices.int())
    new_ids, _ = kport.moe_gate(logits, topk=2, device=dev)  # allocated: a torch tensor where the input is
    assert isinstance(new_ids, torch.Tensor) and new_ids.device == tdev
    if tdev.type == "cpu":  # numpy <-> torch through DLPack, both ways, without copies
        as_np = np.from_dlpack(new_ids)
        assert as_np.ctypes.data == new_ids.data_ptr()
        back = torch.from_dlpack(as_np)
        assert back.data_ptr() == new_ids.data_ptr() and torch.equal(back, new_ids)
        mixed, _ = kport.moe_gate(logits.numpy(), topk=2, device=dev)
        assert isinstance(mixed, np.ndarray) and (mixed == new_ids.numpy()).all()


def test_custom_ops_pass_opcheck_and_compile(on, gen):
    dev, tdev = on
    kport.set_default_device(dev) if tdev.type == "cpu" else None
    logits = rand(gen, (6, 8), tdev, torch.float32)
    x = rand(gen, (6, 128), tdev)
    w = rand(gen, (8, 64, 128), tdev, scale=0.1)
    torch.library.opcheck(torch.ops.kport.moe_gate.default, (logits, None, 2))
    torch.library.opcheck(torch.ops.kport.moe_combine.default,
                          (w[0], torch.zeros((6, 2), dtype=torch.int32, device=tdev), torch.ones((6, 2), device=tdev)))

    def routed(x, logits, w):  # gate -> align -> grouped GEMM -> combine, all kport ops
        ids, weights = torch.ops.kport.moe_gate(logits, None, 2, renormalize=True)
        sorted_ids, offsets, pos = torch.ops.kport.moe_align(ids, 8)
        rows = x[(sorted_ids // 2).long()]
        return torch.ops.kport.moe_combine(torch.ops.kport.grouped_gemm(rows, w, offsets), pos, weights) * 2

    compiled = torch.compile(routed, fullgraph=True, backend="aot_eager")  # traces the fake implementations
    got, want = compiled(x, logits, w), routed(x, logits, w)
    assert torch.equal(got, want)
    ids, weights = ref_gate(logits.cpu(), None, 2, 1, 1, "softmax", True, 1.0)
    ref = 2 * sum(weights[:, s, None] * torch.einsum("tk,tnk->tn", x.float().cpu(), w.float().cpu()[ids[:, s].long()])
                  for s in range(2))
    assert_close(got, ref, torch.bfloat16)
