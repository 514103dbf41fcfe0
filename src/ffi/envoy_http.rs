//! Safe wrappers over the HTTP filter callbacks of Envoy 1.40.0 (docs/envoy-abi.md, "HTTP
//! filter"): what the request path's terminal HTTP filter asks of Envoy.
//!
//! Threading: an [`HttpFilter`] may only be used on the worker that runs its stream, between the
//! filter's `new` and `destroy` hooks (and not after `stream_complete` for calls that send);
//! [`HttpScheduler::commit`] works from any thread. In unit tests the callbacks are not linked:
//! every wrapper is a no-op there (the `#[cfg(test)]` shims at the bottom).

#![allow(clippy::not_unsafe_ptr_arg_deref)]

use super::envoy::{append_chunks, envoy_bytes, mbuf, EMPTY_ENVOY_BUF};
use envoy_abi as abi;
use std::os::raw::c_void;


fn mheaders(fields: &[(&[u8], &[u8])]) -> Vec<abi::envoy_dynamic_module_type_module_http_header> {
    fields
        .iter()
        .map(|(k, v)| abi::envoy_dynamic_module_type_module_http_header {
            key_ptr: k.as_ptr() as *const _,
            key_length: k.len(),
            value_ptr: v.as_ptr() as *const _,
            value_length: v.len(),
        })
        .collect()
}


/// An HTTP filter's Envoy pointer (one per stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpFilter(pub usize);

impl HttpFilter {
    fn ptr(self) -> *mut c_void {
        self.0 as *mut c_void
    }

    /// Every request header (pseudo-headers included, as Envoy keeps them: `:method`, `:path`,
    /// `:authority`, `:scheme`), copied, in Envoy's order.
    pub fn request_headers(self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.headers(abi::envoy_dynamic_module_type_http_header_type::RequestHeader)
    }

    /// Every request trailer, copied.
    pub fn request_trailers(self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.headers(abi::envoy_dynamic_module_type_http_header_type::RequestTrailer)
    }

    fn headers(self, kind: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        // SAFETY: stream's worker, inside a hook; views are copied before returning.
        unsafe {
            let n = shim::get_headers_size(self.ptr(), kind);
            if n == 0 {
                return Vec::new();
            }
            let empty = abi::envoy_dynamic_module_type_envoy_http_header {
                key_ptr: std::ptr::null(),
                key_length: 0,
                value_ptr: std::ptr::null(),
                value_length: 0,
            };
            let mut v = vec![empty; n];
            if !shim::get_headers(self.ptr(), kind, v.as_mut_ptr()) {
                return Vec::new();
            }
            v.iter()
                .map(|h| {
                    let k = abi::envoy_dynamic_module_type_envoy_buffer { ptr: h.key_ptr, length: h.key_length };
                    let val = abi::envoy_dynamic_module_type_envoy_buffer { ptr: h.value_ptr, length: h.value_length };
                    (envoy_bytes(&k).to_vec(), envoy_bytes(&val).to_vec())
                })
                .collect()
        }
    }

    /// Appends the request body chunk of the current `request_body` hook to `out` and removes it
    /// from Envoy's buffer. Returns the number of bytes moved.
    pub fn take_received_request_body(self, out: &mut Vec<u8>) -> usize {
        self.take_body(abi::envoy_dynamic_module_type_http_body_type::ReceivedRequestBody, out, usize::MAX)
    }

    /// Shows `use_body` the current `request_body` hook's chunk in place (Envoy's slices, valid
    /// during the call only); drains it from Envoy if `use_body` returns true, and returns that.
    /// Stream's worker.
    pub fn use_received_request_body(self, use_body: &mut dyn FnMut(&[&[u8]]) -> bool) -> bool {
        let kind = abi::envoy_dynamic_module_type_http_body_type::ReceivedRequestBody;
        let chunks = self.body_chunks(kind);
        if chunks.is_empty() {
            return false;
        }
        // SAFETY: stream's worker; the slices are used before the drain and not kept.
        unsafe {
            let slices: Vec<&[u8]> = chunks.iter().map(|c| envoy_bytes(c)).collect();
            let total = slices.iter().map(|s| s.len()).sum();
            if !use_body(&slices) {
                return false;
            }
            shim::drain_body(self.ptr(), kind, total);
            true
        }
    }

