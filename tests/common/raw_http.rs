//! HTTP/1.1 over a plain TCP socket, for requests reqwest cannot make here (it is built without
//! its `stream` feature): chunked bodies, bodies trickled slowly, bodies the server stops
//! reading half-way (413). The answer is read while the body is still being written, so an
//! early answer is seen even when the server never reads the rest.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::executor_process::parse_body;

/// An answer read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    /// Status code of the status line.
    pub status: u16,
    /// The body (de-chunked), as [`parse_body`] reads it: JSON, `Null` or `Value::String`.
    pub body: Value,
    /// The whole answer as text (head and raw body), for panic messages.
    pub text: String,
    /// From connecting to having the complete answer.
    pub elapsed: Duration,
}

/// How to write the body: `piece` bytes, then a pause of `every` (slow clients).
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Bytes per write.
    pub piece: usize,
    /// Pause after each write.
    pub every: Duration,
}

/// `METHOD path HTTP/1.1` with `Host`, `Connection: close`, `headers` and the blank line.
pub fn request_head(method: &str, path: &str, port: u16, headers: &[(&str, &str)]) -> String {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// `chunks` in chunked transfer encoding, with the final empty chunk.
pub fn chunked(chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Sends `head` then `body` (paced by `pace`, or at once) to 127.0.0.1:`port` and reads the
/// answer meanwhile. Write errors are ignored (the server may answer and close before reading
/// everything). Panics if no complete answer arrives within `timeout`.
pub async fn send_raw(
    port: u16,
    head: &str,
    body: Vec<u8>,
    pace: Option<Pace>,
    timeout: Duration,
) -> RawResponse {
    let started = Instant::now();
    let sock = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the executor");
    let (mut rd, mut wr) = sock.into_split();
    let head = head.as_bytes().to_vec();
    let writer = tokio::spawn(async move {
        wr.write_all(&head).await?;
        match pace {
            None => wr.write_all(&body).await?,
            Some(p) => {
                for piece in body.chunks(p.piece.max(1)) {
                    wr.write_all(piece).await?;
                    tokio::time::sleep(p.every).await;
                }
            }
        }
        std::io::Result::Ok(wr)
    });

    let deadline = tokio::time::Instant::now() + timeout;
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let parsed = loop {
        if let Some(done) = parse_complete(&raw) {
            break Some(done);
        }
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break parse_complete(&raw).or_else(|| parse_any(&raw)),
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
            Err(_) => {
                writer.abort();
                panic!(
                    "no complete answer within {timeout:?}; got so far:\n{}",
                    String::from_utf8_lossy(&raw)
                )
            }
        }
    };
    let elapsed = started.elapsed();
    writer.abort();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (status, body) =
        parsed.unwrap_or_else(|| panic!("connection closed without an HTTP answer:\n{text:?}"));
    RawResponse {
        status,
        body: parse_body(&body),
        text,
        elapsed,
    }
}

/// POSTs `chunks` as a chunked JSON body.
pub async fn post_chunked(port: u16, path: &str, chunks: &[&[u8]]) -> RawResponse {
    let head = request_head(
        "POST",
        path,
        port,
        &[
            ("Content-Type", "application/json"),
            ("Transfer-Encoding", "chunked"),
        ],
    );
    send_raw(port, &head, chunked(chunks), None, Duration::from_secs(10)).await
}

/// (status, de-chunked body) once the answer is complete by its own framing.
fn parse_complete(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let (status, head, rest) = split_head(raw)?;
    if header(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return dechunk(rest).map(|b| (status, b));
    }
    let len: usize = header(&head, "content-length")?.trim().parse().ok()?;
    (rest.len() >= len).then(|| (status, rest[..len].to_vec()))
}

/// (status, body so far) of an answer cut by the end of the connection.
fn parse_any(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let (status, _, rest) = split_head(raw)?;
    Some((status, rest.to_vec()))
}

fn split_head(raw: &[u8]) -> Option<(u16, String, &[u8])> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status = head
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, head, &raw[end + 4..]))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
}

/// The body of a complete chunked message, `None` while the final chunk has not arrived.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..eol]).ok()?;
        let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if n == 0 {
            return Some(out);
        }
        if rest.len() < n + 2 {
            return None;
        }
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n + 2..];
    }
}
