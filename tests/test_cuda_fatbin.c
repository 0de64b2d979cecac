/*
 * tests/test_cuda_fatbin.c — the cuda plugin's embedded kernels and launch glue, on any
 * machine (no driver needed): links the backend's internals (cuda_test_deps).
 *
 *  - every embedded variant holds sm_80 and sm_90a SASS and compute_80 PTX (the sm_90a
 *    tier's, sources *_sm90.cl: sm_90a SASS alone), and each
 *    ELF image defines every kernel the variant lists (read with cuda_fatbin.c);
 *  - the embedded table is exactly what the planners enumerate for the cuda profile
 *    (kp_gpu_variants_enumerate), so no op can plan a variant the build left out;
 *  - the kp_gpu_target answers from the table without loading anything: a variant not
 *    embedded (and that NVRTC cannot build: tests/test_cuda_rtc.c has the ones it
 *    can), or a pre-sm_80 device, is KP_ERR_UNSUPPORTED with the reason; grid and
 *    argument limits are refused before the driver is called;
 *  - the fatbin reader refuses truncated and foreign input.
 */
#include "kp_test.h"

#if !defined(KP_CUDA_TESTS)

KP_TEST(cuda_fatbin_archs) { KP_SKIP("cuda backend not built (no cuda.h)"); }
KP_TEST(cuda_fatbin_covers_planner) { KP_SKIP("cuda backend not built (no cuda.h)"); }
KP_TEST(cuda_fatbin_reader_rejects) { KP_SKIP("cuda backend not built (no cuda.h)"); }
KP_TEST(cuda_target_variant_check) { KP_SKIP("cuda backend not built (no cuda.h)"); }
KP_TEST(cuda_target_launch_limits) { KP_SKIP("cuda backend not built (no cuda.h)"); }
KP_TEST(cuda_target_tensor_map_encoding) { KP_SKIP("cuda backend not built (no cuda.h)"); }

#else

#include "backend.h"
#include "cuda_fatbin.h"
#include "cuda_internal.h"
#include "cuda_rtc.h"
#include "gpu_variants.h"
#include "kp_gpu.h"

#if !defined(KP_CU_NO_FATBINS)
#include "kp_cu_fatbins.h"
#define NEED_FATBINS() ((void)0)
#define FATBIN_COUNT KP_CU_FATBIN_COUNT
#else
#define NEED_FATBINS() KP_SKIP("the cuda plugin was built without nvcc: no kernels embedded")
#define FATBIN_COUNT 0
#endif

const kp_host_services *kp_test_fake_host(void); /* tests/test_cuda.c */
const char *kp_test_fake_last_error(void);     /* the fake host's last message */

/* ------------------------------------------------------------------------ */
/* (a) what each fatbin holds                                                */
/* ------------------------------------------------------------------------ */

typedef struct name_list {
    char names[16][128];
    int n;
} name_list;

__attribute__((unused)) /* a build without nvcc embeds no fatbin to read */
static void collect(void *user, const char *name) {
    name_list *l = user;
    if (l->n < 16) snprintf(l->names[l->n++], sizeof l->names[0], "%s", name);
}

__attribute__((unused)) static int listed(const name_list *l, const char *name, size_t len) {
    for (int i = 0; i < l->n; i++)
        if (strlen(l->names[i]) == len && strncmp(l->names[i], name, len) == 0) return 1;
    return 0;
}

