/*
 * tools/kbench/kbench_suites.c — the cases: the named suites (quick, deepseek-v3, llama,
 * the model presets), size estimates, scaling a case down to a device's budget, and how
 * a case's shape is written and read: the shape column of every row (kb_case_shape),
 * `--op OP --shape k=v,...` (one case of any shape, from the op's keys and their
 * defaults: DeepSeek-V3's and the DESIGN §7 anchors'), and `--list-shapes OP`.
 *
 * Scaling keeps what makes a shape interesting: attention keeps its head dims, GQA
 * ratio and context length as long as it can (batch first, then heads, then length);
 * MoE keeps hidden/inter and rows per expert (experts and tokens shrink together,
 * down to the fewest experts the routing allows, then tokens). A scaled row says so
 * in its note ("scaled for cpu from b=128").
 *
 * One layout per op says how its shape prints, and the parser reads the same tokens, so
 * a row can be rerun by pasting its shape column ("h=32/8 d=192/128 groups=4/8 varlen",
 * "w13 T=128 ... M=1024"); plain key=value items, ',' or space separated, work too.
 * Every value is checked before anything is allocated: integer syntax and range, the
 * op's rules (GQA divides, k of E, groups), the int32 index limits of the API, and the
 * total size, which also keeps every later int64 product from overflowing.
 */
#include "kbench.h"

#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define MLA_D 576

bool kb_op_from_name(const char *name, kp_op *op) {
    for (int i = 0; i < KP_OP_COUNT; i++)
        if (strcmp(name, kp_op_name((kp_op)i)) == 0) return *op = (kp_op)i, true;
    return false;
}

const char *kb_row_dtype_name(const kb_case *c) {
    return c->dtype == KP_FP8_E4M3 ? "w8a8" : c->wdtype == KP_FP8_E4M3 ? "fp8" : kp_dtype_name(c->dtype);
}

/* ---- sequence lengths, shared with kbench_ops.c ---- */

void kb_prefill_len(const kb_case *c, int64_t i, int64_t *lq, int64_t *lk) {
    int64_t cut = c->varlen ? i * c->s_q / (2 * c->b) : 0; /* varlen: from s_q down to s_q/2 */
    *lq = c->s_q - cut;
    *lk = c->s_k - cut;
}

int64_t kb_decode_len(const kb_case *c, int64_t i) {
    int64_t len = c->varlen ? c->s_k - i * c->s_k / (2 * c->b) : c->s_k;
    return len < c->s_q ? c->s_q : len;
}

int64_t kb_visible(int64_t i, int64_t lq, int64_t lk, int causal) {
    if (!causal) return lk;
    int64_t v = i + lk - lq + 1;
    return v < 0 ? 0 : v > lk ? lk : v;
}

/* Sum over queries i < lq of kb_visible(i, lq, lk, causal), in closed form: huge
 * --shape values must not cost a loop per token. */
static double kb_visible_pairs(int64_t lq, int64_t lk, int causal) {
    if (!causal) return (double)lq * (double)lk;
    /* visible(i) = clamp(i + off + 1, 0, lk), off = lk - lq: the sum of clamp(j, 0, lk)
     * for j in (off, off + lq] is F(off + lq) - F(off), F(n) = sum over j <= n */
    double L = (double)lk;
    double F[2], n[2] = {(double)lk - (double)lq, (double)lk};
    for (int t = 0; t < 2; t++)
        F[t] = n[t] <= 0 ? 0 : n[t] <= L ? n[t] * (n[t] + 1) / 2 : L * (L + 1) / 2 + (n[t] - L) * L;
    return F[1] - F[0];
}

/* ---- estimates: the same formulas the ops use, before any allocation ---- */

void kb_case_estimate(const kb_case *c, double *flops, double *bytes, double *alloc) {
    double el = (double)kp_dtype_size(c->dtype), wel = (double)kp_dtype_size(c->wdtype);
    double f = 0, by = 0, al = 0; /* al 0: the op allocates what it moves */
    switch (c->op) {
    case KP_OP_ATTENTION_PREFILL: {
        double tq = 0, tk = 0, pairs = 0, same = c->varlen ? 1.0 : (double)c->b; /* equal lengths: one */
        for (int64_t i = 0; i < (c->varlen ? c->b : 1); i++) {
            int64_t lq, lk;
            kb_prefill_len(c, i, &lq, &lk);
            tq += same * lq, tk += same * lk, pairs += same * kb_visible_pairs(lq, lk, c->causal);
        }
        f = 2.0 * pairs * c->h_q * (c->d + c->dv);
        by = el * (tq * c->h_q * (c->d + c->dv) + tk * c->h_kv * (c->d + c->dv));
        break;
    }
    case KP_OP_ATTENTION_DECODE:
    case KP_OP_MLA_DECODE: {
        bool mla = c->op == KP_OP_MLA_DECODE;
        double keys = 0, pairs = 0, h_kv = mla ? 1 : (double)c->h_kv, kvd = mla ? MLA_D : (double)(c->d + c->dv);
        double same = c->varlen ? 1.0 : (double)c->b;
        for (int64_t i = 0; i < (c->varlen ? c->b : 1); i++) {
            int64_t len = kb_decode_len(c, i);
            keys += same * len, pairs += same * kb_visible_pairs(c->s_q, len, c->causal);
        }
        f = 2.0 * pairs * c->h_q * (c->d + c->dv);
        by = wel * keys * h_kv * kvd + el * (double)c->b * c->s_q * c->h_q * (c->d + c->dv); /* cache: wdtype */
        al = by + wel * (double)c->b * c->block_size * h_kv * kvd; /* + partly filled blocks */
        break;
    }
    case KP_OP_MOE_GATE:
        by = el * c->T * c->E + (c->scoring == KP_MOE_SCORING_SIGMOID ? 4.0 * c->E : 0) + 8.0 * c->T * c->k;
        break;
    case KP_OP_MOE_ALIGN:
        by = 4.0 * (3.0 * c->T * c->k + c->E * (c->block_size - 1) + c->E + 1);
        break;
    case KP_OP_GROUPED_GEMM: {
        double m = (double)c->T * c->k, used = m < c->E ? m : (double)c->E;
        double rows = c->max_m > 0 ? (double)c->E * c->max_m : m; /* the masked layout: [E, max_m, .] */
        if (c->max_m > 0 && m > rows) m = rows; /* an upper bound; setup counts the clamped rows */
        f = 2.0 * m * c->N * c->K;
        by = el * m * (c->K + c->N) + wel * used * c->N * c->K;
        al = el * rows * (c->K + c->N) + wel * (double)c->E * c->N * c->K;
        break;
    }
    case KP_OP_QUANTIZE_FP8: /* x in, e4m3 out, one f32 scale per 128 */
        by = (el + 1.0 + 4.0 / 128) * c->T * c->K;
        break;
    case KP_OP_MOE_COMBINE:
        f = 2.0 * c->T * c->k * c->hidden;
        by = el * (double)c->T * c->hidden * (c->k + 1) + 8.0 * c->T * c->k;
        break;
    case KP_OP_MOE_FORWARD: {
        double pairs = (double)c->T * c->k, used = pairs < c->E ? pairs : (double)c->E;
        f = 6.0 * pairs * c->hidden * c->inter;
        by = el * 2.0 * c->T * c->hidden + 4.0 * c->T * c->E + wel * used * 3.0 * c->hidden * c->inter;
        al = el * 2.0 * c->T * c->hidden + 4.0 * c->T * c->E + wel * (double)c->E * 3.0 * c->hidden * c->inter +
             el * pairs * (c->inter + c->hidden); /* the workspace's h and y, in the dtype */
        break;
    }
    default: break;
    }
    *flops = f, *bytes = by, *alloc = al > 0 ? al : by;
}

