"""kport's ops as PyTorch custom ops: ``torch.ops.kport.<op>``, each with a fake (meta)
implementation, so that torch.compile and CUDA-graph capture can trace through them.

    import torch, kport.torch
    out = torch.ops.kport.attention_prefill(q, k, v, cu_q, cu_k, max_q, max_k, scale, True)[0]

The ops are functional (they return new tensors); to write into tensors you own, call the
kport.* functions with torch tensors directly. Tensors go through DLPack and kport's C API, so
no torch ABI is involved; CUDA/ROCm tensors run on torch's current stream. Host tensors run on
kport.default_device().
"""

from typing import Optional

import torch

import kport

from . import _targets

_targets._configure()  # torch is imported now: its tensors take the fast DLPack exporter

Tensor = torch.Tensor


@torch.library.custom_op("kport::attention_prefill", mutates_args=())
def attention_prefill(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor,
                      max_seqlen_q: int, max_seqlen_k: int, softmax_scale: float, causal: bool = False,
                      window_left: int = -1, window_right: int = -1) -> tuple[Tensor, Tensor]:
    """Varlen prefill: (out [total_q, h_q, dv], lse f32 [h_q, total_q])."""
    out, lse = _prefill_outputs(q, v)
    kport.attention_prefill(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                            softmax_scale=softmax_scale, causal=causal, window_left=window_left,
                            window_right=window_right, out=out, lse=lse)
    return out, lse


def _prefill_outputs(q, v):
    return (q.new_empty((q.shape[0], q.shape[1], v.shape[2])),
            q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32))


@attention_prefill.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal=False,
      window_left=-1, window_right=-1):
    return _prefill_outputs(q, v)


def _decode_outputs(q, dv):
    return (q.new_empty((q.shape[0], q.shape[1], q.shape[2], dv)),
            q.new_empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32))


@torch.library.custom_op("kport::attention_decode", mutates_args=())
def attention_decode(q: Tensor, k_cache: Tensor, v_cache: Tensor, block_table: Tensor, seq_lens: Tensor,
                     softmax_scale: float, causal: bool = True, num_splits: int = 0) -> tuple[Tensor, Tensor]:
    """Paged decode: (out [B, s_q, h_q, dv], lse f32 [B, h_q, s_q])."""
    out, lse = _decode_outputs(q, v_cache.shape[3])
    kport.attention_decode(q, k_cache, v_cache, block_table, seq_lens, softmax_scale=softmax_scale, causal=causal,
                           num_splits=num_splits, out=out, lse=lse)
    return out, lse


@attention_decode.register_fake
def _(q, k_cache, v_cache, block_table, seq_lens, softmax_scale, causal=True, num_splits=0):
    return _decode_outputs(q, v_cache.shape[3])


@torch.library.custom_op("kport::mla_decode", mutates_args=())
def mla_decode(q: Tensor, kv_cache: Tensor, block_table: Tensor, seq_lens: Tensor, softmax_scale: float,
               head_dim_v: int = 512, causal: bool = True, num_splits: int = 0) -> tuple[Tensor, Tensor]:
    """MLA decode (FlashMLA layout): (out [B, s_q, h_q, head_dim_v], lse f32 [B, h_q, s_q])."""
    out, lse = _decode_outputs(q, head_dim_v)
    kport.mla_decode(q, kv_cache, block_table, seq_lens, softmax_scale, head_dim_v=head_dim_v, causal=causal,
                     num_splits=num_splits, out=out, lse=lse)
    return out, lse


@mla_decode.register_fake
def _(q, kv_cache, block_table, seq_lens, softmax_scale, head_dim_v=512, causal=True, num_splits=0):
    return _decode_outputs(q, head_dim_v)


def _gate_outputs(logits, topk):
    return (logits.new_empty((logits.shape[0], topk), dtype=torch.int32),
            logits.new_empty((logits.shape[0], topk), dtype=torch.float32))


