//! # zmq-sys (zpar's own): libzmq with CURVE, and its raw bindings
//!
//! The `zmq` crate 0.10 sits on `zmq-sys` 0.12, whose bundled libzmq is
//! built without libsodium, so `zmq::has("curve")` is false there. zpar
//! encrypts its traffic with CurveZMQ, so this crate takes `zmq-sys`'s place
//! (`[patch.crates-io]` in the workspace's `Cargo.toml`):
//!
//! - `build.rs` compiles libzmq 4.3.5 from the `zeromq-src` crate with
//!   `ZMQ_USE_LIBSODIUM`, against the static libsodium that
//!   `libsodium-sys-stable` builds from its bundled, signature-checked
//!   source. No system package is involved; a C/C++ compiler and `make` are.
//! - The `ZMQ_*` constants are generated from the very `zmq.h` that was
//!   compiled; the types, functions and error numbers below are written
//!   from that header.
//!
//! It provides what the `zmq` crate uses and nothing of its own: everyone
//! else in zpar goes through `zmq`. Nothing here is safe to call without
//! reading libzmq's manual.
//!
//! ```
//! // CURVE is compiled in.
//! assert_eq!(unsafe { zmq_sys::zmq_has(c"curve".as_ptr()) }, 1);
//! let (mut major, mut minor, mut patch) = (0, 0, 0);
//! unsafe { zmq_sys::zmq_version(&mut major, &mut minor, &mut patch) };
//! assert_eq!((major, minor), (4, 3));
//! ```

#![allow(non_camel_case_types)]

use libc::{c_char, c_int, c_long, c_short, c_void, size_t};

// Linked for its static libsodium, which libzmq's CURVE calls into.
use libsodium_sys as _;

pub mod errno;

include!(concat!(env!("OUT_DIR"), "/constants.rs"));

/// A socket's file descriptor as `zmq_pollitem_t` carries it (`zmq_fd_t`).
#[cfg(unix)]
pub type RawFd = c_int;
/// A socket's handle as `zmq_pollitem_t` carries it (`zmq_fd_t`).
#[cfg(windows)]
pub type RawFd = std::os::windows::raw::SOCKET;

/// An opaque message: 64 bytes, aligned to a pointer, as `zmq.h` lays it
/// out for GCC and Clang. `zmq_msg_init*` fills it in.
#[repr(C)]
#[cfg_attr(target_pointer_width = "64", repr(align(8)))]
#[cfg_attr(target_pointer_width = "32", repr(align(4)))]
#[derive(Clone, Copy)]
pub struct zmq_msg_t {
    opaque: [u8; 64],
}

impl Default for zmq_msg_t {
    fn default() -> Self {
        Self { opaque: [0; 64] }
    }
}

impl std::fmt::Debug for zmq_msg_t {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("zmq_msg_t { .. }")
    }
}

/// One entry of `zmq_poll`'s array: a 0MQ socket, or a plain descriptor
/// when `socket` is null.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct zmq_pollitem_t {
    pub socket: *mut c_void,
    pub fd: RawFd,
    pub events: c_short,
    pub revents: c_short,
}

/// Frees a message's data given to `zmq_msg_init_data`.
pub type zmq_free_fn = unsafe extern "C" fn(data: *mut c_void, hint: *mut c_void);