/* ---- shapes: written and read (--shape, --list-shapes) ---- */

#define MAX_KEYS 10
#define MAX_ALLOC_BYTES 1125899906842624.0 /* 2^50: no device has this much; int64 products stay exact */

typedef enum { K_SIZE, K_FLAG, K_SCORING } key_kind;

/* Every field a shape names, each an int64_t of kb_case: sizes, flags, the router's scoring. */
static const struct field {
    const char *key;
    key_kind kind;
    size_t off;
} fields[] = {
#define F(name, kind) {#name, kind, offsetof(kb_case, name)}
    F(b, K_SIZE),      F(s_q, K_SIZE),     F(s_k, K_SIZE),     F(h_q, K_SIZE),        F(h_kv, K_SIZE),
    F(d, K_SIZE),      F(dv, K_SIZE),      F(block_size, K_SIZE), F(causal, K_FLAG),  F(varlen, K_FLAG),
    F(T, K_SIZE),      F(E, K_SIZE),       F(k, K_SIZE),       F(n_group, K_SIZE),    F(topk_group, K_SIZE),
    F(N, K_SIZE),      F(K, K_SIZE),       F(hidden, K_SIZE),  F(inter, K_SIZE),      F(scoring, K_SCORING),
    F(max_m, K_SIZE),
#undef F
};

typedef struct shape_key {
    const char *key;
    int64_t def;
    const char *same_as; /* default: this other key's value */
    const char *meaning;
} shape_key;

/* layout tokens: "x" prints x=<x>; "n=a/b" n=<a>/<b>, "n=a|b" the same but only <a> when
 * equal, "n=a" an alias, "M=T*k" a product (checked when read); "?varlen", "?softmax" a
 * word when set, "?variant" grouped_gemm's w13/w2. */
typedef struct op_shape {
    kp_op op;
    const char *what, *layout;
    shape_key keys[MAX_KEYS];
} op_shape;

