/* backends/cpu/cpu_gemm.c — placeholder, being written. */
typedef int kp_placeholder_cpu_gemm;
