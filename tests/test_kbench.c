/*
 * tests/test_kbench.c — kbench and kport-info as a user runs them: every output format,
 * --shape for every op on every backend, --list-shapes, the model presets, --compare and
 * --plot, format-1 results, --tune on a tiny space, the build tree's plugins found with
 * no environment. Timings are not judged here (kbench is the benchmark; tests never
 * time); the structure, the shapes and the correctness flags are. The datasheet peak
 * table and the row-ceiling rule are tested white-box.
 */
#include "kp_test.h"
#include "kbench.h"

#include <math.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef KPORT_HAVE_JANSSON
#include <jansson.h>
#endif

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    CHECK_MSG(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    CHECK(s && fread(s, 1, (size_t)n, f) == (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

static char *temp_dir(void) {
    char tmpl[] = "/tmp/kport-kbench-XXXXXX";
    CHECK(mkdtemp(tmpl) != NULL);
    return strdup(tmpl);
}

/* Runs `env` `tool` args in dir; stdout and stderr land in dir/stdout, dir/stderr. */
static int run_in(const char *dir, const char *env, const char *tool, const char *args) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd %s && %s %s %s > stdout 2> stderr", dir, env, tool, args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void need_kbench(void) {
    if (!KPORT_KBENCH_PATH[0]) KP_SKIP("kbench not built: no libjansson (Debian: libjansson-dev; bash ci/setup), or -Dkbench=disabled");
}

/* kbench on the cpu backend, quietly */
static int kbench(const char *dir, const char *args) {
    char a[3072];
    need_kbench();
    snprintf(a, sizeof a, "--quiet %s", args);
    return run_in(dir, "KPORT_BACKEND=cpu", KPORT_KBENCH_PATH, a);
}

static char *file_in(const char *dir, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return slurp(path);
}

static bool exists_in(const char *dir, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

static void check_contains_all(const char *text, const char *const *needles, size_t n) {
    for (size_t i = 0; i < n; i++) CHECK_STR_CONTAINS(text, needles[i]);
}

/* A tiny, fast run: two ops, one sample each. */
#define TINY "--suite quick --op moe_gate,moe_combine --repeat 1 --min-time 0 --max-time 0.05"
/* Given ceilings: no time spent measuring them. */
#define FAST "--repeat 1 --min-time 0 --max-time 0.05 --mem-gbps 10 --peak-tflops 1"

#ifdef KPORT_HAVE_JANSSON
static json_t *load_json(const char *dir, const char *name) {
    char path[512];
    json_error_t e;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    json_t *j = json_load_file(path, 0, &e);
    CHECK_MSG(j != NULL, "%s: %s (line %d)", path, e.text, e.line);
    return j;
}

static const char *jstr(json_t *o, const char *key) {
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}
#endif

KP_TEST(kbench_json_has_every_documented_field) {
#ifdef KPORT_HAVE_JANSSON
    char *dir = temp_dir();
    CHECK_INT_EQ(kbench(dir, TINY " --format json --out run.json"), 0);
    json_t *run = load_json(dir, "run.json"), *row;
    static const char *const top[] = {"kbench", "kport_version", "git_commit", "date", "suite", "machine",
                                      "wall_s", "backends", "rooflines", "rows"};
    static const char *const roof[] = {"backend", "device", "memory_gbps", "memory_method", "compute_tflops",
                                       "compute_method", "fp8_tflops", "f32_tflops", "datasheet_memory_gbps",
                                       "kernel_level"};
    static const char *const fields[] = {"op", "backend", "device", "dtype", "shape", "status", "ok", "median_ms",
                                         "p10_ms", "p90_ms", "min_ms", "max_ms", "tflops", "gbps", "roofline_pct",
                                         "bound", "unit", "flops", "bytes", "rel_err", "tol", "note", "reason",
                                         "runs_per_sample", "timer", "samples", "kernel"};
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++) CHECK_MSG(json_object_get(run, top[i]), "no %s", top[i]);
    CHECK_INT_EQ(json_integer_value(json_object_get(run, "kbench")), 2);
    json_t *r0 = json_array_get(json_object_get(run, "rooflines"), 0);
    for (size_t i = 0; i < sizeof roof / sizeof roof[0]; i++) CHECK_MSG(json_object_get(r0, roof[i]), "no %s", roof[i]);
    size_t i;
    CHECK_INT_EQ(json_array_size(json_object_get(run, "rows")), 2);
    json_array_foreach(json_object_get(run, "rows"), i, row) {
        for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++)
            CHECK_MSG(json_object_get(row, fields[f]), "row %zu has no %s", i, fields[f]);
        CHECK_STR_EQ(jstr(row, "status"), "ok"); /* the row passed its float64 check */
        CHECK(json_is_true(json_object_get(row, "ok")));
        CHECK_STR_EQ(jstr(row, "unit"), "copy"); /* gate and combine: memory ops */
        CHECK(strncmp(jstr(row, "kernel"), "cpu:", 4) == 0); /* kp_op_kernel's name */
    }
    json_decref(run);
    free(dir);
#else
    need_kbench();
#endif
}

KP_TEST(kbench_markdown_and_csv) {
    char *dir = temp_dir();
    CHECK_INT_EQ(kbench(dir, TINY), 0);
    char *md = file_in(dir, "stdout");
    static const char *const md_parts[] = {"| op |", "| kernel |", "| cpu:", "moe_gate", "moe_combine", "% roofline", "copy GB/s",
                                           "host f32 FMA loop", "memory (copy)"};
    check_contains_all(md, md_parts, sizeof md_parts / sizeof md_parts[0]);
    free(md);
    CHECK_INT_EQ(kbench(dir, TINY " --format csv"), 0);
    char *csv = file_in(dir, "stdout");
    CHECK(strncmp(csv, "op,shape,dtype,backend,device,median_ms,", 40) == 0); /* a header row first */
    CHECK_STR_CONTAINS(csv, "\nmoe_combine,T=");
    CHECK_STR_CONTAINS(csv, ",memory,copy,true,ok,");
    free(csv);
    free(dir);
}

#ifdef KPORT_HAVE_JANSSON
/* One small shape per op; kbench's canonical shape string for it; the dtype (NULL: bf16). */
static const struct {
    const char *op, *spec, *shape, *dtype;
} op_shapes[] = {
    {"attention_prefill", "b=2,s_q=64,h_q=4,h_kv=2,d=64,varlen=1", "b=2 s_q=64 s_k=64 h=4/2 d=64 causal=1 varlen", NULL},
    {"attention_decode", "b=2,s_k=100,h_q=8,h_kv=2,d=64,bs=16", "b=2 s_q=1 s_k=100 h=8/2 d=64 bs=16", NULL},
    {"mla_decode", "b=2,s_k=130,h_q=16", "b=2 s_q=1 s_k=130 h_q=16 d=576/512", NULL},
    {"moe_gate", "T=33,E=64,k=6", "T=33 E=64 k=6 groups=4/8", NULL},
    {"moe_align", "T=33,E=16,k=4,block_size=16", "T=33 E=16 k=4 bs=16", NULL},
    {"grouped_gemm", "T=16,E=8,k=2,N=96,K=256", "T=16 E=8 k=2 M=32 N=96 K=256", NULL},
    {"moe_combine", "T=20,k=4,hidden=160", "T=20 k=4 hidden=160", NULL},
    {"moe_forward", "T=8 E=8 k=2 hidden=256 inter=128 n_group=1 topk_group=1 scoring=softmax",
     "T=8 E=8 k=2 hidden=256 inter=128 groups=1/1 softmax", NULL},
    {"quantize_fp8", "T=33,K=384", "T=33 K=384", NULL},
    {"attention_decode", "b=2,s_k=100,h_q=8,h_kv=2,d=64,bs=16", "b=2 s_q=1 s_k=100 h=8/2 d=64 bs=16", "fp8"},
    {"mla_decode", "b=2,s_k=130,h_q=16", "b=2 s_q=1 s_k=130 h_q=16 d=576/512", "fp8"},
    {"grouped_gemm", "T=16,E=8,k=2,N=96,K=256", "T=16 E=8 k=2 M=32 N=96 K=256", "fp8"},
    /* the masked [E, max_m, K] layout: expert 3 of 8 rows each, counts clamped to it */
    {"grouped_gemm", "T=16,E=8,k=2,N=96,K=256,max_m=3", "T=16 E=8 k=2 M=32 N=96 K=256 max_m=3", NULL},
    {"grouped_gemm", "T=16,E=8,k=2,N=96,K=256,max_m=3", "T=16 E=8 k=2 M=32 N=96 K=256 max_m=3", "w8a8"},
};
#endif

KP_TEST(kbench_shape_runs_every_op_on_every_backend) {
#ifdef KPORT_HAVE_JANSSON
    char *dir = temp_dir(), args[1024];
    need_kbench();
    for (size_t i = 0; i < sizeof op_shapes / sizeof op_shapes[0]; i++) {
        snprintf(args, sizeof args, "--quiet --backend all " FAST " --op %s --shape '%s' --dtype %s --format json "
                 "--out r.json", op_shapes[i].op, op_shapes[i].spec, op_shapes[i].dtype ? op_shapes[i].dtype : "bf16");
        CHECK_INT_EQ(run_in(dir, "", KPORT_KBENCH_PATH, args), 0);
        json_t *run = load_json(dir, "r.json"), *b, *row;
        size_t j, k;
        json_array_foreach(json_object_get(run, "backends"), j, b) { /* a row on each backend that has a device */
            if (!json_is_true(json_object_get(b, "available")) || json_integer_value(json_object_get(b, "devices")) < 1)
                continue;
            bool seen = false;
            json_array_foreach(json_object_get(run, "rows"), k, row) {
                if (strcmp(jstr(row, "backend"), jstr(b, "name")) != 0) continue;
                seen = true;
                CHECK_STR_EQ(jstr(row, "op"), op_shapes[i].op);
                CHECK_STR_EQ(jstr(row, "shape"), op_shapes[i].shape);
                CHECK_STR_EQ(jstr(row, "dtype"), op_shapes[i].dtype ? op_shapes[i].dtype : "bf16");
                CHECK_MSG(strcmp(jstr(row, "status"), "ok") == 0, "%s on %s: %s: %s", op_shapes[i].op,
                          jstr(row, "backend"), jstr(row, "status"), jstr(row, "reason"));
            }
            CHECK_MSG(seen, "no %s row on backend %s", op_shapes[i].op, jstr(b, "name"));
        }
        json_decref(run);
    }
    free(dir);
#else
    need_kbench();
#endif
}

/* Every bad --shape is a usage error (exit 2) naming the problem, and writes nothing. */
KP_TEST(kbench_shape_rejects_bad_values) {
    static const struct {
        const char *args, *message;
    } bad[] = {
        {"--op grouped_gemm --shape T=0", "T=0: expected an integer from 1 to 2147483647"},
        {"--op grouped_gemm --shape T=12x", "T=12x: expected an integer"},
        {"--op grouped_gemm --shape T=9223372036854775808", "expected an integer"},
        {"--op grouped_gemm --shape Q=3", "'Q=3' is not a key=value of grouped_gemm"},
        {"--op grouped_gemm --shape T", "'T' is not a key=value of grouped_gemm"},
        {"--op attention_decode --shape h_q=8,h_kv=3", "h_q 8 is not a multiple of h_kv 3"},
        {"--op attention_prefill --shape causal=2", "causal=2: expected an integer from 0 to 1"},
        {"--op moe_gate --shape E=16,k=20", "k 20 exceeds the 8 experts of the kept groups"},
        {"--op moe_gate --shape E=60", "n_group 8 must divide E 60"},
        {"--op moe_gate --shape scoring=tanh", "scoring=tanh: expected sigmoid or softmax"},
        {"--op grouped_gemm --shape E=1024", "E 1024 must be <= 512"},
        {"--op grouped_gemm --shape T=2147483647", "must fit the API's int32 row indices"},
        {"--op attention_prefill --shape b=65536,s_q=65536", "must fit the API's int32 sequence offsets"},
        {"--op grouped_gemm --shape E=512,N=2147483647,K=2147483647", "more than any device has"},
        {"--op grouped_gemm --shape w13,T=4,k=2,M=9", "M=9 is not T*k = 8"},
        {"--op mla_decode --shape d=128", "d is fixed at 576 for mla_decode"},
        {"--op grouped_gemm --dtype fp8 --shape K=100", "multiples of the 128-wide FP8 scale blocks"},
        {"--op moe_gate --dtype fp8 --shape T=4", "only grouped_gemm, moe_forward, attention_decode and mla_decode"},
        {"--op quantize_fp8 --shape K=100", "K 100 is not a multiple of the 128-column groups"},
        {"--op grouped_gemm,moe_gate --shape T=1", "--shape takes exactly one --op and no --suite"},
        {"--shape T=1", "--shape takes exactly one --op"},
        {"--op grouped_gemm --suite llama --shape T=1", "no --suite"},
        {"--op nosuch --shape T=1", "unknown op 'nosuch'"},
    };
    char *dir = temp_dir(), args[512];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(args, sizeof args, "%s --format json --out never.json", bad[i].args);
        CHECK_MSG(kbench(dir, args) == 2, "%s: not a usage error", bad[i].args);
        char *err = file_in(dir, "stderr");
        CHECK_MSG(strstr(err, bad[i].message), "%s: expected '%s', got: %s", bad[i].args, bad[i].message, err);
        free(err);
        CHECK_MSG(!exists_in(dir, "never.json"), "%s: a report was written", bad[i].args);
    }
    free(dir);
}

