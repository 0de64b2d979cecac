/*
 * tests/test_opencl_spirv.c — the OpenCL backend's SPIR-V path: the modules embedded at
 * build time, the options that select one, the IL build and its fallback to source
 * (KPORT_OPENCL_FORCE_IL on PoCL, which takes no IL), and the cache keys of both.
 * Fixtures and self-test helpers: tests/test_opencl.h.
 */
#include "kp_test.h"

#if !defined(KP_OPENCL_TESTS)

KP_TEST(opencl_spirv_embedded) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_spirv_options_canonical) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_spirv_force_il_falls_back) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_spirv_cache_key) { KP_SKIP("opencl backend not built"); }

#else

#include "test_opencl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* SPIR-V: the embedded modules, the IL path and its fallback to source      */
/* ------------------------------------------------------------------------ */

static const kp_ocl_source *selftest_src(void) { return &kp_ocl_sources[KP_OCL_SRC_COMMON_DIALECT_SELFTEST]; }

/* Every module kernels/meson.build validated is in the plugin, byte for byte. */
KP_TEST(opencl_spirv_embedded) {
    if (!KP_OCL_SPIRV_BUILT) {
        CHECK_INT_EQ(kp_ocl_spirv_count, 0);
        KP_SKIP("built without the SPIR-V tools (clang-15, llvm-spirv-15, spirv-val) or with -Dkernel_checks=false: "
                "no modules, every kernel builds from source");
    }
    CHECK(kp_ocl_spirv_count > 0);
    int selftest_flavours = 0;
    for (size_t i = 0; i < kp_ocl_spirv_count; ++i) {
        const kp_ocl_spirv_module *m = &kp_ocl_spirv_modules[i];
        CHECK_MSG(m->size >= 20 && m->size % 4 == 0, "%s: %zu bytes", m->name, m->size);
        CHECK_MSG(((uintptr_t)m->il & 3) == 0, "%s: not word-aligned", m->name);
        uint32_t magic = (uint32_t)m->il[0] | (uint32_t)m->il[1] << 8 | (uint32_t)m->il[2] << 16 |
                         (uint32_t)m->il[3] << 24;
        CHECK_MSG(magic == 0x07230203u, "%s: magic 0x%08x", m->name, magic);
        /* the spirv-val'd file in the build tree */
        FILE *fp = fopen(m->file, "rb");
        CHECK_MSG(fp != NULL, "%s: %s: %s", m->name, m->file, strerror(errno));
        unsigned char *disk = malloc(m->size + 1);
        size_t got = fread(disk, 1, m->size + 1, fp);
        fclose(fp);
        CHECK_MSG(got == m->size && memcmp(disk, m->il, m->size) == 0, "%s: embedded bytes differ from %s",
                  m->name, m->file);
        free(disk);
        /* keyed by an embedded source and the canonical -D set */
        int known = 0;
        for (int s = 0; s < KP_OCL_SRC_COUNT; ++s) known |= strcmp(kp_ocl_sources[s].name, m->source) == 0;
        CHECK_MSG(known, "%s: source %s is not embedded", m->name, m->source);
        char *defs = NULL, *rest = NULL;
        int no_sg = 0;
        CHECK(kp_ocl_il_split(m->defines, &defs, &rest, &no_sg));
        CHECK_STR_EQ(defs, m->defines);
        CHECK_STR_EQ(rest, "");
        CHECK_INT_EQ(no_sg, 0);
        CHECK_STR_CONTAINS(m->defines, "-DKP_TARGET_OPENCL=1");
        free(defs), free(rest);
        if (strcmp(m->source, "common/dialect_selftest.cl") == 0 &&
            strcmp(m->defines, "-DKP_DTYPE_F32 -DKP_TARGET_OPENCL=1") == 0)
            selftest_flavours |= m->subgroups ? 2 : 1;
    }
    CHECK_INT_EQ(selftest_flavours, 3); /* both flavours of the f32 self-test */
    printf("    %zu SPIR-V modules embedded\n", kp_ocl_spirv_count);
}

/* The -D order an op writes does not matter; compile-time options the modules do not
 * have, or a macro given twice, mean source. */
