/* tests/list_cpu.h — X(name) per test; no include guard (see test_list.h). */
/* test_cpu.c */
X(cpu_simd_conversions_match_portable)
X(cpu_portable_conversions_round_to_nearest_even)
X(cpu_simd_level_override)
X(cpu_pool_covers_every_index_once)
X(cpu_pool_spinning_and_sleeping_workers_take_every_job)
/* test_cpu_kernels.c */
X(cpu_gemm_every_level_matches_float64)
X(cpu_attention_kernels_every_level_match_float64)
X(cpu_attention_fp8_decode_every_level_every_byte)
