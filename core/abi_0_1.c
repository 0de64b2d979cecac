/*
 * core/abi_0_1.c — the sizes of kport 0.1's params structs, for callers built against
 * that header (issue 17's growable ABI: see kport.h, "a growable ABI"). This file sees
 * only the frozen 0.1 header, never today's kport.h, so the sizes cannot drift.
 */
#include "../tests/abi/kport_0_1.h"

#include <stddef.h>

/* Indexed by kp_op (0.1's order, which later versions keep). */
const size_t kp_abi_0_1_params_size[8] = {
    sizeof(kp_attention_prefill_params), sizeof(kp_attention_decode_params), sizeof(kp_mla_decode_params),
    sizeof(kp_moe_gate_params),          sizeof(kp_moe_align_params),        sizeof(kp_grouped_gemm_params),
    sizeof(kp_moe_combine_params),       sizeof(kp_moe_forward_params),
};
_Static_assert(KP_OP_COUNT == 8, "0.1 had eight ops");
const size_t kp_abi_0_1_init_options_size = sizeof(kp_init_options);