/* A row's shape column, pasted into --shape, names the same case. */
KP_TEST(kbench_shape_accepts_a_rows_shape_column) {
    static const struct {
        const char *op, *shape;
    } rows[] = {
        {"grouped_gemm", "w13 T=128 E=256 k=8 M=1024 N=4096 K=7168"},
        {"grouped_gemm", "T=128 E=32 k=8 M=1024 N=4096 K=7168 max_m=128"},
        {"attention_decode", "b=32 s_q=1 s_k=4096 h=128/128 d=192/128 bs=64"},
        {"attention_prefill", "b=2 s_q=512 s_k=512 h=8/2 d=128 causal=1 varlen"},
        {"moe_forward", "T=16 E=16 k=8 hidden=1024 inter=256 groups=2/4"},
        {"moe_gate", "T=4096 E=128 k=8 groups=1/1 softmax"},
        {"mla_decode", "b=128 s_q=2 s_k=8192 h_q=64 d=576/512 varlen"},
    };
    char *dir = temp_dir(), args[512], want[512];
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        snprintf(args, sizeof args, "--list --op %s --shape '%s'", rows[i].op, rows[i].shape);
        CHECK_INT_EQ(kbench(dir, args), 0);
        char *out = file_in(dir, "stdout");
        snprintf(want, sizeof want, "| %s | %s | bf16 |", rows[i].op, rows[i].shape);
        CHECK_STR_CONTAINS(out, want);
        free(out);
    }
    free(dir);
}