@torch.library.custom_op("kport::moe_gate", mutates_args=())
def moe_gate(logits: Tensor, bias: Optional[Tensor], topk: int, n_group: int = 1, topk_group: int = 1,
             scoring: str = "softmax", renormalize: bool = False, route_scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Router: (topk_ids int32 [T, topk], topk_weights f32 [T, topk])."""
    ids, weights = _gate_outputs(logits, topk)
    kport.moe_gate(logits, bias, topk=topk, n_group=n_group, topk_group=topk_group, scoring=scoring,
                   renormalize=renormalize, route_scale=route_scale, topk_ids=ids, topk_weights=weights)
    return ids, weights


@moe_gate.register_fake
def _(logits, bias, topk, n_group=1, topk_group=1, scoring="softmax", renormalize=False, route_scale=1.0):
    return _gate_outputs(logits, topk)


def _align_outputs(topk_ids, num_experts, block_size):
    t, k = topk_ids.shape
    new = lambda shape: topk_ids.new_empty(shape, dtype=torch.int32)  # noqa: E731
    return new((t * k + num_experts * (block_size - 1),)), new((num_experts + 1,)), new((t, k))


@torch.library.custom_op("kport::moe_align", mutates_args=())
def moe_align(topk_ids: Tensor, num_experts: int, block_size: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """(sorted_ids, expert_offsets, token_pos), all int32."""
    sorted_ids, offsets, pos = _align_outputs(topk_ids, num_experts, block_size)
    kport.moe_align(topk_ids, num_experts, block_size, sorted_ids=sorted_ids, expert_offsets=offsets, token_pos=pos)
    return sorted_ids, offsets, pos


@moe_align.register_fake
def _(topk_ids, num_experts, block_size=1):
    return _align_outputs(topk_ids, num_experts, block_size)


@torch.library.custom_op("kport::grouped_gemm", mutates_args=())
def grouped_gemm(a: Tensor, w: Tensor, expert_offsets: Tensor, w_scale: Optional[Tensor] = None) -> Tensor:
    """out [M, N]: a[r] @ w[e].T for expert e's rows; zeros where no expert's rows reach."""
    out = a.new_zeros((a.shape[0], w.shape[1]))
    kport.grouped_gemm(a, w, expert_offsets, w_scale, out=out)
    return out


@grouped_gemm.register_fake
def _(a, w, expert_offsets, w_scale=None):
    return a.new_empty((a.shape[0], w.shape[1]))


@torch.library.custom_op("kport::moe_combine", mutates_args=())
def moe_combine(expert_out: Tensor, token_pos: Tensor, topk_weights: Tensor) -> Tensor:
    """out [T, hidden] = sum over slots of topk_weights * expert_out[token_pos] (fixed order)."""
    out = expert_out.new_empty((token_pos.shape[0], expert_out.shape[1]))
    kport.moe_combine(expert_out, token_pos, topk_weights, out=out)
    return out


@moe_combine.register_fake
def _(expert_out, token_pos, topk_weights):
    return expert_out.new_empty((token_pos.shape[0], expert_out.shape[1]))


@torch.library.custom_op("kport::moe_forward", mutates_args=())
def moe_forward(x: Tensor, router_logits: Tensor, w13: Tensor, w2: Tensor, bias: Optional[Tensor] = None,
                w13_scale: Optional[Tensor] = None, w2_scale: Optional[Tensor] = None,
                shared_w13: Optional[Tensor] = None, shared_w2: Optional[Tensor] = None, topk: int = 1,
                n_group: int = 1, topk_group: int = 1, scoring: str = "softmax", renormalize: bool = False,
                route_scale: float = 1.0) -> Tensor:
    """The routed MoE layer (+ shared expert): out [T, hidden]."""
    out = torch.empty_like(x)
    kport.moe_forward(x, router_logits, w13, w2, bias, w13_scale=w13_scale, w2_scale=w2_scale,
                      shared_w13=shared_w13, shared_w2=shared_w2, topk=topk, n_group=n_group,
                      topk_group=topk_group, scoring=scoring, renormalize=renormalize, route_scale=route_scale,
                      out=out)
    return out


@moe_forward.register_fake
def _(x, router_logits, w13, w2, bias=None, w13_scale=None, w2_scale=None, shared_w13=None, shared_w2=None,
      topk=1, n_group=1, topk_group=1, scoring="softmax", renormalize=False, route_scale=1.0):
    return torch.empty_like(x)


def _overhead_cases(dev):
    """bench/python_overhead.py: the custom-op path (torch's dispatcher and the allocations included)."""
    kport.set_default_device(dev)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 2, 64, generator=g) for _ in range(3))
    cu = torch.tensor([0, 4], dtype=torch.int32)
    logits = torch.randn(4, 8, generator=g)
    return [
        ("attention_prefill", lambda: torch.ops.kport.attention_prefill(q, k, v, cu, cu, 4, 4, 0.125)),
        ("moe_gate", lambda: torch.ops.kport.moe_gate(logits, None, 2)),
    ]
