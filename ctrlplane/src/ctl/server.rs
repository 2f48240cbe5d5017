//! The control-socket server: a Unix socket, one thread per client (bounded), framed JSON
//! requests answered by a [`Handler`]. Malformed, oversized or wrong-version requests get an error
//! reply; a slow or silent client times out; nothing a client sends can stop the daemon.

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
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
}

impl RequestError {
    /// Every reason, in the order of their indexes (`reason as usize`).
    pub const ALL: [RequestError; 4] = [
        RequestError::Malformed,
        RequestError::TooLarge,
        RequestError::Version,
        RequestError::Refused,
    ];

    /// The `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            RequestError::Malformed => "malformed",
            RequestError::TooLarge => "too_large",
            RequestError::Version => "version",
            RequestError::Refused => "refused",
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

/// Create the socket at `path` with permissions `mode` (a stale socket file is replaced).
pub fn bind(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    l.set_nonblocking(true)?;
    Ok(l)
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
                            let mut s = s;
                            let _ = write_msg(
                                &mut s,
                                &Response::Error {
                                    code: 16,
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

fn client(mut s: UnixStream, h: &dyn Handler) {
    let _ = s.set_write_timeout(Some(IDLE_TIMEOUT));
    loop {
        let request = read_msg::<Request, _>(&mut Timed { s: &s, until: None });
        let reply = match request {
            Ok(req) if req.version != PROTO_VERSION => {
                h.count_error(RequestError::Version);
                Response::Error {
                    code: code::EPROTO,
                    message: format!(
                        "protocol version {} not supported (rvsd speaks {PROTO_VERSION})",
                        req.version
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
        match write_msg(&mut s, &reply) {
            Ok(()) => {}
            // Too large to send (nothing was written): say so rather than hang up.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let error = Response::Error {
                    code: code::E2BIG,
                    message: format!("reply too large: {e}"),
                };
                if write_msg(&mut s, &error).is_err() {
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
        let l = bind(&path, 0o600).unwrap();
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
        // Wrong version.
        assert!(matches!(
            ask(&mut s, 99, Op::Status),
            Response::Error { code: 71, .. }
        ));
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
            vec![Malformed, Version, Refused, TooLarge]
        );
    }

    /// A client sending its request a byte now and then is cut off `REQUEST_TIMEOUT` after the
    /// request's first byte, however steadily it sends.
    #[test]
    fn a_dribbling_request_is_cut_off() {
        let dir = std::env::temp_dir().join(format!("rvs-ctl-drip-{}", std::process::id()));
        let path = dir.join("ctl.sock");
        let l = bind(&path, 0o600).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let t = serve(l, Arc::new(Echo::default()), stop.clone());
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
        let _ = std::fs::remove_dir_all(&dir);
    }
}
