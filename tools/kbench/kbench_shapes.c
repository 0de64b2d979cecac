/*
 * tools/kbench/kbench_shapes.c — how a case's shape is written and read: the shape
 * column of every row (kb_case_shape), `--op OP --shape k=v,...` (one case of any shape,
 * from the op's keys and their defaults: DeepSeek-V3's and the DESIGN §7 anchors'), and
 * `--list-shapes OP`.
 *
 * One layout per op says how its shape prints, and the parser reads the same tokens, so
 * a row can be rerun by pasting its shape column ("h=32/8 d=192/128 groups=4/8 varlen",
 * "w13 T=128 ... M=1024"); plain key=value items, ',' or space separated, work too.
 * Every value is checked before anything is allocated: integer syntax and range, the
 * op's rules (GQA divides, k of E, groups), the int32 index limits of the API, and the
 * total size, which also keeps every later int64 product from overflowing.
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

void kb_case_shape(kb_case *c) {
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
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    long long lo = kind == K_FLAG ? 0 : 1, hi = kind == K_FLAG ? 1 : INT32_MAX;
    if (end == v || *end || errno == ERANGE || x < lo || x > hi)
        KB_FAIL("--shape: %s=%s: expected an integer from %lld to %lld", key, v, lo, hi);
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