KP_TEST(kbench_list_shapes_names_every_key) {
    char *dir = temp_dir();
    CHECK_INT_EQ(kbench(dir, "--list-shapes all"), 0);
    char *out = file_in(dir, "stdout");
    static const char *const parts[] = {
        "attention_prefill:", "| s_k | = s_q |", "| h_kv | = h_q |", "| dv | = d |", "attention_decode:",
        "| block_size | 16 |", "mla_decode:", "moe_gate:", "| scoring | sigmoid |", "moe_align:", "grouped_gemm:",
        "e.g. kbench --op grouped_gemm --shape T=4096,E=256,k=8,N=4096,K=7168", "moe_combine:", "| hidden | 7168 |",
        "moe_forward:", "| inter | 2048 |", "quantize_fp8:", "e.g. kbench --op quantize_fp8 --shape T=4096,K=7168"};
    check_contains_all(out, parts, sizeof parts / sizeof parts[0]);
    free(out);
    CHECK_INT_EQ(kbench(dir, "--list-shapes nosuch"), 2);
    CHECK_INT_EQ(kbench(dir, "--peaks"), 0); /* and the datasheet table GPU rows are judged by */
    out = file_in(dir, "stdout");
    CHECK_STR_CONTAINS(out, "| NVIDIA | sm_90 | NVIDIA H200 | 989.5 | 1979 | 67 | 4800 | NVIDIA H200 Tensor Core GPU datasheet");
    CHECK_STR_CONTAINS(out, "| AMD | gfx942 | * (arch default) |");
    free(out);
    free(dir);
}

