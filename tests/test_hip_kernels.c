/*
 * tests/test_hip_kernels.c — the hip plugin's kernels, with no AMD GPU needed.
 *
 *   hip_code_objects_hold_kernels   each embedded code object (gfx90a, gfx940, gfx1030)
 *                                   is an AMDGPU ELF for its arch holding every kernel
 *                                   its variant lists (read from .symtab here; one object
 *                                   cross-checked with llvm-nm when it is on PATH)
 *   hip_code_objects_cover_variants every variant kp-gpu-variants lists for hip is
 *                                   embedded for all three archs
 *   hip_rtc_gfx908_cached           hiprtc builds real variants for gfx908 (MI100: not
 *                                   embedded, known to ROCm 5.2's comgr) on the CPU; the
 *                                   result goes to the on-disk cache and is read back
 *   hip_rtc_refuses_unknown_isa     gfx942/gfx1100: compiled where the ROCm knows them,
 *                                   else refused with a message naming the arch — never
 *                                   the abort hiprtc of comgr 2.4 does for them
 *   hip_rtc_build_error             a source that does not compile gives
 *                                   KP_ERR_BUILD_FAILED with the compiler's log
 *   hip_variant_check_fake_devices  the target's variant_check on devices that are only
 *                                   descriptions (gfx90a, gfx908, gfx942)
 *
 * Built only with the hip plugin (backends/hip/meson.build links kport_hip_impl).
 */
#include "kp_test.h"

#if defined(KP_HIP_TESTS)

#include "gpu_variants.h"
#include "hip_internal.h"
#include "hip_rtc.h"
#include "kp_gpu.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define EM_AMDGPU_ 224

static const char *const k_archs[] = {"gfx90a", "gfx940", "gfx1030"};

/* EF_AMDGPU_MACH_* (LLVM's AMDGPUUsage) for the archs these tests meet */
static unsigned arch_mach(const char *arch) {
    static const struct {
        const char *arch;
        unsigned mach;
    } t[] = {{"gfx908", 0x030}, {"gfx90a", 0x03f}, {"gfx940", 0x040}, {"gfx1030", 0x036}, {"gfx942", 0x04c}, {"gfx1100", 0x041}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(t[i].arch, arch)) return t[i].mach;
    return 0;
}

/* ---- a test host: the last error kept, the cache dir chosen by the test ---- */

static char g_msg[8192];
static kp_status g_status;
static char g_cache_dir[256];

static kp_status th_set_error(kp_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    g_status = st;
    return st;
}
static kp_status th_add_context(kp_status st, const char *fmt, ...) {
    (void)fmt;
    return st;
}
static void th_log(const char *fmt, ...) {
    if (!getenv("KPORT_LOG")) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}
static const char *th_cache_dir(void) { return g_cache_dir[0] ? g_cache_dir : NULL; }
static int64_t th_tuning(const kp_device_info *dev, const char *kernel, const char *param, int64_t def) {
    (void)dev, (void)kernel, (void)param;
    return def;
}
static const kp_host_services g_host = {.abi_version = KP_BACKEND_ABI_VERSION,
                                        .set_error = th_set_error,
                                        .add_context = th_add_context,
                                        .log = th_log,
                                        .cache_dir = th_cache_dir,
                                        .tuning_get = th_tuning};

static void use_temp_cache(void) {
    snprintf(g_cache_dir, sizeof g_cache_dir, "/tmp/kport-hip-test-XXXXXX");
    CHECK_MSG(mkdtemp(g_cache_dir) != NULL, "mkdtemp: %s", strerror(errno));
}

/* ---- ELF64 code objects ---------------------------------------------------- */

