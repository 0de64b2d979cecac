/* tests/ref/ref_attention.c — placeholder, being written. */
typedef int kp_placeholder_ref_attention;