/* The presets carry each model's config.json dimensions (CPU scaling shrinks only
 * batch, heads, experts and tokens, never these). */
KP_TEST(kbench_presets_have_the_models_dimensions) {
    char *dir = temp_dir();
    CHECK_INT_EQ(kbench(dir, "--list --suite qwen3-moe,mixtral"), 0);
    char *out = file_in(dir, "stdout");
    static const char *const parts[] = {
        /* Qwen3-235B-A22B: 64/4 heads of 128, hidden 4096, experts of 1536, 128 experts top 8 */
        "b=64 s_q=1 s_k=4096 h=64/4 d=128 bs=16 | bf16 | Qwen3-235B-A22B",
        "T=4096 E=128 k=8 groups=1/1 softmax | bf16 | Qwen3-235B-A22B", "N=3072 K=4096 | bf16 | Qwen3-235B-A22B",
        "N=4096 K=1536 | fp8 | Qwen3-235B-A22B", "hidden=4096 inter=1536 groups=1/1 softmax",
        /* Qwen3-30B-A3B: 32/4 heads, hidden 2048, experts of 768 */
        "h=32/4 d=128 bs=16 | bf16 | Qwen3-30B-A3B", "N=1536 K=2048 | bf16 | Qwen3-30B-A3B",
        "N=2048 K=768 | bf16 | Qwen3-30B-A3B", "hidden=2048 inter=768 groups=1/1 softmax",
        /* Mixtral-8x7B: 32/8 heads, hidden 4096, experts of 14336, 8 experts top 2 */
        "b=64 s_q=1 s_k=4096 h=32/8 d=128 bs=16 | bf16 | Mixtral-8x7B", "T=4096 E=8 k=2 groups=1/1 softmax",
        "N=28672 K=4096", "N=4096 K=14336", "hidden=4096 inter=14336 groups=1/1 softmax"};
    check_contains_all(out, parts, sizeof parts / sizeof parts[0]);
    free(out);
    free(dir);
}

