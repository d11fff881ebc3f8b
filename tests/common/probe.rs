//! What the benchmarks measure with: a plain-socket HTTP prober and p50/p99 of a sample.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// p50/p99 of a sample, in milliseconds (NaN for an empty one).
pub fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms: Vec<f64> = v.into_iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    let at = |p: f64| {
        ms.get(((ms.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    (at(0.5), at(0.99))
}

/// `GET path` on one keep-alive connection, one request at least `every` apart (zero: back to
/// back), until `stop`; returns each latency.
pub fn probe(port: u16, path: &str, every: Duration, stop: &AtomicBool) -> Vec<Duration> {
    let mut lat = Vec::new();
    let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return lat;
    };
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return lat;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        if writer.write_all(request.as_bytes()).is_err() {
            break;
        }
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return lat;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            break;
        }
        lat.push(t.elapsed());
        // Pacing of the prober itself, not synchronisation.
        std::thread::sleep(every.saturating_sub(t.elapsed()));
    }
    lat
}
