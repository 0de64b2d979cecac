/* tests/list_conf_rule.h — X(name) per test of tests/test_conf_rule.c (the comparison rule). */
X(conf_rule_rounded_output_passes)
X(conf_rule_one_wrong_element_fails)
X(conf_rule_bound_is_sharp)
X(conf_rule_special_values)
X(conf_rule_rel_l2_alone)
X(conf_rule_index_names)
X(conf_rule_model_fits_naive_gemm)
X(conf_rule_model_fits_naive_attention)