    /// Bytes of the request body Envoy holds for this filter (what earlier `request_body` hooks
    /// left buffered by returning `StopIterationAndWatermark`).
    pub fn buffered_request_body_len(self) -> usize {
        // SAFETY: stream's worker.
        unsafe { shim::get_body_size(self.ptr(), abi::envoy_dynamic_module_type_http_body_type::BufferedRequestBody) }
    }

    /// Moves up to `max` bytes from the front of the buffered request body into `out` (draining
    /// them from Envoy, which re-enables reading from the client below its low watermark).
    /// Returns the number of bytes moved.
    pub fn take_buffered_request_body(self, out: &mut Vec<u8>, max: usize) -> usize {
        self.take_body(abi::envoy_dynamic_module_type_http_body_type::BufferedRequestBody, out, max)
    }

    /// The buffers of body `kind` (pointing into Envoy's memory, valid until the body changes or
    /// the hook returns); empty if there are none or Envoy cannot list them. Stream's worker.
    fn body_chunks(self, kind: u32) -> Vec<abi::envoy_dynamic_module_type_envoy_buffer> {
        // SAFETY: stream's worker; `chunks` has room for the count Envoy just gave.
        unsafe {
            let n = shim::get_body_chunks_size(self.ptr(), kind);
            if n == 0 {
                return Vec::new();
            }
            let mut chunks = vec![EMPTY_ENVOY_BUF; n];
            if !shim::get_body_chunks(self.ptr(), kind, chunks.as_mut_ptr()) {
                return Vec::new();
            }
            chunks
        }
    }

    /// Copies up to `max` bytes from the front of body `kind` into `out`, then drains them from
    /// Envoy. Returns the number of bytes moved. Stream's worker.
    fn take_body(self, kind: u32, out: &mut Vec<u8>, max: usize) -> usize {
        if max == 0 {
            return 0;
        }
        let chunks = self.body_chunks(kind);
        if chunks.is_empty() {
            return 0;
        }
        // SAFETY: stream's worker; the chunks are copied before the drain.
        unsafe {
            let total = append_chunks(&chunks, out, max);
            shim::drain_body(self.ptr(), kind, total);
            total
        }
    }

    /// Sends a whole local reply (status, headers, body); `details` shows in
    /// `%RESPONSE_CODE_DETAILS%`.
    pub fn send_local_reply(self, status: u32, headers: &[(&[u8], &[u8])], body: &[u8], details: &str) {
        let mut h = mheaders(headers);
        // SAFETY: stream's worker; Envoy copies everything during the call.
        unsafe {
            shim::send_response(self.ptr(), status, h.as_mut_ptr(), h.len(), mbuf(body), mbuf(details.as_bytes()))
        }
    }

    /// Sends the response headers (with `:status`); `end` ends the response.
    pub fn send_response_headers(self, headers: &[(&[u8], &[u8])], end: bool) {
        let mut h = mheaders(headers);
        // SAFETY: stream's worker; Envoy copies the headers.
        unsafe { shim::send_response_headers(self.ptr(), h.as_mut_ptr(), h.len(), end) }
    }

    /// Sends a response body chunk (copied); `end` ends the response.
    pub fn send_response_data(self, data: &[u8], end: bool) {
        // SAFETY: stream's worker; Envoy copies the bytes.
        unsafe { shim::send_response_data(self.ptr(), mbuf(data), end) }
    }

    /// Sends the response trailers (ends the response).
    pub fn send_response_trailers(self, trailers: &[(&[u8], &[u8])]) {
        let mut h = mheaders(trailers);
        // SAFETY: stream's worker; Envoy copies the trailers.
        unsafe { shim::send_response_trailers(self.ptr(), h.as_mut_ptr(), h.len()) }
    }

    /// Resets the downstream stream (a response that cannot be completed).
    pub fn reset(self, details: &str) {
        // SAFETY: stream's worker.
        unsafe {
            shim::reset_stream(
                self.ptr(),
                abi::envoy_dynamic_module_type_http_filter_stream_reset_reason::LocalReset,
                mbuf(details.as_bytes()),
            )
        }
    }

    /// 0-based index of the stream's worker.
    pub fn worker_index(self) -> u32 {
        // SAFETY: stream's worker.
        unsafe { shim::get_worker_index(self.ptr()) }
    }

