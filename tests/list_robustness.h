/* tests/list_robustness.h — X(name) per test; no include guard (see test_list.h). */
/* test_robustness_limits.c */
XB(robust_moe_forward_workspace_at_any_offset)
X(robust_moe_forward_workspace_bytes_overflow)
X(robust_moe_forward_workspace_size_overflow)
X(robust_cpu_moe_forward_past_index_width)
X(robust_cpu_decode_past_index_width)
X(robust_cpu_gate_past_index_width)
X(robust_outputs_must_not_self_overlap)
X(robust_dlpack_views_past_their_memory)
/* test_robustness.c */
X(robust_tuning_file_whole_lines)
X(robust_tuning_file_not_regular)
X(robust_tuning_file_bounded)
X(robust_tuning_parse_keeps_callers_strtok)
X(robust_tuning_file_read_once_per_reset)
X(robust_cpu_threads_capped)
X(robust_init_shutdown_cycles_keep_the_heap_flat)
X(robust_setuid_ignores_file_variables)