/* Little-endian readers: the code object is ELF64 LSB whatever the host. */
static uint64_t rd(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

typedef struct elf_kernels {
    char names[16][128]; /* global STT_FUNC symbols that also have a "<name>.kd" STT_OBJECT */
    int n;
    unsigned mach;       /* e_flags & EF_AMDGPU_MACH */
} elf_kernels;

/* Fails the test (naming what) unless data is an AMDGPU ELF64 with a symbol table. */
static void elf_read_kernels(const unsigned char *data, size_t size, const char *what, elf_kernels *out) {
    memset(out, 0, sizeof *out);
    CHECK_MSG(size >= 64 && !memcmp(data, "\177ELF", 4) && data[4] == 2 && data[5] == 1,
              "%s: not an ELF64 little-endian file (%zu bytes)", what, size);
    CHECK_MSG(rd(data + 18, 2) == EM_AMDGPU_, "%s: e_machine %u, not EM_AMDGPU", what, (unsigned)rd(data + 18, 2));
    out->mach = (unsigned)rd(data + 48, 4) & 0xffu;
    uint64_t shoff = rd(data + 40, 8), shentsize = rd(data + 58, 2), shnum = rd(data + 60, 2);
    CHECK_MSG(shentsize == 64 && shoff + shnum * 64 <= size, "%s: bad section table", what);
    char funcs[64][128], kds[64][128];
    int nf = 0, nk = 0, have_symtab = 0;
    for (uint64_t i = 0; i < shnum; i++) {
        const unsigned char *sh = data + shoff + i * 64;
        if (rd(sh + 4, 4) != 2) continue; /* SHT_SYMTAB */
        have_symtab = 1;
        uint64_t off = rd(sh + 24, 8), sz = rd(sh + 32, 8), link = rd(sh + 40, 4), ent = rd(sh + 56, 8);
        CHECK_MSG(ent == 24 && off + sz <= size && link < shnum, "%s: bad .symtab", what);
        const unsigned char *strsh = data + shoff + link * 64;
        uint64_t stroff = rd(strsh + 24, 8), strsz = rd(strsh + 32, 8);
        CHECK_MSG(stroff + strsz <= size, "%s: bad .strtab", what);
        for (uint64_t s = off; s + 24 <= off + sz; s += 24) {
            uint64_t name = rd(data + s, 4);
            unsigned info = data[s + 4];
            if (name >= strsz) continue;
            const char *nm = (const char *)data + stroff + name;
            size_t len = strnlen(nm, strsz - name);
            if (len == 0 || len >= 128) continue;
            if ((info & 0xf) == 2 && (info >> 4) == 1 && nf < 64) /* STT_FUNC, STB_GLOBAL */
                snprintf(funcs[nf++], 128, "%.*s", (int)len, nm);
            else if ((info & 0xf) == 1 && len > 3 && !strcmp(nm + len - 3, ".kd") && nk < 64) /* STT_OBJECT */
                snprintf(kds[nk++], 128, "%.*s", (int)(len - 3), nm);
        }
    }
    CHECK_MSG(have_symtab, "%s: no .symtab", what);
    for (int i = 0; i < nf; i++)
        for (int j = 0; j < nk; j++)
            if (!strcmp(funcs[i], kds[j]) && out->n < 16) memcpy(out->names[out->n++], funcs[i], 128);
}

static int elf_has(const elf_kernels *k, const char *name) {
    for (int i = 0; i < k->n; i++)
        if (!strcmp(k->names[i], name)) return 1;
    return 0;
}

/* Every space-separated entry point of list is a kernel of k. */
static void check_kernels_listed(const elf_kernels *k, const char *list, const char *what) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", list);
    int count = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save), count++)
        CHECK_MSG(elf_has(k, t), "%s: kernel %s missing (%d kernels in the object)", what, t, k->n);
    CHECK_MSG(count > 0, "%s: no kernels listed", what);
}

/* A binary from hiprtc: an ELF, or (other ROCm versions) a clang offload bundle
 * holding one; returns the ELF for arch inside it. */