KP_TEST(opencl_spirv_options_canonical) {
    char *d = NULL, *r = NULL;
    int no_sg = 0;
    CHECK(kp_ocl_il_split("-cl-std=CL1.2 -DKP_TARGET_OPENCL=1 -DZ=1 -DKP_DTYPE_BF16 -DA -cl-mad-enable", &d, &r,
                          &no_sg));
    CHECK_STR_EQ(d, "-DA -DKP_DTYPE_BF16 -DKP_TARGET_OPENCL=1 -DZ=1");
    CHECK_STR_EQ(r, "-cl-mad-enable"); /* build-time: clBuildProgram still gets it */
    CHECK_INT_EQ(no_sg, 0);
    free(d), free(r);
    CHECK(kp_ocl_il_split("-DKP_NO_SUBGROUPS  -DKP_DTYPE_F32 -w", &d, &r, &no_sg));
    CHECK_STR_EQ(d, "-DKP_DTYPE_F32");
    CHECK_STR_EQ(r, "");
    CHECK_INT_EQ(no_sg, 1);
    free(d), free(r);
    CHECK(!kp_ocl_il_split("-DKP_DTYPE_F32 -I/somewhere", &d, &r, &no_sg));
    CHECK(!kp_ocl_il_split("-cl-std=CL2.0 -DKP_DTYPE_F32", &d, &r, &no_sg));
    CHECK(!kp_ocl_il_split("-DN=1 -DKP_DTYPE_F32 -DN=2", &d, &r, &no_sg));
    CHECK(!kp_ocl_il_split("-D N=1", &d, &r, &no_sg));
    if (!KP_OCL_SPIRV_BUILT) KP_SKIP("no SPIR-V modules in this build: lookups not checked");

    ocl_fx f;
    fx_open(&f);
    const kp_ocl_spirv_module *m = kp_ocl_spirv_lookup(f.d, selftest_src(), "-DKP_DTYPE_F32");
    if (f.d->desc.has_inline_ptx) { /* -DKP_HAS_INLINE_PTX=1 is not in any module */
        CHECK(m == NULL);
        fx_close(&f);
        KP_SKIP("NVIDIA: the modules are built without inline PTX, never used here");
    }
    CHECK(m != NULL);
    CHECK_INT_EQ(m->subgroups, f.d->desc.has_khr_subgroups);
    const kp_ocl_spirv_module *nosg = kp_ocl_spirv_lookup(f.d, selftest_src(), "-DKP_NO_SUBGROUPS -DKP_DTYPE_F32");
    CHECK(nosg != NULL && nosg->subgroups == 0);
    /* extra -D (a tile size the build did not compile): no module, source */
    CHECK(kp_ocl_spirv_lookup(f.d, selftest_src(), "-DKP_DTYPE_F32 -DKP_SELFTEST_WG=96") == NULL);
    /* not an embedded source, even under an embedded name */
    kp_ocl_source copy = *selftest_src();
    CHECK(kp_ocl_spirv_lookup(f.d, &copy, "-DKP_DTYPE_F32") == NULL);
    fx_close(&f);
}

/* KPORT_OPENCL_FORCE_IL=1 takes the SPIR-V path on any device. PoCL has no IL: the
 * driver refuses the module, that is logged, and the kernel builds from source and
 * computes right. A device that takes IL builds from the module instead. */
