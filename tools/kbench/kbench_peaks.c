/*
 * tools/kbench/kbench_peaks.c — the GPUs' own ceilings, from their datasheets: dense
 * bf16/f16 matrix, FP8 matrix, f32 FMA (vector) and memory bandwidth. kbench judges GPU
 * rows against these, not against a GEMM of kport's own (which made a weak GEMM look
 * like 87% of the roofline). CPU devices keep kbench's measured FMA peak.
 *
 * Keyed like the tuning table (core/tuning.c): vendor → arch → device name, with the
 * arch's row (device "*") as the default for a device the table does not name. Vendors
 * are matched by their one-word name, since CUDA says "NVIDIA" and OpenCL "NVIDIA
 * Corporation" for the same GPU; AMD's OpenCL names a device by its gfx arch, and Intel's
 * OpenCL reports no arch (a Data Center GPU Max is Xe-HPC), so kb_peak_key derives both. A device with no row gets no compute
 * ceiling (its compute-bound rows show n/a): --peak-tflops supplies one.
 *
 * Every figure is the vendor's datasheet figure, dense: where a datasheet gives only
 * "with sparsity" numbers they are halved. AMD MI250/MI250X figures are per GCD, halved
 * from the card's, because HIP and OpenCL show each GCD as a device of its own.
 */
#include "kbench.h"

#include <string.h>
#include <strings.h>

#define SRC_A100 "NVIDIA A100 Tensor Core GPU datasheet"
#define SRC_L40S "NVIDIA L40S datasheet (sparsity figures halved)"
#define SRC_ADA "NVIDIA Ada Lovelace architecture whitepaper, RTX 4090 (FP32 accumulate)"
#define SRC_H100 "NVIDIA H100 Tensor Core GPU datasheet (sparsity figures halved)"
#define SRC_H200 "NVIDIA H200 Tensor Core GPU datasheet (sparsity figures halved)"
#define SRC_MI200 "AMD Instinct MI200 series datasheets, per GCD (the card's figures halved)"
#define SRC_MI300 "AMD Instinct MI300 series datasheets (dense)"
#define SRC_PVC "Intel Data Center GPU Max 1550 product specifications (128 Xe cores at 1.6 GHz)"

