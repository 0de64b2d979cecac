/* tests/ref/ref_moe.c — placeholder, being written. */
typedef int kp_placeholder_ref_moe;