    /// Creates the stream's scheduler (its events run `on_http_filter_scheduled` on this worker).
    pub fn scheduler_new(self) -> HttpScheduler {
        // SAFETY: stream's worker.
        HttpScheduler(unsafe { shim::scheduler_new(self.ptr()) } as usize)
    }
}

/// A stream's scheduler. `commit` from any thread; `delete` once, on the stream's worker, never
/// racing a commit (the endpoint's lock serializes them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpScheduler(pub usize);

impl HttpScheduler {
    /// Posts `event_id` to the stream's worker. Any thread.
    pub fn commit(self, event_id: u64) {
        // SAFETY: the caller guarantees the scheduler has not been deleted.
        unsafe { shim::scheduler_commit(self.0 as *mut c_void, event_id) }
    }
    /// Frees the scheduler. Once.
    pub fn delete(self) {
        // SAFETY: called once, never committed afterwards (caller's invariant).
        unsafe { shim::scheduler_delete(self.0 as *mut c_void) }
    }
}

#[cfg(not(test))]
mod shim {
    pub use envoy_abi::{
        envoy_dynamic_module_callback_http_drain_body as drain_body,
        envoy_dynamic_module_callback_http_filter_get_worker_index as get_worker_index,
        envoy_dynamic_module_callback_http_filter_reset_stream as reset_stream,
        envoy_dynamic_module_callback_http_filter_scheduler_commit as scheduler_commit,
        envoy_dynamic_module_callback_http_filter_scheduler_delete as scheduler_delete,
        envoy_dynamic_module_callback_http_filter_scheduler_new as scheduler_new,
        envoy_dynamic_module_callback_http_get_body_chunks as get_body_chunks,
        envoy_dynamic_module_callback_http_get_body_chunks_size as get_body_chunks_size,
        envoy_dynamic_module_callback_http_get_body_size as get_body_size,
        envoy_dynamic_module_callback_http_get_headers as get_headers,
        envoy_dynamic_module_callback_http_get_headers_size as get_headers_size,
        envoy_dynamic_module_callback_http_send_response as send_response,
        envoy_dynamic_module_callback_http_send_response_data as send_response_data,
        envoy_dynamic_module_callback_http_send_response_headers as send_response_headers,
        envoy_dynamic_module_callback_http_send_response_trailers as send_response_trailers,
    };
}

/// Unit tests run without Envoy: the same names as no-op functions with the same signatures.
#[cfg(test)]
#[allow(clippy::missing_safety_doc, unused_variables)]
mod shim {
    use envoy_abi::{
        envoy_dynamic_module_type_envoy_buffer as EB, envoy_dynamic_module_type_envoy_http_header as EH,
        envoy_dynamic_module_type_module_buffer as MB, envoy_dynamic_module_type_module_http_header as MH,
    };
    use std::os::raw::c_void;
    pub unsafe fn get_headers_size(_: *mut c_void, _: u32) -> usize { 0 }
    pub unsafe fn get_headers(_: *mut c_void, _: u32, _: *mut EH) -> bool { false }
    pub unsafe fn get_body_chunks_size(_: *mut c_void, _: u32) -> usize { 0 }
    pub unsafe fn get_body_size(_: *mut c_void, _: u32) -> usize { 0 }
    pub unsafe fn get_body_chunks(_: *mut c_void, _: u32, _: *mut EB) -> bool { false }
    pub unsafe fn drain_body(_: *mut c_void, _: u32, _: usize) -> bool { false }
    pub unsafe fn send_response(_: *mut c_void, _: u32, _: *mut MH, _: usize, _: MB, _: MB) {}
    pub unsafe fn send_response_headers(_: *mut c_void, _: *mut MH, _: usize, _: bool) {}
    pub unsafe fn send_response_data(_: *mut c_void, _: MB, _: bool) {}
    pub unsafe fn send_response_trailers(_: *mut c_void, _: *mut MH, _: usize) {}
    pub unsafe fn reset_stream(_: *mut c_void, _: u32, _: MB) {}
    pub unsafe fn get_worker_index(_: *mut c_void) -> u32 { 0 }
    pub unsafe fn scheduler_new(_: *mut c_void) -> *mut c_void { std::ptr::null_mut() }
    pub unsafe fn scheduler_commit(_: *mut c_void, _: u64) {}
    pub unsafe fn scheduler_delete(_: *mut c_void) {}
}
