/*
 * Our own declarations of the subset of the Envoy 1.40.0 dynamic-module C ABI that this project
 * uses. Written from the facts in docs/envoy-abi.md (names, argument order, types, enum values)
 * and Envoy's v1.40.0 `source/extensions/dynamic_modules/abi.h`; every callback declared here is
 * exported by the 1.40.0 binary (abi/envoy-1.40-callbacks.txt). 1.40.0 loads modules with RTLD_NOW, so the
 * module must never *call* a name missing from that list: `make check-symbols` verifies it.
 *
 * Hooks (functions Envoy looks up in the module) are declared as function-pointer typedefs
 * ending in `_fn`; the Rust side asserts each exported hook against its typedef at compile time.
 *
 * ABI version string expected by 1.40.0: "v0.2.0" (docs/envoy-abi.md#loading-and-version).
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- common types (docs/envoy-abi.md#buffers-pointers-and-enums) ----------------------------- */
typedef const char* envoy_dynamic_module_type_abi_version_module_ptr;
typedef const char* envoy_dynamic_module_type_buffer_module_ptr;
typedef const char* envoy_dynamic_module_type_buffer_envoy_ptr;

typedef struct envoy_dynamic_module_type_envoy_buffer {
  envoy_dynamic_module_type_buffer_envoy_ptr ptr;
  size_t length;
} envoy_dynamic_module_type_envoy_buffer;

typedef struct envoy_dynamic_module_type_module_buffer {
  envoy_dynamic_module_type_buffer_module_ptr ptr;
  size_t length;
} envoy_dynamic_module_type_module_buffer;

typedef struct envoy_dynamic_module_type_module_http_header {
  envoy_dynamic_module_type_buffer_module_ptr key_ptr;
  size_t key_length;
  envoy_dynamic_module_type_buffer_module_ptr value_ptr;
  size_t value_length;
} envoy_dynamic_module_type_module_http_header;

typedef struct envoy_dynamic_module_type_envoy_http_header {
  envoy_dynamic_module_type_buffer_envoy_ptr key_ptr;
  size_t key_length;
  envoy_dynamic_module_type_buffer_envoy_ptr value_ptr;
  size_t value_length;
} envoy_dynamic_module_type_envoy_http_header;

typedef enum envoy_dynamic_module_type_log_level {
  envoy_dynamic_module_type_log_level_Trace = 0,
  envoy_dynamic_module_type_log_level_Debug = 1,
  envoy_dynamic_module_type_log_level_Info = 2,
  envoy_dynamic_module_type_log_level_Warn = 3,
  envoy_dynamic_module_type_log_level_Error = 4,
  envoy_dynamic_module_type_log_level_Critical = 5,
  envoy_dynamic_module_type_log_level_Off = 6,
} envoy_dynamic_module_type_log_level;

typedef enum envoy_dynamic_module_type_metrics_result {
  envoy_dynamic_module_type_metrics_result_Success = 0,
  envoy_dynamic_module_type_metrics_result_MetricNotFound = 1,
  envoy_dynamic_module_type_metrics_result_InvalidLabels = 2,
  envoy_dynamic_module_type_metrics_result_Frozen = 3,
} envoy_dynamic_module_type_metrics_result;

typedef enum envoy_dynamic_module_type_http_callout_init_result {
  envoy_dynamic_module_type_http_callout_init_result_Success = 0,
  envoy_dynamic_module_type_http_callout_init_result_MissingRequiredHeaders = 1,
  envoy_dynamic_module_type_http_callout_init_result_ClusterNotFound = 2,
  envoy_dynamic_module_type_http_callout_init_result_DuplicateCalloutId = 3,
  envoy_dynamic_module_type_http_callout_init_result_CannotCreateRequest = 4,
} envoy_dynamic_module_type_http_callout_init_result;

typedef enum envoy_dynamic_module_type_http_callout_result {
  envoy_dynamic_module_type_http_callout_result_Success = 0,
  envoy_dynamic_module_type_http_callout_result_Reset = 1,
  envoy_dynamic_module_type_http_callout_result_ExceedResponseBufferLimit = 2,
} envoy_dynamic_module_type_http_callout_result;

typedef void (*envoy_dynamic_module_type_event_cb)(void* context);

/* ---- program init (docs/envoy-abi.md#loading-and-version) ------------------------------------ */
typedef envoy_dynamic_module_type_abi_version_module_ptr (*envoy_dynamic_module_on_program_init_fn)(void);

