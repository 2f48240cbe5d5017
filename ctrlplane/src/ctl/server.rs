//! The control-socket server: a Unix socket, one thread per client (bounded), framed JSON
//! requests answered by a [`Handler`]. Malformed, oversized or wrong-version requests get an error
//! reply; a slow or silent client times out; nothing a client sends can stop the daemon.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::proto::{code, read_msg, write_msg, ReadError, Request, Response, PROTO_VERSION};

/// Most clients served at once; more are told to retry.
pub const MAX_CLIENTS: usize = 64;
/// A client that sends nothing for this long is disconnected.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Once a request's first byte came, the whole request must arrive within this (a client
/// sending a byte now and then must not hold one of the [`MAX_CLIENTS`] slots for ever).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The client's stream as `read_msg` reads it: idle up to [`IDLE_TIMEOUT`] between requests,
/// then [`REQUEST_TIMEOUT`] for the whole of one request, from its first byte.
struct Timed<'a> {
    s: &'a UnixStream,
    until: Option<std::time::Instant>,
}

impl std::io::Read for Timed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let limit = match self.until {
            None => IDLE_TIMEOUT,
            Some(t) => t.saturating_duration_since(std::time::Instant::now()),
        };
        if limit.is_zero() {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                "request not complete in time",
            ));
        }
        self.s.set_read_timeout(Some(limit))?;
        let n = std::io::Read::read(&mut &*self.s, buf)?;
        if n > 0 && self.until.is_none() {
            self.until = Some(std::time::Instant::now() + REQUEST_TIMEOUT);
        }
        Ok(n)
    }
}

/// Why a control request was answered with an error (`rvs_control_errors_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// Not a request: bad framing or JSON.
    Malformed,
    /// Longer than the protocol allows.
    TooLarge,
    /// Another protocol version.
    Version,
    /// A well-formed request the daemon refused (an unknown service, an invalid change, ...).
    Refused,
    /// A request not complete within [`REQUEST_TIMEOUT`] of its first byte (the client is cut
    /// off).
    Timeout,
    /// A client turned away: [`MAX_CLIENTS`] were being served.
    Busy,
    /// A client that hung up in the middle of a request's body (one gone within the 4-byte
    /// length prefix is taken as gone between requests).
    Truncated,
}

impl RequestError {
    /// Every reason, in the order of their indexes (`reason as usize`).
    pub const ALL: [RequestError; 7] = [
        RequestError::Malformed,
        RequestError::TooLarge,
        RequestError::Version,
        RequestError::Refused,
        RequestError::Timeout,
        RequestError::Busy,
        RequestError::Truncated,
    ];

    /// The `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            RequestError::Malformed => "malformed",
            RequestError::TooLarge => "too_large",
            RequestError::Version => "version",
            RequestError::Refused => "refused",
            RequestError::Timeout => "timeout",
            RequestError::Busy => "busy",
            RequestError::Truncated => "truncated",
        }
    }
}

/// What answers requests (rvsd implements it over its model and workers).
pub trait Handler: Send + Sync + 'static {
    /// Answer one request (already version-checked).
    fn handle(&self, req: Request) -> Response;
    /// Count a request answered with an error.
    fn count_error(&self, _why: RequestError) {}
}

/// The socket file a [`bind`] created: removed by [`SocketFile::remove`] only while it is still
/// that file (another rvsd may have replaced it since).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// Device, inode and change time (an inode number is reused once a file is removed).
    id: (u64, u64, i64, i64),
}

fn file_id(m: &std::fs::Metadata) -> (u64, u64, i64, i64) {
    (m.dev(), m.ino(), m.ctime(), m.ctime_nsec())
}

