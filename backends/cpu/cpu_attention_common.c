/* backends/cpu/cpu_attention_common.c — placeholder, being written. */
typedef int kp_placeholder_cpu_attention_common;