/* ---- common callbacks (docs/envoy-abi.md#buffers-pointers-and-enums) ------------------------- */
void envoy_dynamic_module_callback_log_v2(envoy_dynamic_module_type_log_level level,
                                          envoy_dynamic_module_type_module_buffer message,
                                          envoy_dynamic_module_type_module_buffer source_file,
                                          uint32_t source_line);
bool envoy_dynamic_module_callback_log_enabled(envoy_dynamic_module_type_log_level level);
uint32_t envoy_dynamic_module_callback_get_concurrency(void);  /* main thread only */
bool envoy_dynamic_module_callback_is_validation_mode(void);   /* main thread only */
/* Envoy runtime (layered_runtime) lookup; signature from the implementation (docs/envoy-abi.md#buffers-pointers-and-enums). */
bool envoy_dynamic_module_callback_get_runtime_bool(envoy_dynamic_module_type_module_buffer key,
                                                   bool default_value);
uint64_t envoy_dynamic_module_callback_get_runtime_int(envoy_dynamic_module_type_module_buffer key,
                                                      uint64_t default_value);

/* ---- bootstrap extension (docs/envoy-abi.md#bootstrap-extension) ----------------------------- */
typedef void* envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr;
typedef const void* envoy_dynamic_module_type_bootstrap_extension_config_module_ptr;
typedef void* envoy_dynamic_module_type_bootstrap_extension_envoy_ptr;
typedef const void* envoy_dynamic_module_type_bootstrap_extension_module_ptr;
typedef void* envoy_dynamic_module_type_bootstrap_extension_config_scheduler_module_ptr;
typedef void* envoy_dynamic_module_type_bootstrap_extension_timer_module_ptr;

/* hooks (all 17 are required by 1.40.0, docs/envoy-abi.md#bootstrap-hooks) */
typedef envoy_dynamic_module_type_bootstrap_extension_config_module_ptr (
    *envoy_dynamic_module_on_bootstrap_extension_config_new_fn)(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr extension_config_envoy_ptr,
    envoy_dynamic_module_type_envoy_buffer name, envoy_dynamic_module_type_envoy_buffer config);
typedef void (*envoy_dynamic_module_on_bootstrap_extension_config_destroy_fn)(
    envoy_dynamic_module_type_bootstrap_extension_config_module_ptr extension_config_ptr);
typedef envoy_dynamic_module_type_bootstrap_extension_module_ptr (
    *envoy_dynamic_module_on_bootstrap_extension_new_fn)(
    envoy_dynamic_module_type_bootstrap_extension_config_module_ptr extension_config_ptr,
    envoy_dynamic_module_type_bootstrap_extension_envoy_ptr extension_envoy_ptr);
typedef void (*envoy_dynamic_module_on_bootstrap_extension_lifecycle_fn)(
    envoy_dynamic_module_type_bootstrap_extension_envoy_ptr extension_envoy_ptr,
    envoy_dynamic_module_type_bootstrap_extension_module_ptr extension_module_ptr);
typedef void (*envoy_dynamic_module_on_bootstrap_extension_shutdown_fn)(
    envoy_dynamic_module_type_bootstrap_extension_envoy_ptr extension_envoy_ptr,
    envoy_dynamic_module_type_bootstrap_extension_module_ptr extension_module_ptr,
    envoy_dynamic_module_type_event_cb completion_callback, void* completion_context);
typedef void (*envoy_dynamic_module_on_bootstrap_extension_destroy_fn)(
    envoy_dynamic_module_type_bootstrap_extension_module_ptr extension_module_ptr);
typedef void (*envoy_dynamic_module_on_bootstrap_extension_config_scheduled_fn)(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr extension_config_envoy_ptr,
    envoy_dynamic_module_type_bootstrap_extension_config_module_ptr extension_config_module_ptr,
    uint64_t event_id);
typedef void (*envoy_dynamic_module_on_bootstrap_extension_timer_fired_fn)(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr extension_config_envoy_ptr,
    envoy_dynamic_module_type_bootstrap_extension_config_module_ptr extension_config_module_ptr,
    envoy_dynamic_module_type_bootstrap_extension_timer_module_ptr timer_ptr);
typedef void (*envoy_dynamic_module_on_bootstrap_extension_file_changed_fn)(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr extension_config_envoy_ptr,
    envoy_dynamic_module_type_bootstrap_extension_config_module_ptr extension_config_module_ptr,
    envoy_dynamic_module_type_envoy_buffer path, uint32_t events);
