/*
 * tools/kbench/kbench_shapes.c — `--op OP --shape k=v,...`: one case of any shape, from
 * the op's keys and their defaults (DeepSeek-V3's and the DESIGN §7 anchors' shapes);
 * `--list-shapes OP` prints them.
 *
 * A spec is key=value items separated by ',' or spaces. The shape column of any kbench
 * row parses too ("h=32/8 d=192/128 groups=4/8 varlen", "w13 T=128 ... M=1024"), so a
 * row can be rerun by pasting it. Every value is checked before anything is allocated:
 * integer syntax and range, the op's rules (GQA divides, k of E, groups), the int32
 * index limits of the API, and the total size, which also keeps every later int64
 * product from overflowing.
 */
#include "kbench.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define MAX_KEYS 10
#define MAX_ALLOC_BYTES 1125899906842624.0 /* 2^50: no device has this much; int64 products stay exact */

typedef enum { K_SIZE, K_FLAG, K_SCORING } key_kind;

typedef struct shape_key {
    const char *key;
    key_kind kind;
    size_t off;          /* the kb_case field: int64_t (K_SIZE), int (K_FLAG), kp_moe_scoring */
    int64_t def;
    const char *same_as; /* default: this other key's value */
    const char *meaning;
} shape_key;

typedef struct op_shape {
    kp_op op;
    const char *what;
    shape_key keys[MAX_KEYS];
} op_shape;

#define SZ(f) K_SIZE, offsetof(kb_case, f)
#define FL(f) K_FLAG, offsetof(kb_case, f)
#define SC K_SCORING, offsetof(kb_case, scoring)

