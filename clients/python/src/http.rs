//! Just enough HTTP/1.1 for GETs of chunk streams from a neurocube server:
//! keep-alive connections in a pool, `Content-Length`, chunked and
//! close-delimited bodies.
//!
//! Why not a general client: with ureq every frame was copied twice in
//! user space (its buffer, then ours) before it was decoded; measured with
//! `perf` on a 64 MiB cutout, those copies were as costly as the LZ4
//! decoding itself. Here a body read larger than the connection's small
//! buffer goes from the socket straight into the caller's memory (the
//! standard `BufReader` bypass), so a frame is copied once, by the kernel.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;

/// Each connection's read buffer: status lines, headers, chunk sizes and
/// record heads come through it; frames bypass it.
const BUFFER: usize = 32 << 10;
/// The longest status or header line accepted.
const MAX_LINE: usize = 16 << 10;
/// The most header lines accepted.
const MAX_HEADERS: usize = 128;
/// Idle connections kept for reuse.
const MAX_IDLE: usize = 64;

type Conn = BufReader<TcpStream>;

/// A server's address and the idle connections to it.
#[derive(Debug)]
pub struct Pool {
    host: String,
    timeout: Duration,
    idle: Mutex<Vec<Conn>>,
}

/// A URL this client can fetch: `http://host[:port]/path`.
fn split_url(url: &str) -> io::Result<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| invalid(format!("{url}: only http:// URLs are fetched here")))?;
    let slash = rest.find('/').unwrap_or(rest.len());
    let (host, path) = rest.split_at(slash);
    if host.is_empty() {
        return Err(invalid(format!("{url}: no host")));
    }
    Ok((host, if path.is_empty() { "/" } else { path }))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn protocol(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Pool {
    /// A pool for the server of `url` (its host and port), each socket
    /// operation waiting at most `timeout`.
    pub fn new(url: &str, timeout: Duration) -> io::Result<Self> {
        let (host, _) = split_url(url)?;
        // A port follows the last ':' that is outside an IPv6 literal's brackets.
        let has_port = host
            .rsplit_once(']')
            .map_or(host, |(_, rest)| rest)
            .contains(':');
        let host = if has_port {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        Ok(Pool {
            host,
            timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn connect(&self) -> io::Result<Conn> {
        let stream = TcpStream::connect(&self.host)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        Ok(BufReader::with_capacity(BUFFER, stream))
    }

    fn take_idle(&self) -> Option<Conn> {
        self.idle.lock().ok()?.pop()
    }

    fn put_idle(&self, conn: Conn) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
    }

    /// GET `url` (on this pool's server) with `headers`; the response with
    /// its body left to read. A kept connection the server has closed
    /// meanwhile is replaced by a new one, once.
    pub fn get(&self, url: &str, headers: &[(String, String)]) -> io::Result<Response<'_>> {
        let (host, path) = split_url(url)?;
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
        for (k, v) in headers {
            if k.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
                return Err(invalid(format!("header {k:?} is not a valid header")));
            }
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        if let Some(conn) = self.take_idle() {
            match self.send(conn, &request) {
                Ok(r) => return Ok(r),
                // The server closed the idle connection: retry on a new one.
                Err(e) if stale(&e) => {}
                Err(e) => return Err(e),
            }
        }
        self.send(self.connect()?, &request)
    }

    fn send(&self, mut conn: Conn, request: &str) -> io::Result<Response<'_>> {
        conn.get_mut().write_all(request.as_bytes())?;
        let head = read_head(&mut conn)?;
        Ok(Response {
            status: head.status,
            headers: head.headers,
            body: Body {
                conn: Some(conn),
                framing: head.framing,
                reusable: head.keep_alive,
                pool: self,
            },
        })
    }
}

/// What an idle connection closed by the server looks like on reuse.
fn stale(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// How the body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked: bytes left in the current chunk; `None` before a size line.
    Chunked(Option<u64>),
    /// Until the server closes the connection.
    Close,
    /// The body has been read whole.
    Done,
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    framing: Framing,
    keep_alive: bool,
}

fn read_line<R: BufRead>(r: &mut R) -> io::Result<String> {
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if line.last() != Some(&b'\n') {
        return Err(protocol("an HTTP line too long or cut short"));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| protocol("an HTTP line that is not UTF-8"))
}

fn read_head<R: BufRead>(r: &mut R) -> io::Result<Head> {
    let mut status_line = read_line(r)?;
    let mut status = parse_status(&status_line)?;
    // 1xx answers precede the real one.
    while (100..200).contains(&status) {
        while !read_line(r)?.is_empty() {}
        status_line = read_line(r)?;
        status = parse_status(&status_line)?;
    }
    let http10 = status_line.starts_with("HTTP/1.0");
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(protocol("too many HTTP headers"));
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| protocol(format!("a malformed HTTP header: {line:?}")))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let value = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let chunked = value("transfer-encoding").is_some_and(|v| {
        v.to_ascii_lowercase()
            .split(',')
            .any(|t| t.trim() == "chunked")
    });
    let connection = value("connection").map(str::to_ascii_lowercase);
    let keep_alive = match connection.as_deref() {
        Some(c) if c.contains("close") => false,
        Some(c) if c.contains("keep-alive") => true,
        _ => !http10,
    };
    let framing = if status == 204 || status == 304 {
        Framing::Done
    } else if chunked {
        Framing::Chunked(None)
    } else if let Some(len) = value("content-length") {
        let len = len
            .parse()
            .map_err(|_| protocol(format!("Content-Length {len:?}")))?;
        if len == 0 {
            Framing::Done
        } else {
            Framing::Length(len)
        }
    } else {
        Framing::Close
    };
    Ok(Head {
        status,
        keep_alive: keep_alive && framing != Framing::Close,
        headers,
        framing,
    })
}

fn parse_status(line: &str) -> io::Result<u16> {
    let mut parts = line.splitn(3, ' ');
    match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code
            .parse()
            .map_err(|_| protocol(format!("a malformed status line: {line:?}"))),
        _ => Err(protocol(format!("not an HTTP answer: {line:?}"))),
    }
}

