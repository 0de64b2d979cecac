/*
 * backends/gpu/ops/gpu_kernel_gen.c — which generation of kernels an op runs.
 *
 * Generation 1: the first kernels (static 48 KiB tiles, synchronous scalar loads).
 * Generation 2: dynamic local memory sized from the device, 16-byte copies in an
 * S-stage pipeline, register-resident fragments (attention_prefill, attention_decode,
 * mla_decode, grouped_gemm; 16-bit activations). Generation 1 stays selectable until
 * generation 2 has passed on a GPU, and remains the f32 path (and mla_decode's FP8-cache
 * path) and the path of the ops that have no generation-2 kernel yet (moe_gate,
 * moe_align, moe_combine).
 *
 * The choice, first that applies:
 *   1. KPORT_GPU_KERNELS: "gen1" / "gen2" / "auto" for every kernel, or a list
 *      "grouped_gemm=gen1,attention_prefill=gen2" (a bare genN in the list sets the
 *      others); kernel names are the tuning table's. Malformed text fails the op with
 *      KP_ERR_INVALID_ARGUMENT and says why: a typo must not pick kernels silently.
 *   2. the tuning table's "<kernel>;gen" (per device, e.g. a known-bad kernel on an arch);
 *   3. the default: generation 2 on devices with matrix units (profile.mma: CUDA sm_80+,
 *      OpenCL on NVIDIA), generation 1 elsewhere (PoCL, Intel, AMD until MFMA has run on
 *      hardware), where gen 2 would run the matrix fragments as slow emulation; and
 *      generation 2 everywhere for a case only it has kernels for (grouped_gemm's W8A8).
 * Generation 3 is the sm_90a tier (wgmma + TMA; grouped_gemm and attention_prefill,
 * kp_gpu_kernel_gen_tier): "grouped_gemm=sm90" / "attention_prefill=sm90" forces it (an
 * op it cannot take then fails with KP_ERR_UNSUPPORTED and the reason); "auto" picks it where it can run the case (CUDA sm_90a with its kernels built)
 * and the device's tuning table says "<kernel>;gen" 3. No table row says so until the tier
 * has passed conformance on an H200 (ci/gpu-check forces it): a kernel that has never run
 * is not a default. KPORT_DISABLE_TIER=sm90 (a comma list) turns it off everywhere.
 * KPORT_LOG=1 logs each op's choice and why, once per process.
 * kp_moe_forward's GEMMs are grouped_gemm kernels and follow its setting.
 */
#include "gpu_ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kernel_names[] = {"attention_prefill", "attention_decode", "mla_decode", "moe_gate",
                                           "moe_align", "grouped_gemm", "moe_combine"};
#define KERNEL_COUNT (int)(sizeof kernel_names / sizeof kernel_names[0])

static int kernel_index(const char *name, size_t len) {
    for (int i = 0; i < KERNEL_COUNT; i++)
        if (strlen(kernel_names[i]) == len && strncmp(kernel_names[i], name, len) == 0) return i;
    return -1;
}

/* "gen1" -> 1, "gen2" -> 2, "sm90" -> 3 (the sm_90a tier), "auto" -> 0, else -1 */
static int gen_value(const char *v, size_t len) {
    if (len == 4 && strncmp(v, "gen1", 4) == 0) return 1;
    if (len == 4 && strncmp(v, "gen2", 4) == 0) return 2;
    if (len == 4 && strncmp(v, "sm90", 4) == 0) return 3;
    if (len == 4 && strncmp(v, "auto", 4) == 0) return 0;
    return -1;
}
#define GEN_SM90 3
#define TIER_KERNELS "grouped_gemm and attention_prefill" /* the kernels the sm_90a tier has */
static int tier_kernel(const char *name) {
    return strcmp(name, "grouped_gemm") == 0 || strcmp(name, "attention_prefill") == 0;
}

