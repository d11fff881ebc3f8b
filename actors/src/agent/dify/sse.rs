//! Server-sent events as Dify streams them: `data: {json}` lines separated by blank lines.
//! Bytes arrive in arbitrary chunks; [`SseDecoder`] hands back whole `data:` payloads.

/// Splits a byte stream into the `data:` payloads of its events.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
}

/// Most bytes one unfinished line may hold before the stream counts as broken (a Dify
/// answer chunk is small; this bounds what a hostile server can make the executor buffer).
pub const MAX_LINE: usize = 16 * 1024 * 1024;

impl SseDecoder {
    /// Feeds a chunk; returns the payloads of the `data:` lines it completed, or `Err` when a
    /// line grew over [`MAX_LINE`].
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<String>, usize> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(data) = line.strip_prefix("data:") {
                out.push(data.trim_start().to_string());
            }
        }
        if self.buf.len() > MAX_LINE {
            return Err(self.buf.len());
        }
        Ok(out)
    }

    /// The payload of a last `data:` line the stream did not end with a newline.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let line = String::from_utf8_lossy(&rest);
        line.trim_end_matches('\r')
            .strip_prefix("data:")
            .map(|d| d.trim_start().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_across_chunks() {
        let mut d = SseDecoder::default();
        assert!(d.feed(b"event: message\ndata: {\"a\"").unwrap().is_empty());
        assert_eq!(
            d.feed(b":1}\r\n\r\ndata: x\n").unwrap(),
            vec!["{\"a\":1}", "x"]
        );
        assert!(d.feed(b"data: tail").unwrap().is_empty());
        assert_eq!(d.finish().as_deref(), Some("tail"));
    }
}
