//! Server-sent events (the WHATWG HTML standard, "Server-sent events" §9.2.6): the upstream's
//! byte stream cut into events, each kept as the exact bytes received (forwarded unchanged)
//! beside its parsed `event` name and `data`.

use bytes::{Bytes, BytesMut};

/// One event.
#[derive(Debug, PartialEq)]
pub struct Event {
    /// The bytes as received, the blank line that ends it included.
    pub raw: Bytes,
    /// Its `event:` name, if any.
    pub name: Option<String>,
    /// Its `data:` lines joined with `\n`.
    pub data: String,
}

/// Cuts a byte stream into events; bounded by `max_bytes` per event.
pub struct Parser {
    buf: BytesMut,
    max_bytes: usize,
}

impl Parser {
    /// A parser refusing events longer than `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_bytes,
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole event, `Ok(None)` when none is complete yet.
    ///
    /// # Errors
    /// An event longer than the bound.
    pub fn next_event(&mut self) -> Result<Option<Event>, usize> {
        let Some(end) = event_end(&self.buf) else {
            if self.buf.len() > self.max_bytes {
                return Err(self.buf.len());
            }
            return Ok(None);
        };
        let raw = self.buf.split_to(end).freeze();
        let text = String::from_utf8_lossy(&raw);
        let (mut name, mut data) = (None, Vec::new());
        for line in text.lines() {
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "event" => name = Some(value.to_string()),
                "data" => data.push(value),
                _ => {}
            }
        }
        let data = data.join("\n");
        Ok(Some(Event { raw, name, data }))
    }

    /// What is left unended (a stream cut mid-event).
    pub fn rest(&mut self) -> Bytes {
        self.buf.split().freeze()
    }
}

/// Where the first event ends (after its blank line: `\n\n`, `\r\n\r\n` or `\r\r`).
fn event_end(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'\n' && b[i + 1] == b'\n' {
            return Some(i + 2);
        }
        if b[i] == b'\r' && b[i + 1] == b'\r' {
            return Some(i + 2);
        }
        if i + 3 < b.len() && &b[i..i + 4] == b"\r\n\r\n" {
            return Some(i + 4);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cut_at_blank_lines_whatever_the_chunking() {
        let stream = b"event: a\ndata: {\"x\":1}\n\ndata: [DONE]\r\n\r\n";
        for cut in 1..stream.len() {
            let mut p = Parser::new(1 << 10);
            let mut got = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                p.push(part);
                while let Some(e) = p.next_event().unwrap() {
                    got.push(e);
                }
            }
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(got[0].name.as_deref(), Some("a"));
            assert_eq!(got[0].data, "{\"x\":1}");
            assert_eq!(got[1].data, "[DONE]");
            let raw: Vec<u8> = got.iter().flat_map(|e| e.raw.to_vec()).collect();
            assert_eq!(raw, stream, "forwarded unchanged");
        }
    }

    #[test]
    fn an_event_over_the_bound_is_refused() {
        let mut p = Parser::new(8);
        p.push(b"data: 0123456789");
        assert!(p.next_event().is_err());
    }
}