kp_status kp_gpu_kernel_gen_parse(const char *text, int out[KP_GPU_GEN_KERNELS], char *why, size_t why_len) {
    for (int i = 0; i < KERNEL_COUNT; i++) out[i] = 0;
    if (!text || !*text) return KP_OK;
    int all = 0;
    int set[KP_GPU_GEN_KERNELS] = {0};
    const char *p = text;
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *eq = memchr(p, '=', n);
        if (!eq) {
            int g = gen_value(p, n);
            if (g < 0 || g == GEN_SM90) {
                snprintf(why, why_len, "'%.*s' is not gen1, gen2 or auto%s", (int)n, p,
                         g == GEN_SM90 ? " (sm90 is for " TIER_KERNELS " alone: grouped_gemm=sm90, attention_prefill=sm90)"
                                         : "");
                return KP_ERR_INVALID_ARGUMENT;
            }
            all = g;
        } else {
            int k = kernel_index(p, (size_t)(eq - p));
            int g = gen_value(eq + 1, n - (size_t)(eq - p) - 1);
            if (k < 0) {
                snprintf(why, why_len, "'%.*s' is not a kernel name (attention_prefill, attention_decode, "
                         "mla_decode, moe_gate, moe_align, grouped_gemm, moe_combine)", (int)(eq - p), p);
                return KP_ERR_INVALID_ARGUMENT;
            }
            if (g < 0 || (g == GEN_SM90 && !tier_kernel(kernel_names[k]))) {
                snprintf(why, why_len, "'%.*s' is not gen1, gen2 or auto%s", (int)(n - (size_t)(eq - p) - 1), eq + 1,
                         g == GEN_SM90 ? " (the sm_90a tier has " TIER_KERNELS " alone)" : "");
                return KP_ERR_INVALID_ARGUMENT;
            }
            out[k] = g, set[k] = 1;
        }
        p += n;
        if (*p == ',') p++;
    }
    for (int i = 0; i < KERNEL_COUNT; i++)
        if (!set[i]) out[i] = all;
    return KP_OK;
}

const char *kp_gpu_tier_name(int gen) {
    switch (gen) {
    case 1: return "gen1";
    case 2: return "gen2";
    case 3: return "sm90";
    default: return "gen?";
    }
}

void kp_gpu_kernel_note(kp_gpu_ctx *c, int rank, int gen, const char *kernel) {
    if (!c->kernel || c->kernel_cap == 0 || rank < c->kernel_rank) return;
    if (strncmp(kernel, "kp_", 3) == 0) kernel += 3;
    char part[96];
    int n = snprintf(part, sizeof part, "%s:%s", kp_gpu_tier_name(gen), kernel);
    if (n < 0 || (size_t)n >= sizeof part) return;
    if (rank > c->kernel_rank || !c->kernel[0]) {
        if ((size_t)n < c->kernel_cap) memcpy(c->kernel, part, (size_t)n + 1), c->kernel_rank = rank;
        return;
    }
    size_t have = strlen(c->kernel), len = (size_t)n; /* the same rank: append once, when it fits */
    for (const char *at = c->kernel; (at = strstr(at, part)) != NULL; at += len)
        if ((at == c->kernel || at[-1] == '+') && (at[len] == '\0' || at[len] == '+')) return;
    if (have + 1 + len < c->kernel_cap) {
        c->kernel[have] = '+';
        memcpy(c->kernel + have + 1, part, len + 1);
    }
}

/* One log line per (kernel, generation, reason) and process: benign races at worst repeat it. */
static volatile unsigned char logged[KP_GPU_GEN_KERNELS][4][6];

kp_status kp_gpu_kernel_gen(kp_gpu_ctx *c, const char *kernel, const char *gen2_missing, int *gen) {
    return kp_gpu_kernel_gen_pick(c, kernel, gen2_missing, 0, gen);
}