static const op_shape shapes[] = {
    {KP_OP_ATTENTION_PREFILL, "varlen packed q [b*s_q, h_q, d], k/v [b*s_k, h_kv, d|dv]",
     "b s_q s_k h=h_q/h_kv d=d|dv causal ?varlen",
     {{"b", 1, NULL, "sequences"}, {"s_q", 4096, NULL, "query tokens per sequence"},
      {"s_k", 0, "s_q", "key tokens per sequence"}, {"h_q", 32, NULL, "query heads"},
      {"h_kv", 0, "h_q", "key/value heads (divides h_q)"}, {"d", 128, NULL, "q/k head dim"},
      {"dv", 0, "d", "v head dim"}, {"causal", 1, NULL, "0 or 1 (bottom-right aligned)"},
      {"varlen", 0, NULL, "1: lengths fall from s to s/2 over the batch"}}},
    {KP_OP_ATTENTION_DECODE, "paged KV: q [b, s_q, h_q, d], cache [blocks, block_size, h_kv, d|dv]",
     "b s_q s_k h=h_q/h_kv d=d|dv bs=block_size ?varlen",
     {{"b", 64, NULL, "sequences"}, {"s_q", 1, NULL, "new tokens per sequence"},
      {"s_k", 8192, NULL, "context length"}, {"h_q", 32, NULL, "query heads"},
      {"h_kv", 8, NULL, "key/value heads (divides h_q)"}, {"d", 128, NULL, "q/k head dim"},
      {"dv", 0, "d", "v head dim"}, {"block_size", 16, NULL, "tokens per cache block (bs)"},
      {"causal", 1, NULL, "0 or 1"}, {"varlen", 0, NULL, "1: contexts fall from s_k to s_k/2 over the batch"}}},
    {KP_OP_MLA_DECODE, "FlashMLA layout: q [b, s_q, h_q, 576], latent cache [blocks, 64, 1, 576], out 512",
     "b s_q s_k h_q d=d|dv ?varlen",
     {{"b", 128, NULL, "sequences"}, {"s_q", 1, NULL, "new tokens per sequence (MTP: 2)"},
      {"s_k", 4096, NULL, "context length"}, {"h_q", 128, NULL, "query heads"}, {"causal", 1, NULL, "0 or 1"},
      {"varlen", 0, NULL, "1: contexts fall from s_k to s_k/2 over the batch"}}},
    {KP_OP_MOE_GATE, "router logits [T, E] -> top-k expert ids and weights", "T E k groups=topk_group/n_group ?softmax",
     {{"T", 4096, NULL, "tokens"}, {"E", 256, NULL, "experts (<= 512)"}, {"k", 8, NULL, "experts per token (<= 32)"},
      {"n_group", 8, NULL, "expert groups (divides E)"}, {"topk_group", 4, NULL, "groups kept"},
      {"scoring", KP_MOE_SCORING_SIGMOID, NULL, "sigmoid (DeepSeek-V3: bias, scale 2.5) or softmax"}}},
    {KP_OP_MOE_ALIGN, "expert ids [T, k] -> rows sorted by expert, padded to block_size", "T E k bs=block_size",
     {{"T", 4096, NULL, "tokens"}, {"E", 256, NULL, "experts"}, {"k", 8, NULL, "experts per token"},
      {"block_size", 64, NULL, "row padding (bs)"}}},
    {KP_OP_GROUPED_GEMM, "a [T*k, K] x w [E, N, K]^T -> [T*k, N], rows grouped by expert", "?variant T E k M=T*k N K ?max_m",
     {{"T", 4096, NULL, "tokens"}, {"E", 256, NULL, "experts"}, {"k", 8, NULL, "experts per token (M = T*k rows)"},
      {"N", 4096, NULL, "output columns (V3 w13: 2*2048)"}, {"K", 7168, NULL, "reduction (V3 w13: hidden 7168)"},
      {"max_m", 0, NULL, "> 0: the masked layout, a [E, max_m, K], expert e's rows min(routed, max_m) (masked_m)"}}},
    {KP_OP_MOE_COMBINE, "expert rows [T*k, hidden] x weights -> [T, hidden]", "T k hidden",
     {{"T", 4096, NULL, "tokens"}, {"k", 8, NULL, "experts per token"}, {"hidden", 7168, NULL, "hidden size"}}},
    {KP_OP_MOE_FORWARD, "the routed-expert layer: gate, align, x.w13^T, SwiGLU, .w2^T, combine",
     "T E k hidden inter groups=topk_group/n_group ?softmax",
     {{"T", 4096, NULL, "tokens"}, {"E", 256, NULL, "experts (<= 512)"}, {"k", 8, NULL, "experts per token (<= 32)"},
      {"hidden", 7168, NULL, "hidden size"}, {"inter", 2048, NULL, "expert intermediate size"},
      {"n_group", 8, NULL, "expert groups (divides E)"}, {"topk_group", 4, NULL, "groups kept"},
      {"scoring", KP_MOE_SCORING_SIGMOID, NULL, "sigmoid (DeepSeek-V3: bias, scale 2.5) or softmax"}}},
    {KP_OP_QUANTIZE_FP8, "x [T, K] -> e4m3 [T, K] and f32 scales [T, K/128] (W8A8's activations)", "T K",
     {{"T", 4096, NULL, "tokens (rows)"}, {"K", 7168, NULL, "columns, a multiple of 128 (V3: hidden 7168)"}}},
};

static const op_shape *shape_of(kp_op op) {
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (shapes[i].op == op) return &shapes[i];
    return NULL;
}

static const shape_key *key_of(const op_shape *s, const char *key) {
    for (int i = 0; i < MAX_KEYS && s->keys[i].key; i++)
        if (strcmp(s->keys[i].key, key) == 0) return &s->keys[i];
    return NULL;
}

static const struct field *field_of(const char *key) {
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (strcmp(fields[i].key, key) == 0) return &fields[i];
    return NULL;
}

static int64_t get(const kb_case *c, const char *key) { return *(const int64_t *)((const char *)c + field_of(key)->off); }
static void put(kb_case *c, const char *key, int64_t v) { *(int64_t *)((char *)c + field_of(key)->off) = v; }

/* A layout token "n=a/b" split: name n, fields a and b (b empty for an alias), op '/', '|' or '*'. */
static void split(const char *t, char *n, char *a, char *b, char *op) {
    size_t ln = strcspn(t, "="), la = strcspn(t + ln + 1, "/|*");
    snprintf(n, 16, "%.*s", (int)ln, t);
    snprintf(a, 16, "%.*s", (int)la, t + ln + 1);
    *op = t[ln + 1 + la];
    snprintf(b, 16, "%s", *op ? t + ln + 2 + la : "");
}