KP_TEST(kbench_presets_run_on_every_backend) {
#ifdef KPORT_HAVE_JANSSON
    char *dir = temp_dir();
    need_kbench();
    CHECK_INT_EQ(run_in(dir, "", KPORT_KBENCH_PATH,
                        "--quiet --backend all " FAST " --suite qwen3-moe,mixtral --op moe_gate,moe_align,moe_combine "
                        "--format json --out r.json"),
                 0);
    json_t *run = load_json(dir, "r.json"), *row;
    size_t i, n = 0;
    json_array_foreach(json_object_get(run, "rows"), i, row) {
        CHECK_MSG(strcmp(jstr(row, "status"), "ok") == 0, "%s %s on %s: %s", jstr(row, "op"), jstr(row, "shape"),
                  jstr(row, "backend"), jstr(row, "reason"));
        n++;
    }
    /* per device: 5 token counts x (3 ops of Qwen3-235B, combine of Qwen3-30B (its gate and
     * align shapes are 235B's), 3 of Mixtral) */
    CHECK_MSG(n >= 35 && n % 35 == 0, "%zu rows", n);
    json_decref(run);
    free(dir);
#else
    need_kbench();
#endif
}

KP_TEST(kbench_compare_and_plot) {
    char *dir = temp_dir();
    CHECK_INT_EQ(kbench(dir, TINY " --format json --out a.json"), 0);
    CHECK_INT_EQ(kbench(dir, TINY " --format json --out b.json --seed 2"), 0);
    CHECK_INT_EQ(kbench(dir, "--compare a.json b.json"), 0);
    char *cmp = file_in(dir, "stdout");
    CHECK_STR_CONTAINS(cmp, "| moe_gate | T=");
    CHECK_STR_CONTAINS(cmp, "| moe_combine | T=");
    CHECK_STR_CONTAINS(cmp, "Geometric mean speedup of B over A");
    free(cmp);
    CHECK_INT_EQ(kbench(dir, "--compare a.json b.json --format json"), 0);
    cmp = file_in(dir, "stdout");
    CHECK_STR_CONTAINS(cmp, "\"geomean_speedup\": ");
    CHECK_STR_CONTAINS(cmp, "\"a_label\": \"cpu (");
    CHECK_STR_CONTAINS(cmp, "\"b_kernel\": \"cpu:");
    free(cmp);
    CHECK(kbench(dir, "--compare a.json missing.json") == 1); /* a clear failure, not a crash */
    char *err = file_in(dir, "stderr");
    CHECK_STR_CONTAINS(err, "cannot open missing.json");
    free(err);
    int plot = kbench(dir, "--from a.json --plot chart.svg"), speed = kbench(dir, "--compare a.json b.json --plot s.png");
    if (!KPORT_KBENCH_CAN_PLOT) { /* no matplotlib at build time: said plainly */
        CHECK_INT_EQ(plot, 1);
        err = file_in(dir, "stderr");
        CHECK_STR_CONTAINS(err, "plots need python3 with matplotlib");
        free(err);
        free(dir);
        return;
    }
    CHECK_INT_EQ(plot, 0);
    CHECK_INT_EQ(speed, 0);
    char *svg = file_in(dir, "chart.svg"), *roof = file_in(dir, "chart-roofline.svg"), *png = file_in(dir, "s.png");
    CHECK_STR_CONTAINS(svg, "<svg");
    CHECK_STR_CONTAINS(svg, "moe_gate"); /* text stays text */
    CHECK_STR_CONTAINS(svg, "% of roofline");
    CHECK_STR_CONTAINS(roof, "arithmetic intensity");
    CHECK(memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0);
    free(svg), free(roof), free(png);
    free(dir);
}

