/* tests/header_c11.c — kport.h compiles as strict C11 (-std=c11 -pedantic-errors). */
#include "kport.h"

int kp_header_c11_check(void) { return (int)sizeof(kp_moe_forward_params) > 0 && KP_OP_COUNT == 10; }
