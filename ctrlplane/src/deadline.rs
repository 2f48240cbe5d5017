//! Writing a whole reply within a deadline: a socket's write timeout bounds each `write` call,
//! so a peer that reads a byte now and then would keep a writer (and its slot) forever.

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// A socket whose write timeout can be set.
pub trait TimedSocket {
    /// `set_write_timeout` of the socket.
    fn set_write_limit(&self, d: Option<Duration>) -> std::io::Result<()>;
}

impl TimedSocket for TcpStream {
    fn set_write_limit(&self, d: Option<Duration>) -> std::io::Result<()> {
        self.set_write_timeout(d)
    }
}

impl TimedSocket for UnixStream {
    fn set_write_limit(&self, d: Option<Duration>) -> std::io::Result<()> {
        self.set_write_timeout(d)
    }
}

/// `s` written until `until`, as a whole: each write waits at most for the time left; past it,
/// writes fail with `TimedOut`.
pub struct Deadline<'a, S> {
    s: &'a S,
    until: Instant,
}

impl<'a, S> Deadline<'a, S> {
    /// Writes to `s` that must all be done within `limit` from now.
    pub fn new(s: &'a S, limit: Duration) -> Self {
        Deadline {
            s,
            until: Instant::now() + limit,
        }
    }
}

impl<S: TimedSocket> Write for Deadline<'_, S>
where
    for<'b> &'b S: Write,
{
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                "reply not taken in time",
            ));
        }
        self.s.set_write_limit(Some(left))?;
        (&mut &*self.s).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        (&mut &*self.s).flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A peer that reads a little now and then cannot stretch a reply past the deadline.
    #[test]
    fn a_slow_reader_cannot_stretch_a_reply() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 1];
            let mut n = 0;
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(3) {
                match b.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        });
        let t0 = Instant::now();
        let big = vec![7u8; 8 << 20];
        let e = Deadline::new(&a, Duration::from_millis(300))
            .write_all(&big)
            .unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock),
            "{e}"
        );
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        drop(a);
        assert!(reader.join().unwrap() > 0);
        // A reader that keeps up gets all of it.
        let (a, mut b) = UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            b.read_to_end(&mut v).unwrap();
            v.len()
        });
        Deadline::new(&a, Duration::from_secs(5))
            .write_all(&big)
            .unwrap();
        drop(a);
        assert_eq!(reader.join().unwrap(), big.len());
    }
}