typedef void (*envoy_dynamic_module_on_bootstrap_extension_http_callout_done_fn)(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr extension_config_envoy_ptr,
    envoy_dynamic_module_type_bootstrap_extension_config_module_ptr extension_config_module_ptr,
    uint64_t callout_id, envoy_dynamic_module_type_http_callout_result result,
    envoy_dynamic_module_type_envoy_http_header* headers, size_t headers_size,
    envoy_dynamic_module_type_envoy_buffer* body_chunks, size_t body_chunks_size);
typedef uint32_t (*envoy_dynamic_module_on_bootstrap_extension_admin_request_fn)(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr extension_config_envoy_ptr,
    envoy_dynamic_module_type_bootstrap_extension_config_module_ptr extension_config_module_ptr,
    envoy_dynamic_module_type_envoy_buffer method, envoy_dynamic_module_type_envoy_buffer path,
    envoy_dynamic_module_type_envoy_buffer body);
typedef void (*envoy_dynamic_module_on_bootstrap_extension_resource_fn)(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr extension_config_envoy_ptr,
    envoy_dynamic_module_type_bootstrap_extension_config_module_ptr extension_config_module_ptr,
    envoy_dynamic_module_type_envoy_buffer resource_name);

/* callbacks: metrics (define only during config_new; update from any thread) */
envoy_dynamic_module_type_metrics_result
envoy_dynamic_module_callback_bootstrap_extension_config_define_counter(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr config_envoy_ptr,
    envoy_dynamic_module_type_module_buffer name,
    envoy_dynamic_module_type_module_buffer* label_names, size_t label_names_length,
    size_t* counter_id_ptr);
envoy_dynamic_module_type_metrics_result
envoy_dynamic_module_callback_bootstrap_extension_config_define_gauge(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr config_envoy_ptr,
    envoy_dynamic_module_type_module_buffer name,
    envoy_dynamic_module_type_module_buffer* label_names, size_t label_names_length,
    size_t* gauge_id_ptr);
envoy_dynamic_module_type_metrics_result
envoy_dynamic_module_callback_bootstrap_extension_config_define_histogram(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr config_envoy_ptr,
    envoy_dynamic_module_type_module_buffer name,
    envoy_dynamic_module_type_module_buffer* label_names, size_t label_names_length,
    size_t* histogram_id_ptr);
envoy_dynamic_module_type_metrics_result
envoy_dynamic_module_callback_bootstrap_extension_config_increment_counter(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr config_envoy_ptr, size_t id,
    envoy_dynamic_module_type_module_buffer* label_values, size_t label_values_length,
    uint64_t value);
envoy_dynamic_module_type_metrics_result
envoy_dynamic_module_callback_bootstrap_extension_config_set_gauge(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr config_envoy_ptr, size_t id,
    envoy_dynamic_module_type_module_buffer* label_values, size_t label_values_length,
    uint64_t value);
envoy_dynamic_module_type_metrics_result
envoy_dynamic_module_callback_bootstrap_extension_config_increment_gauge(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr config_envoy_ptr, size_t id,
    envoy_dynamic_module_type_module_buffer* label_values, size_t label_values_length,
    uint64_t value);
envoy_dynamic_module_type_metrics_result
envoy_dynamic_module_callback_bootstrap_extension_config_decrement_gauge(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr config_envoy_ptr, size_t id,
    envoy_dynamic_module_type_module_buffer* label_values, size_t label_values_length,
    uint64_t value);
envoy_dynamic_module_type_metrics_result
envoy_dynamic_module_callback_bootstrap_extension_config_record_histogram_value(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr config_envoy_ptr, size_t id,
    envoy_dynamic_module_type_module_buffer* label_values, size_t label_values_length,
    uint64_t value);

/* callbacks: init manager, timers, scheduler, admin, http callout (main thread unless noted) */
void envoy_dynamic_module_callback_bootstrap_extension_config_signal_init_complete(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr extension_config_envoy_ptr);
envoy_dynamic_module_type_bootstrap_extension_timer_module_ptr
envoy_dynamic_module_callback_bootstrap_extension_timer_new(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr extension_config_envoy_ptr);
void envoy_dynamic_module_callback_bootstrap_extension_timer_enable(
    envoy_dynamic_module_type_bootstrap_extension_timer_module_ptr timer_ptr,
    uint64_t delay_milliseconds);
void envoy_dynamic_module_callback_bootstrap_extension_timer_disable(
    envoy_dynamic_module_type_bootstrap_extension_timer_module_ptr timer_ptr);
void envoy_dynamic_module_callback_bootstrap_extension_timer_delete(
    envoy_dynamic_module_type_bootstrap_extension_timer_module_ptr timer_ptr);
