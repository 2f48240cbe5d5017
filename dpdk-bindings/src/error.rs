//! DPDK errors as Rust values.

use std::ffi::CStr;
use std::fmt;

use crate::sys;

/// A failed DPDK call: which operation, DPDK's error code and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub op: String,
    pub code: i32,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error from a DPDK return code (negative errno, or positive errno).
    pub(crate) fn from_code(op: impl Into<String>, code: i32) -> Self {
        let code = code.abs();
        // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string.
        let message = unsafe { CStr::from_ptr(sys::rte_strerror(code)) }
            .to_string_lossy()
            .into_owned();
        Error {
            op: op.into(),
            code,
            message,
        }
    }

    /// An error from `rte_errno` after a call that returned NULL.
    pub(crate) fn from_errno(op: impl Into<String>) -> Self {
        // SAFETY: plain read of the calling thread's rte_errno through a C accessor.
        let code = unsafe { sys::rvs_rte_errno() };
        Self::from_code(op, code)
    }

    /// An error detected on the Rust side.
    pub(crate) fn other(op: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            op: op.into(),
            code: 0,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.code != 0 {
            write!(f, "{}: {} (errno {})", self.op, self.message, self.code)
        } else {
            write!(f, "{}: {}", self.op, self.message)
        }
    }
}

impl std::error::Error for Error {}

/// Turn a negative DPDK return value into an error.
pub(crate) fn check(op: &str, ret: i32) -> Result<i32> {
    if ret < 0 {
        Err(Error::from_code(op, ret))
    } else {
        Ok(ret)
    }
}