static const op_shape shapes[] = {
    {KP_OP_ATTENTION_PREFILL, "varlen packed q [b*s_q, h_q, d], k/v [b*s_k, h_kv, d|dv]",
     {{"b", SZ(b), 1, NULL, "sequences"},
      {"s_q", SZ(s_q), 4096, NULL, "query tokens per sequence"},
      {"s_k", SZ(s_k), 0, "s_q", "key tokens per sequence"},
      {"h_q", SZ(h_q), 32, NULL, "query heads"},
      {"h_kv", SZ(h_kv), 0, "h_q", "key/value heads (divides h_q)"},
      {"d", SZ(d), 128, NULL, "q/k head dim"},
      {"dv", SZ(dv), 0, "d", "v head dim"},
      {"causal", FL(causal), 1, NULL, "0 or 1 (bottom-right aligned)"},
      {"varlen", FL(varlen), 0, NULL, "1: lengths fall from s to s/2 over the batch"}}},
    {KP_OP_ATTENTION_DECODE, "paged KV: q [b, s_q, h_q, d], cache [blocks, block_size, h_kv, d|dv]",
     {{"b", SZ(b), 64, NULL, "sequences"},
      {"s_q", SZ(s_q), 1, NULL, "new tokens per sequence"},
      {"s_k", SZ(s_k), 8192, NULL, "context length"},
      {"h_q", SZ(h_q), 32, NULL, "query heads"},
      {"h_kv", SZ(h_kv), 8, NULL, "key/value heads (divides h_q)"},
      {"d", SZ(d), 128, NULL, "q/k head dim"},
      {"dv", SZ(dv), 0, "d", "v head dim"},
      {"block_size", SZ(block_size), 16, NULL, "tokens per cache block (bs)"},
      {"causal", FL(causal), 1, NULL, "0 or 1"},
      {"varlen", FL(varlen), 0, NULL, "1: contexts fall from s_k to s_k/2 over the batch"}}},
    {KP_OP_MLA_DECODE, "FlashMLA layout: q [b, s_q, h_q, 576], latent cache [blocks, 64, 1, 576], out 512",
     {{"b", SZ(b), 128, NULL, "sequences"},
      {"s_q", SZ(s_q), 1, NULL, "new tokens per sequence (MTP: 2)"},
      {"s_k", SZ(s_k), 4096, NULL, "context length"},
      {"h_q", SZ(h_q), 128, NULL, "query heads"},
      {"causal", FL(causal), 1, NULL, "0 or 1"},
      {"varlen", FL(varlen), 0, NULL, "1: contexts fall from s_k to s_k/2 over the batch"}}},
    {KP_OP_MOE_GATE, "router logits [T, E] -> top-k expert ids and weights",
     {{"T", SZ(T), 4096, NULL, "tokens"},
      {"E", SZ(E), 256, NULL, "experts (<= 512)"},
      {"k", SZ(k), 8, NULL, "experts per token (<= 32)"},
      {"n_group", SZ(n_group), 8, NULL, "expert groups (divides E)"},
      {"topk_group", SZ(topk_group), 4, NULL, "groups kept"},
      {"scoring", SC, KP_MOE_SCORING_SIGMOID, NULL, "sigmoid (DeepSeek-V3: bias, scale 2.5) or softmax"}}},
    {KP_OP_MOE_ALIGN, "expert ids [T, k] -> rows sorted by expert, padded to block_size",
     {{"T", SZ(T), 4096, NULL, "tokens"},
      {"E", SZ(E), 256, NULL, "experts"},
      {"k", SZ(k), 8, NULL, "experts per token"},
      {"block_size", SZ(block_size), 64, NULL, "row padding (bs)"}}},
    {KP_OP_GROUPED_GEMM, "a [T*k, K] x w [E, N, K]^T -> [T*k, N], rows grouped by expert",
     {{"T", SZ(T), 4096, NULL, "tokens"},
      {"E", SZ(E), 256, NULL, "experts"},
      {"k", SZ(k), 8, NULL, "experts per token (M = T*k rows)"},
      {"N", SZ(N), 4096, NULL, "output columns (V3 w13: 2*2048)"},
      {"K", SZ(K), 7168, NULL, "reduction (V3 w13: hidden 7168)"}}},
    {KP_OP_MOE_COMBINE, "expert rows [T*k, hidden] x weights -> [T, hidden]",
     {{"T", SZ(T), 4096, NULL, "tokens"},
      {"k", SZ(k), 8, NULL, "experts per token"},
      {"hidden", SZ(hidden), 7168, NULL, "hidden size"}}},
    {KP_OP_MOE_FORWARD, "the routed-expert layer: gate, align, x.w13^T, SwiGLU, .w2^T, combine",
     {{"T", SZ(T), 4096, NULL, "tokens"},
      {"E", SZ(E), 256, NULL, "experts (<= 512)"},
      {"k", SZ(k), 8, NULL, "experts per token (<= 32)"},
      {"hidden", SZ(hidden), 7168, NULL, "hidden size"},
      {"inter", SZ(inter), 2048, NULL, "expert intermediate size"},
      {"n_group", SZ(n_group), 8, NULL, "expert groups (divides E)"},
      {"topk_group", SZ(topk_group), 4, NULL, "groups kept"},
      {"scoring", SC, KP_MOE_SCORING_SIGMOID, NULL, "sigmoid (DeepSeek-V3: bias, scale 2.5) or softmax"}}},
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

static int64_t *size_field(kb_case *c, const shape_key *k) { return (int64_t *)((char *)c + k->off); }

static void store(kb_case *c, const shape_key *k, int64_t v) {
    if (k->kind == K_SIZE) *size_field(c, k) = v;
    else if (k->kind == K_FLAG) *(int *)((char *)c + k->off) = (int)v;
    else c->scoring = (kp_moe_scoring)v;
}

/* Writes the message and returns -1 from the function (err and errn in scope). */
#define FAIL(...) return (snprintf(err, errn, __VA_ARGS__), -1)

/* One value of key: a size 1..INT32_MAX, a flag 0/1, or a scoring word. */
static int parse_value(const shape_key *k, const char *v, int64_t *out, char *err, size_t errn) {
    if (k->kind == K_SCORING) {
        if (strcmp(v, "sigmoid") == 0) *out = KP_MOE_SCORING_SIGMOID;
        else if (strcmp(v, "softmax") == 0) *out = KP_MOE_SCORING_SOFTMAX;
        else FAIL("--shape: scoring=%s: expected sigmoid or softmax", v);
        return 0;
    }
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    long long lo = k->kind == K_FLAG ? 0 : 1, hi = k->kind == K_FLAG ? 1 : INT32_MAX;
    if (end == v || *end || errno == ERANGE || x < lo || x > hi)
        FAIL("--shape: %s=%s: expected an integer from %lld to %lld", k->key, v, lo, hi);
    *out = x;
    return 0;
}

/* "A/B" into two keys: h=32/8, d=192/128, groups=4/8 (kept/groups), as shape columns print them. */
static int parse_pair(const op_shape *s, kb_case *c, bool *given, const char *name, const char *v, char *err,
                      size_t errn) {
    static const char *const pairs[][3] = {{"h", "h_q", "h_kv"}, {"d", "d", "dv"}, {"groups", "topk_group", "n_group"}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        const shape_key *a = key_of(s, pairs[i][1]), *b = key_of(s, pairs[i][2]);
        if (strcmp(name, pairs[i][0]) != 0 || !a || !b) continue;
        char first[64];
        const char *slash = strchr(v, '/');
        snprintf(first, sizeof first, "%.*s", slash ? (int)(slash - v) : (int)strlen(v), v);
        int64_t x, y;
        if (parse_value(a, first, &x, err, errn) || parse_value(b, slash ? slash + 1 : first, &y, err, errn)) return -1;
        store(c, a, x), store(c, b, y);
        given[a - s->keys] = given[b - s->keys] = true;
        return 1;
    }
    return 0;
}

static int check_rules(const kb_case *c, char *err, size_t errn) {
    const double i32 = INT32_MAX;
    switch (c->op) {
    case KP_OP_ATTENTION_PREFILL:
    case KP_OP_ATTENTION_DECODE:
        if (c->h_q % c->h_kv != 0) FAIL("--shape: h_q %lld is not a multiple of h_kv %lld", (long long)c->h_q, (long long)c->h_kv);
        /* fall through */
    case KP_OP_MLA_DECODE:
        if ((double)c->b * (double)c->s_q > i32 || (double)c->b * (double)c->s_k > i32)
            FAIL("--shape: b*s_q and b*s_k (tokens, keys) must fit the API's int32 sequence offsets");
        if (c->op != KP_OP_ATTENTION_PREFILL && (double)c->b * ((double)c->s_k / (double)c->block_size + 2) > i32)
            FAIL("--shape: b*s_k/block_size (cache blocks) must fit the API's int32 block table");
        return 0;
    case KP_OP_MOE_GATE:
    case KP_OP_MOE_FORWARD:
        if (c->n_group > 32 || c->E % c->n_group != 0 || c->topk_group > c->n_group)
            FAIL("--shape: n_group %lld must divide E %lld and be <= 32, topk_group %lld at most n_group",
                 (long long)c->n_group, (long long)c->E, (long long)c->topk_group);
        if (c->k > c->topk_group * (c->E / c->n_group))
            FAIL("--shape: k %lld exceeds the %lld experts of the kept groups", (long long)c->k,
                 (long long)(c->topk_group * (c->E / c->n_group)));
        /* fall through */
    case KP_OP_MOE_ALIGN:
    case KP_OP_GROUPED_GEMM:
        if (c->E > 512 || c->k > 32 || c->k > c->E)
            FAIL("--shape: E %lld must be <= 512 and k %lld at most min(E, 32)", (long long)c->E, (long long)c->k);
        /* fall through */
    case KP_OP_MOE_COMBINE:
        if ((double)c->T * (double)c->k + (double)c->E * (double)c->block_size > i32)
            FAIL("--shape: T*k (rows, with padding) must fit the API's int32 row indices");
        return 0;
    default: return 0;
    }
}

int kb_shape_parse(kp_op op, const char *spec, kb_case *c, char *err, size_t errn) {
    const op_shape *s = shape_of(op);
    memset(c, 0, sizeof *c);
    c->op = op, c->variant = "", c->h_kv = 1;
    if (op == KP_OP_MLA_DECODE) c->d = 576, c->dv = 512, c->block_size = 64;
    if (!s) FAIL("--shape: op %d has no shape keys", (int)op);
    bool given[MAX_KEYS] = {false};
    int64_t m_given = -1;
    char copy[1024], *save;
    if (strlen(spec) >= sizeof copy) FAIL("--shape: the spec is over %zu characters", sizeof copy - 1);
    snprintf(copy, sizeof copy, "%s", spec);
    for (int i = 0; i < MAX_KEYS && s->keys[i].key; i++) store(c, &s->keys[i], s->keys[i].def);
    for (char *t = strtok_r(copy, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
        char *eq = strchr(t, '=');
        const char *val = eq ? eq + 1 : NULL;
        if (eq) *eq = '\0';
        const shape_key *k = key_of(s, strcmp(t, "bs") == 0 ? "block_size" : t);
        int64_t v;
        int pair;
        if (!val && (strcmp(t, "softmax") == 0 || strcmp(t, "sigmoid") == 0) && (k = key_of(s, "scoring"))) {
            if (parse_value(k, t, &v, err, errn)) return -1;
        } else if (!val && strcmp(t, "varlen") == 0 && (k = key_of(s, "varlen"))) {
            v = 1;
        } else if (!val && op == KP_OP_GROUPED_GEMM && (strcmp(t, "w13") == 0 || strcmp(t, "w2") == 0)) {
            c->variant = strcmp(t, "w13") == 0 ? "w13" : "w2";
            continue;
        } else if (val && strcmp(t, "M") == 0 && op == KP_OP_GROUPED_GEMM) {
            char *end;
            m_given = strtoll(val, &end, 10);
            if (end == val || *end || m_given < 1) FAIL("--shape: M=%s: not a row count", val);
            continue;
        } else if (val && (pair = parse_pair(s, c, given, t, val, err, errn)) != 0) {
            if (pair < 0) return -1;
            continue;
        } else if (!k || !val) {
            FAIL("--shape: '%s%s%s' is not a key=value of %s (kbench --list-shapes %s)", t, val ? "=" : "",
                 val ? val : "", kp_op_name(op), kp_op_name(op));
        } else if (parse_value(k, val, &v, err, errn)) {
            return -1;
        }
        store(c, k, v);
        given[k - s->keys] = true;
    }
    for (int i = 0; i < MAX_KEYS && s->keys[i].key; i++) /* s_k as s_q, dv as d, ... unless given */
        if (s->keys[i].same_as && !given[i]) *size_field(c, &s->keys[i]) = *size_field(c, key_of(s, s->keys[i].same_as));
    if (m_given >= 0 && m_given != c->T * c->k)
        FAIL("--shape: M=%lld is not T*k = %lld", (long long)m_given, (long long)(c->T * c->k));
    if (check_rules(c, err, errn) != 0) return -1;
    double flops, bytes, alloc;
    c->dtype = c->wdtype = KP_F32; /* the largest element: the bound holds for every dtype */
    kb_case_estimate(c, &flops, &bytes, &alloc);
    c->dtype = c->wdtype = KP_BF16;
    if (!(alloc <= MAX_ALLOC_BYTES)) FAIL("--shape: this shape allocates %.3g TB, more than any device has", alloc * 1e-12);
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
            else if (x->kind == K_SCORING) fputs(x->def == KP_MOE_SCORING_SIGMOID ? "sigmoid" : "softmax", o);
            else fprintf(o, "%lld", (long long)x->def);
            fprintf(o, " | %s |\n", x->meaning);
        }
        fprintf(o, "\ne.g. kbench --op %s --shape ", kp_op_name(s->op));
        for (int k = 0, n = 0; k < MAX_KEYS && s->keys[k].key; k++) /* the defaults, spelled out */
            if (!s->keys[k].same_as && s->keys[k].kind == K_SIZE)
                fprintf(o, "%s%s=%lld", n++ ? "," : "", s->keys[k].key, (long long)s->keys[k].def);
        fputs("\n\n", o);
    }
    fputs("Keys may be separated by ',' or spaces; a row's shape column (h=32/8 d=192/128 groups=4/8 varlen, "
          "w13 ... M=...) is accepted as it prints.\n",
          o);
}