kp_status kp_gpu_kernel_gen_pick(kp_gpu_ctx *c, const char *kernel, const char *gen2_missing, int default_gen,
                                 int *gen) {
    int k = kernel_index(kernel, strlen(kernel));
    *gen = 1;
    if (k < 0) return c->host->set_error(KP_ERR_INTERNAL, "%s: no kernel generation switch for '%s' (a bug)",
                                         c->t->name, kernel);
    const char *env = getenv("KPORT_GPU_KERNELS");
    int want[KP_GPU_GEN_KERNELS];
    char why[256];
    if (kp_gpu_kernel_gen_parse(env, want, why, sizeof why) != KP_OK)
        return c->host->set_error(KP_ERR_INVALID_ARGUMENT, "KPORT_GPU_KERNELS='%s': %s", env, why);
    int g = want[k], reason = 0;
    if (g != 0) {
        reason = 1;
    } else {
        int64_t t = c->host->tuning_get(c->prof.info, kernel, "gen", 0);
        if (t == 1 || t == 2) g = (int)t, reason = 2;
        else g = default_gen == 1 || default_gen == 2 ? default_gen : c->prof.mma ? 2 : 1;
    }
    if (g == 2 && gen2_missing) g = 1, reason = 3;
    *gen = g;
    kp_gpu_kernel_note(c, KP_GPU_NOTE_OP, g, kernel_names[k]);
    if (logged[k][g][reason]) return KP_OK; /* the reason is spelt out only for the log, once */
    logged[k][g][reason] = 1;
    if (reason == 1) snprintf(why, sizeof why, "KPORT_GPU_KERNELS=%s", env);
    else if (reason == 2) snprintf(why, sizeof why, "the tuning table's %s;gen", kernel);
    else if (reason == 3) snprintf(why, sizeof why, "%s", gen2_missing);
    else if (default_gen == 2) snprintf(why, sizeof why, "default: generation 1 has no kernel for this case");
    else snprintf(why, sizeof why, "default: %s", c->prof.mma ? "the device has matrix units" : "no matrix units");
    c->host->log("%s: %s on %s runs generation-%d kernels (%s)", c->t->name, kernel_names[k],
                 c->prof.info ? c->prof.info->name : "?", g, why);
    return KP_OK;
}

int kp_gpu_tier_disabled(const char *tier) {
    const char *p = getenv("KPORT_DISABLE_TIER");
    size_t len = strlen(tier);
    while (p && *p) {
        size_t n = strcspn(p, ",");
        if (n == len && strncmp(p, tier, n) == 0) return 1;
        p += n;
        if (*p == ',') p++;
    }
    return 0;
}

kp_status kp_gpu_kernel_gen_tier(kp_gpu_ctx *c, const char *kernel, const char *gen2_missing, const char *sm90_missing,
                                 int *gen) {
    int k = kernel_index(kernel, strlen(kernel));
    if (k < 0) return kp_gpu_kernel_gen_pick(c, kernel, gen2_missing, 0, gen); /* reports the bug */
    const char *env = getenv("KPORT_GPU_KERNELS");
    int want[KP_GPU_GEN_KERNELS];
    char why[256];
    if (kp_gpu_kernel_gen_parse(env, want, why, sizeof why) != KP_OK)
        return c->host->set_error(KP_ERR_INVALID_ARGUMENT, "KPORT_GPU_KERNELS='%s': %s", env, why);
    const int off = kp_gpu_tier_disabled("sm90");
    int reason = 0;
    if (want[k] == GEN_SM90) {
        *gen = 1;
        if (off)
            return c->host->set_error(KP_ERR_UNSUPPORTED, "%s: KPORT_GPU_KERNELS=%s forces %s onto the sm_90a tier, "
                                      "and KPORT_DISABLE_TIER turns that tier off", c->t->name, env, kernel);
        if (sm90_missing)
            return c->host->set_error(KP_ERR_UNSUPPORTED, "%s: KPORT_GPU_KERNELS=%s forces %s onto the sm_90a tier, "
                                      "which cannot take this case: %s", c->t->name, env, kernel, sm90_missing);
        reason = 1;
    } else if (want[k] == 0 && !off && !sm90_missing &&
               c->host->tuning_get(c->prof.info, kernel, "gen", 0) == GEN_SM90) {
        reason = 2;
    } else {
        return kp_gpu_kernel_gen_pick(c, kernel, gen2_missing, 0, gen);
    }
    *gen = GEN_SM90;
    if (logged[k][GEN_SM90][reason]) return KP_OK;
    logged[k][GEN_SM90][reason] = 1;
    c->host->log("%s: %s on %s runs the sm_90a tier (generation 3: wgmma + TMA) (%s%s)", c->t->name,
                 kernel_names[k], c->prof.info ? c->prof.info->name : "?",
                 reason == 1 ? "KPORT_GPU_KERNELS=" : "the tuning table's ", reason == 1 ? env : "gen");
    return KP_OK;
}