/* Results written by format 1 (bench/results) still load, re-emit and compare. */
KP_TEST(kbench_reads_format_1_results) {
    char *dir = temp_dir(), args[1024];
    const char *old = KPORT_SOURCE_ROOT "/bench/results/2026-11-28-h200-opencl-deepseek-v3.json";
    snprintf(args, sizeof args, "--from %s --format md", old);
    CHECK_INT_EQ(kbench(dir, args), 0);
    char *md = file_in(dir, "stdout");
    CHECK_STR_CONTAINS(md, "| grouped_gemm | w13 T=4096 E=256 k=8 M=32768 N=4096 K=7168 | bf16 | opencl | NVIDIA H200 |");
    CHECK_STR_CONTAINS(md, "70 rows:");
    free(md);
    snprintf(args, sizeof args, "--compare %s %s", old, KPORT_SOURCE_ROOT "/bench/results/2026-11-28-h200-cuda-deepseek-v3.json");
    CHECK_INT_EQ(kbench(dir, args), 0);
    md = file_in(dir, "stdout");
    CHECK_STR_CONTAINS(md, "| mla_decode | b=128 s_q=1 s_k=4096 h_q=16 d=576/512 | bf16 |");
    free(md);
    free(dir);
}

/* JSON comes through a library: non-ASCII survives, bad files get a clear message. */
KP_TEST(kbench_json_input_is_checked) {
    char *dir = temp_dir(), path[512];
    static const struct {
        const char *name, *text, *message;
    } files[] = {
        {"utf8.json",
         "{\"kbench\": 2, \"rows\": [{\"op\": \"moe_gate\", \"device\": \"Ger\\u00e4t \\u4e00\", \"backend\": \"cpu\","
         " \"shape\": \"T=1\", \"dtype\": \"bf16\", \"status\": \"ok\", \"median_ms\": 1.5}]}",
         NULL},
        {"broken.json", "{\"kbench\": 2, \"rows\": [", "not valid JSON"},
        {"other.json", "{\"name\": \"x\"}", "not a kbench report"},
        {"future.json", "{\"kbench\": 99, \"rows\": []}", "kbench format 99 is newer"},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        FILE *f = fopen(path, "w");
        CHECK(f && fputs(files[i].text, f) >= 0 && fclose(f) == 0);
    }
    CHECK_INT_EQ(kbench(dir, "--from utf8.json --format md"), 0);
    char *md = file_in(dir, "stdout");
    CHECK_STR_CONTAINS(md, "| moe_gate | T=1 | bf16 | cpu | Ger\xc3\xa4t \xe4\xb8\x80 | - | 1.5 |");
    free(md);
    for (size_t i = 1; i < sizeof files / sizeof files[0]; i++) {
        char args[256];
        snprintf(args, sizeof args, "--from %s", files[i].name);
        CHECK_INT_EQ(kbench(dir, args), 1);
        char *err = file_in(dir, "stderr");
        CHECK_MSG(strstr(err, files[i].message), "%s: expected '%s', got: %s", files[i].name, files[i].message, err);
        free(err);
    }
    CHECK_INT_EQ(kbench(dir, "--from /dev/null"), 1);
    char *err = file_in(dir, "stderr");
    CHECK_STR_CONTAINS(err, "not a regular file");
    free(err);
    free(dir);
}

KP_TEST(kbench_tune_writes_the_tuning_file) {
    char *dir = temp_dir(), env[600], path[512];
    need_kbench();
    snprintf(path, sizeof path, "%s/tuning.txt", dir);
    snprintf(env, sizeof env, "KPORT_TUNING_FILE=%s KPORT_BACKEND=cpu", path);
    /* a tiny space: one CPU parameter, two candidates, timed on moe_combine */
    CHECK_INT_EQ(run_in(dir, env, KPORT_KBENCH_PATH,
                        "--quiet --tune --tune-param cpu.parallel_grain=1,2@moe_combine --repeat 1 --min-time 0"),
                 0);
    char *tuning = slurp(path);
    CHECK_STR_CONTAINS(tuning, ";cpu;parallel_grain;"); /* vendor;arch;device;kernel;param;value */
    free(tuning);
    free(dir);
}

/* build/tools/kport-info and kbench find build/backends/<name>/libkport-<name>.so through
 * build/core/kport, with no KPORT_PLUGIN_PATH. */