static const unsigned char *rtc_elf(const unsigned char *bin, size_t size, const char *arch, size_t *elf_size) {
    static const char magic[] = "__CLANG_OFFLOAD_BUNDLE__";
    *elf_size = size;
    if (size < sizeof magic - 1 + 8 || memcmp(bin, magic, sizeof magic - 1) != 0) return bin;
    uint64_t n = rd(bin + 24, 8), off = 32;
    for (uint64_t i = 0; i < n && off + 24 <= size; i++) {
        uint64_t eoff = rd(bin + off, 8), esize = rd(bin + off + 8, 8), tlen = rd(bin + off + 16, 8);
        const char *triple = (const char *)bin + off + 24;
        size_t al = strlen(arch);
        if (tlen > al && !memcmp(triple + tlen - al, arch, al) && eoff + esize <= size) {
            *elf_size = esize;
            return bin + eoff;
        }
        off += 24 + tlen;
    }
    kp_test_fail(__FILE__, __LINE__, "hiprtc's bundle has no %s entry", arch);
}

/* "llvm-nm-15" etc.: the first on PATH, or NULL. */
static const char *find_tool(const char *const *names, char *path, size_t len) {
    const char *env = getenv("PATH");
    for (; *names; names++)
        for (const char *p = env; p && *p;) {
            size_t n = strcspn(p, ":");
            snprintf(path, len, "%.*s/%s", (int)n, p, *names);
            if (n && access(path, X_OK) == 0) return path;
            p += n;
            if (*p == ':') p++;
        }
    return NULL;
}

#if KP_HIP_CODE_OBJECTS
#define NEED_CODE_OBJECTS() ((void)0)
#else
#define NEED_CODE_OBJECTS() KP_SKIP("hip: the plugin was built without hipcc (no embedded code objects)")
#endif

KP_TEST(hip_code_objects_hold_kernels) {
    NEED_CODE_OBJECTS();
    CHECK_INT_EQ((int)kp_hip_arch_count, 3);
    for (size_t a = 0; a < 3; a++) CHECK_STR_EQ(kp_hip_archs[a], k_archs[a]);
    int per_arch[3] = {0, 0, 0};
    for (size_t i = 0; i < kp_hip_code_object_count; i++) {
        const kp_hip_code_object *c = &kp_hip_code_objects[i];
        char what[512];
        snprintf(what, sizeof what, "%s (%s) for %s", c->source, c->options, c->arch);
        CHECK_MSG(((uintptr_t)c->data & 7) == 0, "%s: code object not 8-byte aligned", what);
        elf_kernels k;
        elf_read_kernels(c->data, c->size, what, &k);
        CHECK_MSG(k.mach == arch_mach(c->arch), "%s: e_flags mach 0x%x, want 0x%x", what, k.mach, arch_mach(c->arch));
        check_kernels_listed(&k, c->kernels, what);
        for (int a = 0; a < 3; a++) per_arch[a] += !strcmp(c->arch, k_archs[a]);
    }
    CHECK(per_arch[0] > 0);
    CHECK_INT_EQ(per_arch[0], per_arch[1]);
    CHECK_INT_EQ(per_arch[0], per_arch[2]);

    /* The same answer from LLVM's own tool, for the first object of each arch. */
    static const char *const tools[] = {"llvm-nm-15", "llvm-nm", NULL};
    char tool[1024];
    if (!find_tool(tools, tool, sizeof tool)) {
        fprintf(stderr, "  (llvm-nm not on PATH: the cross-check is skipped)\n");
        return;
    }
    for (int a = 0; a < 3; a++) {
        const kp_hip_code_object *c = kp_hip_code_objects;
        while (c->arch && strcmp(c->arch, k_archs[a]) != 0) c++;
        CHECK(c->arch != NULL);
        char file[] = "/tmp/kport-hip-co-XXXXXX";
        int fd = mkstemp(file);
        CHECK(fd >= 0);
        CHECK(write(fd, c->data, c->size) == (ssize_t)c->size);
        close(fd);
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "'%s' --defined-only '%s' 2>&1", tool, file);
        FILE *p = popen(cmd, "r");
        CHECK(p != NULL);
        char line[512], funcs[512] = "";
        while (fgets(line, sizeof line, p)) {
            char addr[64], type[8], name[256];
            if (sscanf(line, "%63s %7s %255s", addr, type, name) == 3 && !strcmp(type, "T"))
                snprintf(funcs + strlen(funcs), sizeof funcs - strlen(funcs), "%s%s", funcs[0] ? " " : "", name);
        }
        int rc = pclose(p);
        unlink(file);
        CHECK_MSG(rc == 0, "%s failed on the %s code object", tool, c->arch);
        elf_kernels k;
        elf_read_kernels(c->data, c->size, c->arch, &k);
        check_kernels_listed(&k, funcs, "llvm-nm's T symbols"); /* every function llvm-nm sees is a kernel here */
        char ours[2048] = "";
        for (int i = 0; i < k.n; i++)
            snprintf(ours + strlen(ours), sizeof ours - strlen(ours), "%s%s", i ? " " : "", k.names[i]);
        for (int i = 0; i < k.n; i++) CHECK_MSG(strstr(funcs, k.names[i]) != NULL, "llvm-nm lacks %s", k.names[i]);
        CHECK_MSG(strlen(funcs) == strlen(ours), "llvm-nm: '%s', ours: '%s'", funcs, ours);
    }
}

