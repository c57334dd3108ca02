//! Error numbers as `zmq_errno()` reports them.
//!
//! libzmq uses the system's numbers where the system has them; `zmq.h`
//! numbers the rest from `ZMQ_HAUSNUMERO` (156384712). The `*_ALT` values
//! are those fallbacks, which a libzmq built where a system number is
//! missing (Windows) reports; the last four are libzmq's own.

use libc::c_int;

pub const EACCES: c_int = libc::EACCES;
pub const EADDRINUSE: c_int = libc::EADDRINUSE;
pub const EAGAIN: c_int = libc::EAGAIN;
pub const EBUSY: c_int = libc::EBUSY;
pub const ECONNREFUSED: c_int = libc::ECONNREFUSED;
pub const EFAULT: c_int = libc::EFAULT;
pub const EINTR: c_int = libc::EINTR;
pub const EHOSTUNREACH: c_int = libc::EHOSTUNREACH;
pub const EINPROGRESS: c_int = libc::EINPROGRESS;
pub const EINVAL: c_int = libc::EINVAL;
pub const EMFILE: c_int = libc::EMFILE;
pub const EMSGSIZE: c_int = libc::EMSGSIZE;
pub const ENAMETOOLONG: c_int = libc::ENAMETOOLONG;
pub const ENODEV: c_int = libc::ENODEV;
pub const ENOENT: c_int = libc::ENOENT;
pub const ENOMEM: c_int = libc::ENOMEM;
pub const ENOTCONN: c_int = libc::ENOTCONN;
pub const ENOTSOCK: c_int = libc::ENOTSOCK;
pub const EPROTO: c_int = libc::EPROTO;
pub const EPROTONOSUPPORT: c_int = libc::EPROTONOSUPPORT;
pub const ENOTSUP: c_int = libc::ENOTSUP;
pub const ENOBUFS: c_int = libc::ENOBUFS;
pub const ENETDOWN: c_int = libc::ENETDOWN;
pub const EADDRNOTAVAIL: c_int = libc::EADDRNOTAVAIL;

const HAUSNUMERO: c_int = crate::ZMQ_HAUSNUMERO as c_int;

pub const ENOTSUP_ALT: c_int = HAUSNUMERO + 1;
pub const EPROTONOSUPPORT_ALT: c_int = HAUSNUMERO + 2;
pub const ENOBUFS_ALT: c_int = HAUSNUMERO + 3;
pub const ENETDOWN_ALT: c_int = HAUSNUMERO + 4;
pub const EADDRINUSE_ALT: c_int = HAUSNUMERO + 5;
pub const EADDRNOTAVAIL_ALT: c_int = HAUSNUMERO + 6;
pub const ECONNREFUSED_ALT: c_int = HAUSNUMERO + 7;
pub const EINPROGRESS_ALT: c_int = HAUSNUMERO + 8;
pub const ENOTSOCK_ALT: c_int = HAUSNUMERO + 9;
pub const EMSGSIZE_ALT: c_int = HAUSNUMERO + 10;
pub const EAFNOSUPPORT_ALT: c_int = HAUSNUMERO + 11;
pub const ENETUNREACH_ALT: c_int = HAUSNUMERO + 12;
pub const ECONNABORTED_ALT: c_int = HAUSNUMERO + 13;
pub const ECONNRESET_ALT: c_int = HAUSNUMERO + 14;
pub const ENOTCONN_ALT: c_int = HAUSNUMERO + 15;
pub const ETIMEDOUT_ALT: c_int = HAUSNUMERO + 16;
pub const EHOSTUNREACH_ALT: c_int = HAUSNUMERO + 17;
pub const ENETRESET_ALT: c_int = HAUSNUMERO + 18;

pub const EFSM: c_int = HAUSNUMERO + 51;
pub const ENOCOMPATPROTO: c_int = HAUSNUMERO + 52;
pub const ETERM: c_int = HAUSNUMERO + 53;
pub const EMTHREAD: c_int = HAUSNUMERO + 54;
