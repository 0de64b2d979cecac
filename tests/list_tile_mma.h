/* tests/list_tile_mma.h — X(name) per test; no include guard (see test_list.h). */
/* test_tile_mma_layout.c */
X(tile_mma_amd_map_offsets_contiguous_aligned)
X(tile_mma_amd_mfma4_matches_ptx_layout)
X(tile_mma_amd_mfma4_groups_independent)
/* test_sm90_layout.c */
X(sm90_desc_fields_match_isa_bit_positions)
X(sm90_desc_kmajor_and_k_advance)
X(sm90_swizzle_matches_isa_figures)
X(sm90_swizzle_is_a_chunk_permutation_without_bank_conflicts)
X(sm90_kmajor_tile_offsets_follow_the_descriptor)
/* test_sm90_attn_layout.c */
X(sm90_attn_accumulator_layout_matches_isa)
X(sm90_attn_rs_a_fragment_matches_isa)
X(sm90_attn_s_accumulator_is_the_p_a_operand)
X(sm90_attn_mnmajor_v_tile_follows_the_descriptor)
/* test_sm90_e4m3_layout.c */
X(sm90_e4m3_k32_steps_read_what_tma_wrote)
X(sm90_e4m3_step_offsets_and_descriptors)
X(sm90_e4m3_accumulator_layout_is_the_isa_fragment_map)
/* test_tile_mma_e4m3_layout.c */
X(tile_mma_e4m3_offsets_match_ptx_k32)
X(tile_mma_e4m3_ldmatrix_moves_k32_fragments)
X(tile_mma_e4m3_decode_path_is_a_times_b)
X(tile_mma_e4m3_f16_bits_exact)
X(wave_tile_e4m3_amd_two_mfma16_per_k32)
/* test_wave_layout.c */
X(wave_tile_amd_mfma16_accumulator_map)
X(wave_tile_layouts_cover_the_tile_rows_in_aligned_runs)
X(wave_tile_amd_acc_to_a_register_exchange_is_the_a_layout)
X(wave_tile_amd_acc_to_a_round_trip)