KP_TEST(cuda_fatbin_archs) {
    NEED_FATBINS();
#if !defined(KP_CU_NO_FATBINS)
    CHECK(FATBIN_COUNT > 0);
    for (int v = 0; v < FATBIN_COUNT; v++) {
        const kp_cu_fatbin *f = &kp_cu_fatbin_table[v];
        CHECK_MSG(((uintptr_t)f->data & 7) == 0, "variant %d's fatbin is not 8-byte aligned", v);
        kp_cu_fb_image img[16];
        char err[256] = "";
        int n = kp_cu_fatbin_images(f->data, f->size, img, 16, err, sizeof err);
        CHECK_MSG(n > 0 && n <= 16, "%s [%s]: %d images (%s)", f->source, f->options, n, err);
        int sm80 = 0, sm90a = 0, ptx80 = 0;
        for (int i = 0; i < n; i++) {
            char name[32];
            kp_cu_fb_image_name(&img[i], name, sizeof name);
            if (img[i].kind == KP_CU_FB_PTX) {
                ptx80 += strcmp(name, "compute_80") == 0;
                continue;
            }
            CHECK_MSG(img[i].kind == KP_CU_FB_ELF, "%s [%s]: image %d has kind %d", f->source, f->options, i,
                      img[i].kind);
            sm80 += strcmp(name, "sm_80") == 0;
            sm90a += strcmp(name, "sm_90a") == 0;
            CHECK_MSG(!img[i].compressed, "%s [%s]: the %s ELF image is compressed (flags 0x%llx)", f->source,
                      f->options, name, (unsigned long long)img[i].flags);
            name_list defined = {.n = 0};
            int k = kp_cu_elf_kernels(img[i].data, img[i].size, collect, &defined, err, sizeof err);
            CHECK_MSG(k >= 0, "%s [%s] %s: %s", f->source, f->options, name, err);
            /* every kernel the variant lists is defined, and nothing else */
            int want = 0;
            for (const char *p = f->kernels; *p;) {
                size_t len = strcspn(p, " ");
                CHECK_MSG(listed(&defined, p, len), "%s [%s] %s: kernel %.*s is not defined (%d defined)", f->source,
                          f->options, name, (int)len, p, defined.n);
                CHECK_INT_EQ(kp_cu_elf_has_kernel(img[i].data, img[i].size, defined.names[0]), 1);
                want++;
                p += len;
                while (*p == ' ') p++;
            }
            CHECK_MSG(k == want, "%s [%s] %s: %d kernels defined, %d listed (%s)", f->source, f->options, name, k,
                      want, f->kernels);
            CHECK_INT_EQ(kp_cu_elf_has_kernel(img[i].data, img[i].size, "kp_no_such_kernel"), 0);
        }
        const size_t sl = strlen(f->source);
        if (sl > 8 && strcmp(f->source + sl - 8, "_sm90.cl") == 0) { /* the sm_90a tier: sm_90a SASS alone */
            CHECK_MSG(sm80 == 0 && sm90a == 1 && ptx80 == 0, "%s [%s]: sm_80 x%d, sm_90a x%d, compute_80 PTX x%d; "
                      "want sm_90a alone", f->source, f->options, sm80, sm90a, ptx80);
            CHECK(kp_cu_fatbin_pick(img, n, 90)->arch_specific);
            CHECK(kp_cu_fatbin_pick(img, n, 80) == NULL && kp_cu_fatbin_pick(img, n, 100) == NULL);
            continue;
        }
        CHECK_MSG(sm80 == 1 && sm90a == 1 && ptx80 == 1,
                  "%s [%s]: sm_80 x%d, sm_90a x%d, compute_80 PTX x%d; want one of each", f->source, f->options, sm80,
                  sm90a, ptx80);
        /* what the driver would pick: sm_80 SASS on A100 and sm_86, sm_90a on H100/H200,
         * the PTX (JIT) on anything newer; nothing before sm_80 */
        CHECK(kp_cu_fatbin_pick(img, n, 80)->kind == KP_CU_FB_ELF);
        CHECK_INT_EQ(kp_cu_fatbin_pick(img, n, 86)->arch, 80);
        CHECK(kp_cu_fatbin_pick(img, n, 90)->arch_specific);
        CHECK_INT_EQ(kp_cu_fatbin_pick(img, n, 100)->kind, KP_CU_FB_PTX);
        CHECK(kp_cu_fatbin_pick(img, n, 75) == NULL);
        char what[256];
        CHECK_STR_EQ(kp_cu_fatbin_describe(f->data, f->size, what, sizeof what), "sm_80, sm_90a SASS and compute_80 PTX");
    }
#endif
}

/* ------------------------------------------------------------------------ */
/* (b) the table is the planners' list                                       */
/* ------------------------------------------------------------------------ */

typedef struct coverage {
    int listed, missing, kernels_differ;
    char first_missing[512];
} coverage;

static void check_embedded(void *user, const char *source, const char *options, const char *kernels) {
    coverage *c = user;
    (void)kernels; /* unused without nvcc */
    c->listed++;
    int found = -1;
#if !defined(KP_CU_NO_FATBINS)
    for (int v = 0; v < FATBIN_COUNT; v++)
        if (strcmp(kp_cu_fatbin_table[v].source, source) == 0 && strcmp(kp_cu_fatbin_table[v].options, options) == 0)
            found = v;
    if (found >= 0 && strcmp(kp_cu_fatbin_table[found].kernels, kernels) != 0) c->kernels_differ++;
#endif
    if (found < 0 && c->missing++ == 0)
        snprintf(c->first_missing, sizeof c->first_missing, "%s [%s]", source, options);
}

