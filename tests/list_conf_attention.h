/* tests/list_conf_attention.h — XB(name) per attention conformance test. */
