/* tests/list_tile_mma.h — X(name) per test; no include guard (see test_list.h). */
/* test_tile_mma_layout.c */
X(tile_mma_amd_map_offsets_contiguous_aligned)
X(tile_mma_amd_mfma4_matches_ptx_layout)
X(tile_mma_amd_mfma4_groups_independent)