KP_TEST(tools_find_the_build_trees_plugins) {
#ifdef KPORT_HAVE_JANSSON
    char names[] = KPORT_BUILT_PLUGINS, *save, *dir = temp_dir(), want[512];
    const char *env = "env -u KPORT_PLUGIN_PATH -u KPORT_BACKEND";
    if (!names[0]) KP_SKIP("no plugin is built in this configuration");
    CHECK_INT_EQ(run_in(dir, env, KPORT_KPORT_INFO_PATH, "--json"), 0);
    json_t *info = load_json(dir, "stdout"), *b;
    for (char *name = strtok_r(names, " ", &save); name; name = strtok_r(NULL, " ", &save)) {
        size_t i;
        bool found = false, available = false;
        snprintf(want, sizeof want, "/backends/%s/libkport-%s.so", name, name);
        json_array_foreach(json_object_get(info, "backends"), i, b) {
            if (strcmp(jstr(b, "name"), name) != 0) continue;
            found = true, available = json_is_true(json_object_get(b, "available"));
            CHECK_MSG(strstr(jstr(b, "path"), want), "%s loaded from %s", name, jstr(b, "path"));
        }
        CHECK_MSG(found, "kport-info did not find the %s plugin", name);
        if (strcmp(name, "opencl") != 0) continue;
        /* kbench too: it lists opencl's cases, or says why the backend it found is unavailable */
        CHECK_INT_EQ(run_in(dir, env, KPORT_KBENCH_PATH, "--backend opencl --list"), available ? 0 : 1);
        char *out = file_in(dir, available ? "stdout" : "stderr");
        CHECK_STR_CONTAINS(out, available ? "(opencl):" : "opencl backend unavailable");
        free(out);
    }
    json_decref(info);
    free(dir);
#else
    need_kbench();
#endif
}

/* ---- white-box: the datasheet table and the ceiling rule ---- */

KP_TEST(kbench_peaks_resolve_through_the_fallback_chain) {
    /* the device's own row, as CUDA and as OpenCL name the vendor */
    const kb_peak *p = kb_peak_lookup("NVIDIA", "sm_90", "NVIDIA H200");
    CHECK(p && strcmp(p->device, "NVIDIA H200") == 0 && p->mem_gbps == 4800 && p->bf16_tflops == 989.5);
    CHECK(kb_peak_lookup("NVIDIA Corporation", "sm_90", "NVIDIA H200") == p);
    CHECK_STR_CONTAINS(p->source, "datasheet");
    /* a device the table does not name: its arch's default */
    p = kb_peak_lookup("NVIDIA Corporation", "sm_90", "NVIDIA Fake 9000");
    CHECK(p && strcmp(p->device, "*") == 0 && strcmp(p->arch, "sm_90") == 0 && p->fp8_tflops == 1979);
    p = kb_peak_lookup("NVIDIA", "sm_80", "NVIDIA A100-SXM4-40GB");
    CHECK(p && p->mem_gbps == 1555 && p->fp8_tflops == 0); /* no FP8 units on Ampere */
    /* AMD: HIP's arch, and OpenCL's device name that is the arch */
    p = kb_peak_lookup("AMD", "gfx942", "AMD Instinct MI300X");
    CHECK(p && p->bf16_tflops == 1307.4 && p->mem_gbps == 5300);
    p = kb_peak_lookup("Advanced Micro Devices, Inc.", "OpenCL C 2.0", "gfx90a:sramecc+:xnack-");
    CHECK(p && strcmp(p->arch, "gfx90a") == 0 && strcmp(p->device, "*") == 0);
    p = kb_peak_lookup("Intel(R) Corporation", "OpenCL C 3.0", "Intel(R) Data Center GPU Max 1550");
    CHECK(p && strcmp(p->arch, "xe-hpc") == 0 && p->mem_gbps == 3276.8);
    /* the end of the chain: nothing, rather than a guess */
    CHECK(kb_peak_lookup("NVIDIA", "sm_120", "NVIDIA Fake 9000") == NULL);
    CHECK(kb_peak_lookup("AMD", "gfx1100", "AMD Radeon Fake") == NULL);
    CHECK(kb_peak_lookup("Mesa", "OpenCL C 1.2", "llvmpipe") == NULL);
    /* every row states its source, and an arch default exists for every arch listed */
    int n;
    const kb_peak *t = kb_peak_table(&n);
    for (int i = 0; i < n; i++) {
        CHECK_MSG(t[i].source && t[i].source[0] && t[i].bf16_tflops > 0 && t[i].f32_tflops > 0 && t[i].mem_gbps > 0,
                  "row %d (%s)", i, t[i].device);
        CHECK_MSG(kb_peak_lookup(t[i].vendor, t[i].arch, "no such device"), "no default for %s", t[i].arch);
    }
}