envoy_dynamic_module_type_bootstrap_extension_config_scheduler_module_ptr
envoy_dynamic_module_callback_bootstrap_extension_config_scheduler_new(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr extension_config_envoy_ptr);
void envoy_dynamic_module_callback_bootstrap_extension_config_scheduler_commit(  /* any thread */
    envoy_dynamic_module_type_bootstrap_extension_config_scheduler_module_ptr scheduler_module_ptr,
    uint64_t event_id);
void envoy_dynamic_module_callback_bootstrap_extension_config_scheduler_delete(
    envoy_dynamic_module_type_bootstrap_extension_config_scheduler_module_ptr scheduler_module_ptr);
bool envoy_dynamic_module_callback_bootstrap_extension_register_admin_handler(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr extension_config_envoy_ptr,
    envoy_dynamic_module_type_module_buffer path_prefix,
    envoy_dynamic_module_type_module_buffer help_text, bool removable, bool mutates_server_state);
void envoy_dynamic_module_callback_bootstrap_extension_admin_set_response(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr extension_config_envoy_ptr,
    envoy_dynamic_module_type_module_buffer response_body);
envoy_dynamic_module_type_http_callout_init_result
envoy_dynamic_module_callback_bootstrap_extension_http_callout(
    envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr extension_config_envoy_ptr,
    uint64_t* callout_id_out, envoy_dynamic_module_type_module_buffer cluster_name,
    envoy_dynamic_module_type_module_http_header* headers, size_t headers_size,
    envoy_dynamic_module_type_module_buffer body, uint64_t timeout_milliseconds);

/* ---- network filter (docs/envoy-abi.md#network-filter) --------------------------------------- */
typedef void* envoy_dynamic_module_type_network_filter_config_envoy_ptr;
typedef const void* envoy_dynamic_module_type_network_filter_config_module_ptr;
typedef void* envoy_dynamic_module_type_network_filter_envoy_ptr;
typedef const void* envoy_dynamic_module_type_network_filter_module_ptr;
typedef void* envoy_dynamic_module_type_network_filter_scheduler_module_ptr;

typedef enum envoy_dynamic_module_type_on_network_filter_data_status {
  envoy_dynamic_module_type_on_network_filter_data_status_Continue = 0,
  envoy_dynamic_module_type_on_network_filter_data_status_StopIteration = 1,
} envoy_dynamic_module_type_on_network_filter_data_status;

typedef enum envoy_dynamic_module_type_network_connection_close_type {
  envoy_dynamic_module_type_network_connection_close_type_FlushWrite = 0,
  envoy_dynamic_module_type_network_connection_close_type_NoFlush = 1,
  envoy_dynamic_module_type_network_connection_close_type_FlushWriteAndDelay = 2,
  envoy_dynamic_module_type_network_connection_close_type_Abort = 3,
  envoy_dynamic_module_type_network_connection_close_type_AbortReset = 4,
} envoy_dynamic_module_type_network_connection_close_type;

typedef enum envoy_dynamic_module_type_network_connection_event {
  envoy_dynamic_module_type_network_connection_event_RemoteClose = 0,
  envoy_dynamic_module_type_network_connection_event_LocalClose = 1,
  envoy_dynamic_module_type_network_connection_event_Connected = 2,
  envoy_dynamic_module_type_network_connection_event_ConnectedZeroRtt = 3,
} envoy_dynamic_module_type_network_connection_event;

typedef enum envoy_dynamic_module_type_network_read_disable_status {
  envoy_dynamic_module_type_network_read_disable_status_NoTransition = 0,
  envoy_dynamic_module_type_network_read_disable_status_StillReadDisabled = 1,
  envoy_dynamic_module_type_network_read_disable_status_TransitionedToReadEnabled = 2,
  envoy_dynamic_module_type_network_read_disable_status_TransitionedToReadDisabled = 3,
} envoy_dynamic_module_type_network_read_disable_status;

/* hooks: required config_new, config_destroy, new, new_connection, read, write, event, destroy;
 * optional scheduled, above/below watermark (docs/envoy-abi.md#network-filter-hooks) */
typedef envoy_dynamic_module_type_network_filter_config_module_ptr (
    *envoy_dynamic_module_on_network_filter_config_new_fn)(
    envoy_dynamic_module_type_network_filter_config_envoy_ptr filter_config_envoy_ptr,
    envoy_dynamic_module_type_envoy_buffer name, envoy_dynamic_module_type_envoy_buffer config);
typedef void (*envoy_dynamic_module_on_network_filter_config_destroy_fn)(
    envoy_dynamic_module_type_network_filter_config_module_ptr filter_config_ptr);