typedef struct cover_ctx {
    int variants, missing;
    char first_missing[512];
} cover_ctx;

static void cover_one(void *user, const char *source, const char *options, const char *kernels) {
    cover_ctx *c = user;
    c->variants++;
    for (int a = 0; a < 3; a++) {
        const kp_hip_code_object *co = kp_hip_code_object_find(k_archs[a], source, options);
        if (!co || strcmp(co->kernels, kernels) != 0) {
            if (!c->missing++)
                snprintf(c->first_missing, sizeof c->first_missing, "%s (%s) [%s] for %s", source, options, kernels,
                         k_archs[a]);
        }
    }
    CHECK_MSG(kp_hip_source_find(source) != NULL, "source %s not embedded for hiprtc", source);
}

KP_TEST(hip_code_objects_cover_variants) {
    NEED_CODE_OBJECTS();
    kp_device_info info;
    kp_gpu_profile p;
    CHECK_INT_EQ(kp_gpu_build_profile("hip", &info, &p), 0);
    cover_ctx c = {0, 0, ""};
    kp_gpu_variants_enumerate(kp_gpu_stub_host(), &p, cover_one, &c);
    CHECK(c.variants > 0);
    CHECK_MSG(c.missing == 0, "%d (variant, arch) pairs not embedded, first %s", c.missing, c.first_missing);
    CHECK_INT_EQ((int)kp_hip_code_object_count, 3 * c.variants);
}

/* The first variant of source whose options contain needle (from the planners' list). */
typedef struct pick_ctx {
    const char *source, *needle;
    char options[512], kernels[256];
} pick_ctx;

static void pick_one(void *user, const char *source, const char *options, const char *kernels) {
    pick_ctx *c = user;
    if (c->options[0] || strcmp(source, c->source) != 0 || !strstr(options, c->needle)) return;
    snprintf(c->options, sizeof c->options, "%s", options);
    snprintf(c->kernels, sizeof c->kernels, "%s", kernels);
}

static void pick_variant(pick_ctx *c, const char *source, const char *needle) {
    kp_device_info info;
    kp_gpu_profile p;
    CHECK_INT_EQ(kp_gpu_build_profile("hip", &info, &p), 0);
    memset(c, 0, sizeof *c);
    c->source = source;
    c->needle = needle;
    kp_gpu_variants_enumerate(kp_gpu_stub_host(), &p, pick_one, c);
    CHECK_MSG(c->options[0] || c->kernels[0], "no %s variant with '%s' in the planners' list", source, needle);
}

static void need_rtc(const char *arch) {
    char why[KP_REASON_MAX];
    kp_status st = kp_hip_rtc_check(arch, why, sizeof why);
    if (st == KP_ERR_UNAVAILABLE) KP_SKIP("hip: no hiprtc here: %s", why);
    CHECK_MSG(st == KP_OK, "hiprtc cannot target %s: %s", arch, why);
}

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
    *size = b && fread(b, 1, (size_t)n, f) == (size_t)n ? (size_t)n : 0;
    fclose(f);
    return b;
}

