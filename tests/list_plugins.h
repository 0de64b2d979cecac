/* tests/list_plugins.h — X(name) per test; no include guard (see test_list.h). */
/* test_plugins.c */
X(plugin_missing_vendor_library_is_unavailable_with_reason)
X(plugin_wrong_abi_is_refused)
X(plugin_with_null_slot_is_refused)
X(plugin_without_entry_is_refused)
X(plugin_not_a_library_is_refused)
X(plugin_never_loaded_from_current_directory)
X(plugin_fake_backend_lists_devices)
X(plugin_selection_policy)
X(plugin_dispatch_reaches_backend_only_when_valid)
X(plugin_device_mismatch_is_refused)
X(plugin_dlpack_device_type_follows_backend)
X(plugin_wrapped_stream_stays_the_servers)
