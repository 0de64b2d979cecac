/*
 * tests/test_cuda_static.c — the static checks of the cuda plugin's kernels
 * (backends/cuda/check_kernels.py), with no GPU:
 *  - on this build's fatbins: 0 spill bytes, registers and static shared memory within
 *    bounds for every variant and arch (ptxas's reports, kept by build_fatbins.py), and
 *    HMMA and LDGSTS in the generation-2 tensor-core kernels' sm_80 / sm_90a SASS, with
 *    no scalar 16-bit global load in any generation-2 kernel;
 *  - the sm_90a tier's grouped GEMMs: HGMMA (W8A8: QGMMA E4M3), UTMALDG, SYNCS, no spills,
 *    wgmma not serialised;
 *  - each check fails when fed a doctored report or listing, and passes the control.
 */
#include "kp_test.h"

#if !defined(KP_CUDA_TESTS) || defined(KP_CU_NO_FATBINS)
KP_TEST(cuda_static_checks_hold) { KP_SKIP("the cuda plugin was built without nvcc: no kernels to check"); }
KP_TEST(cuda_static_checks_catch_doctored) { KP_SKIP("the cuda plugin was built without nvcc: no checker run"); }
KP_TEST(cuda_sm90_tile_sass_holds) { KP_SKIP("the cuda plugin was built without nvcc: no sm_90a kernels"); }
KP_TEST(cuda_sm90_gemm_sass_holds) { KP_SKIP("the cuda plugin was built without nvcc: no sm_90a kernels"); }
KP_TEST(cuda_sm90_w8a8_gemm_sass_holds) { KP_SKIP("the cuda plugin was built without nvcc: no sm_90a kernels"); }
KP_TEST(cuda_sm90_attn_tile_sass_holds) { KP_SKIP("the cuda plugin was built without nvcc: no sm_90a kernels"); }
KP_TEST(cuda_sm90_attn_prefill_sass_holds) { KP_SKIP("the cuda plugin was built without nvcc: no sm_90a kernels"); }
#else

#include <unistd.h>

/* Runs the checker with args; its exit status, its output in out. */
static int run_check(const char *args, char *out, size_t n) {
    return kp_test_run_python(KPORT_CUDA_CHECK_SCRIPT, args, out, n);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
}

KP_TEST(cuda_static_checks_hold) {
    static char out[65536];
    char args[512];
    snprintf(args, sizeof args, "'%s'", KPORT_CUDA_FATBIN_DIR);
    int rc = run_check(args, out, sizeof out);
    CHECK_MSG(rc == 0, "check_kernels.py exited %d:\n%s", rc, out);
    CHECK_STR_CONTAINS(out, " 0 problems");
    CHECK_STR_CONTAINS(out, "generation-2 SASS listings"); /* and it read some */
    CHECK(strstr(out, " 0 generation-2 SASS listings") == NULL);
}

/* The sm_90a tier's self-test kernel (kernels/common/sm90_selftest.cl, built for sm_90a
 * by kernels/meson.build when kernel checks are on): HGMMA, UTMALDG, SYNCS, no spills. */
KP_TEST(cuda_sm90_tile_sass_holds) {
#ifndef KPORT_SM90_SELFTEST_CUBIN
    KP_SKIP("no sm_90a self-test cubin in this build (no nvcc)");
#else
    static char out[8192];
    char args[1024];
    snprintf(args, sizeof args, "--cubin '%s'", KPORT_SM90_SELFTEST_CUBIN);
    int rc = run_check(args, out, sizeof out);
    CHECK_MSG(rc == 0, "check_kernels.py exited %d:\n%s", rc, out);
    CHECK_STR_CONTAINS(out, "1 kernels of sm90_selftest.cubin: 0 problems");
#endif
}

/* The attention primitives' self-test (kernels/common/sm90_attn_selftest.cl): the same
 * rules, and the P V product really is the register-A form reading V transposed: an HGMMA
 * whose A is a register and whose B descriptor carries .tnspB. */
KP_TEST(cuda_sm90_attn_tile_sass_holds) {
#ifndef KPORT_SM90_ATTN_SELFTEST_CUBIN
    KP_SKIP("no sm_90a attention self-test cubin in this build (no nvcc)");
#else
    static char out[8192];
    char args[1024];
    snprintf(args, sizeof args, "--cubin '%s'", KPORT_SM90_ATTN_SELFTEST_CUBIN);
    int rc = run_check(args, out, sizeof out);
    CHECK_MSG(rc == 0, "check_kernels.py exited %d:\n%s", rc, out);
    CHECK_STR_CONTAINS(out, "1 kernels of sm90_attn_selftest.cubin: 0 problems");
#endif
}

/* Every variant of `source` the build embedded (variants.tsv) passes the checker on its
 * cubin (SASS and resource usage) and its ptxas report; returns how many there were. */