/* Fills c->shape from the fields. */
static void kb_case_shape(kb_case *c) {
    const op_shape *s = shape_of(c->op);
    char layout[128], *save, n[16], a[16], b[16], op;
    size_t used = 0;
    c->shape[0] = '\0';
    snprintf(layout, sizeof layout, "%s", s ? s->layout : "");
    for (char *t = strtok_r(layout, " ", &save); t && used < sizeof c->shape; t = strtok_r(NULL, " ", &save)) {
        char item[64];
        if (t[0] == '?') {
            bool set = strcmp(t, "?variant") == 0 ? c->variant[0] : strcmp(t, "?softmax") == 0
                                                                        ? c->scoring == KP_MOE_SCORING_SOFTMAX
                                                                        : get(c, t + 1) != 0;
            if (!set) continue;
            if (field_of(t + 1) && field_of(t + 1)->kind == K_SIZE) /* an optional size: max_m=128 */
                snprintf(item, sizeof item, "%s=%lld", t + 1, (long long)get(c, t + 1));
            else
                snprintf(item, sizeof item, "%s", strcmp(t, "?variant") == 0 ? c->variant : t + 1);
        } else if (!strchr(t, '=')) {
            snprintf(item, sizeof item, "%s=%lld", t, (long long)get(c, t));
        } else {
            split(t, n, a, b, &op);
            long long x = get(c, a), y = op ? get(c, b) : 0;
            if (op == '*') snprintf(item, sizeof item, "%s=%lld", n, x * y);
            else if (op == '/' || (op == '|' && x != y)) snprintf(item, sizeof item, "%s=%lld/%lld", n, x, y);
            else snprintf(item, sizeof item, "%s=%lld", n, x);
        }
        used += (size_t)snprintf(c->shape + used, sizeof c->shape - used, "%s%s", used ? " " : "", item);
    }
}

/* One value of a field: a size 1..INT32_MAX, a flag 0/1, or a scoring word. */
static int parse_value(const char *key, const char *v, int64_t *out, char *err, size_t errn) {
    key_kind kind = field_of(key)->kind;
    if (kind == K_SCORING) {
        if (strcmp(v, "sigmoid") == 0) *out = KP_MOE_SCORING_SIGMOID;
        else if (strcmp(v, "softmax") == 0) *out = KP_MOE_SCORING_SOFTMAX;
        else KB_FAIL("--shape: scoring=%s: expected sigmoid or softmax", v);
        return 0;
    }
    long long x, lo = kind == K_FLAG ? 0 : 1, hi = kind == K_FLAG ? 1 : INT32_MAX;
    if (!kb_parse_int(v, lo, hi, &x)) KB_FAIL("--shape: %s=%s: expected an integer from %lld to %lld", key, v, lo, hi);
    *out = x;
    return 0;
}

/* key=val through a layout token "n=...", read back as it prints; 0: not one of them.
 * A field the op does not take (MLA's d) must keep its fixed value. */
