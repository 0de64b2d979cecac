/* tests/list_cuda.h — X(name) per test; no include guard (see test_list.h). */
X(cuda_plugin_entry)
X(cuda_plugin_init)
X(cuda_plugin_ops)
X(cuda_backend_listed)
X(cuda_ops_dry_run)
X(cuda_buffer_roundtrip)
/* tests/test_cuda_fatbin.c */
X(cuda_fatbin_archs)
X(cuda_fatbin_covers_planner)
X(cuda_fatbin_reader_rejects)
X(cuda_target_variant_check)
X(cuda_target_launch_limits)
X(cuda_target_tensor_map_encoding)
/* tests/test_cuda_rtc.c */
X(cuda_rtc_tuned_tile_cached)
X(cuda_rtc_every_source)
X(cuda_rtc_build_error)
X(cuda_rtc_variant_check)
/* tests/test_cuda_static.c */
X(cuda_static_checks_hold)
X(cuda_static_checks_catch_doctored)
X(cuda_sm90_tile_sass_holds)
X(cuda_sm90_gemm_sass_holds)
X(cuda_sm90_w8a8_gemm_sass_holds)
X(cuda_sm90_tile_selftest_runs)
/* tests/test_cuda_sm90_e4m3.c */
X(cuda_sm90_e4m3_sass_holds)
X(cuda_sm90_e4m3_selftest_runs)