extern "C" {
    pub fn zmq_errno() -> c_int;
    pub fn zmq_strerror(errnum: c_int) -> *const c_char;
    pub fn zmq_version(major: *mut c_int, minor: *mut c_int, patch: *mut c_int);
    pub fn zmq_has(capability: *const c_char) -> c_int;

    pub fn zmq_ctx_new() -> *mut c_void;
    pub fn zmq_ctx_term(context: *mut c_void) -> c_int;
    pub fn zmq_ctx_shutdown(context: *mut c_void) -> c_int;
    pub fn zmq_ctx_set(context: *mut c_void, option: c_int, optval: c_int) -> c_int;
    pub fn zmq_ctx_get(context: *mut c_void, option: c_int) -> c_int;

    pub fn zmq_msg_init(msg: *mut zmq_msg_t) -> c_int;
    pub fn zmq_msg_init_size(msg: *mut zmq_msg_t, size: size_t) -> c_int;
    pub fn zmq_msg_init_data(
        msg: *mut zmq_msg_t,
        data: *mut c_void,
        size: size_t,
        ffn: Option<zmq_free_fn>,
        hint: *mut c_void,
    ) -> c_int;
    pub fn zmq_msg_send(msg: *mut zmq_msg_t, socket: *mut c_void, flags: c_int) -> c_int;
    pub fn zmq_msg_recv(msg: *mut zmq_msg_t, socket: *mut c_void, flags: c_int) -> c_int;
    pub fn zmq_msg_close(msg: *mut zmq_msg_t) -> c_int;
    pub fn zmq_msg_move(dest: *mut zmq_msg_t, src: *mut zmq_msg_t) -> c_int;
    pub fn zmq_msg_copy(dest: *mut zmq_msg_t, src: *mut zmq_msg_t) -> c_int;
    pub fn zmq_msg_data(msg: *mut zmq_msg_t) -> *mut c_void;
    pub fn zmq_msg_size(msg: *const zmq_msg_t) -> size_t;
    pub fn zmq_msg_more(msg: *const zmq_msg_t) -> c_int;
    pub fn zmq_msg_get(msg: *const zmq_msg_t, property: c_int) -> c_int;
    pub fn zmq_msg_set(msg: *mut zmq_msg_t, property: c_int, optval: c_int) -> c_int;
    pub fn zmq_msg_gets(msg: *const zmq_msg_t, property: *const c_char) -> *const c_char;

    pub fn zmq_socket(context: *mut c_void, kind: c_int) -> *mut c_void;
    pub fn zmq_close(socket: *mut c_void) -> c_int;
    pub fn zmq_setsockopt(
        socket: *mut c_void,
        option: c_int,
        optval: *const c_void,
        optvallen: size_t,
    ) -> c_int;
    pub fn zmq_getsockopt(
        socket: *mut c_void,
        option: c_int,
        optval: *mut c_void,
        optvallen: *mut size_t,
    ) -> c_int;
    pub fn zmq_bind(socket: *mut c_void, addr: *const c_char) -> c_int;
    pub fn zmq_connect(socket: *mut c_void, addr: *const c_char) -> c_int;
    pub fn zmq_unbind(socket: *mut c_void, addr: *const c_char) -> c_int;
    pub fn zmq_disconnect(socket: *mut c_void, addr: *const c_char) -> c_int;
    pub fn zmq_send(socket: *mut c_void, buf: *const c_void, len: size_t, flags: c_int) -> c_int;
    pub fn zmq_send_const(
        socket: *mut c_void,
        buf: *const c_void,
        len: size_t,
        flags: c_int,
    ) -> c_int;
    pub fn zmq_recv(socket: *mut c_void, buf: *mut c_void, len: size_t, flags: c_int) -> c_int;
    pub fn zmq_socket_monitor(socket: *mut c_void, addr: *const c_char, events: c_int) -> c_int;

    pub fn zmq_poll(items: *mut zmq_pollitem_t, nitems: c_int, timeout: c_long) -> c_int;
    pub fn zmq_proxy(frontend: *mut c_void, backend: *mut c_void, capture: *mut c_void) -> c_int;
    pub fn zmq_proxy_steerable(
        frontend: *mut c_void,
        backend: *mut c_void,
        capture: *mut c_void,
        control: *mut c_void,
    ) -> c_int;

    pub fn zmq_z85_encode(dest: *mut c_char, data: *const u8, size: size_t) -> *mut c_char;
    pub fn zmq_z85_decode(dest: *mut u8, string: *const c_char) -> *mut u8;
    pub fn zmq_curve_keypair(z85_public_key: *mut c_char, z85_secret_key: *mut c_char) -> c_int;
    pub fn zmq_curve_public(z85_public_key: *mut c_char, z85_secret_key: *const c_char) -> c_int;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn curve_is_compiled_in() {
        assert_eq!(unsafe { zmq_has(c"curve".as_ptr()) }, 1);
    }

    #[test]
    fn the_message_struct_has_the_size_libzmq_expects() {
        let ctx = unsafe { zmq_ctx_new() };
        assert!(!ctx.is_null());
        let size = unsafe { zmq_ctx_get(ctx, ZMQ_MSG_T_SIZE as c_int) };
        assert_eq!(size as usize, std::mem::size_of::<zmq_msg_t>());
        assert_eq!(
            std::mem::align_of::<zmq_msg_t>(),
            std::mem::size_of::<usize>()
        );
        assert_eq!(unsafe { zmq_ctx_term(ctx) }, 0);
    }

    #[test]
    fn a_curve_keypair_is_made_and_its_public_half_derived_again() {
        let mut public = [0 as c_char; 41];
        let mut secret = [0 as c_char; 41];
        assert_eq!(
            unsafe { zmq_curve_keypair(public.as_mut_ptr(), secret.as_mut_ptr()) },
            0
        );
        let mut derived = [0 as c_char; 41];
        assert_eq!(
            unsafe { zmq_curve_public(derived.as_mut_ptr(), secret.as_ptr()) },
            0
        );
        let text = |k: &[c_char; 41]| unsafe { CStr::from_ptr(k.as_ptr()) }.to_owned();
        assert_eq!(text(&public), text(&derived));
        assert_eq!(text(&public).to_bytes().len(), 40);
    }

    #[test]
    fn generated_constants_match_the_header() {
        let header = std::fs::read_to_string(env!("ZMQ_SYS_HEADER")).unwrap();
        for (name, value) in [
            ("ZMQ_ROUTER", ZMQ_ROUTER as i64),
            ("ZMQ_CURVE_SERVER", ZMQ_CURVE_SERVER as i64),
            ("ZMQ_CURVE_SERVERKEY", ZMQ_CURVE_SERVERKEY as i64),
            (
                "ZMQ_EVENT_HANDSHAKE_FAILED_AUTH",
                ZMQ_EVENT_HANDSHAKE_FAILED_AUTH as i64,
            ),
            ("ZMQ_THREAD_PRIORITY_DFLT", ZMQ_THREAD_PRIORITY_DFLT as i64),
        ] {
            let line = format!("#define {name} ");
            let found = header.lines().find(|l| l.starts_with(&line)).unwrap();
            let text = found[line.len()..].trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => i64::from_str_radix(hex, 16).unwrap(),
                None => text.parse().unwrap(),
            };
            assert_eq!(parsed, value, "{name}");
        }
    }

    #[test]
    fn an_error_number_reads_as_libzmqs_message() {
        let text = unsafe { CStr::from_ptr(zmq_strerror(errno::ETERM)) };
        assert_eq!(text.to_str().unwrap(), "Context was terminated");
    }
}