typedef envoy_dynamic_module_type_network_filter_module_ptr (
    *envoy_dynamic_module_on_network_filter_new_fn)(
    envoy_dynamic_module_type_network_filter_config_module_ptr filter_config_ptr,
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr);
typedef envoy_dynamic_module_type_on_network_filter_data_status (
    *envoy_dynamic_module_on_network_filter_new_connection_fn)(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_network_filter_module_ptr filter_module_ptr);
typedef envoy_dynamic_module_type_on_network_filter_data_status (
    *envoy_dynamic_module_on_network_filter_data_fn)(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_network_filter_module_ptr filter_module_ptr, size_t data_length,
    bool end_stream);
typedef void (*envoy_dynamic_module_on_network_filter_event_fn)(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_network_filter_module_ptr filter_module_ptr,
    envoy_dynamic_module_type_network_connection_event event);
typedef void (*envoy_dynamic_module_on_network_filter_destroy_fn)(
    envoy_dynamic_module_type_network_filter_module_ptr filter_module_ptr);
typedef void (*envoy_dynamic_module_on_network_filter_scheduled_fn)(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_network_filter_module_ptr filter_module_ptr, uint64_t event_id);
typedef void (*envoy_dynamic_module_on_network_filter_watermark_fn)(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_network_filter_module_ptr filter_module_ptr);

/* callbacks: buffers and writes (the connection's worker only) */
size_t envoy_dynamic_module_callback_network_filter_get_read_buffer_size(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr);
size_t envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks_size(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr);
bool envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_envoy_buffer* result_buffer_vector);
bool envoy_dynamic_module_callback_network_filter_drain_read_buffer(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr, size_t length);
size_t envoy_dynamic_module_callback_network_filter_get_write_buffer_size(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr);
void envoy_dynamic_module_callback_network_filter_write(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_module_buffer data, bool end_stream);

/* callbacks: connection control and info */
void envoy_dynamic_module_callback_network_filter_close(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_network_connection_close_type close_type);
void envoy_dynamic_module_callback_network_filter_close_with_details(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_network_connection_close_type close_type,
    envoy_dynamic_module_type_module_buffer details);
envoy_dynamic_module_type_network_read_disable_status
envoy_dynamic_module_callback_network_filter_read_disable(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr, bool disable);
bool envoy_dynamic_module_callback_network_filter_read_enabled(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr);
void envoy_dynamic_module_callback_network_filter_enable_half_close(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr, bool enabled);
uint64_t envoy_dynamic_module_callback_network_filter_get_connection_id(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr);
uint32_t envoy_dynamic_module_callback_network_filter_get_worker_index(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr);
bool envoy_dynamic_module_callback_network_filter_get_remote_address(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_envoy_buffer* address_out, uint32_t* port_out);
bool envoy_dynamic_module_callback_network_filter_get_local_address(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_envoy_buffer* address_out, uint32_t* port_out);
bool envoy_dynamic_module_callback_network_filter_is_ssl(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr);

/* callbacks: schedulers (new/delete on the connection's worker; commit from any thread) */
envoy_dynamic_module_type_network_filter_scheduler_module_ptr
envoy_dynamic_module_callback_network_filter_scheduler_new(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr);
void envoy_dynamic_module_callback_network_filter_scheduler_commit(
    envoy_dynamic_module_type_network_filter_scheduler_module_ptr scheduler_module_ptr,
    uint64_t event_id);
void envoy_dynamic_module_callback_network_filter_scheduler_delete(
    envoy_dynamic_module_type_network_filter_scheduler_module_ptr scheduler_module_ptr);

/* callbacks: filter state and dynamic metadata (connection's StreamInfo) */
bool envoy_dynamic_module_callback_network_get_filter_state_typed(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_module_buffer key, envoy_dynamic_module_type_envoy_buffer* value_out);
bool envoy_dynamic_module_callback_network_get_filter_state_bytes(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_module_buffer key, envoy_dynamic_module_type_envoy_buffer* value_out);
bool envoy_dynamic_module_callback_network_set_filter_state_bytes(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_module_buffer key, envoy_dynamic_module_type_module_buffer value);
void envoy_dynamic_module_callback_network_set_dynamic_metadata_string(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_module_buffer filter_namespace,
    envoy_dynamic_module_type_module_buffer key, envoy_dynamic_module_type_module_buffer value);

/* ---- HTTP filter (docs/envoy-abi.md, "HTTP filter") --------------------------------------
 * The subset the HTTP request path uses. Signatures from Envoy's
 * source/extensions/dynamic_modules/abi/abi.h of the v0.2.0 ABI line; every name is exported or
 * looked up by the 1.40.0 binary. Per-stream hooks run on the stream's worker; per-stream
 * callbacks may only be called there (scheduler_commit: any thread). */
