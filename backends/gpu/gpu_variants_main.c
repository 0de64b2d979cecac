/*
 * backends/gpu/gpu_variants_main.c — kp-gpu-variants, a build-time tool: prints the
 * kernel variants an ahead-of-time backend must build, one per line:
 *
 *     <source under kernels/> TAB <-D options> TAB <entry points, space-separated>
 *
 * usage: kp-gpu-variants cuda|hip
 *
 * The profiles are those the plugins report at run time (kp_gpu_build_profile, also
 * used by their tests), with no tuning file: tuned tiles that were not built fall back
 * to these defaults at run time.
 */
#include "gpu_variants.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void print_variant(void *user, const char *source, const char *options, const char *kernels) {
    (void)user;
    printf("%s\t%s\t%s\n", source, options, kernels);
}

int main(int argc, char **argv) {
    kp_gpu_profile p;
    kp_device_info info;
    if (argc != 2 || kp_gpu_build_profile(argv[1], &info, &p) != 0) {
        fprintf(stderr, "usage: %s cuda|hip\n", argv[0]);
        return 2;
    }
    kp_gpu_variants_enumerate(kp_gpu_stub_host(), &p, print_variant, NULL);
    return ferror(stdout) ? 1 : 0;
}