static int check_variants(const char *source) {
    static char out[8192];
    char path[1024], args[1200], line[1024];
    snprintf(path, sizeof path, "%s/variants.tsv", KPORT_CUDA_FATBIN_DIR);
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "%s: not found", path);
    const size_t len = strlen(source);
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        char *src = strchr(line, '\t');
        if (!src || strncmp(src + 1, source, len) != 0 || src[1 + len] != '\t') continue;
        *src = '\0'; /* line: the tag, vNNN */
        snprintf(args, sizeof args, "--cubin '%s/%s.fatbin'", KPORT_CUDA_FATBIN_DIR, line);
        int rc = run_check(args, out, sizeof out);
        CHECK_MSG(rc == 0 && strstr(out, "1 kernels of ") && strstr(out, ": 0 problems"), "%s: exit %d:\n%s", args,
                  rc, out);
        snprintf(args, sizeof args, "--ptxas '%s/%s.ptxas.txt'", KPORT_CUDA_FATBIN_DIR, line);
        rc = run_check(args, out, sizeof out);
        CHECK_MSG(rc == 0, "%s: exit %d:\n%s", args, rc, out);
        n++;
    }
    fclose(f);
    return n;
}

/* Attention prefill on the sm_90a tier (kernels/attention/attention_prefill_sm90.cl), every
 * variant the build embedded (variants.tsv: bf16 and f16 at 64/64, 128/128, 192/128 and 256/256, each with
 * and without the consumers' ping-pong, whose SASS holds BAR.SYNC / BAR.ARV): HGMMA (S = Q K^T from
 * descriptors), the register form with V transposed (O += P V), UTMALDG, SYNCS, no stack or
 * local memory; ptxas neither spilled nor serialised its wgmma. */
KP_TEST(cuda_sm90_attn_prefill_sass_holds) { CHECK_INT_EQ(check_variants("attention/attention_prefill_sm90.cl"), 16); }

/* The sm_90a tier's grouped GEMM (kernels/moe/moe_gemm_sm90.cl), every variant the build
 * embedded (2 dtypes x BN 128 / 256): its sm_90a SASS holds HGMMA, UTMALDG and SYNCS, no
 * stack or local memory, and ptxas neither spilled nor serialised its wgmma. */
KP_TEST(cuda_sm90_gemm_sass_holds) { CHECK_INT_EQ(check_variants("moe/moe_gemm_sm90.cl"), 4); }

/* Its W8A8 kernel (kernels/moe/moe_gemm_fp8_sm90.cl, kp_grouped_gemm_sm90_e4m3; out f32,
 * f16, bf16): QGMMA.*.F32.E4M3.E4M3, UTMALDG, SYNCS, no e4m3 -> f16 unpack, no stack or
 * local memory, no spills, wgmma not serialised. */
KP_TEST(cuda_sm90_w8a8_gemm_sass_holds) { CHECK_INT_EQ(check_variants("moe/moe_gemm_fp8_sm90.cl"), 3); }

#define REPORT_OK                                                                                    \
    "ptxas info    : Compiling entry function 'kp_grouped_gemm_gen2_tiled' for 'sm_90a'\n"          \
    "ptxas info    : Function properties for kp_grouped_gemm_gen2_tiled\n"                          \
    "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"                          \
    "ptxas info    : Used 122 registers, used 1 barriers, 376 bytes cmem[0]\n"
#define SASS_OK                                                                                      \
    "        /*0490*/                   LDGSTS.E.BYPASS.128 [R7], desc[UR4][R2.64] ;\n"               \
    "        /*0550*/                   LDSM.16.M88.4 R8, [R3] ;\n"                                  \
    "        /*0560*/                   HMMA.16816.F32.BF16 R12, R8, R20, R12 ;\n"                   \
    "        /*0570*/                   LDG.E.CONSTANT R4, desc[UR4][R4.64] ;\n"
/* the sm_90a tier: wgmma, TMA, mbarrier waits */
#define SM90_SASS_OK                                                                                 \
    "        /*0560*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR8], R24 ;\n"            \
    "        /*0600*/                   UTMALDG.2D [UR8], [UR4] ;\n"                                  \
    "        /*0700*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR4], R3 ;\n"
/* ... and its e4m3 form */
#define SM90_E4M3_SASS_OK                                                                            \
    "        /*0560*/                   QGMMA.64x128x32.F32.E4M3.E4M3 R24, gdesc[UR8], R24 ;\n"     \
    "        /*0600*/                   UTMALDG.2D [UR8], [UR4] ;\n"                                  \
    "        /*0700*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR4], R3 ;\n"
/* the sm_90a attention tier's O += P V: A (P) from registers, V transposed */
#define SM90_RS_SASS_OK                                                                              \
    "        /*0970*/                   HGMMA.64x128x16.F32.BF16 R24, R132, gdesc[UR4].tnspB, RZ, !UPT ;\n"