static kb_row judged(const kb_roofline *r, kp_op op, kp_dtype dt, kp_dtype wdt, double flops, double bytes,
                     double ms) {
    kb_case c = {.op = op, .dtype = dt, .wdtype = wdt};
    kb_row row = {.status = KB_ROW_OK, .flops = flops, .bytes = bytes, .median_ms = ms};
    row.tflops = flops / (ms * 1e-3) * 1e-12, row.gbps = bytes / (ms * 1e-3) * 1e-9;
    kb_roofline_classify(r, &c, &row);
    return row;
}

#define CHECK_NEAR(a, b) CHECK_MSG(fabs((a) - (b)) <= 1e-9 * fabs(b), "%.12g != %.12g", (double)(a), (double)(b))

/* A row is judged against min(unit peak, intensity x copy bandwidth), the unit chosen
 * by op and dtype; decode and the memory ops against copy bandwidth alone. */
KP_TEST(kbench_rows_are_judged_against_their_unit) {
    kb_roofline h200 = {.mem_gbps = 4000, .peak_tflops = 989.5, .fp8_tflops = 1979, .f32_tflops = 67};
    /* a GEMM at 1000 FLOP/byte (ridge of bf16: 247): compute-bound on the bf16 matrix units */
    kb_row r = judged(&h200, KP_OP_GROUPED_GEMM, KP_BF16, KP_BF16, 1e12, 1e9, 2.0);
    CHECK_STR_EQ(r.bound, "compute");
    CHECK_STR_EQ(r.unit, "bf16 matrix");
    CHECK_NEAR(r.roofline_pct, 100.0 * 500 / 989.5);
    /* FP8 weights: the FP8 peak; f32: the FMA peak */
    r = judged(&h200, KP_OP_MOE_FORWARD, KP_BF16, KP_FP8_E4M3, 1e12, 1e9, 2.0);
    CHECK_STR_EQ(r.unit, "fp8 matrix");
    CHECK_NEAR(r.roofline_pct, 100.0 * 500 / 1979);
    r = judged(&h200, KP_OP_ATTENTION_PREFILL, KP_F32, KP_F32, 1e12, 1e9, 20.0);
    CHECK_STR_EQ(r.unit, "f32 FMA");
    CHECK_NEAR(r.roofline_pct, 100.0 * 50 / 67);
    /* the same GEMM at 10 FLOP/byte: under the memory slope, so % of copy bandwidth */
    r = judged(&h200, KP_OP_GROUPED_GEMM, KP_BF16, KP_BF16, 1e10, 1e9, 0.5);
    CHECK_STR_EQ(r.bound, "memory");
    CHECK_STR_EQ(r.unit, "copy");
    CHECK_NEAR(r.roofline_pct, 100.0 * 2000 / 4000);
    /* MLA decode at 250 FLOP/byte, just past the bf16 ridge (247): the matrix units */
    r = judged(&h200, KP_OP_MLA_DECODE, KP_BF16, KP_BF16, 250e9, 1e9, 1.0);
    CHECK_STR_EQ(r.unit, "bf16 matrix");
    /* an FP8 latent cache is read into bf16 math: still the bf16 units, not FP8's */
    r = judged(&h200, KP_OP_MLA_DECODE, KP_BF16, KP_FP8_E4M3, 500e9, 1e9, 1.0);
    CHECK_STR_EQ(r.unit, "bf16 matrix");
    /* paged decode: memory, whatever its intensity */
    r = judged(&h200, KP_OP_ATTENTION_DECODE, KP_BF16, KP_BF16, 1e12, 1e9, 1.0);
    CHECK_STR_EQ(r.unit, "copy");
    CHECK_NEAR(r.roofline_pct, 100.0 * 1000 / 4000);
    /* a CPU: every compute ceiling is the measured f32 FMA peak */
    kb_roofline cpu = {.mem_gbps = 50, .peak_tflops = 0.5, .fp8_tflops = 0.5, .f32_tflops = 0.5, .cpu = true};
    r = judged(&cpu, KP_OP_GROUPED_GEMM, KP_BF16, KP_BF16, 1e11, 1e8, 400.0);
    CHECK_STR_EQ(r.unit, "f32 FMA");
    CHECK_NEAR(r.roofline_pct, 100.0 * 0.25 / 0.5);
    /* a GPU without a table row: no compute %, the bound from >= 64 FLOP/byte */
    kb_roofline unknown = {.mem_gbps = 1000};
    r = judged(&unknown, KP_OP_GROUPED_GEMM, KP_BF16, KP_BF16, 1e12, 1e9, 2.0);
    CHECK_STR_EQ(r.bound, "compute");
    CHECK(r.unit == NULL && r.roofline_pct < 0);
}
