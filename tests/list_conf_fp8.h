/* tests/list_conf_fp8.h — XB(name) per FP8 data-path conformance test (tests/conformance/test_conf_fp8.c,
 * test_conf_w8a8.c). */
XB(conf_kv_cache_store)
XB(conf_kv_cache_store_fp8)
XB(conf_kv_cache_store_fp8_rounding)
XB(conf_kv_cache_store_bad_slot)
XB(conf_quantize_fp8)
XB(conf_quantize_fp8_deepgemm_layouts)
XB(conf_grouped_gemm_w8a8)
XB(conf_grouped_gemm_w8a8_scales)
XB(conf_grouped_gemm_w8a8_quantized)
XB(conf_grouped_gemm_w8a8_long_k)
XB(conf_attn_decode_fp8_kv)
XB(conf_mla_decode_fp8_kv)