KP_TEST(hip_rtc_gfx908_cached) {
    need_rtc("gfx908");
    use_temp_cache();
    pick_ctx v[2];
    pick_variant(&v[0], "moe/moe_gate.cl", "KP_DTYPE_BF16");
    pick_variant(&v[1], "attention/attention_decode.cl", "ATTN_DQK=128");
    const char *runtime = "HIP test";
    for (int i = 0; i < 2; i++) {
        CHECK_MSG(kp_hip_code_object_find("gfx908", v[i].source, v[i].options) == NULL, "gfx908 is embedded?");
        unsigned char *bin = NULL, *again = NULL;
        size_t size = 0, size2 = 0;
        int cached = -1;
        CHECK_MSG(kp_hip_rtc_build(&g_host, "gfx908", v[i].source, v[i].options, runtime, &bin, &size, &cached) == KP_OK,
                  "hiprtc %s (%s): %s", v[i].source, v[i].options, g_msg);
        CHECK_INT_EQ(cached, 0);
        size_t elf_size = 0;
        const unsigned char *elf = rtc_elf(bin, size, "gfx908", &elf_size);
        elf_kernels k;
        elf_read_kernels(elf, elf_size, "hiprtc gfx908", &k);
        CHECK_MSG(k.mach == arch_mach("gfx908"), "hiprtc gfx908: e_flags mach 0x%x", k.mach);
        check_kernels_listed(&k, v[i].kernels, v[i].source);

        char path[4096];
        CHECK(kp_hip_rtc_cache_path(&g_host, "gfx908", v[i].source, v[i].options, runtime, path, sizeof path));
        CHECK_MSG(strncmp(path, g_cache_dir, strlen(g_cache_dir)) == 0 && strstr(path, "/hip-") != NULL, "%s", path);
        struct stat stt;
        CHECK_MSG(stat(path, &stt) == 0 && (size_t)stt.st_size > size, "cache file %s", path);

        CHECK(kp_hip_rtc_build(&g_host, "gfx908", v[i].source, v[i].options, runtime, &again, &size2, &cached) == KP_OK);
        CHECK_INT_EQ(cached, 1);
        CHECK(size2 == size && memcmp(again, bin, size) == 0);
        free(again);

        /* another runtime version is another entry */
        CHECK(kp_hip_rtc_build(&g_host, "gfx908", v[i].source, v[i].options, "HIP other", &again, &size2, &cached) ==
              KP_OK);
        CHECK_INT_EQ(cached, 0);
        free(again);

        /* a damaged entry is detected and rebuilt */
        size_t fsize = 0;
        unsigned char *file = read_file(path, &fsize);
        CHECK(file && fsize > 64);
        file[fsize - 10] ^= 0x5a;
        FILE *f = fopen(path, "wb");
        CHECK(f && fwrite(file, 1, fsize, f) == fsize);
        fclose(f);
        free(file);
        CHECK(kp_hip_rtc_build(&g_host, "gfx908", v[i].source, v[i].options, runtime, &again, &size2, &cached) == KP_OK);
        CHECK_INT_EQ(cached, 0);
        CHECK(size2 == size);
        free(again);
        free(bin);
    }
}

/* ROCm 5.2's comgr lists neither gfx942 nor gfx1100: hiprtc asked for them aborts the
 * process. A newer ROCm compiles them; either way this test must end normally. */