typedef void* envoy_dynamic_module_type_http_filter_config_envoy_ptr;
typedef const void* envoy_dynamic_module_type_http_filter_config_module_ptr;
typedef void* envoy_dynamic_module_type_http_filter_envoy_ptr;
typedef const void* envoy_dynamic_module_type_http_filter_module_ptr;
typedef void* envoy_dynamic_module_type_http_filter_scheduler_module_ptr;

typedef enum envoy_dynamic_module_type_http_header_type {
  envoy_dynamic_module_type_http_header_type_RequestHeader = 0,
  envoy_dynamic_module_type_http_header_type_RequestTrailer = 1,
  envoy_dynamic_module_type_http_header_type_ResponseHeader = 2,
  envoy_dynamic_module_type_http_header_type_ResponseTrailer = 3,
} envoy_dynamic_module_type_http_header_type;

/* Received = the chunk of the current body hook; Buffered = what Envoy holds for the filter. */
typedef enum envoy_dynamic_module_type_http_body_type {
  envoy_dynamic_module_type_http_body_type_ReceivedRequestBody = 0,
  envoy_dynamic_module_type_http_body_type_BufferedRequestBody = 1,
  envoy_dynamic_module_type_http_body_type_ReceivedResponseBody = 2,
  envoy_dynamic_module_type_http_body_type_BufferedResponseBody = 3,
} envoy_dynamic_module_type_http_body_type;

typedef enum envoy_dynamic_module_type_on_http_filter_request_headers_status {
  envoy_dynamic_module_type_on_http_filter_request_headers_status_Continue = 0,
  envoy_dynamic_module_type_on_http_filter_request_headers_status_StopIteration = 1,
  envoy_dynamic_module_type_on_http_filter_request_headers_status_ContinueAndDontEndStream = 2,
  envoy_dynamic_module_type_on_http_filter_request_headers_status_StopAllIterationAndBuffer = 3,
  envoy_dynamic_module_type_on_http_filter_request_headers_status_StopAllIterationAndWatermark = 4,
} envoy_dynamic_module_type_on_http_filter_request_headers_status;

typedef enum envoy_dynamic_module_type_on_http_filter_request_body_status {
  envoy_dynamic_module_type_on_http_filter_request_body_status_Continue = 0,
  envoy_dynamic_module_type_on_http_filter_request_body_status_StopIterationAndBuffer = 1,
  envoy_dynamic_module_type_on_http_filter_request_body_status_StopIterationAndWatermark = 2,
  envoy_dynamic_module_type_on_http_filter_request_body_status_StopIterationNoBuffer = 3,
} envoy_dynamic_module_type_on_http_filter_request_body_status;

typedef enum envoy_dynamic_module_type_on_http_filter_request_trailers_status {
  envoy_dynamic_module_type_on_http_filter_request_trailers_status_Continue = 0,
  envoy_dynamic_module_type_on_http_filter_request_trailers_status_StopIteration = 1,
} envoy_dynamic_module_type_on_http_filter_request_trailers_status;

typedef enum envoy_dynamic_module_type_on_http_filter_response_headers_status {
  envoy_dynamic_module_type_on_http_filter_response_headers_status_Continue = 0,
  envoy_dynamic_module_type_on_http_filter_response_headers_status_StopIteration = 1,
} envoy_dynamic_module_type_on_http_filter_response_headers_status;

typedef enum envoy_dynamic_module_type_on_http_filter_response_body_status {
  envoy_dynamic_module_type_on_http_filter_response_body_status_Continue = 0,
  envoy_dynamic_module_type_on_http_filter_response_body_status_StopIterationAndBuffer = 1,
} envoy_dynamic_module_type_on_http_filter_response_body_status;

typedef enum envoy_dynamic_module_type_on_http_filter_response_trailers_status {
  envoy_dynamic_module_type_on_http_filter_response_trailers_status_Continue = 0,
  envoy_dynamic_module_type_on_http_filter_response_trailers_status_StopIteration = 1,
} envoy_dynamic_module_type_on_http_filter_response_trailers_status;

/* Hooks. config_new/config_destroy: main thread; NULL from config_new rejects the config. */
typedef envoy_dynamic_module_type_http_filter_config_module_ptr (*envoy_dynamic_module_on_http_filter_config_new_fn)(
    envoy_dynamic_module_type_http_filter_config_envoy_ptr filter_config_envoy_ptr,
    envoy_dynamic_module_type_envoy_buffer name, envoy_dynamic_module_type_envoy_buffer config);
