/* tests/list_ep.h — X(name) per test; no include guard (see test_list.h). */
X(ep_create_rejects_bad_options)
X(ep_transport_missing_or_mpi_not_initialised)
X(ep_calls_reject_null)
X(ep_nccl_rccl_library_missing_is_unavailable)
X(ep_cuda_nccl_one_rank_real_library)
X(ep_capacity_cpu_steps_match_the_spec)
X(ep_forward_async_one_rank_fake_nccl)