KP_TEST(opencl_spirv_force_il_falls_back) {
    if (!KP_OCL_SPIRV_BUILT) KP_SKIP("no SPIR-V modules in this build");
    ocl_fx f;
    fx_open(&f);
    if (f.d->desc.has_inline_ptx) {
        fx_close(&f);
        KP_SKIP("NVIDIA: no module matches -DKP_HAS_INLINE_PTX=1");
    }
    setenv("KPORT_OPENCL_FORCE_IL", "1", 1);
    g_log[0] = '\0';
    const st_dtype types[] = {ST_F32, ST_F16, ST_BF16};
    for (int i = 0; i < 3; ++i) {
        const kp_ocl_spirv_module *m = kp_ocl_spirv_lookup(f.d, selftest_src(), st_define(types[i]));
        CHECK(m != NULL);
        kp_ocl_build_info info;
        run_selftest_opts(f.d, types[i], 1000, 64, st_define(types[i]), &info); /* KP_SELFTEST_WG: default 64 */
        CHECK(info.il_module != NULL);
        CHECK_STR_EQ(info.il_module, m->name);
        CHECK(info.il_key != 0);
        if (f.d->desc.has_spirv_il && !info.il_fallback) { /* a device that takes it */
            CHECK_INT_EQ(info.origin, KP_OCL_FROM_IL);
            CHECK(info.from_il && info.il_key == info.key);
            continue;
        }
        CHECK_INT_EQ(info.il_fallback, 1);
        CHECK_INT_EQ(info.from_il, 0);
        CHECK_STR_EQ(origin_name(info.origin), "source");
        CHECK(info.key != info.il_key);
        CHECK_STR_CONTAINS(g_log, "refused SPIR-V module");
        CHECK_STR_CONTAINS(g_log, m->name);
        CHECK_MSG(file_size(info.cache_path) > 40, "no source cache entry at %s", info.cache_path);
        char il_path[1024];
        snprintf(il_path, sizeof il_path, "%s/opencl-%016llx.bin", f.cache, (unsigned long long)info.il_key);
        CHECK_MSG(file_size(il_path) < 0, "an IL entry %s was written for a refused module", il_path);
    }
    kp_ocl_cache_stats s = kp_ocl_cache_stats_get(f.d);
    printf("    '%s': IL builds %d, refused %d, source builds %d\n", f.d->desc.info.name, s.il_builds, s.il_failures,
           s.source_builds);
    CHECK_INT_EQ(s.il_builds + s.il_failures, 3);
    CHECK_INT_EQ(s.source_builds, s.il_failures);
    /* a refused module is not tried again on this device: memory */
    int refused = s.il_failures;
    kp_ocl_build_info again = build_selftest(f.d, "-DKP_DTYPE_F32");
    CHECK_STR_EQ(origin_name(again.origin), "memory");
    CHECK_INT_EQ(kp_ocl_cache_stats_get(f.d).il_failures, refused);
    /* a variant no module matches goes straight to source, IL untried */
    kp_ocl_build_info wg96;
    run_selftest_opts(f.d, ST_BF16, 300, 96, "-DKP_DTYPE_BF16 -DKP_SELFTEST_WG=96", &wg96);
    CHECK(wg96.il_module == NULL && wg96.il_key == 0 && !wg96.il_fallback);
    CHECK_INT_EQ(kp_ocl_cache_stats_get(f.d).il_failures, refused);
    /* a new device: tried again, refused again, and the source binary comes from disk */
    if (refused) {
        fx_device_close(&f);
        fx_device_open(&f, f.index);
        kp_ocl_build_info disk = build_selftest(f.d, "-DKP_DTYPE_F32");
        CHECK_INT_EQ(disk.il_fallback, 1);
        CHECK_STR_EQ(origin_name(disk.origin), "disk");
        run_selftest_opts(f.d, ST_F32, 200, 64, "-DKP_DTYPE_F32", NULL);
    }
    unsetenv("KPORT_OPENCL_FORCE_IL");
    fx_close(&f);
}

/* IL and source builds of one variant never share a cache entry. */
KP_TEST(opencl_spirv_cache_key) {
    if (!KP_OCL_SPIRV_BUILT) KP_SKIP("no SPIR-V modules in this build");
    ocl_fx f;
    fx_open(&f);
    const kp_ocl_spirv_module *m = NULL;
    for (size_t i = 0; i < kp_ocl_spirv_count && !m; ++i)
        if (strcmp(kp_ocl_spirv_modules[i].source, selftest_src()->name) == 0) m = &kp_ocl_spirv_modules[i];
    CHECK(m != NULL);
    uint64_t src_key = kp_ocl_program_key(f.d, selftest_src(), "-DKP_DTYPE_F32", NULL);
    uint64_t il_key = kp_ocl_program_key(f.d, selftest_src(), "-DKP_DTYPE_F32", m);
    CHECK(src_key != 0 && il_key != 0);
    CHECK(src_key != il_key);
    /* two modules: two keys */
    const kp_ocl_spirv_module *other = m + 1 < kp_ocl_spirv_modules + kp_ocl_spirv_count ? m + 1 : NULL;
    if (other && other->il != m->il) CHECK(kp_ocl_program_key(f.d, selftest_src(), "-DKP_DTYPE_F32", other) != il_key);
    /* a build without the IL path uses the source key */
    unsetenv("KPORT_OPENCL_FORCE_IL");
    kp_ocl_build_info a = build_selftest(f.d, "-DKP_DTYPE_F32");
    if (!f.d->desc.has_spirv_il) {
        CHECK_INT_EQ(a.key, src_key);
        CHECK(a.il_key == 0 && !a.from_il);
    } else if (a.from_il) {
        CHECK_INT_EQ(a.key, a.il_key);
        CHECK(a.key != src_key);
    } else if (a.il_fallback) { /* the device refused the module: source, and its key */
        CHECK_INT_EQ(a.key, src_key);
        CHECK(a.il_key != src_key);
    }
    fx_close(&f);
}

#endif /* KP_OPENCL_TESTS */
