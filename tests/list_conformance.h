/* tests/list_conformance.h — XB(name) per KP_CONFORMANCE test; no include guard. */
#include "list_conf_attention.h"
#include "list_conf_moe.h"
#include "list_conf_fp8.h"
