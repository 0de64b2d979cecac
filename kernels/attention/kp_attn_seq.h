/*
 * kernels/attention/kp_attn_seq.h - which rows of the packed varlen tensors belong to
 * sequence b of a prefill, shared by the three prefill kernels (attention_prefill.cl,
 * _gen2.cl, _sm90.cl). cu_seqlens come from the caller's device memory, so every bound
 * is clamped: bad contents give an empty or shortened range, never an address outside
 * q, k or v. Work-groups past the last sequence (b >= nb) own the query rows after it
 * (no keys: they write 0 and lse +inf). Paged K/V (generation 1 only) take key j of
 * sequence b from its block table, so its keys are [0, seq_lens_k[b]) clamped to the
 * table's capacity; seq_lens_k is never read when p.paged is 0 (it may be null).
 */
#ifndef KP_ATTN_SEQ_H
#define KP_ATTN_SEQ_H

#include "kp_dialect.h"
#include "attention_kargs.h"

typedef struct kp_attn_seq {
    int qs0, qe; /* query rows [qs0, qe) */
    int ks0, ke; /* key rows [ks0, ke) */
} kp_attn_seq;

KP_FN kp_attn_seq kp_attn_seq_of(KP_GLOBAL const int *cu_q, KP_GLOBAL const int *cu_k,
                                 KP_GLOBAL const int *seq_lens_k, kp_attn_prefill_kargs p, int b) {
    kp_attn_seq r;
    if (b < p.nb) {
        r.qs0 = min(max(cu_q[p.cu_q_off + b], 0), p.total_q);
        r.qe = min(max(cu_q[p.cu_q_off + b + 1], r.qs0), p.total_q);
        if (p.paged) {
            r.ks0 = 0;
            r.ke = min(max(seq_lens_k[p.sl_off + b], 0), p.max_blocks * p.block_size);
        } else {
            r.ks0 = min(max(cu_k[p.cu_k_off + b], 0), p.total_k);
            r.ke = min(max(cu_k[p.cu_k_off + b + 1], r.ks0), p.total_k);
        }
    } else { /* rows past the last sequence */
        r.qs0 = min(max(cu_q[p.cu_q_off + p.nb], 0), p.total_q);
        r.qe = p.total_q;
        r.ks0 = r.ke = 0;
    }
    return r;
}

#endif /* KP_ATTN_SEQ_H */