/* TFLOP/s dense, GB/s; fp8 0: no FP8 matrix unit. Device "*": the arch's default. */
static const kb_peak table[] = {
    /* sm_80: the default is the A100 SXM4 80GB */
    {"NVIDIA", "sm_80", "*", 312, 0, 19.5, 2039, SRC_A100},
    {"NVIDIA", "sm_80", "NVIDIA A100-SXM4-80GB", 312, 0, 19.5, 2039, SRC_A100},
    {"NVIDIA", "sm_80", "NVIDIA A100-SXM4-40GB", 312, 0, 19.5, 1555, SRC_A100},
    {"NVIDIA", "sm_80", "NVIDIA A100 80GB PCIe", 312, 0, 19.5, 1935, SRC_A100},
    {"NVIDIA", "sm_80", "NVIDIA A100-PCIE-40GB", 312, 0, 19.5, 1555, SRC_A100},
    /* sm_89: the default is the L40S */
    {"NVIDIA", "sm_89", "*", 362.05, 733, 91.6, 864, SRC_L40S},
    {"NVIDIA", "sm_89", "NVIDIA L40S", 362.05, 733, 91.6, 864, SRC_L40S},
    {"NVIDIA", "sm_89", "NVIDIA GeForce RTX 4090", 165.2, 330.3, 82.6, 1008, SRC_ADA},
    /* sm_90: the default is the H100 SXM5 */
    {"NVIDIA", "sm_90", "*", 989.5, 1979, 67, 3350, SRC_H100},
    {"NVIDIA", "sm_90", "NVIDIA H100 80GB HBM3", 989.5, 1979, 67, 3350, SRC_H100},
    {"NVIDIA", "sm_90", "NVIDIA H100 PCIe", 756.5, 1513, 51, 2000, SRC_H100},
    {"NVIDIA", "sm_90", "NVIDIA H100 NVL", 835.5, 1670.5, 60, 3900, SRC_H100},
    {"NVIDIA", "sm_90", "NVIDIA H200", 989.5, 1979, 67, 4800, SRC_H200},
    {"NVIDIA", "sm_90", "NVIDIA H200 NVL", 835.5, 1670.5, 60, 4800, SRC_H200},
    /* gfx90a: the default is one GCD of an MI250X */
    {"AMD", "gfx90a", "*", 191.5, 0, 23.95, 1638.4, SRC_MI200},
    {"AMD", "gfx90a", "AMD Instinct MI250X", 191.5, 0, 23.95, 1638.4, SRC_MI200},
    {"AMD", "gfx90a", "AMD Instinct MI250", 181.05, 0, 22.65, 1638.4, SRC_MI200},
    {"AMD", "gfx90a", "AMD Instinct MI210", 181, 0, 22.6, 1638.4, "AMD Instinct MI210 datasheet"},
    /* gfx942: the default is the MI300X (one device in SPX mode) */
    {"AMD", "gfx942", "*", 1307.4, 2614.9, 163.4, 5300, SRC_MI300},
    {"AMD", "gfx942", "AMD Instinct MI300X", 1307.4, 2614.9, 163.4, 5300, SRC_MI300},
    {"AMD", "gfx942", "AMD Instinct MI300A", 980.6, 1961.2, 122.6, 5300, SRC_MI300},
    {"AMD", "gfx942", "AMD Instinct MI325X", 1307.4, 2614.9, 163.4, 6000, "AMD Instinct MI325X datasheet (dense)"},
    /* Intel Xe-HPC: the whole two-stack card (a driver that exposes each stack as a
     * device makes it half of this) */
    {"Intel", "xe-hpc", "*", 838.9, 0, 52.4, 3276.8, SRC_PVC},
    {"Intel", "xe-hpc", "Intel(R) Data Center GPU Max 1550", 838.9, 0, 52.4, 3276.8, SRC_PVC},
};

const kb_peak *kb_peak_table(int *n) {
    *n = (int)(sizeof table / sizeof table[0]);
    return table;
}

void kb_peak_key(const char *vendor, const char *arch, const char *name, char *v, size_t vn, char *a, size_t an) {
    snprintf(v, vn, "%s", vendor);
    a[0] = '\0';
    if (strcasestr(vendor, "nvidia")) {
        snprintf(v, vn, "NVIDIA");
        if (strncmp(arch, "sm_", 3) == 0) snprintf(a, an, "%s", arch);
    } else if (strcasestr(vendor, "advanced micro devices") || strcasestr(vendor, "amd")) {
        /* HIP: arch "gfx90a"; AMD's OpenCL: name "gfx90a:sramecc+:xnack-" */
        const char *gfx = strncmp(arch, "gfx", 3) == 0 ? arch : strncmp(name, "gfx", 3) == 0 ? name : "";
        snprintf(v, vn, "AMD");
        snprintf(a, an, "%.*s", (int)strcspn(gfx, ":"), gfx);
    } else if (strcasestr(vendor, "intel")) {
        snprintf(v, vn, "Intel");
        if (strncmp(arch, "xe", 2) == 0) snprintf(a, an, "%s", arch);
        else if (strstr(name, "Data Center GPU Max")) snprintf(a, an, "xe-hpc");
    }
}

const kb_peak *kb_peak_lookup(const char *vendor, const char *arch, const char *name) {
    char v[64], a[64];
    kb_peak_key(vendor, arch, name, v, sizeof v, a, sizeof a);
    const kb_peak *arch_default = NULL;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const kb_peak *p = &table[i];
        if (strcmp(p->vendor, v) != 0 || strcmp(p->arch, a) != 0) continue;
        if (strcmp(p->device, name) == 0) return p;
        if (strcmp(p->device, "*") == 0) arch_default = p;
    }
    return arch_default;
}