typedef void (*envoy_dynamic_module_on_http_filter_config_destroy_fn)(
    envoy_dynamic_module_type_http_filter_config_module_ptr filter_config_ptr);
/* One per stream; config pointer first. NULL fails the stream. */
typedef envoy_dynamic_module_type_http_filter_module_ptr (*envoy_dynamic_module_on_http_filter_new_fn)(
    envoy_dynamic_module_type_http_filter_config_module_ptr filter_config_ptr,
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr);
typedef envoy_dynamic_module_type_on_http_filter_request_headers_status (*envoy_dynamic_module_on_http_filter_request_headers_fn)(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter_module_ptr, bool end_of_stream);
/* No buffer argument: the chunk is read with get_body_chunks(ReceivedRequestBody). */
typedef envoy_dynamic_module_type_on_http_filter_request_body_status (*envoy_dynamic_module_on_http_filter_request_body_fn)(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter_module_ptr, bool end_of_stream);
typedef envoy_dynamic_module_type_on_http_filter_request_trailers_status (*envoy_dynamic_module_on_http_filter_request_trailers_fn)(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter_module_ptr);
typedef envoy_dynamic_module_type_on_http_filter_response_headers_status (*envoy_dynamic_module_on_http_filter_response_headers_fn)(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter_module_ptr, bool end_of_stream);
typedef envoy_dynamic_module_type_on_http_filter_response_body_status (*envoy_dynamic_module_on_http_filter_response_body_fn)(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter_module_ptr, bool end_of_stream);
typedef envoy_dynamic_module_type_on_http_filter_response_trailers_status (*envoy_dynamic_module_on_http_filter_response_trailers_fn)(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter_module_ptr);
/* Before the access log and destroy; the Envoy pointer still works here. */
typedef void (*envoy_dynamic_module_on_http_filter_stream_complete_fn)(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter_module_ptr);
/* Deferred deletion: only the module pointer; free it here. */
typedef void (*envoy_dynamic_module_on_http_filter_destroy_fn)(
    envoy_dynamic_module_type_http_filter_module_ptr filter_module_ptr);
typedef void (*envoy_dynamic_module_on_http_filter_scheduled_fn)(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter_module_ptr, uint64_t event_id);
typedef void (*envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark_fn)(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter_module_ptr);
typedef void (*envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark_fn)(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter_module_ptr);

/* Callbacks (stream's worker). Envoy-owned views live until the hook returns. */
size_t envoy_dynamic_module_callback_http_get_headers_size(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_header_type header_type);
bool envoy_dynamic_module_callback_http_get_headers(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_header_type header_type,
    envoy_dynamic_module_type_envoy_http_header* result_headers);
size_t envoy_dynamic_module_callback_http_get_body_chunks_size(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_body_type body_type);
bool envoy_dynamic_module_callback_http_get_body_chunks(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_body_type body_type,
    envoy_dynamic_module_type_envoy_buffer* result_buffer_vector);
size_t envoy_dynamic_module_callback_http_get_body_size(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_body_type body_type);
bool envoy_dynamic_module_callback_http_drain_body(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_body_type body_type, size_t number_of_bytes);
/* A whole local reply (Envoy's sendLocalReply): copied during the call. */
void envoy_dynamic_module_callback_http_send_response(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, uint32_t status_code,
    envoy_dynamic_module_type_module_http_header* headers_vector, size_t headers_vector_size,
    envoy_dynamic_module_type_module_buffer body, envoy_dynamic_module_type_module_buffer details);
/* A streamed reply: headers (with :status), then data, then trailers (end the stream). */
void envoy_dynamic_module_callback_http_send_response_headers(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_module_http_header* headers_vector, size_t headers_vector_size,
    bool end_stream);
void envoy_dynamic_module_callback_http_send_response_data(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_module_buffer data, bool end_stream);
void envoy_dynamic_module_callback_http_send_response_trailers(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_module_http_header* trailers_vector, size_t trailers_vector_size);
/* Resumes the request chain after a Stop status (e.g. a body held while the tunnel window was shut). */
void envoy_dynamic_module_callback_http_filter_continue_decoding(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr);
/* Called on the worker; the handle may then be committed from any thread; delete once. */
envoy_dynamic_module_type_http_filter_scheduler_module_ptr envoy_dynamic_module_callback_http_filter_scheduler_new(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr);
void envoy_dynamic_module_callback_http_filter_scheduler_commit(
    envoy_dynamic_module_type_http_filter_scheduler_module_ptr scheduler_module_ptr, uint64_t event_id);