/* paged and MLA decode's epilogue: two columns (or four) a store */
#define DEC_TAIL_OK "        /*0980*/                   STG.E.64 desc[UR6][R148.64], R136 ;\n"
/* what attention prefill's loop adds: V by ldmatrix.trans, the row max by quad shuffles */
#define ATTN_SASS_OK                                                                                 \
    "        /*0600*/                   LDSM.16.MT88.2 R8, [R3] ;\n"                                 \
    "        /*0700*/                   SHFL.BFLY PT, R9, R8, 0x1, 0x1f ;\n"

KP_TEST(cuda_static_checks_catch_doctored) {
    char dir[] = "/tmp/kport-static-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256], args[1024];
    static char out[8192];
    static const struct {
        const char *what, *text, *expect; /* expect NULL: passes */
    } reports[] = {
        {"control", REPORT_OK, NULL},
        {"spills",
         "ptxas info    : Compiling entry function 'kp_grouped_gemm_gen2_rows' for 'sm_80'\n"
         "    0 bytes stack frame, 48 bytes spill stores, 48 bytes spill loads\n"
         "ptxas info    : Used 255 registers, used 1 barriers\n",
         "kp_grouped_gemm_gen2_rows (sm_80) spills: 48 bytes stored, 48 loaded"},
        {"registers",
         "ptxas info    : Compiling entry function 'k' for 'sm_90a'\n"
         "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
         "ptxas info    : Used 256 registers, used 1 barriers\n",
         "k (sm_90a) uses 256 registers"},
        {"static smem",
         "ptxas info    : Compiling entry function 'k' for 'sm_80'\n"
         "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
         "ptxas info    : Used 64 registers, used 1 barriers, 61952 bytes smem\n",
         "61952 bytes of static shared memory"},
        {"not a report", "nvcc fatal : something else\n", "not a ptxas -v report"},
        {"wgmma serialised",
         "ptxas info    : (C7514) Potential Performance Loss: wgmma.mma_async instructions are serialized due to "
         "non wgmma instructions reading accumulator registers of  a wgmma between start and end of the pipeline "
         "stage in the function 'kp_grouped_gemm_sm90'\n"
         "ptxas info    : Compiling entry function 'kp_grouped_gemm_sm90' for 'sm_90a'\n"
         "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
         "ptxas info    : Used 168 registers, used 1 barriers\n",
         "wgmma serialised by ptxas: wgmma.mma_async instructions are serialized"},
    };
    for (size_t i = 0; i < sizeof reports / sizeof reports[0]; i++) {
        snprintf(path, sizeof path, "%s/report.txt", dir);
        write_file(path, reports[i].text);
        snprintf(args, sizeof args, "--ptxas '%s'", path);
        int rc = run_check(args, out, sizeof out);
        CHECK_MSG(rc == (reports[i].expect ? 1 : 0), "%s: exit %d:\n%s", reports[i].what, rc, out);
        if (reports[i].expect) CHECK_STR_CONTAINS(out, reports[i].expect);
    }
    static const struct {
        const char *what, *options, *kernel, *text, *expect;
    } listings[] = {
        {"control", "-DKP_DTYPE_BF16", "kp_grouped_gemm_gen2_tiled", SASS_OK, NULL},
        {"no HMMA", "-DKP_DTYPE_BF16", "kp_grouped_gemm_gen2_tiled",
         "        /*0490*/   LDGSTS.E.BYPASS.128 [R7], desc[UR4][R2.64] ;\n"
         "        /*0560*/   FFMA R12, R8, R20, R12 ;\n", "has no HMMA"},
        {"no LDGSTS", "-DKP_DTYPE_BF16", "kp_grouped_gemm_gen2_tiled",
         "        /*0490*/   LDG.E.128 R4, desc[UR4][R2.64] ;\n"
         "        /*0560*/   HMMA.16816.F32.BF16 R12, R8, R20, R12 ;\n", "has no LDGSTS"},
        {"both operands converted: no LDGSTS needed", "-DKP_DTYPE_BF16 -DKP_GG_W_FP8 -DKP_GG_A_F32",
         "kp_grouped_gemm_gen2_tiled",
         "        /*0490*/   LDG.E.64 R4, desc[UR4][R2.64] ;\n"
         "        /*0560*/   HMMA.16816.F32.BF16 R12, R8, R20, R12 ;\n", NULL},
        {"attention control", "-DKP_DTYPE_BF16", "kp_attention_prefill_gen2", SASS_OK ATTN_SASS_OK, NULL},
        {"attention: V not by ldmatrix.trans", "-DKP_DTYPE_BF16", "kp_attention_prefill_gen2",
         SASS_OK "        /*0700*/   SHFL.BFLY PT, R9, R8, 0x1, 0x1f ;\n", "has no LDSM.16.MT88"},
        {"attention: no quad shuffles", "-DKP_DTYPE_BF16", "kp_attention_prefill_gen2",
         SASS_OK "        /*0700*/   LDSM.16.MT88.2 R8, [R3] ;\n", "has no SHFL.BFLY"},
        {"decode control", "-DKP_DTYPE_F16", "kp_attention_decode_gen2", SASS_OK ATTN_SASS_OK DEC_TAIL_OK, NULL},
        {"decode: no LDGSTS", "-DKP_DTYPE_F16", "kp_attention_decode_gen2",
         "        /*0560*/   HMMA.16816.F32 R12, R8, R20, R12 ;\n" ATTN_SASS_OK DEC_TAIL_OK, "has no LDGSTS"},
        {"decode: a 16-bit output element stored alone", "-DKP_DTYPE_F16", "kp_attention_decode_gen2",
         SASS_OK ATTN_SASS_OK DEC_TAIL_OK "        /*0990*/   STG.E.U16 desc[UR6][R150.64+0x2], R11 ;\n",
         "stores 16-bit output elements one at a time (STG.E.U16)"},
        {"MLA: the epilogue's stores not paired", "-DKP_DTYPE_BF16", "kp_mla_decode_gen2",
         SASS_OK ATTN_SASS_OK "        /*0980*/   STG.E desc[UR6][R148.64], R137 ;\n", "has no STG.E.64"},
        {"sm90 control", "", "kp_sm90_selftest", SM90_SASS_OK, NULL},
        {"sm90: mma.sync instead of wgmma", "", "kp_sm90_selftest",
         "        /*0560*/   HMMA.16816.F32.BF16 R12, R8, R20, R12 ;\n"
         "        /*0600*/   UTMALDG.2D [UR8], [UR4] ;\n"
         "        /*0700*/   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR4], R3 ;\n", "has no HGMMA"},
        {"sm90: no TMA", "", "kp_sm90_selftest",
         "        /*0560*/   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR8], R24 ;\n"
         "        /*0700*/   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR4], R3 ;\n", "has no UTMALDG"},
        {"sm90 e4m3 control", "-DKP_DTYPE_BF16", "kp_grouped_gemm_sm90_e4m3", SM90_E4M3_SASS_OK, NULL},
        {"sm90 e4m3: a 16-bit wgmma", "-DKP_DTYPE_BF16", "kp_grouped_gemm_sm90_e4m3", SM90_SASS_OK,
         "has no QGMMA ... E4M3.E4M3"},
        {"sm90 e4m3: operands decoded to f16", "-DKP_DTYPE_BF16", "kp_grouped_gemm_sm90_e4m3",
         SM90_E4M3_SASS_OK "        /*0800*/   F2FP.F16.E4M3.UNPACK_B R4, R4 ;\n", "decodes e4m3 to f16"},
        {"sm90 attention control", "", "kp_sm90_attn_selftest", SM90_SASS_OK SM90_RS_SASS_OK, NULL},
        {"sm90 attention: P V with B K-major", "", "kp_sm90_attn_selftest",
         SM90_SASS_OK "        /*0970*/   HGMMA.64x128x16.F32.BF16 R24, R132, gdesc[UR4], RZ, !UPT ;\n",
         "has no HGMMA with A from registers and B transposed"},
        {"sm90 attention: P V with P from shared memory", "", "kp_sm90_attn_selftest",
         SM90_SASS_OK "        /*0970*/   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR8].tnspB, RZ, !UPT ;\n",
         "has no HGMMA with A from registers and B transposed"},
        {"scalar 16-bit load", "-DKP_DTYPE_BF16", "kp_grouped_gemm_gen2_rows",
         "        /*0490*/   LDG.E.U16.CONSTANT R4, desc[UR4][R2.64] ;\n", "loads 16-bit scalars from global memory (LDG.E.U16)"},
    };
    for (size_t i = 0; i < sizeof listings / sizeof listings[0]; i++) {
        snprintf(path, sizeof path, "%s/sass.txt", dir);
        write_file(path, listings[i].text);
        snprintf(args, sizeof args, "--sass '%s' '--options=%s' --kernel %s", path, listings[i].options,
                 listings[i].kernel);
        int rc = run_check(args, out, sizeof out);
        CHECK_MSG(rc == (listings[i].expect ? 1 : 0), "%s: exit %d:\n%s", listings[i].what, rc, out);
        if (listings[i].expect) CHECK_STR_CONTAINS(out, listings[i].expect);
    }
    snprintf(path, sizeof path, "%s/report.txt", dir), unlink(path);
    snprintf(path, sizeof path, "%s/sass.txt", dir), unlink(path);
    rmdir(dir);
}

#endif
