"""One DeepSeek-V3 decoder layer (a MoE layer) run end to end with kport, checked against PyTorch.

    python examples/deepseek_v3_layer.py [--backend cpu|opencl|cuda] [--weights bf16|fp8]
                                         [--save FILE.safetensors | --load FILE.safetensors]

The architecture is DeepSeek-V3's, scaled down so that it runs on a CPU in seconds:
 - RMSNorm before attention and before the MoE;
 - MLA: queries through the q LoRA (q_a_proj, q_a_layernorm, q_b_proj), keys and values through
   the 512-wide latent (kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj) plus a 64-wide RoPE key;
   prefill runs the non-absorbed form (per-head K and V, kport.attention_prefill with d 192,
   dv 128), decode the absorbed form (queries moved into the latent space with kv_b_proj's key
   half, kport.mla_decode over the paged latent cache [blocks, 64, 1, 576], values moved back
   with its value half; both per-head products are kport.grouped_gemm with one "expert" per head);
 - the MoE: DeepSeek-V3's group-limited sigmoid gate with its correction bias, routed experts
   and one shared expert, in one kport.moe_forward call; bf16 or FP8 (e4m3 with 128x128 block
   scales, weight_scale_inv) expert weights.
Dense projections are torch matmuls (FP8 ones dequantized on load). Weights are random with a
fixed seed, or loaded from a safetensors file with DeepSeek-V3's tensor names and layout
(model.layers.3.mlp.experts.7.up_proj.weight, ...weight_scale_inv), so a real checkpoint's
layer loads the same way (at its own sizes: Config below). --save writes the random weights so.

It prefills a few sequences of different lengths, then runs decode steps for all of them; after
every step it compares the attention output, the MoE output and the layer output with a
pure-PyTorch float32 implementation of the same layer (non-absorbed attention, its own cache),
and exits 1 if any differs by more than bf16's tolerance (the MoE is compared on kport's own
input, where both chains must pick the same experts; the whole layer on the tokens whose routing
the attention's bf16 rounding did not flip). It prints tokens/s of kport's path.
"""

import argparse
import math
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import kport
import kport.torch  # noqa: F401  (torch tensors take the fast DLPack path)


@dataclass
class Config:  # DeepSeek-V3's values in comments
    hidden: int = 1024  # 7168
    heads: int = 16  # 128 (16 per GPU at tensor parallelism 8)
    q_lora_rank: int = 384  # 1536
    kv_lora_rank: int = 512  # 512
    qk_nope_dim: int = 128  # 128
    qk_rope_dim: int = 64  # 64
    v_head_dim: int = 128  # 128
    experts: int = 16  # 256
    n_group: int = 4  # 8
    topk_group: int = 2  # 4
    topk: int = 4  # 8
    moe_inter: int = 256  # 2048
    route_scale: float = 2.5  # 2.5
    rope_theta: float = 10000.0  # 10000
    rope_factor: float = 40.0  # YaRN factor 40: the attention scale's mscale
    eps: float = 1e-6
    layer: int = 3  # V3's first MoE layer

    @property
    def softmax_scale(self):
        mscale = 0.1 * math.log(self.rope_factor) + 1.0
        return (self.qk_nope_dim + self.qk_rope_dim) ** -0.5 * mscale * mscale  # 0.1352 at V3's sizes


BLOCK = 64  # the latent cache's block size (FlashMLA's)
TOLERANCE = 3e-2  # relative L2, kport's bf16 path against float32 PyTorch


# ---- weights: DeepSeek-V3's names and layout ----

def names(cfg):
    """Linear weights (name -> (out, in)) of one MoE layer, as in DeepSeek-V3's checkpoint."""
    p, h = f"model.layers.{cfg.layer}.", cfg.heads
    lin = {
        "self_attn.q_a_proj": (cfg.q_lora_rank, cfg.hidden),
        "self_attn.q_b_proj": (h * (cfg.qk_nope_dim + cfg.qk_rope_dim), cfg.q_lora_rank),
        "self_attn.kv_a_proj_with_mqa": (cfg.kv_lora_rank + cfg.qk_rope_dim, cfg.hidden),
        "self_attn.kv_b_proj": (h * (cfg.qk_nope_dim + cfg.v_head_dim), cfg.kv_lora_rank),
        "self_attn.o_proj": (cfg.hidden, h * cfg.v_head_dim),
    }
    for e in [f"experts.{j}" for j in range(cfg.experts)] + ["shared_experts"]:
        lin[f"mlp.{e}.gate_proj"] = (cfg.moe_inter, cfg.hidden)
        lin[f"mlp.{e}.up_proj"] = (cfg.moe_inter, cfg.hidden)
        lin[f"mlp.{e}.down_proj"] = (cfg.hidden, cfg.moe_inter)
    return p, lin