impl SocketFile {
    /// Remove the socket file if it is still the one bound (same device, inode and change time).
    pub fn remove(&self) {
        let same = std::fs::symlink_metadata(&self.path).is_ok_and(|m| file_id(&m) == self.id);
        if same {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Create the socket at `path` with permissions `mode`. A stale socket file (nobody answers on
/// it) is replaced; a socket someone answers on (another rvsd) and a file that is not a socket
/// are errors, never removed.
pub fn bind(path: &Path, mode: u32) -> std::io::Result<(UnixListener, SocketFile)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(std::io::Error::new(
                ErrorKind::AlreadyExists,
                "the path exists and is not a socket (not removed)",
            ))
        }
        Ok(_) if UnixStream::connect(path).is_ok() => {
            return Err(std::io::Error::new(
                ErrorKind::AddrInUse,
                "another process answers on this socket (another rvsd?)",
            ))
        }
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // A socket is connectable from its bind, and a client that connected before a chmod would
    // keep its connection: it is bound in a directory only rvsd's user may enter, given its
    // mode there, then linked into place.
    let l = bind_private(path, mode)?;
    l.set_nonblocking(true)?;
    let m = std::fs::symlink_metadata(path)?;
    Ok((
        l,
        SocketFile {
            path: path.to_path_buf(),
            id: file_id(&m),
        },
    ))
}

/// Serve clients until `stop` is raised (checked every 100 ms).
pub fn serve(
    listener: UnixListener,
    handler: Arc<dyn Handler>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("rvs-ctl".into())
        .spawn(move || {
            let clients = Arc::new(AtomicUsize::new(0));
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        if clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                            clients.fetch_sub(1, Ordering::SeqCst);
                            handler.count_error(RequestError::Busy);
                            let mut s = s;
                            let _ = write_msg(
                                &mut s,
                                &Response::Error {
                                    code: crate::ctl::proto::code::EBUSY,
                                    message: "too many control clients; retry".into(),
                                },
                            );
                            continue;
                        }
                        let (h, c) = (handler.clone(), clients.clone());
                        let spawned = std::thread::Builder::new()
                            .name("rvs-ctl-client".into())
                            .spawn(move || {
                                client(s, h.as_ref());
                                c.fetch_sub(1, Ordering::SeqCst);
                            });
                        if spawned.is_err() {
                            clients.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(100))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        })
        .expect("spawn the control thread")
}

/// Bind a listening socket at `path` with `mode`, reachable by others only once it has it: bound
/// in a fresh 0700 directory beside `path` (a short name: the whole path must fit a socket
/// address), chmod-ed, then linked to `path`, which fails if something is there by now (another
/// rvsd starting at the same moment) rather than replacing it.
fn bind_private(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = path.with_file_name(format!(".r{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let tmp = dir.join("s");
    let r = (|| {
        let l = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::hard_link(&tmp, path).map_err(|e| {
            if e.kind() == ErrorKind::AlreadyExists {
                std::io::Error::new(
                    ErrorKind::AddrInUse,
                    "another process took this socket as rvsd started (another rvsd?)",
                )
            } else {
                e
            }
        })?;
        Ok(l)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn client(mut s: UnixStream, h: &dyn Handler) {
    let _ = s.set_write_timeout(Some(IDLE_TIMEOUT));
    loop {
        let mut timed = Timed { s: &s, until: None };
        // The version is looked at before the operation is decoded: another version's
        // operations may not decode here.
        let request = read_msg::<serde_json::Value, _>(&mut timed).and_then(|v| {
            match v.get("version").and_then(serde_json::Value::as_u64) {
                Some(n) if n != u64::from(PROTO_VERSION) => Err(ReadError::Version(n)),
                _ => serde_json::from_value::<Request>(v)
                    .map_err(|e| ReadError::Malformed(e.to_string())),
            }
        });
        let reply = match request {
            Err(ReadError::Version(n)) => {
                h.count_error(RequestError::Version);
                Response::Error {
                    code: code::EPROTO,
                    message: format!(
                        "protocol version {n} not supported (rvsd speaks {PROTO_VERSION})"
                    ),
                }
            }
            Ok(req) => {
                let r = h.handle(req);
                if matches!(r, Response::Error { .. }) {
                    h.count_error(RequestError::Refused);
                }
                r
            }
            // Cut off in the middle of a request (idle between requests is no error).
            Err(ReadError::Io(e))
                if timed.until.is_some()
                    && matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) =>
            {
                h.count_error(RequestError::Timeout);
                return;
            }
            Err(ReadError::Io(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                h.count_error(RequestError::Truncated);
                return;
            }
            Err(ReadError::Closed) | Err(ReadError::Io(_)) => return,
            Err(e @ ReadError::TooLarge(_)) => {
                h.count_error(RequestError::TooLarge);
                // The body was not read: the stream is out of step, so answer and hang up.
                let _ = write_msg(
                    &mut s,
                    &Response::Error {
                        code: code::E2BIG,
                        message: e.to_string(),
                    },
                );
                return;
            }
            Err(e @ ReadError::Malformed(_)) => {
                h.count_error(RequestError::Malformed);
                Response::Error {
                    code: code::EINVAL,
                    message: e.to_string(),
                }
            }
        };
        // Each reply whole within IDLE_TIMEOUT (a socket timeout bounds each write only).
        let send =
            |r: &Response| write_msg(&mut crate::deadline::Deadline::new(&s, IDLE_TIMEOUT), r);
        match send(&reply) {
            Ok(()) => {}
            // Too large to send (nothing was written): say so rather than hang up.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                h.count_error(RequestError::TooLarge);
                let error = Response::Error {
                    code: code::E2BIG,
                    message: format!("reply too large: {e}"),
                };
                if send(&error).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::proto::Op;
    use std::io::{Read, Write};

    #[derive(Default)]
    struct Echo(std::sync::Mutex<Vec<RequestError>>);
    impl Handler for Echo {
        fn count_error(&self, why: RequestError) {
            self.0.lock().unwrap().push(why);
        }
        fn handle(&self, req: Request) -> Response {
            match req.op {
                Op::Status => Response::Status {
                    version: "t".into(),
                    generation: 7,
                    workers: 1,
                    conn_table_size: 4096,
                },
                // A reply too large to send.
                Op::GetTimeouts => Response::Error {
                    code: 0,
                    message: "x".repeat(crate::ctl::proto::MAX_MESSAGE),
                },
                _ => Response::Ok,
            }
        }
    }

    /// Send request `op` at protocol `version` on `s` and read the reply.
    fn ask(s: &mut UnixStream, version: u32, op: Op) -> Response {
        write_msg(s, &Request { version, op }).unwrap();
        read_msg(s).unwrap()
    }

    #[test]
    fn serves_many_clients_and_survives_bad_input() {
        let dir = std::env::temp_dir().join(format!("rvs-ctl-test-{}", std::process::id()));
        let path = dir.join("ctl.sock");
        let (l, _) = bind(&path, 0o600).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let stop = Arc::new(AtomicBool::new(false));
        let echo = Arc::new(Echo::default());
        let t = serve(l, echo.clone(), stop.clone());
        // Garbage JSON: an error reply, and the connection stays usable.
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(&5u32.to_be_bytes()).unwrap();
        s.write_all(b"{nope").unwrap();
        let r: Response = read_msg(&mut s).unwrap();
        assert!(matches!(r, Response::Error { code: 22, .. }), "{r:?}");
        assert!(matches!(
            ask(&mut s, PROTO_VERSION, Op::Status),
            Response::Status { generation: 7, .. }
        ));
        // Wrong version, also with an operation this version does not know.
        assert!(matches!(
            ask(&mut s, 99, Op::Status),
            Response::Error { code: 71, .. }
        ));
        let body = br#"{"version":99,"op":{"op":"from_the_future"}}"#;
        s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
        s.write_all(body).unwrap();
        let r: Response = read_msg(&mut s).unwrap();
        assert!(
            matches!(&r, Response::Error { code: 71, message } if message.contains("version 99")),
            "{r:?}"
        );
        // A reply too large to send: an E2BIG error instead, and the connection stays usable.
        let r = ask(&mut s, PROTO_VERSION, Op::GetTimeouts);
        assert!(
            matches!(&r, Response::Error { code: 7, message } if message.starts_with("reply too large")),
            "{r:?}"
        );
        assert!(matches!(
            ask(&mut s, PROTO_VERSION, Op::Status),
            Response::Status { .. }
        ));
        // Oversized: error, then the server hangs up.
        let mut s2 = UnixStream::connect(&path).unwrap();
        s2.write_all(&(64u32 << 20).to_be_bytes()).unwrap();
        assert!(matches!(
            read_msg::<Response, _>(&mut s2).unwrap(),
            Response::Error { code: 7, .. }
        ));
        let mut rest = Vec::new();
        assert_eq!(s2.read_to_end(&mut rest).unwrap(), 0);
        // Hung up in the middle of a request: counted.
        let mut s3 = UnixStream::connect(&path).unwrap();
        s3.write_all(&100u32.to_be_bytes()).unwrap();
        s3.write_all(b"{\"version\"").unwrap();
        drop(s3);
        // Many clients at once.
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let p = path.clone();
                std::thread::spawn(move || crate::ctl::client::call(&p, Op::Status).unwrap())
            })
            .collect();
        for th in threads {
            assert!(matches!(th.join().unwrap(), Response::Status { .. }));
        }
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        // Each bad request counted once, by reason (the too-large reply is an error reply).
        use RequestError::*;
        assert_eq!(
            *echo.0.lock().unwrap(),
            vec![Malformed, Version, Version, Refused, TooLarge, TooLarge, Truncated]
        );
        // Bound in a private directory, moved into place: nothing else left beside it.
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("ctl.sock")]);
    }

    /// A socket someone answers on and a file that is not a socket are never taken over; a
    /// stale socket is; a socket file replaced by another daemon is not removed at the end.
    #[test]
    fn bind_takes_only_a_stale_socket_and_removes_only_its_own() {
        let dir = std::env::temp_dir().join(format!("rvs-ctl-bind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ctl.sock");
        let _ = std::fs::remove_file(&path);
        let (live, first) = bind(&path, 0o600).unwrap();
        let e = bind(&path, 0o600).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AddrInUse, "{e}");
        assert!(path.exists(), "the live socket is kept");
        drop(live); // nobody answers any more: stale
        let (_l2, second) = bind(&path, 0o600).unwrap();
        first.remove();
        assert!(path.exists(), "not the first daemon's file any more");
        second.remove();
        assert!(!path.exists());
        let file = dir.join("notes.txt");
        std::fs::write(&file, "keep me").unwrap();
        let e = bind(&file, 0o600).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A client sending its request a byte now and then is cut off `REQUEST_TIMEOUT` after the
    /// request's first byte, however steadily it sends.
    #[test]
    fn a_dribbling_request_is_cut_off() {
        let dir = std::env::temp_dir().join(format!("rvs-ctl-drip-{}", std::process::id()));
        let path = dir.join("ctl.sock");
        let (l, _) = bind(&path, 0o600).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let echo = Arc::new(Echo::default());
        let t = serve(l, echo.clone(), stop.clone());
        let mut s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        s.write_all(&100u32.to_be_bytes()).unwrap();
        let t0 = std::time::Instant::now();
        loop {
            if s.write_all(b" ").is_err() {
                break;
            }
            let mut b = [0u8; 16];
            match s.read(&mut b) {
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                _ => break,
            }
            assert!(
                t0.elapsed() < REQUEST_TIMEOUT + Duration::from_secs(3),
                "still connected after {:?}",
                t0.elapsed()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        assert!(t0.elapsed() >= REQUEST_TIMEOUT - Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        assert_eq!(*echo.0.lock().unwrap(), vec![RequestError::Timeout]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
