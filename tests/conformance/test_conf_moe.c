/* tests/conformance/test_conf_moe.c — placeholder, being written. */
typedef int kp_placeholder_test_conf_moe;
