/* tests/list_conf_moe.h — XB(name) per MoE conformance test. */
