/* tests/list_op_kernel.h — X(name) per test; no include guard (see test_list.h). */
/* test_op_kernel.c */
X(op_kernel_gpu_names_the_kernel_the_call_launches)
X(op_kernel_gpu_note_rules)
X(op_kernel_cpu_names_each_simd_level)
X(op_kernel_errors_write_nothing)
X(op_kernel_opencl_follows_the_generation_choice)