KP_TEST(hip_rtc_refuses_unknown_isa) {
    need_rtc("gfx908");
    static const char *const archs[] = {"gfx942", "gfx1100", "gfx9999"};
    pick_ctx v;
    pick_variant(&v, "moe/moe_gate.cl", "KP_DTYPE_BF16");
    for (int i = 0; i < 3; i++) {
        char why[KP_REASON_MAX];
        kp_status st = kp_hip_rtc_check(archs[i], why, sizeof why);
        unsigned char *bin = NULL;
        size_t size = 0;
        g_msg[0] = '\0';
        kp_status cst = kp_hip_rtc_compile(&g_host, archs[i], v.source, v.options, &bin, &size);
        if (st == KP_OK) { /* a ROCm whose comgr knows the arch */
            CHECK_MSG(cst == KP_OK, "hiprtc %s: %s", archs[i], g_msg);
            size_t elf_size = 0;
            elf_kernels k;
            const unsigned char *elf = rtc_elf(bin, size, archs[i], &elf_size); /* before elf_size is read */
            elf_read_kernels(elf, elf_size, archs[i], &k);
            check_kernels_listed(&k, v.kernels, archs[i]);
            free(bin);
            continue;
        }
        CHECK_INT_EQ(st, KP_ERR_UNSUPPORTED);
        CHECK_STR_CONTAINS(why, archs[i]);
        CHECK_STR_CONTAINS(why, "ROCm 5.7 or newer");
        CHECK_STR_CONTAINS(why, "gfx90a, gfx940, gfx1030");
        CHECK_INT_EQ(cst, KP_ERR_UNSUPPORTED);
        CHECK_STR_CONTAINS(g_msg, archs[i]);
        CHECK(bin == NULL && size == 0);
    }
}

/* The MFMA tile path is opt-in (tuning "mma" 1 on AMD): its variants are not embedded,
 * so hiprtc builds them, also for an embedded arch. A grouped-GEMM MMA variant for
 * gfx90a (where KP_HAS_MFMA selects v_mfma_f32_4x4x4) compiles and holds both kernels. */
KP_TEST(hip_rtc_mfma_variant_gfx90a) {
    need_rtc("gfx90a");
    const char *opts = "-DKP_DTYPE_BF16 -DKP_GG_MMA -DKP_GG_BM=64 -DKP_GG_BN=64 -DKP_GG_BK=32 -DKP_GG_SM_WG=128";
    unsigned char *bin = NULL;
    size_t size = 0, elf_size = 0;
    g_msg[0] = '\0';
    kp_status st = kp_hip_rtc_compile(&g_host, "gfx90a", "moe/moe_gemm.cl", opts, &bin, &size);
    CHECK_MSG(st == KP_OK, "hiprtc gfx90a MMA variant: %s", g_msg);
    elf_kernels k;
    const unsigned char *elf = rtc_elf(bin, size, "gfx90a", &elf_size); /* before elf_size is read */
            elf_read_kernels(elf, elf_size, "gfx90a MMA", &k);
    check_kernels_listed(&k, "kp_grouped_gemm_tiled kp_grouped_gemm_small", "gfx90a MMA");
    free(bin);
}

KP_TEST(hip_rtc_build_error) {
    need_rtc("gfx908");
    unsigned char *bin = NULL;
    size_t size = 0;
    g_msg[0] = '\0';
    /* two dtypes: kp_dialect.h's #error */
    kp_status st = kp_hip_rtc_compile(&g_host, "gfx908", "moe/moe_gate.cl", "-DKP_DTYPE_F32 -DKP_DTYPE_F16", &bin, &size);
    CHECK_INT_EQ(st, KP_ERR_BUILD_FAILED);
    CHECK_STR_CONTAINS(g_msg, "define at most one of KP_DTYPE_F32");
    CHECK_STR_CONTAINS(g_msg, "gfx908");
    CHECK(bin == NULL);
    st = kp_hip_rtc_compile(&g_host, "gfx908", "moe/no_such_kernel.cl", "", &bin, &size);
    CHECK_INT_EQ(st, KP_ERR_UNSUPPORTED);
    CHECK_STR_CONTAINS(g_msg, "no_such_kernel.cl");
}

/* ---- the target on devices that are only descriptions ---------------------- */

typedef struct fake_hip {
    kp_device dev;
    kp_stream stream;
    kp_hip_device hd;
    kp_hip_stream hs;
} fake_hip;