KP_TEST(cuda_fatbin_covers_planner) {
    NEED_FATBINS();
    kp_device_info info;
    kp_gpu_profile p;
    CHECK_INT_EQ(kp_gpu_build_profile("cuda", &info, &p), 0);
    CHECK_INT_EQ(p.warp, 32);
    CHECK_INT_EQ(p.static_local_mem, 48 * 1024);
    CHECK_INT_EQ(p.local_mem, 227 * 1024);
    coverage c = {0, 0, 0, ""};
    kp_gpu_variants_enumerate(kp_gpu_stub_host(), &p, check_embedded, &c);
    CHECK(c.listed > 0);
    CHECK_MSG(c.missing == 0, "%d of %d planner variants are not embedded, e.g. %s", c.missing, c.listed,
              c.first_missing);
    CHECK_INT_EQ(c.kernels_differ, 0);
    CHECK_MSG(c.listed == FATBIN_COUNT, "the planners list %d variants; the plugin embeds %d", c.listed, FATBIN_COUNT);
}

/* ------------------------------------------------------------------------ */
/* The reader on bad input                                                   */
/* ------------------------------------------------------------------------ */

KP_TEST(cuda_fatbin_reader_rejects) {
    char err[256];
    unsigned char buf[256];
    memset(buf, 0, sizeof buf);
    CHECK_INT_EQ(kp_cu_fatbin_images(buf, 8, NULL, 0, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "shorter");
    CHECK_INT_EQ(kp_cu_fatbin_images(buf, sizeof buf, NULL, 0, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "magic");
    /* a header claiming more than is there */
    const uint32_t magic = KP_CU_FATBIN_MAGIC;
    const uint16_t version = 1, hsize = 16;
    const uint64_t body = 4096;
    memcpy(buf, &magic, 4), memcpy(buf + 4, &version, 2), memcpy(buf + 6, &hsize, 2), memcpy(buf + 8, &body, 8);
    CHECK_INT_EQ(kp_cu_fatbin_images(buf, sizeof buf, NULL, 0, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "claims");
    /* an empty container is fine */
    const uint64_t zero = 0;
    memcpy(buf + 8, &zero, 8);
    CHECK_INT_EQ(kp_cu_fatbin_images(buf, 16, NULL, 0, err, sizeof err), 0);
    /* an entry whose payload overruns */
    const uint64_t one_entry = 64;
    const uint32_t ehs = 64;
    const uint64_t payload = 1000;
    memcpy(buf + 8, &one_entry, 8), memcpy(buf + 16 + 4, &ehs, 4), memcpy(buf + 16 + 8, &payload, 8);
    CHECK_INT_EQ(kp_cu_fatbin_images(buf, 80, NULL, 0, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "overrun");
    CHECK_INT_EQ(kp_cu_elf_kernels(buf, sizeof buf, NULL, NULL, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "ELF64");
    char what[256];
    CHECK_STR_CONTAINS(kp_cu_fatbin_describe(buf, 4, what, sizeof what), "unreadable");

#if !defined(KP_CU_NO_FATBINS)
    /* every truncation of a real fatbin is refused or yields fewer images, never a crash */
    const kp_cu_fatbin *f = &kp_cu_fatbin_table[0];
    int full = kp_cu_fatbin_images(f->data, f->size, NULL, 0, NULL, 0);
    CHECK(full >= 3);
    for (size_t cut = 0; cut < f->size; cut += 1 + f->size / 97) {
        int n = kp_cu_fatbin_images(f->data, cut, NULL, 0, NULL, 0);
        CHECK(n == -1);
    }
#endif
}

/* ------------------------------------------------------------------------ */
/* (c) the target, on a made-up device (no driver call is reached)            */
/* ------------------------------------------------------------------------ */

typedef struct fake_device {
    kp_device dev;
    kp_stream stream;
    kp_cu_device cu;
    kp_cu_stream cs;
} fake_device;

static void fake_open(fake_device *f, int cc) {
    memset(f, 0, sizeof *f);
    kp_cu_host = kp_test_fake_host();
    kp_cu_target.host = kp_cu_host;
    f->cu.cc = cc;
    f->cu.smem_optin = cc >= 90 ? 227 * 1024 : cc >= 80 ? 163 * 1024 : 64 * 1024; /* H100/H200, A100 */
    snprintf(f->cu.name, sizeof f->cu.name, "fake sm_%d", cc);
    snprintf(f->dev.info.arch, sizeof f->dev.info.arch, "sm_%d", cc);
    f->dev.info.compute_units = 132;
    f->dev.impl = &f->cu;
    f->stream.device = &f->dev;
    f->stream.impl = &f->cs;
}

KP_TEST(cuda_target_variant_check) {
    fake_device f;
    fake_open(&f, 90);
    kp_gpu_profile p;
    kp_cu_target.profile(&f.stream, &p);
    CHECK_INT_EQ(p.mma, 1);
    CHECK_INT_EQ(p.warp, 32);
    CHECK_INT_EQ(p.static_local_mem, 48 * 1024); /* static __shared__: generation 1's tiles */
    CHECK_INT_EQ(p.local_mem, 227 * 1024);       /* dynamic, opted in: sm_90's maximum */
    CHECK_INT_EQ(p.max_group, 1024);
    CHECK_INT_EQ(p.compute_units, 132);
    CHECK_INT_EQ(p.cpu, 0);
    CHECK(p.info == &f.dev.info);
    /* the profile agrees with the one the build enumerated variants for */
    kp_device_info binfo;
    kp_gpu_profile bp;
    CHECK_INT_EQ(kp_gpu_build_profile("cuda", &binfo, &bp), 0);
    CHECK_INT_EQ(bp.mma, p.mma);
    CHECK_INT_EQ(bp.warp, p.warp);
    CHECK_INT_EQ(bp.local_mem, p.local_mem);
    CHECK_INT_EQ(bp.static_local_mem, p.static_local_mem);
    CHECK_INT_EQ(bp.max_group, p.max_group);

    /* Not embedded: NVRTC builds it at the first launch, when there is an NVRTC. */
    char why[KP_REASON_MAX];
    const kp_status rtc = kp_cu_rtc_check(90, NULL, 0, why, sizeof why) == KP_OK &&
                                  kp_cu_rtc_source("moe/moe_gate.cl", NULL) ? KP_OK : KP_ERR_UNSUPPORTED;
    CHECK_INT_EQ(kp_cu_target.variant_check(&f.stream, "moe/moe_gate.cl", "-DKP_NOT_A_VARIANT"), rtc);
    if (rtc != KP_OK) {
        CHECK_STR_CONTAINS(kp_test_fake_last_error(), "not embedded");
        CHECK_STR_CONTAINS(kp_test_fake_last_error(), "-DKP_NOT_A_VARIANT");
    }
    CHECK_INT_EQ(kp_cu_target.variant_check(&f.stream, "moe/no_such.cl", "-DKP_NOT_A_VARIANT"), KP_ERR_UNSUPPORTED);
    CHECK_STR_CONTAINS(kp_test_fake_last_error(), "not embedded");
    CHECK_STR_CONTAINS(kp_test_fake_last_error(), "-DKP_NOT_A_VARIANT");
#if !defined(KP_CU_NO_FATBINS)
    for (int v = 0; v < FATBIN_COUNT; v++) {
        const kp_cu_fatbin *fb = &kp_cu_fatbin_table[v];
        CHECK_OK(kp_cu_target.variant_check(&f.stream, fb->source, fb->options));
        /* exact strings: one space more is another variant */
        char opts[512];
        snprintf(opts, sizeof opts, "%s ", fb->options);
        CHECK_INT_EQ(kp_cu_target.variant_check(&f.stream, fb->source, opts), rtc);
    }
    /* a device older than sm_80: nothing embedded runs there */
    fake_open(&f, 75);
    kp_cu_target.profile(&f.stream, &p);
    CHECK_INT_EQ(p.mma, 0);
    const kp_cu_fatbin *fb = &kp_cu_fatbin_table[0];
    CHECK_INT_EQ(kp_cu_target.variant_check(&f.stream, fb->source, fb->options), KP_ERR_UNSUPPORTED);
    CHECK_STR_CONTAINS(kp_test_fake_last_error(), "sm_75");
    CHECK_STR_CONTAINS(kp_test_fake_last_error(), "sm_80, sm_90a SASS and compute_80 PTX");
#endif
}

KP_TEST(cuda_target_launch_limits) {
    NEED_FATBINS();
#if !defined(KP_CU_NO_FATBINS)
    fake_device f;
    fake_open(&f, 90);
    const kp_cu_fatbin *fb = &kp_cu_fatbin_table[0];
    char kernel[128];
    snprintf(kernel, sizeof kernel, "%.*s", (int)strcspn(fb->kernels, " "), fb->kernels);
    kp_gpu_launch *l = calloc(1, sizeof *l);
    CHECK(l != NULL);

    kp_gpu_launch_init(l, fb->source, fb->options, kernel);
    for (int i = 0; i < KP_GPU_MAX_ARGS + 1; i++) kp_gpu_arg_buffer(l, NULL);
    CHECK(l->overflow);
    CHECK_INT_EQ(kp_cu_target.launch(&f.stream, l), KP_ERR_INTERNAL);

    kp_gpu_launch_init(l, fb->source, fb->options, kernel);
    l->groups[0] = 1ull << 31;
    CHECK_INT_EQ(kp_cu_target.launch(&f.stream, l), KP_ERR_UNSUPPORTED);
    CHECK_STR_CONTAINS(kp_test_fake_last_error(), "2147483647 x 65535 x 65535");
    l->groups[0] = 1, l->groups[1] = 65536;
    CHECK_INT_EQ(kp_cu_target.launch(&f.stream, l), KP_ERR_UNSUPPORTED);
    l->groups[1] = 1, l->groups[2] = 65536;
    CHECK_INT_EQ(kp_cu_target.launch(&f.stream, l), KP_ERR_UNSUPPORTED);
    l->groups[2] = 1, l->local[0] = 1025;
    CHECK_INT_EQ(kp_cu_target.launch(&f.stream, l), KP_ERR_UNSUPPORTED);
    CHECK_STR_CONTAINS(kp_test_fake_last_error(), "at most 1024");
    l->local[0] = 32, l->local[1] = 64; /* 2048 threads */
    CHECK_INT_EQ(kp_cu_target.launch(&f.stream, l), KP_ERR_UNSUPPORTED);
    l->local[1] = 1, l->local_bytes = 227 * 1024 + 16; /* past sm_90's opt-in maximum */
    CHECK_INT_EQ(kp_cu_target.launch(&f.stream, l), KP_ERR_UNSUPPORTED);
    CHECK_STR_CONTAINS(kp_test_fake_last_error(), "232448 per block");

    kp_gpu_launch_init(l, fb->source, fb->options, "kp_not_in_this_variant");
    CHECK_INT_EQ(kp_cu_target.launch(&f.stream, l), KP_ERR_INTERNAL);
    /* not embedded, and no source for NVRTC (a launch NVRTC could build would reach the
     * driver, which this made-up device has not) */
    kp_gpu_launch_init(l, "moe/no_such.cl", "-DKP_NOT_A_VARIANT", kernel);
    CHECK_INT_EQ(kp_cu_target.launch(&f.stream, l), KP_ERR_UNSUPPORTED);
    free(l);
#endif
}

/* KP_GPU_ARG_TENSOR_MAP on the cuda target: the profile offers the sm_90a tier on sm_90 only
 * and only with the driver's cuTensorMapEncodeTiled; a launch encodes each map from its
 * buffer's address plus byte offset, dims, row stride, box and swizzle (recorded here by a
 * stand-in encoder that then fails, so no driver call follows) and reports the encoder's
 * failure with those inputs; without the encoder the launch is refused, never a crash. */
static struct {
    int calls;
    CUtensorMapDataType dt;
    cuuint32_t rank, box[2], estr[2];
    void *addr;
    cuuint64_t dims[2], stride;
    CUtensorMapInterleave il;
    CUtensorMapSwizzle swz;
    CUtensorMapFloatOOBfill oob;
} enc;
static CUresult CUDAAPI fake_encode(CUtensorMap *m, CUtensorMapDataType dt, cuuint32_t rank, void *addr,
                                    const cuuint64_t *dims, const cuuint64_t *strides, const cuuint32_t *box,
                                    const cuuint32_t *estr, CUtensorMapInterleave il, CUtensorMapSwizzle swz,
                                    CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob) {
    (void)m, (void)l2;
    enc.calls++, enc.dt = dt, enc.rank = rank, enc.addr = addr, enc.il = il, enc.swz = swz, enc.oob = oob;
    enc.dims[0] = dims[0], enc.dims[1] = dims[1], enc.stride = strides[0];
    enc.box[0] = box[0], enc.box[1] = box[1], enc.estr[0] = estr[0], enc.estr[1] = estr[1];
    return CUDA_ERROR_INVALID_VALUE;
}

KP_TEST(cuda_target_tensor_map_encoding) {
    NEED_FATBINS();
#if !defined(KP_CU_NO_FATBINS)
    fake_device f;
    kp_gpu_profile p;
    static kp_cu_syms syms; /* every entry NULL but the encoder */
    syms.cuTensorMapEncodeTiled = fake_encode;
    for (int cc = 80; cc <= 100; cc += 10)
        for (int with = 0; with < 2; with++) {
            fake_open(&f, cc);
            f.cu.cu = with ? &syms : NULL;
            kp_cu_target.profile(&f.stream, &p);
            CHECK_INT_EQ(p.sm90a, cc == 90 && with);
        }
    int v = -1;
    for (int i = 0; i < FATBIN_COUNT; i++)
        if (strcmp(kp_cu_fatbin_table[i].source, "moe/moe_gemm_sm90.cl") == 0) v = i;
    CHECK_MSG(v >= 0, "no sm_90a grouped GEMM among the %d embedded variants", FATBIN_COUNT);
    kp_cu_buffer cb = {.ptr = (CUdeviceptr)0x7f0000100000ull};
    kp_buffer b = {.impl = &cb, .size = 1 << 20};
    kp_gpu_tensor_map m = {.buffer = &b, .byte_offset = 384, .dtype = KP_BF16, .swizzle = KP_GPU_TMAP_SWIZZLE_128B,
                           .dims = {7168, 4096}, .row_stride = 7168 * 2, .box = {64, 128}};
    kp_gpu_launch *l = calloc(1, sizeof *l);
    CHECK(l != NULL);
    kp_gpu_launch_init(l, kp_cu_fatbin_table[v].source, kp_cu_fatbin_table[v].options, "kp_grouped_gemm_sm90");
    l->local[0] = 384;
    kp_gpu_arg_buffer(l, &b);
    kp_gpu_arg_tensor_map(l, &m);
    fake_open(&f, 90);
    f.cu.cu = &syms;
    memset(&enc, 0, sizeof enc);
    CHECK_INT_EQ(kp_cu_target.launch(&f.stream, l), KP_ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(enc.calls, 1);
    CHECK_INT_EQ(enc.dt, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16);
    CHECK_INT_EQ(enc.rank, 2);
    CHECK(enc.addr == (void *)(uintptr_t)(0x7f0000100000ull + 384));
    CHECK(enc.dims[0] == 7168 && enc.dims[1] == 4096 && enc.stride == 7168 * 2);
    CHECK(enc.box[0] == 64 && enc.box[1] == 128 && enc.estr[0] == 1 && enc.estr[1] == 1);
    CHECK_INT_EQ(enc.il, CU_TENSOR_MAP_INTERLEAVE_NONE);
    CHECK_INT_EQ(enc.swz, CU_TENSOR_MAP_SWIZZLE_128B);
    CHECK_INT_EQ(enc.oob, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE); /* zeros past the bounds */
    CHECK_STR_CONTAINS(kp_test_fake_last_error(), "cuTensorMapEncodeTiled for argument 1 of kp_grouped_gemm_sm90");
    CHECK_STR_CONTAINS(kp_test_fake_last_error(), "dims 7168 x 4096, row stride 14336 bytes, box 64 x 128");
    /* an address (kp_device_memory) instead of a buffer; f16 */
    l->args[1].v.tmap.buffer = NULL, l->args[1].v.tmap.address = 0x7f0000200000ull;
    l->args[1].v.tmap.dtype = KP_F16;
    CHECK_INT_EQ(kp_cu_target.launch(&f.stream, l), KP_ERR_INVALID_ARGUMENT);
    CHECK(enc.calls == 2 && enc.dt == CU_TENSOR_MAP_DATA_TYPE_FLOAT16);
    CHECK(enc.addr == (void *)(uintptr_t)(0x7f0000200000ull + 384));
    /* no encoder in this driver: refused before any driver call */
    static kp_cu_syms none;
    f.cu.cu = &none;
    CHECK_INT_EQ(kp_cu_target.launch(&f.stream, l), KP_ERR_UNSUPPORTED);
    CHECK_STR_CONTAINS(kp_test_fake_last_error(), "no cuTensorMapEncodeTiled");
    CHECK_INT_EQ(enc.calls, 2);
    free(l);
#endif
}

#endif /* KP_CUDA_TESTS */
