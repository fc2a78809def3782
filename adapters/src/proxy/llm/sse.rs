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

/// Cuts a byte stream into events; bounded by `max_bytes` per event. Lines end with CRLF, LF
/// or CR, as the standard says; an empty line ends an event. Each byte is looked at once.
pub struct Parser {
    buf: BytesMut,
    max_bytes: usize,
    /// How far `buf` has been scanned for the end of the event.
    pos: usize,
    /// The scan is at the start of a line.
    line_start: bool,
    /// The byte before `pos` was a CR (an LF right after it ends the same line).
    cr: bool,
}

impl Parser {
    /// A parser refusing events longer than `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_bytes,
            pos: 0,
            line_start: true,
            cr: false,
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
        let Some(end) = self.scan() else {
            if self.buf.len() > self.max_bytes {
                return Err(self.buf.len());
            }
            return Ok(None);
        };
        let raw = self.buf.split_to(end).freeze();
        self.pos = 0;
        self.line_start = true;
        // An event that ended on a CR whose LF had not arrived yet: that LF still belongs to
        // it, not to an empty event of its own.
        self.cr = raw.last() == Some(&b'\r');
        let text = String::from_utf8_lossy(&raw)
            .replace("\r\n", "\n")
            .replace('\r', "\n");
        let (mut name, mut data) = (None, Vec::new());
        for line in text.split('\n') {
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

    /// Scans on from where it stopped; the end of the first event (after its empty line).
    fn scan(&mut self) -> Option<usize> {
        while self.pos < self.buf.len() {
            let b = self.buf[self.pos];
            self.pos += 1;
            if std::mem::take(&mut self.cr) && b == b'\n' {
                continue; // the LF of a CRLF
            }
            if b == b'\n' || b == b'\r' {
                if self.line_start {
                    // An empty line: the event ends here (with the LF of a CRLF if present).
                    let lf = b == b'\r' && self.buf.get(self.pos) == Some(&b'\n');
                    return Some(self.pos + usize::from(lf));
                }
                self.line_start = true;
                self.cr = b == b'\r';
            } else {
                self.line_start = false;
            }
        }
        None
    }

    /// What is left unended (a stream cut mid-event).
    pub fn rest(&mut self) -> Bytes {
        self.pos = 0;
        self.line_start = true;
        self.cr = false;
        self.buf.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cut_at_blank_lines_whatever_the_chunking() {
        let stream = b"event: a\ndata: {\"x\":1}\n\ndata: [DONE]\r\n\r\n";
        let mixed = b"data: 1\n\r\ndata: 2\r\rdata: 3\r\n\n";
        let mut p = Parser::new(1 << 10);
        p.push(mixed);
        let got: Vec<String> = std::iter::from_fn(|| p.next_event().unwrap())
            .map(|e| e.data)
            .collect();
        assert_eq!(
            got,
            ["1", "2", "3"],
            "LF+CRLF, CR+CR and CRLF+LF end events too"
        );
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
            let mut raw: Vec<u8> = got.iter().flat_map(|e| e.raw.to_vec()).collect();
            raw.extend_from_slice(&p.rest());
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
