/* tests/list_gpu.h — X(name) per test; no include guard (see test_list.h). */
X(gpu_launch_args_in_order_and_overflow_reported)
X(gpu_prefill_plan_geometry_and_arguments)
X(gpu_tuned_tile_not_built_falls_back_to_default)
X(gpu_decode_splits_use_scratch_and_combine)
X(gpu_grouped_gemm_decode_runs_the_small_kernel)
X(gpu_variant_lists_are_complete_and_distinct)
X(gpu_attention_tiles_fit_each_profile)
X(gpu_index_width_limits_refuse_before_planning)