def quantize_fp8(w):
    """[out, in] f32 -> (e4m3, weight_scale_inv [ceil(out/128), ceil(in/128)]): value = fp8 * scale."""
    o, i = w.shape
    ob, ib = -(-o // 128), -(-i // 128)
    blocks = F.pad(w, (0, ib * 128 - i, 0, ob * 128 - o)).view(ob, 128, ib, 128)
    scale = blocks.abs().amax((1, 3)).clamp_min(1e-12) / 448.0
    q = (blocks / scale[:, None, :, None]).view(ob * 128, ib * 128)[:o, :i]
    return q.to(torch.float8_e4m3fn), scale.float()


def dequantize(q, scale):
    o, i = q.shape
    return q.float() * scale.repeat_interleave(128, 0)[:o].repeat_interleave(128, 1)[:, :i]


def random_checkpoint(cfg, fp8, seed=0):
    g = torch.Generator().manual_seed(seed)
    prefix, lin = names(cfg)
    sd = {}
    for name, (o, i) in lin.items():
        w = torch.randn((o, i), generator=g) * i ** -0.5
        if fp8:
            sd[prefix + name + ".weight"], sd[prefix + name + ".weight_scale_inv"] = quantize_fp8(w)
        else:
            sd[prefix + name + ".weight"] = w.to(torch.bfloat16)
    for name, n in [("input_layernorm", cfg.hidden), ("post_attention_layernorm", cfg.hidden),
                    ("self_attn.q_a_layernorm", cfg.q_lora_rank), ("self_attn.kv_a_layernorm", cfg.kv_lora_rank)]:
        sd[prefix + name + ".weight"] = (1 + 0.1 * torch.randn(n, generator=g)).to(torch.bfloat16)
    sd[prefix + "mlp.gate.weight"] = (torch.randn((cfg.experts, cfg.hidden), generator=g) * cfg.hidden ** -0.5).to(
        torch.bfloat16)
    sd[prefix + "mlp.gate.e_score_correction_bias"] = 0.05 * torch.randn(cfg.experts, generator=g)
    return sd


def load_layer(sd, cfg):
    """The checkpoint's tensors as both implementations use them: f32 (dequantized) for PyTorch;
    bf16, and FP8 experts stacked [E, ...] as kport.moe_forward takes them, for kport."""
    prefix, lin = names(cfg)
    f32 = {}
    for name in lin:
        w = sd[prefix + name + ".weight"]
        scale = sd.get(prefix + name + ".weight_scale_inv")
        f32[name] = dequantize(w, scale) if scale is not None else w.float()
    for name in ["input_layernorm", "post_attention_layernorm", "self_attn.q_a_layernorm",
                 "self_attn.kv_a_layernorm", "mlp.gate"]:
        f32[name] = sd[prefix + name + ".weight"].float()
    f32["gate_bias"] = sd[prefix + "mlp.gate.e_score_correction_bias"].float()
    fp8 = sd[prefix + "mlp.experts.0.up_proj.weight"].dtype == torch.float8_e4m3fn
    experts = range(cfg.experts)

    def stacked(part):  # [E, out, in] weights, [E, out/128, in/128] scales
        w = torch.stack([sd[f"{prefix}mlp.experts.{j}.{part}.weight"] for j in experts])
        s = torch.stack([sd[f"{prefix}mlp.experts.{j}.{part}.weight_scale_inv"] for j in experts]) if fp8 else None
        return w, s

    (w1, s1), (w3, s3), (w2, s2) = stacked("gate_proj"), stacked("up_proj"), stacked("down_proj")
    kp = {name: w.to(torch.bfloat16) for name, w in f32.items()}
    if fp8:  # gate rows then up rows: moe_inter is a multiple of 128, so the block scales stack too
        kp["w13"], kp["w13_scale"] = torch.cat([w1, w3], 1), torch.cat([s1, s3], 1)
        kp["w2"], kp["w2_scale"] = w2, s2
    else:
        kp["w13"], kp["w2"] = torch.cat([w1, w3], 1).to(torch.bfloat16), w2.to(torch.bfloat16)
        kp["w13_scale"] = kp["w2_scale"] = None
    kp["shared_w13"] = torch.cat([kp["mlp.shared_experts.gate_proj"], kp["mlp.shared_experts.up_proj"]])
    kp["gate_bias"] = f32["gate_bias"]
    # absorbed MLA: kv_b_proj's key half [H, 128, 512] and value half [H, 128, 512], per head
    kv_b = f32["self_attn.kv_b_proj"].view(cfg.heads, cfg.qk_nope_dim + cfg.v_head_dim, cfg.kv_lora_rank)
    kp["w_uk_t"] = kv_b[:, :cfg.qk_nope_dim].transpose(1, 2).contiguous().to(torch.bfloat16)  # [H, 512, 128]
    kp["w_uv"] = kv_b[:, cfg.qk_nope_dim:].contiguous().to(torch.bfloat16)  # [H, 128, 512]
    return f32, kp


# ---- shared pieces ----

def rms_norm(x, w, eps):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(x.dtype)


def rope(x, pos, theta):
    """DeepSeek-V3's rotary embedding on consecutive pairs (view_as_complex), x [..., n, 64], pos [n]."""
    d = x.shape[-1]
    freqs = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    angles = torch.polar(torch.ones(len(pos), d // 2), pos.float()[:, None] * freqs[None, :]).to(x.device)
    shape = (len(pos),) + (1,) * (x.dim() - 2) + (d // 2,)
    z = torch.view_as_complex(x.float().reshape(*x.shape[:-1], d // 2, 2)) * angles.view(shape)
    return torch.view_as_real(z).flatten(-2).to(x.dtype)


# ---- the pure-PyTorch layer (float32, non-absorbed attention, a dense cache per sequence) ----

class ReferenceLayer:
    def __init__(self, cfg, w):
        self.cfg, self.w = cfg, w
        self.latent, self.k_pe = {}, {}  # per sequence: [n, 512], [n, 64]

    def attention(self, x, seq, pos):
        c, w = self.cfg, self.w
        h = rms_norm(x, w["input_layernorm"], c.eps)
        q = (rms_norm(h @ w["self_attn.q_a_proj"].T, w["self_attn.q_a_layernorm"], c.eps) @ w["self_attn.q_b_proj"].T)
        q = q.view(-1, c.heads, c.qk_nope_dim + c.qk_rope_dim)
        q = torch.cat([q[..., :c.qk_nope_dim], rope(q[..., c.qk_nope_dim:], pos, c.rope_theta)], -1)
        kv = h @ w["self_attn.kv_a_proj_with_mqa"].T
        latent = rms_norm(kv[:, :c.kv_lora_rank], w["self_attn.kv_a_layernorm"], c.eps)
        k_pe = rope(kv[:, c.kv_lora_rank:], pos, c.rope_theta)
        self.latent[seq] = torch.cat([self.latent.get(seq, latent[:0]), latent])
        self.k_pe[seq] = torch.cat([self.k_pe.get(seq, k_pe[:0]), k_pe])
        kvb = (self.latent[seq] @ w["self_attn.kv_b_proj"].T).view(-1, c.heads, c.qk_nope_dim + c.v_head_dim)
        n = kvb.shape[0]
        k = torch.cat([kvb[..., :c.qk_nope_dim], self.k_pe[seq][:, None].expand(n, c.heads, c.qk_rope_dim)], -1)
        v = kvb[..., c.qk_nope_dim:]
        s = torch.einsum("qhd,khd->hqk", q, k) * c.softmax_scale
        s = s.masked_fill(torch.arange(n)[None, None, :] > pos[None, :, None], -torch.inf)
        o = torch.einsum("hqk,khd->qhd", s.softmax(-1), v).flatten(1)
        return o @ w["self_attn.o_proj"].T

    def moe(self, x):
        c, w = self.cfg, self.w
        # rounded to bf16, the layer's activation dtype, as kport's input is: a token whose routing is
        # a near-tie then picks the same experts in both, and the comparison measures the experts
        h = rms_norm(x, w["post_attention_layernorm"], c.eps).to(torch.bfloat16).float()
        scores = (h @ w["mlp.gate"].T).sigmoid()
        biased = (scores + w["gate_bias"]).view(-1, c.n_group, c.experts // c.n_group)
        groups = biased.topk(2, -1).values.sum(-1).topk(c.topk_group, -1).indices
        keep = torch.zeros(biased.shape[:2], dtype=torch.bool).scatter_(1, groups, True)
        ids = biased.masked_fill(~keep[..., None], -torch.inf).flatten(1).topk(c.topk, -1).indices
        weights = scores.gather(1, ids)
        weights = weights / weights.sum(-1, keepdim=True) * c.route_scale

        def mlp(e, t):
            g, u = t @ w[f"mlp.{e}.gate_proj"].T, t @ w[f"mlp.{e}.up_proj"].T
            return (F.silu(g) * u) @ w[f"mlp.{e}.down_proj"].T

        out = mlp("shared_experts", h)
        for t in range(h.shape[0]):
            for k in range(c.topk):
                out[t] += weights[t, k] * mlp(f"experts.{ids[t, k]}", h[t])
        return out, ids


# ---- the same layer on kport ----

class KportLayer:
    def __init__(self, cfg, w, batch, max_len, device):
        self.cfg, self.w, self.dev = cfg, w, device
        blocks_per_seq = -(-max_len // BLOCK)
        # the paged latent cache: [normalised latent (512) | roped k_pe (64)] per token, blocks shuffled
        self.cache = torch.zeros((batch * blocks_per_seq + 1, BLOCK, 1, cfg.kv_lora_rank + cfg.qk_rope_dim),
                                 dtype=torch.bfloat16, device=device)
        order = torch.randperm(batch * blocks_per_seq, generator=torch.Generator().manual_seed(1)) + 1
        self.block_table = order.view(batch, blocks_per_seq).int().to(device)
        self.seq_lens = torch.zeros(batch, dtype=torch.int32)
        self.heads_offsets = None
        self.routing = dict(topk=cfg.topk, n_group=cfg.n_group, topk_group=cfg.topk_group, scoring="sigmoid",
                            renormalize=True, route_scale=cfg.route_scale)

    def _project(self, x, pos):
        c, w = self.cfg, self.w
        h = rms_norm(x, w["input_layernorm"], c.eps)
        q = rms_norm(h @ w["self_attn.q_a_proj"].T, w["self_attn.q_a_layernorm"], c.eps) @ w["self_attn.q_b_proj"].T
        q = q.view(-1, c.heads, c.qk_nope_dim + c.qk_rope_dim)
        kv = h @ w["self_attn.kv_a_proj_with_mqa"].T
        latent = rms_norm(kv[:, :c.kv_lora_rank], w["self_attn.kv_a_layernorm"], c.eps)
        entry = torch.cat([latent, rope(kv[:, c.kv_lora_rank:], pos, c.rope_theta)], -1)
        return q[..., :c.qk_nope_dim], rope(q[..., c.qk_nope_dim:], pos, c.rope_theta), entry

    def _write_cache(self, seq, pos, entry):
        slots = self.block_table[seq, pos // BLOCK].long() * BLOCK + (pos % BLOCK).to(self.dev)
        self.cache.view(-1, self.cache.shape[-1])[slots] = entry

    def prefill(self, xs):
        """Non-absorbed MLA over packed sequences (kport.attention_prefill, d 192, dv 128)."""
        c, w = self.cfg, self.w
        lens = [x.shape[0] for x in xs]
        pos = torch.cat([torch.arange(n) for n in lens])
        q_nope, q_pe, entry = self._project(torch.cat(xs), pos)
        start = 0
        for seq, n in enumerate(lens):
            self._write_cache(torch.full((n,), seq), torch.arange(n), entry[start:start + n])
            start += n
        self.seq_lens[:len(lens)] = torch.tensor(lens, dtype=torch.int32)
        kvb = (entry[:, :c.kv_lora_rank] @ w["self_attn.kv_b_proj"].T).view(-1, c.heads, c.qk_nope_dim + c.v_head_dim)
        k_pe = entry[:, None, c.kv_lora_rank:].expand(-1, c.heads, c.qk_rope_dim)
        q = torch.cat([q_nope, q_pe], -1)
        k = torch.cat([kvb[..., :c.qk_nope_dim], k_pe], -1)
        v = kvb[..., c.qk_nope_dim:]
        cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32, device=self.dev)
        o = kport.attention_prefill(q, k, v.contiguous(), cu, cu, max(lens), max(lens), softmax_scale=c.softmax_scale,
                                    causal=True)
        return o.flatten(1) @ w["self_attn.o_proj"].T

    def decode(self, x):
        """Absorbed MLA for one new token per sequence (kport.mla_decode over the paged cache)."""
        c, w, b = self.cfg, self.w, x.shape[0]
        pos = self.seq_lens[:b].long()
        q_nope, q_pe, entry = self._project(x, pos)
        self._write_cache(torch.arange(b), pos, entry)
        self.seq_lens[:b] += 1
        # per-head products as grouped GEMMs, one "expert" per head, b rows each
        offsets = torch.arange(0, (c.heads + 1) * b, b, dtype=torch.int32, device=self.dev)
        q_latent = kport.grouped_gemm(q_nope.transpose(0, 1).reshape(c.heads * b, -1), w["w_uk_t"], offsets)
        q = torch.cat([q_latent.view(c.heads, b, -1).transpose(0, 1), q_pe], -1)[:, None]  # [b, 1, H, 576]
        o_latent = kport.mla_decode(q.contiguous(), self.cache, self.block_table[:b], self.seq_lens[:b].to(self.dev),
                                    c.softmax_scale, head_dim_v=c.kv_lora_rank)
        o = kport.grouped_gemm(o_latent[:, 0].transpose(0, 1).reshape(c.heads * b, -1), w["w_uv"], offsets)
        return o.view(c.heads, b, -1).transpose(0, 1).reshape(b, -1) @ w["self_attn.o_proj"].T

    def router_logits(self, x):
        h = rms_norm(x, self.w["post_attention_layernorm"], self.cfg.eps)
        return h, h.float() @ self.w["mlp.gate"].float().T

    def experts_chosen(self, x):
        """The experts kport's gate picks for each token (for the check: moe_forward routes itself)."""
        return kport.moe_gate(self.router_logits(x)[1], self.w["gate_bias"], **self.routing)[0]

    def moe(self, x):
        w = self.w
        h, logits = self.router_logits(x)
        return kport.moe_forward(h, logits, w["w13"], w["w2"], w["gate_bias"], w13_scale=w["w13_scale"],
                                 w2_scale=w["w2_scale"], shared_w13=w["shared_w13"],
                                 shared_w2=w["mlp.shared_experts.down_proj"], **self.routing)


def rel_l2(a, b):
    return ((a.double().cpu() - b.double().cpu()).norm() / b.double().cpu().norm()).item()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", help="kport backend (default: kport's best device)")
    ap.add_argument("--weights", choices=["bf16", "fp8"], default="fp8", help="expert weights (random weights only)")
    ap.add_argument("--load", help="a safetensors file with DeepSeek-V3's names for this layer")
    ap.add_argument("--save", help="write the random weights to this safetensors file first")
    ap.add_argument("--lens", default="5,17,33", help="prompt lengths of the sequences")
    ap.add_argument("--steps", type=int, default=6, help="decode steps")
    args = ap.parse_args(argv)
    cfg = Config()
    dev = kport.set_default_device(args.backend) if args.backend else kport.default_device()
    info = dev.info()
    tdev = torch.device("cuda", info["backend_device"]) if info["backend"] == "cuda" else torch.device("cpu")
    if args.load:
        from safetensors.torch import load_file
        sd = load_file(args.load)
    else:
        sd = random_checkpoint(cfg, args.weights == "fp8")
        if args.save:
            from safetensors.torch import save_file
            save_file(sd, args.save)
    ref_w, kp_w = load_layer(sd, cfg)
    kp_w = {k: (v.to(tdev) if v is not None else None) for k, v in kp_w.items()}
    fp8 = kp_w["w13"].dtype == torch.float8_e4m3fn
    lens = [int(n) for n in args.lens.split(",")]
    print(f"DeepSeek-V3 layer {cfg.layer} (scaled: hidden {cfg.hidden}, {cfg.heads} heads, {cfg.experts} experts, "
          f"top-{cfg.topk} of {cfg.n_group} groups) on {info['name']} ({info['backend']}), "
          f"{'FP8' if fp8 else 'bf16'} experts, {'weights from ' + args.load if args.load else 'random weights'}")

    g = torch.Generator().manual_seed(2)
    ref, layer = ReferenceLayer(cfg, ref_w), KportLayer(cfg, kp_w, len(lens), max(lens) + args.steps, tdev)
    xs = [torch.randn((n, cfg.hidden), generator=g) for n in lens]
    worst, timed = 0.0, {"prefill": [0.0, 0], "decode": [0.0, 0]}
    flips = 0
    print("| step | tokens | attention rel. L2 | MoE rel. L2 | layer rel. L2 | near-tie routing |\n"
          "|---|---|---|---|---|---|")
    for step in range(args.steps + 1):
        kind = "prefill" if step == 0 else "decode"
        x_bf = [x.to(torch.bfloat16).to(tdev) for x in xs]
        t0 = time.perf_counter()
        attn = layer.prefill(x_bf) if step == 0 else layer.decode(torch.cat(x_bf))
        hidden = torch.cat(x_bf) + attn
        moe = layer.moe(hidden)
        out = hidden + moe
        if tdev.type == "cuda":
            torch.cuda.synchronize()
        timed[kind][0] += time.perf_counter() - t0
        timed[kind][1] += out.shape[0]
        # the same step in float32 PyTorch, from the same bf16 inputs
        ref_attn = torch.cat([ref.attention(x.float().cpu(), s, torch.arange(ref.latent.get(s, x[:0]).shape[0],
                                                                           ref.latent.get(s, x[:0]).shape[0] + len(x)))
                              for s, x in enumerate(x_bf)])
        ref_hidden = torch.cat(x_bf).float().cpu() + ref_attn
        # the MoE on kport's own input, so that one difference does not hide the other
        ref_moe, ref_ids = ref.moe(hidden.float().cpu())
        assert torch.equal(layer.experts_chosen(hidden).cpu().long().sort(1).values, ref_ids.sort(1).values)
        # the whole layer from the same inputs; a token whose routing is a near-tie may pick another
        # expert in the two chains (bf16 attention output): those are counted and left out
        ref_out, ref_ids = ref.moe(ref_hidden)
        same = (layer.experts_chosen(hidden).cpu().long().sort(1).values == ref_ids.sort(1).values).all(1)
        flips += int((~same).sum())
        errs = rel_l2(attn, ref_attn), rel_l2(moe, ref_moe), rel_l2(out.cpu()[same], (ref_hidden + ref_out)[same])
        worst = max(worst, *errs)
        print(f"| {kind}{'' if step == 0 else ' ' + str(step)} | {out.shape[0]} | {errs[0]:.2e} | {errs[1]:.2e} | "
              f"{errs[2]:.2e} | {int((~same).sum())} |")
        xs = [torch.randn((1, cfg.hidden), generator=g) for _ in lens]  # the next token of each sequence
    for kind, (secs, tokens) in timed.items():
        print(f"{kind}: {tokens} tokens in {secs * 1e3:.1f} ms = {tokens / secs:.0f} tokens/s (kport path)")
    total = sum(tokens for _, tokens in timed.values())
    ok = worst <= TOLERANCE and flips <= total // 10
    print(f"{'agrees' if ok else 'DIFFERS'}: worst relative L2 {worst:.2e} (tolerance {TOLERANCE:g}); "
          f"{flips} of {total} tokens routed differently by the two chains (at most 10% allowed)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