/// An answer: status, headers (names in lower case) and the body.
pub struct Response<'p> {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body<'p>,
}

impl Response<'_> {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A body; once read to its end, its connection goes back to the pool
/// (unless the server asked to close it). Dropped early, the connection is
/// closed.
pub struct Body<'p> {
    conn: Option<Conn>,
    framing: Framing,
    reusable: bool,
    pool: &'p Pool,
}

impl Body<'_> {
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take()
            && self.reusable
        {
            self.pool.put_idle(conn);
        }
    }
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(0);
            };
            match self.framing {
                Framing::Done => {
                    self.finish();
                    return Ok(0);
                }
                Framing::Close => {
                    let n = conn.read(buf)?;
                    if n == 0 {
                        self.conn = None;
                        self.framing = Framing::Done;
                    }
                    return Ok(n);
                }
                Framing::Length(left) => {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = conn.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    let left = left - n as u64;
                    self.framing = Framing::Length(left);
                    if left == 0 {
                        self.finish();
                    }
                    return Ok(n);
                }
                Framing::Chunked(None) => {
                    let line = read_line(conn)?;
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(hex, 16)
                        .map_err(|_| protocol(format!("a malformed chunk size: {line:?}")))?;
                    if size == 0 {
                        // Trailers, then the empty line.
                        while !read_line(conn)?.is_empty() {}
                        self.finish();
                        return Ok(0);
                    }
                    self.framing = Framing::Chunked(Some(size));
                }
                Framing::Chunked(Some(left)) => {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = conn.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    let left = left - n as u64;
                    if left == 0 {
                        if !read_line(conn)?.is_empty() {
                            return Err(protocol("a chunk longer than its size"));
                        }
                        self.framing = Framing::Chunked(None);
                    } else {
                        self.framing = Framing::Chunked(Some(left));
                    }
                    return Ok(n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread;

    use super::*;

    /// A one-thread server on loopback answering each connection's
    /// requests with the given raw answers, in order; it returns how many
    /// connections it accepted.
    fn serve(answers: Vec<Vec<u8>>, per_conn: usize) -> (String, thread::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let h = thread::spawn(move || {
            let mut answers = answers.into_iter();
            let mut conns = 0;
            while answers.len() > 0 {
                let (s, _) = listener.accept().unwrap();
                conns += 1;
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                for _ in 0..per_conn {
                    let Some(a) = answers.next() else { break };
                    // The request: lines until the empty one.
                    loop {
                        let l = read_line(&mut r).unwrap();
                        if l.is_empty() {
                            break;
                        }
                    }
                    w.write_all(&a).unwrap();
                }
            }
            conns
        });
        (url, h)
    }

    fn body(r: Response<'_>) -> Vec<u8> {
        let mut b = r.body;
        let mut v = Vec::new();
        b.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn reads_chunked_and_sized_bodies_on_one_kept_connection() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n\
            5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\n\r\n"
            .to_vec();
        let sized =
            b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\nRetry-After: 2\r\n\r\nbusy".to_vec();
        let empty = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
        let (url, server) = serve(vec![chunked, sized, empty], 3);
        let pool = Pool::new(&url, Duration::from_secs(5)).unwrap();
        let r = pool
            .get(
                &format!("{url}/a/b/"),
                &[("Authorization".into(), "Bearer t".into())],
            )
            .unwrap();
        assert_eq!((r.status, r.header("x-a")), (200, Some("1")));
        assert_eq!(body(r), b"hello world!");
        let r = pool.get(&format!("{url}/c"), &[]).unwrap();
        assert_eq!((r.status, r.header("Retry-After")), (503, Some("2")));
        assert_eq!(body(r), b"busy");
        assert_eq!(body(pool.get(&url, &[]).unwrap()), b"");
        assert_eq!(server.join().unwrap(), 1, "one connection served all three");
    }

    #[test]
    fn a_closed_idle_connection_is_replaced() {
        let a = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec();
        // One answer per connection: the server closes the kept one.
        let (url, server) = serve(vec![a.clone(), a], 1);
        let pool = Pool::new(&url, Duration::from_secs(5)).unwrap();
        assert_eq!(body(pool.get(&url, &[]).unwrap()), b"ok");
        thread::sleep(Duration::from_millis(50));
        assert_eq!(body(pool.get(&url, &[]).unwrap()), b"ok");
        assert_eq!(server.join().unwrap(), 2);
    }

    #[test]
    fn refuses_what_is_not_http_or_cut_short() {
        let cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec();
        let bad = b"SSH-2.0-OpenSSH\r\n\r\n".to_vec();
        let bad_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec();
        let (url, server) = serve(vec![cut, bad, bad_chunk], 1);
        let pool = Pool::new(&url, Duration::from_secs(5)).unwrap();
        let mut b = pool.get(&url, &[]).unwrap().body;
        let e = b.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let e = pool.get(&url, &[]).err().unwrap();
        assert!(e.to_string().contains("not an HTTP answer"), "{e}");
        let mut b = pool.get(&url, &[]).unwrap().body;
        let e = b.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("malformed chunk size"), "{e}");
        server.join().unwrap();
        assert!(Pool::new("https://example.org/", Duration::from_secs(1)).is_err());
        for (url, host) in [
            ("http://a.example", "a.example:80"),
            ("http://a.example:8080/x", "a.example:8080"),
            ("http://[::1]/x", "[::1]:80"),
            ("http://[::1]:9/", "[::1]:9"),
        ] {
            assert_eq!(Pool::new(url, Duration::from_secs(1)).unwrap().host, host);
        }
        let e = pool
            .get(&url, &[("X".into(), "a\r\nY: b".into())])
            .err()
            .unwrap();
        assert!(e.to_string().contains("not a valid header"), "{e}");
    }
}