void envoy_dynamic_module_callback_http_filter_scheduler_delete(
    envoy_dynamic_module_type_http_filter_scheduler_module_ptr scheduler_module_ptr);
uint32_t envoy_dynamic_module_callback_http_filter_get_worker_index(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr);
/* Resets the downstream stream (e.g. the tunnel stream failed after the response started). */
typedef enum envoy_dynamic_module_type_http_filter_stream_reset_reason {
  envoy_dynamic_module_type_http_filter_stream_reset_reason_LocalReset = 0,
} envoy_dynamic_module_type_http_filter_stream_reset_reason;
void envoy_dynamic_module_callback_http_filter_reset_stream(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_stream_reset_reason reason,
    envoy_dynamic_module_type_module_buffer details);

/* ---- listener filter (docs/envoy-abi.md#listener-filter) ------------------------------------- */
typedef void* envoy_dynamic_module_type_listener_filter_config_envoy_ptr;
typedef const void* envoy_dynamic_module_type_listener_filter_config_module_ptr;
typedef void* envoy_dynamic_module_type_listener_filter_envoy_ptr;
typedef const void* envoy_dynamic_module_type_listener_filter_module_ptr;

typedef enum envoy_dynamic_module_type_on_listener_filter_status {
  envoy_dynamic_module_type_on_listener_filter_status_Continue = 0,
  envoy_dynamic_module_type_on_listener_filter_status_StopIteration = 1,
} envoy_dynamic_module_type_on_listener_filter_status;

/* hooks, all required: config_new, config_destroy, new, on_accept, on_data, on_close,
 * get_max_read_bytes, destroy, scheduled */
typedef envoy_dynamic_module_type_listener_filter_config_module_ptr (
    *envoy_dynamic_module_on_listener_filter_config_new_fn)(
    envoy_dynamic_module_type_listener_filter_config_envoy_ptr filter_config_envoy_ptr,
    envoy_dynamic_module_type_envoy_buffer name, envoy_dynamic_module_type_envoy_buffer config);
typedef void (*envoy_dynamic_module_on_listener_filter_config_destroy_fn)(
    envoy_dynamic_module_type_listener_filter_config_module_ptr filter_config_ptr);
typedef envoy_dynamic_module_type_listener_filter_module_ptr (
    *envoy_dynamic_module_on_listener_filter_new_fn)(
    envoy_dynamic_module_type_listener_filter_config_module_ptr filter_config_ptr,
    envoy_dynamic_module_type_listener_filter_envoy_ptr filter_envoy_ptr);
typedef envoy_dynamic_module_type_on_listener_filter_status (
    *envoy_dynamic_module_on_listener_filter_on_accept_fn)(
    envoy_dynamic_module_type_listener_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_listener_filter_module_ptr filter_module_ptr);
typedef envoy_dynamic_module_type_on_listener_filter_status (
    *envoy_dynamic_module_on_listener_filter_on_data_fn)(
    envoy_dynamic_module_type_listener_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_listener_filter_module_ptr filter_module_ptr, size_t data_length);
typedef void (*envoy_dynamic_module_on_listener_filter_on_close_fn)(
    envoy_dynamic_module_type_listener_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_listener_filter_module_ptr filter_module_ptr);
typedef size_t (*envoy_dynamic_module_on_listener_filter_get_max_read_bytes_fn)(
    envoy_dynamic_module_type_listener_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_listener_filter_module_ptr filter_module_ptr);
typedef void (*envoy_dynamic_module_on_listener_filter_destroy_fn)(
    envoy_dynamic_module_type_listener_filter_module_ptr filter_module_ptr);
typedef void (*envoy_dynamic_module_on_listener_filter_scheduled_fn)(
    envoy_dynamic_module_type_listener_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_listener_filter_module_ptr filter_module_ptr, uint64_t event_id);

/* The accepted socket's descriptor (Envoy's; -1 if none). The module may dup it, not close it. */
int64_t envoy_dynamic_module_callback_listener_filter_get_socket_fd(
    envoy_dynamic_module_type_listener_filter_envoy_ptr filter_envoy_ptr);
/* Closes Envoy's descriptor (plain close, no shutdown) with `details` as termination details. */
void envoy_dynamic_module_callback_listener_filter_close_socket(
    envoy_dynamic_module_type_listener_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_module_buffer details);
uint32_t envoy_dynamic_module_callback_listener_filter_get_worker_index(
    envoy_dynamic_module_type_listener_filter_envoy_ptr filter_envoy_ptr);
