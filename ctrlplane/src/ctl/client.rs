//! A control-socket client (what rvsadm uses).

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::proto::{read_msg, write_msg, Op, Request, Response, PROTO_VERSION};

/// Send one request to rvsd's control socket at `path` and wait for the answer (10 s at most).
pub fn call(path: &Path, op: Op) -> Result<Response, String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot connect to rvsd's control socket {}: {e}",
            path.display()
        )
    })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    write_msg(
        &mut s,
        &Request {
            version: PROTO_VERSION,
            op,
        },
    )
    .map_err(|e| format!("control socket: {e}"))?;
    read_msg(&mut s).map_err(|e| format!("control socket: {e}"))
}