static void fake_open(fake_hip *f, const char *arch, int warp) {
    memset(f, 0, sizeof *f);
    snprintf(f->dev.info.arch, sizeof f->dev.info.arch, "%s", arch);
    snprintf(f->dev.info.name, sizeof f->dev.info.name, "fake %s", arch);
    snprintf(f->dev.info.backend, sizeof f->dev.info.backend, "hip");
    f->dev.info.subgroup_size = warp;
    f->dev.info.local_mem_bytes = 65536;
    f->dev.info.compute_units = 104;
    f->hd.info = &f->dev.info;
    f->hd.max_group = 1024;
    snprintf(f->hd.runtime, sizeof f->hd.runtime, "HIP test");
    kp_hip_kernels_init(&f->hd);
    f->dev.impl = &f->hd;
    f->stream.device = &f->dev;
    f->stream.impl = &f->hs;
    kp_hip_host = &g_host;
    kp_hip_target.host = &g_host;
}

KP_TEST(hip_variant_check_fake_devices) {
    fake_hip f;
    pick_ctx v;
    pick_variant(&v, "attention/attention_decode.cl", "ATTN_DQK=128");

    fake_open(&f, "gfx90a", 64);
    kp_gpu_profile p;
    kp_hip_target.profile(&f.stream, &p);
    CHECK_INT_EQ(p.warp, 64);
    CHECK_INT_EQ((int)p.local_mem, 65536);
    CHECK_INT_EQ((int)p.max_group, KP_HIP_MAX_GROUP); /* the code objects are built for at most 256 */
    CHECK_INT_EQ(p.mma, 0);
#if KP_HIP_CODE_OBJECTS
    CHECK_INT_EQ(kp_hip_target.variant_check(&f.stream, v.source, v.options), KP_OK);
#endif
    g_msg[0] = '\0';
    CHECK_INT_EQ(kp_hip_target.variant_check(&f.stream, "attention/none.cl", ""), KP_ERR_UNSUPPORTED);
    CHECK_STR_CONTAINS(g_msg, "attention/none.cl");
    kp_hip_kernels_release(&f.hd);

    fake_open(&f, "gfx1030", 32);
    kp_hip_target.profile(&f.stream, &p);
    CHECK_INT_EQ(p.warp, 32);
    kp_hip_kernels_release(&f.hd);

    char why[KP_REASON_MAX];
    kp_status rtc = kp_hip_rtc_check("gfx908", why, sizeof why);
    fake_open(&f, "gfx908", 64); /* not embedded: hiprtc, where there is one */
    g_msg[0] = '\0';
    kp_status st = kp_hip_target.variant_check(&f.stream, v.source, v.options);
    CHECK_MSG(st == (rtc == KP_OK ? KP_OK : KP_ERR_UNSUPPORTED), "gfx908: %d (%s)", (int)st, g_msg);
    kp_hip_kernels_release(&f.hd);

    fake_open(&f, "gfx942", 64);
    rtc = kp_hip_rtc_check("gfx942", why, sizeof why);
    g_msg[0] = '\0';
    st = kp_hip_target.variant_check(&f.stream, v.source, v.options);
    if (rtc == KP_OK) {
        CHECK_INT_EQ(st, KP_OK);
    } else {
        CHECK_INT_EQ(st, KP_ERR_UNSUPPORTED);
        CHECK_STR_CONTAINS(g_msg, "gfx942");
        CHECK_STR_CONTAINS(g_msg, "not embedded");
    }
    kp_hip_kernels_release(&f.hd);
}

#else /* no hip plugin in this build */

#define HIP_NOT_BUILT(name) \
    KP_TEST(name) { KP_SKIP("hip: the plugin is not part of this build"); }
HIP_NOT_BUILT(hip_code_objects_hold_kernels)
HIP_NOT_BUILT(hip_code_objects_cover_variants)
HIP_NOT_BUILT(hip_rtc_gfx908_cached)
HIP_NOT_BUILT(hip_rtc_refuses_unknown_isa)
HIP_NOT_BUILT(hip_rtc_mfma_variant_gfx90a)
HIP_NOT_BUILT(hip_rtc_build_error)
HIP_NOT_BUILT(hip_variant_check_fake_devices)

#endif