static int parse_layout(const op_shape *s, kb_case *c, bool *given, int64_t *m, const char *key, const char *val,
                        char *err, size_t errn) {
    char layout[128], *save, n[16], a[16], b[16], op, first[64];
    snprintf(layout, sizeof layout, "%s", s->layout);
    for (char *t = strtok_r(layout, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        if (!strchr(t, '=') || (split(t, n, a, b, &op), strcmp(n, key) != 0)) continue;
        const char *slash = op == '*' ? NULL : strchr(val, '/');
        int64_t x, y;
        snprintf(first, sizeof first, "%.*s", slash ? (int)(slash - val) : (int)strlen(val), val);
        if (op == '*') return parse_value("T", val, m, err, errn) ? -1 : 1;
        if (parse_value(a, first, &x, err, errn) || (op && parse_value(b, slash ? slash + 1 : first, &y, err, errn)))
            return -1;
        for (int i = 0; i < (op ? 2 : 1); i++) {
            const char *f = i ? b : a;
            int64_t v = i ? y : x;
            const shape_key *k = key_of(s, f);
            if (!k && v != get(c, f)) KB_FAIL("--shape: %s is fixed at %lld for %s", f, (long long)get(c, f), kp_op_name(s->op));
            if (k) put(c, f, v), given[k - s->keys] = true;
        }
        return 1;
    }
    return 0;
}

static int check_rules(const kb_case *c, char *err, size_t errn) {
    const double i32 = INT32_MAX;
    switch (c->op) {
    case KP_OP_ATTENTION_PREFILL:
    case KP_OP_ATTENTION_DECODE:
        if (c->h_q % c->h_kv != 0) KB_FAIL("--shape: h_q %lld is not a multiple of h_kv %lld", (long long)c->h_q, (long long)c->h_kv);
        /* fall through */
    case KP_OP_MLA_DECODE:
        if ((double)c->b * (double)c->s_q > i32 || (double)c->b * (double)c->s_k > i32)
            KB_FAIL("--shape: b*s_q and b*s_k (tokens, keys) must fit the API's int32 sequence offsets");
        if (c->op != KP_OP_ATTENTION_PREFILL && (double)c->b * ((double)c->s_k / (double)c->block_size + 2) > i32)
            KB_FAIL("--shape: b*s_k/block_size (cache blocks) must fit the API's int32 block table");
        return 0;
    case KP_OP_MOE_GATE:
    case KP_OP_MOE_FORWARD:
        if (c->n_group > 32 || c->E % c->n_group != 0 || c->topk_group > c->n_group)
            KB_FAIL("--shape: n_group %lld must divide E %lld and be <= 32, topk_group %lld at most n_group",
                 (long long)c->n_group, (long long)c->E, (long long)c->topk_group);
        if (c->k > c->topk_group * (c->E / c->n_group))
            KB_FAIL("--shape: k %lld exceeds the %lld experts of the kept groups", (long long)c->k,
                 (long long)(c->topk_group * (c->E / c->n_group)));
        /* fall through */
    case KP_OP_MOE_ALIGN:
    case KP_OP_GROUPED_GEMM:
        if (c->E > 512 || c->k > 32 || c->k > c->E)
            KB_FAIL("--shape: E %lld must be <= 512 and k %lld at most min(E, 32)", (long long)c->E, (long long)c->k);
        if ((double)c->E * (double)c->max_m > i32)
            KB_FAIL("--shape: E*max_m (the masked layout's rows) must fit the API's int32 row indices");
        /* fall through */
    case KP_OP_MOE_COMBINE:
        if ((double)c->T * (double)c->k + (double)c->E * (double)c->block_size > i32)
            KB_FAIL("--shape: T*k (rows, with padding) must fit the API's int32 row indices");
        return 0;
    case KP_OP_QUANTIZE_FP8:
        if (c->K % 128 != 0) KB_FAIL("--shape: K %lld is not a multiple of the 128-column groups", (long long)c->K);
        return 0;
    default: return 0;
    }
}

int kb_shape_parse(kp_op op, const char *spec, kb_case *c, char *err, size_t errn) {
    const op_shape *s = shape_of(op);
    memset(c, 0, sizeof *c);
    c->op = op, c->variant = "", c->h_kv = 1;
    if (op == KP_OP_MLA_DECODE) c->d = 576, c->dv = 512, c->block_size = 64;
    if (!s) KB_FAIL("--shape: op %d has no shape keys", (int)op);
    bool given[MAX_KEYS] = {false};
    int64_t m = -1, v;
    char copy[1024], word[16], *save;
    if (strlen(spec) >= sizeof copy) KB_FAIL("--shape: the spec is over %zu characters", sizeof copy - 1);
    snprintf(copy, sizeof copy, "%s", spec);
    for (int i = 0; i < MAX_KEYS && s->keys[i].key; i++) put(c, s->keys[i].key, s->keys[i].def);
    for (char *t = strtok_r(copy, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
        char *eq = strchr(t, '=');
        const char *val = eq ? eq + 1 : NULL;
        const shape_key *k;
        int r;
        if (eq) *eq = '\0';
        snprintf(word, sizeof word, "?%s", t);
        if (!val && strstr(s->layout, "?variant") && (strcmp(t, "w13") == 0 || strcmp(t, "w2") == 0)) {
            c->variant = t[1] == '1' ? "w13" : "w2";
        } else if (!val && (strcmp(t, "softmax") == 0 || strcmp(t, "sigmoid") == 0) && key_of(s, "scoring")) {
            put(c, "scoring", t[1] == 'o' ? KP_MOE_SCORING_SOFTMAX : KP_MOE_SCORING_SIGMOID);
        } else if (!val && strstr(s->layout, word) && (k = key_of(s, t))) { /* a flag: varlen */
            put(c, t, 1), given[k - s->keys] = true;
        } else if (val && (r = parse_layout(s, c, given, &m, t, val, err, errn)) != 0) {
            if (r < 0) return -1;
        } else if (val && (k = key_of(s, t))) {
            if (parse_value(t, val, &v, err, errn)) return -1;
            put(c, t, v), given[k - s->keys] = true;
        } else {
            KB_FAIL("--shape: '%s%s%s' is not a key=value of %s (kbench --list-shapes %s)", t, val ? "=" : "",
                 val ? val : "", kp_op_name(op), kp_op_name(op));
        }
    }
    for (int i = 0; i < MAX_KEYS && s->keys[i].key; i++) /* s_k as s_q, dv as d, ... unless given */
        if (s->keys[i].same_as && !given[i]) put(c, s->keys[i].key, get(c, s->keys[i].same_as));
    if (m >= 0 && m != c->T * c->k)
        KB_FAIL("--shape: M=%lld is not T*k = %lld", (long long)m, (long long)(c->T * c->k));
    if (check_rules(c, err, errn) != 0) return -1;
    double flops, bytes, alloc;
    c->dtype = c->wdtype = KP_F32; /* the largest element: the bound holds for every dtype */
    kb_case_estimate(c, &flops, &bytes, &alloc);
    c->dtype = c->wdtype = KP_BF16;
    if (!(alloc <= MAX_ALLOC_BYTES)) KB_FAIL("--shape: this shape allocates %.3g TB, more than any device has", alloc * 1e-12);
    kb_case_shape(c);
    return 0;
}

void kb_shape_usage(FILE *o, const kp_op *op) {
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const op_shape *s = &shapes[i];
        if (op && s->op != *op) continue;
        fprintf(o, "%s: %s\n\n| key | default | meaning |\n|---|---|---|\n", kp_op_name(s->op), s->what);
        for (int k = 0; k < MAX_KEYS && s->keys[k].key; k++) {
            const shape_key *x = &s->keys[k];
            fprintf(o, "| %s | ", x->key);
            if (x->same_as) fprintf(o, "= %s", x->same_as);
            else if (field_of(x->key)->kind == K_SCORING) fputs(x->def == KP_MOE_SCORING_SIGMOID ? "sigmoid" : "softmax", o);
            else fprintf(o, "%lld", (long long)x->def);
            fprintf(o, " | %s |\n", x->meaning);
        }
        fprintf(o, "\ne.g. kbench --op %s --shape ", kp_op_name(s->op));
        for (int k = 0, n = 0; k < MAX_KEYS && s->keys[k].key; k++) /* the defaults, spelled out */
            if (!s->keys[k].same_as && field_of(s->keys[k].key)->kind == K_SIZE)
                fprintf(o, "%s%s=%lld", n++ ? "," : "", s->keys[k].key, (long long)s->keys[k].def);
        fputs("\n\n", o);
    }
    fputs("Keys may be separated by ',' or spaces; a row's shape column (h=32/8 d=192/128 groups=4/8 varlen, "
          "w13 ... M=...) is accepted as it prints.\n",
          o);
}

/* ---- scaling ---- */

/* CPU devices (the CPU backend, PoCL): a call stays under ~0.1 s at a few hundred
 * GFLOP/s and moves and allocates under 1.6 GB (PoCL allocates at most 2 GiB per
 * buffer here). GPUs: only what fits in 70% of their memory. */
const kb_budget *kb_budget_for(const kp_device_info *info, kb_budget *b) {
    if (info->kind == KP_DEVICE_CPU) *b = (kb_budget){16e9, 1.6e9, 1.6e9, "cpu"};
    else if (info->memory_bytes > 0) *b = (kb_budget){1e30, 0.7 * (double)info->memory_bytes, 1e30, "memory"};
    else return NULL;
    return b;
}

/* Sized as if the weights had the activations' dtype, so a bf16 case and its FP8
 * twin scale to the same shape and stay comparable. Prefill may spend 8x the FLOP
 * budget before its context length is cut: the length is what the suite is about. */
static bool over(const kb_case *c, const kb_budget *b) {
    kb_case w = *c;
    double f, by, al, flops = b->flops;
    w.wdtype = c->dtype;
    kb_case_estimate(&w, &f, &by, &al);
    if (c->op == KP_OP_ATTENTION_PREFILL && c->b == 1 && c->h_q == 1) flops *= 8;
    return f > flops || al > b->alloc_bytes || by > b->stream_bytes;
}

/* One halving step; false when nothing is left to shrink. */
static bool shrink(kb_case *c) {
    switch (c->op) {
    case KP_OP_ATTENTION_PREFILL:
        if (c->b > 1) c->b /= 2;
        else if (c->h_kv >= 2 && c->h_q >= 2) c->h_q /= 2, c->h_kv /= 2;
        else if (c->h_q >= 2 && c->h_kv == 1) c->h_q /= 2; /* the context length is the point: keep it */
        else if (c->s_q >= 512 && c->s_k >= 512) c->s_q /= 2, c->s_k /= 2;
        else return false;
        return true;
    case KP_OP_ATTENTION_DECODE:
    case KP_OP_MLA_DECODE:
        if (c->b > 1) c->b /= 2;
        else if (c->s_k >= 1024) c->s_k /= 2;
        else return false;
        return true;
    case KP_OP_GROUPED_GEMM:
    case KP_OP_MOE_FORWARD: {
        /* fewest experts the routing allows: k, and for the gate topk_group groups of
         * E/n_group experts must still hold k */
        int64_t e_min = c->k;
        if (c->op == KP_OP_MOE_FORWARD) {
            int64_t per = (c->k + c->topk_group - 1) / c->topk_group;
            if (per * c->n_group > e_min) e_min = per * c->n_group;
        }
        if (c->E / 2 >= e_min && c->E % 2 == 0) {
            c->E /= 2;
            c->T = c->T > 1 ? c->T / 2 : 1; /* same rows per expert */
            return true;
        }
        __attribute__((fallthrough)); /* then fewer tokens */
    }
    case KP_OP_MOE_GATE:
    case KP_OP_MOE_ALIGN:
    case KP_OP_MOE_COMBINE:
    case KP_OP_QUANTIZE_FP8:
        if (c->T <= 1) return false;
        c->T /= 2;
        return true;
    default: return false;
    }
}

/* Note naming the fields that changed: "scaled for cpu from b=128 s_k=16384". */
static void scale_note(kb_case *c, const char *orig, const char *why) {
    char a[sizeof c->shape], b[sizeof c->shape];
    snprintf(a, sizeof a, "%s", orig);
    snprintf(b, sizeof b, "%s", c->shape);
    size_t used = strlen(c->note); /* after a preset's model name */
    used += (size_t)snprintf(c->note + used, sizeof c->note - used, "%sscaled for %s from", used ? "; " : "", why);
    char *sa, *sb, *ta = strtok_r(a, " ", &sa), *tb = strtok_r(b, " ", &sb);
    for (; ta && tb; ta = strtok_r(NULL, " ", &sa), tb = strtok_r(NULL, " ", &sb))
        if (strcmp(ta, tb) != 0 && used < sizeof c->note)
            used += (size_t)snprintf(c->note + used, sizeof c->note - used, " %s", ta);
}

static void apply_budget(kb_case *c, const kb_budget *b) {
    if (!b || !over(c, b)) return;
    char orig[sizeof c->shape];
    snprintf(orig, sizeof orig, "%s", c->shape);
    while (over(c, b) && shrink(c)) {
    }
    kb_case_shape(c);
    scale_note(c, orig, b->why);
}

/* ---- suites ---- */

typedef struct builder {
    kb_case_list *out;
    bool skip[KP_OP_COUNT]; /* ops --op leaves out */
    int dtype; /* -1: the suite's */
    const kb_budget *budget;
    const char *model; /* a preset's model, named in each row's note */
    bool failed;
} builder;

static void push(builder *b, kb_case c) {
    if (b->model) snprintf(c.note, sizeof c.note, "%s", b->model);
    kb_case_shape(&c);
    apply_budget(&c, b->budget);
    for (int i = 0; i < b->out->n; i++) { /* scaling can map two shapes onto one */
        const kb_case *o = &b->out->v[i];
        if (o->op == c.op && o->dtype == c.dtype && o->wdtype == c.wdtype && strcmp(o->shape, c.shape) == 0) return;
    }
    if (kb_grow(&b->out->v, b->out->n, &b->out->cap, sizeof *b->out->v)) b->out->v[b->out->n++] = c;
    else b->failed = true;
}

/* The ops with an operand --dtype fp8 stores in e4m3: expert weights or the KV cache. */
static bool has_fp8(kp_op op) {
    return op == KP_OP_GROUPED_GEMM || op == KP_OP_MOE_FORWARD || op == KP_OP_ATTENTION_DECODE || op == KP_OP_MLA_DECODE;
}

/* Adds c once per dtype: the suite's (bf16, and FP8 weights or KV cache where with_fp8),
 * or the one --dtype named (fp8 applies to the ops has_fp8 names only). */
static void add(builder *b, kb_case c, bool with_fp8) {
    if (b->skip[c.op] || (b->dtype == KB_DTYPE_FP8W && !has_fp8(c.op))) return;
    if (b->dtype == KB_DTYPE_W8A8 && c.op != KP_OP_GROUPED_GEMM && c.op != KP_OP_MOE_FORWARD) return;
    c.dtype = c.wdtype = b->dtype < 0 || b->dtype >= KB_DTYPE_FP8W ? KP_BF16 : (kp_dtype)b->dtype;
    if (b->dtype >= KB_DTYPE_FP8W) c.wdtype = KP_FP8_E4M3;
    if (b->dtype == KB_DTYPE_W8A8) c.dtype = KP_FP8_E4M3;
    push(b, c);
    if (b->dtype < 0 && has_fp8(c.op) && with_fp8) {
        c.wdtype = KP_FP8_E4M3;
        push(b, c);
    }
}

/* A case as --shape spells it (kb_shape_parse reads it, from the op's defaults), printf-style, added as add does. */
__attribute__((format(printf, 4, 5))) static void row(builder *b, kp_op op, bool with_fp8, const char *fmt, ...) {
    char spec[256], err[256];
    kb_case c = {0};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(spec, sizeof spec, fmt, ap);
    va_end(ap);
    if (kb_shape_parse(op, spec, &c, err, sizeof err) != 0) { /* a suite's own shape: a bug in this file */
        fprintf(stderr, "kbench: suite shape %s '%s': %s\n", kp_op_name(op), spec, err);
        b->failed = true;
    }
    add(b, c, with_fp8);
}

static void suite_quick(builder *b) {
    row(b, KP_OP_ATTENTION_PREFILL, false, "b=2 s_q=512 h=8/2 d=128 causal=1 varlen");
    row(b, KP_OP_ATTENTION_DECODE, true, "b=4 s_q=1 s_k=2048 h=32/8 d=128 bs=16 varlen");
    row(b, KP_OP_MLA_DECODE, true, "b=4 s_q=1 s_k=1024 h_q=16");
    row(b, KP_OP_MOE_GATE, false, "T=256 E=256 k=8 groups=4/8");
    row(b, KP_OP_MOE_ALIGN, false, "T=256 E=256 k=8 bs=64");
    row(b, KP_OP_GROUPED_GEMM, true, "w13 T=32 E=8 k=8 N=512 K=1024");
    row(b, KP_OP_MOE_COMBINE, false, "T=256 k=8 hidden=1024");
    row(b, KP_OP_QUANTIZE_FP8, false, "T=256 K=1024");
    row(b, KP_OP_MOE_FORWARD, false, "T=16 E=16 k=8 hidden=1024 inter=256 groups=2/4");
}

/* A model: its attention and its routed experts, as its config.json describes them. */
typedef struct model {
    const char *name;     /* named in each row's note; NULL: none */
    int h_q, h_kv, d;     /* num_attention_heads, num_key_value_heads, head_dim */
    int hidden, inter;    /* hidden_size, the experts' intermediate size */
    int E, k;             /* experts, experts per token */
    int context;          /* the longest decode context benchmarked */
    const char *routing;  /* the gate's shape words: groups and scoring */
} model;

/* Values of each model's published config.json (Hugging Face: deepseek-ai/DeepSeek-V3, Qwen/Qwen3-235B-A22B,
 * Qwen/Qwen3-30B-A3B, mistralai/Mixtral-8x7B-v0.1). DeepSeek-V3 routes with sigmoid scores, a bias and 8 groups
 * keeping 4; the others with a softmax over all experts (no groups, no bias). Both renormalise the top k. */
static const model deepseek_v3 = {NULL, 0, 0, 0, 7168, 2048, 256, 8, 0, "groups=4/8"}; /* MLA: suite_deepseek */
static const model qwen3_235b = {"Qwen3-235B-A22B", 64, 4, 128, 4096, 1536, 128, 8, 32768, "groups=1/1 softmax"};
static const model qwen3_30b = {"Qwen3-30B-A3B", 32, 4, 128, 2048, 768, 128, 8, 32768, "groups=1/1 softmax"};
static const model mixtral_8x7b = {"Mixtral-8x7B", 32, 8, 128, 4096, 14336, 8, 2, 32768, "groups=1/1 softmax"};

/* The MoE layer's ops at decode- to prefill-sized token counts (bf16 and FP8 weights),
 * and W8A8's two activation quantizations: x before w13, SwiGLU's output before w2. */
static void moe_layer(builder *b, const model *m) {
    static const int tokens[] = {1, 16, 128, 512, 4096};
    for (size_t i = 0; i < sizeof tokens / sizeof tokens[0]; i++) {
        int T = tokens[i], E = m->E, k = m->k;
        row(b, KP_OP_MOE_GATE, false, "T=%d E=%d k=%d %s", T, E, k, m->routing);
        row(b, KP_OP_MOE_ALIGN, false, "T=%d E=%d k=%d bs=64", T, E, k);
        row(b, KP_OP_QUANTIZE_FP8, false, "T=%d K=%d", T, m->hidden);
        row(b, KP_OP_QUANTIZE_FP8, false, "T=%d K=%d", T * k, m->inter);
        row(b, KP_OP_GROUPED_GEMM, true, "w13 T=%d E=%d k=%d N=%d K=%d", T, E, k, 2 * m->inter, m->hidden);
        row(b, KP_OP_GROUPED_GEMM, true, "w2 T=%d E=%d k=%d N=%d K=%d", T, E, k, m->hidden, m->inter);
        row(b, KP_OP_MOE_COMBINE, false, "T=%d k=%d hidden=%d", T, k, m->hidden);
        row(b, KP_OP_MOE_FORWARD, true, "T=%d E=%d k=%d hidden=%d inter=%d %s", T, E, k, m->hidden, m->inter,
            m->routing);
    }
}

static void suite_deepseek(builder *b) {
    /* FlashMLA's tests/test_flash_mla.py shapes */
    for (int s_k = 4096; s_k <= 16384; s_k *= 2)
        for (int hq = 16; hq <= 128; hq *= 2)
            for (int s_q = 1; s_q <= 2; s_q++)
                row(b, KP_OP_MLA_DECODE, s_k == 4096, "b=128 s_q=%d s_k=%d h_q=%d", s_q, s_k, hq);
    /* V3 MHA prefill, 4k */
    row(b, KP_OP_ATTENTION_PREFILL, false, "b=1 s_q=4096 h=128/128 d=192/128 causal=1");
    /* V3 decode over a paged, non-absorbed KV cache (q/k 192, v 128, 128 heads): what a
     * server without the MLA kernel would run */
    row(b, KP_OP_ATTENTION_DECODE, true, "b=32 s_q=1 s_k=4096 h=128/128 d=192/128 bs=64");
    moe_layer(b, &deepseek_v3);
}

static void suite_llama(builder *b) {
    for (int s = 2048; s <= 16384; s *= 2)
        row(b, KP_OP_ATTENTION_PREFILL, false, "b=1 s_q=%d h=32/8 d=128 causal=1", s);
    /* the DESIGN §7 anchors */
    row(b, KP_OP_ATTENTION_PREFILL, false, "b=4 s_q=4096 h=32/32 d=128 causal=0");
    row(b, KP_OP_ATTENTION_PREFILL, false, "b=4 s_q=4096 h=32/32 d=128 causal=1");
    for (int s = 2048; s <= 16384; s *= 2)
        row(b, KP_OP_ATTENTION_DECODE, true, "b=64 s_q=1 s_k=%d h=32/8 d=128 bs=16", s);
}

/* One model: 4k causal prefill, paged decode at 4k and the long context, and its MoE layer. */
static void suite_model(builder *b, const model *m) {
    b->model = m->name;
    row(b, KP_OP_ATTENTION_PREFILL, false, "b=1 s_q=4096 h=%d/%d d=%d causal=1", m->h_q, m->h_kv, m->d);
    row(b, KP_OP_ATTENTION_DECODE, true, "b=64 s_q=1 s_k=4096 h=%d/%d d=%d bs=16", m->h_q, m->h_kv, m->d);
    row(b, KP_OP_ATTENTION_DECODE, true, "b=16 s_q=1 s_k=%d h=%d/%d d=%d bs=16", m->context, m->h_q, m->h_kv, m->d);
    moe_layer(b, m);
    b->model = NULL;
}

/* A suite: its own rows (build), then the presets of its models. */
static const struct {
    const char *name;
    void (*build)(builder *b);
    const model *models[2];
} suites[] = {
    {"quick", suite_quick, {NULL}}, {"deepseek-v3", suite_deepseek, {NULL}}, {"llama", suite_llama, {NULL}},
    {"qwen3-moe", NULL, {&qwen3_235b, &qwen3_30b}}, {"mixtral", NULL, {&mixtral_8x7b}},
};

const char *kb_op_name_list(void) {
    return "attention_prefill, attention_decode, mla_decode, moe_gate, moe_align, grouped_gemm, moe_combine, "
           "moe_forward, quantize_fp8";
}

/* suite: a name, a comma list of names, or "all" */
int kb_suite_cases(const char *suite, const char *ops, int dtype, const kb_budget *budget, kb_case_list *out,
                   char *err, size_t errn) {
    builder b = {.out = out, .dtype = dtype, .budget = budget};
    char copy[512], *save;
    for (int i = 0; i < KP_OP_COUNT; i++) b.skip[i] = ops != NULL;
    snprintf(copy, sizeof copy, "%s", ops ? ops : "");
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        kp_op op;
        if (!kb_op_from_name(t, &op)) KB_FAIL("unknown op '%s'; ops are %s", t, kb_op_name_list());
        b.skip[op] = false;
    }
    snprintf(copy, sizeof copy, "%s", suite);
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        bool all = strcmp(t, "all") == 0, known = all;
        for (size_t i = 0; i < sizeof suites / sizeof suites[0]; i++) {
            if (!all && strcmp(t, suites[i].name) != 0) continue;
            if (suites[i].build) suites[i].build(&b);
            for (int m = 0; m < 2 && suites[i].models[m]; m++) suite_model(&b, suites[i].models[m]);
            known = true;
        }
        if (!known) KB_FAIL("unknown suite '%s'; suites are quick, deepseek-v3, llama, qwen3-moe, mixtral, all", t);
    }
    if (b.failed) KB_FAIL("out of memory listing cases");
    return out->n;
}

int kb_shape_cases(const kb_case *c, int dtype, kb_case_list *out, char *err, size_t errn) {
    if (dtype == KB_DTYPE_FP8W && !has_fp8(c->op))
        KB_FAIL("--dtype fp8 stores expert weights or the KV cache in e4m3: only grouped_gemm, moe_forward, "
                "attention_decode and mla_decode have them");
    if (dtype == KB_DTYPE_W8A8 && c->op != KP_OP_GROUPED_GEMM && c->op != KP_OP_MOE_FORWARD)
        KB_FAIL("--dtype w8a8 is grouped_gemm's and moe_forward's only");
    if (dtype >= KB_DTYPE_FP8W && (c->op == KP_OP_GROUPED_GEMM   ? c->K % 128
                                   : c->op == KP_OP_MOE_FORWARD ? c->hidden % 128 || c->inter % 128
                                                                : 0))
        KB_FAIL("--dtype fp8: the weights' reduction dims (K; hidden and inter) must be multiples of the 128-wide "
                "FP8 scale blocks");
    builder b = {.out = out, .dtype = dtype < 0 ? KP_BF16 : dtype};
    add(&b, *c, false);
    if (b.failed) KB_FAIL("out of memory listing cases");
    return out->n;
}
