//! The load generators: raw HTTP/1.1 over kept-alive connections (a few µs of client CPU per
//! request, so the proxies, not the client, are what is measured), on one thread.
//!
//! - [`open_loop`]: request k is due at `t0 + k / rate`, fixed in advance; a clock thread
//!   (plain `thread::sleep` with 1 µs timer slack, not tokio's 1 ms timer) hands each request
//!   to its connection (k mod connections) when it is due; latency counts from the due time,
//!   so a slow answer delays the measurement, not the schedule (no coordinated omission).
//!   A request whose connection is still busy waits for it, and that wait is in its latency.
//! - [`closed_loop`]: every connection sends its next request as soon as the answer is in.
//! - [`streams`]: concurrent streamed chat completions, each frame's transit time read from
//!   the upstream's send stamp.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::upstream::now_ns;

/// Connections re-opened after the server closed a kept-alive one (counted, not hidden).
pub static RECONNECTS: AtomicU64 = AtomicU64::new(0);

/// Makes request k's bytes.
pub type MakeRequest = Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>;

/// An answer: status and body (chunked bodies decoded).
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One kept-alive connection.
pub struct Conn {
    addr: SocketAddr,
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            addr,
            stream,
            buf: Vec::with_capacity(8192),
        })
    }

    async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16384];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Sends `req` and reads the whole answer; a connection the server closed while idle
    /// is re-opened once and the request sent again.
    pub async fn roundtrip(&mut self, req: &[u8]) -> io::Result<Answer> {
        let mut body = Vec::new();
        let status = self
            .exchange(req, &mut |d: &[u8], _| body.extend_from_slice(d))
            .await?;
        Ok(Answer { status, body })
    }

    /// Sends `req`; `on_data(decoded body bytes, arrival ns)` sees the body as it arrives.
    pub async fn exchange(
        &mut self,
        req: &[u8],
        on_data: &mut (dyn FnMut(&[u8], u64) + Send),
    ) -> io::Result<u16> {
        match self.try_exchange(req, on_data).await {
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {
                RECONNECTS.fetch_add(1, Ordering::Relaxed);
                *self = Conn::open(self.addr).await?;
                self.try_exchange(req, on_data).await
            }
            r => r,
        }
    }

    async fn try_exchange(
        &mut self,
        req: &[u8],
        on_data: &mut (dyn FnMut(&[u8], u64) + Send),
    ) -> io::Result<u16> {
        self.buf.clear();
        if self.stream.write_all(req).await.is_err() {
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill().await.unwrap_or(0) == 0 {
                // Closed before any answer: an idle keep-alive the server dropped.
                return Err(if self.buf.is_empty() {
                    io::ErrorKind::ConnectionAborted.into()
                } else {
                    io::ErrorKind::UnexpectedEof.into()
                });
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let chunked = header("transfer-encoding:").is_some_and(|v| v.contains("chunked"));
        let length: Option<usize> = header("content-length:").and_then(|v| v.parse().ok());
        let close = header("connection:").is_some_and(|v| v.contains("close"));
        let mut rest: Vec<u8> = self.buf.split_off(head_end);
        self.buf.clear();
        if chunked {
            let mut d = Dechunk::default();
            let mut out = Vec::new();
            loop {
                out.clear();
                d.feed(&rest, &mut out);
                rest.clear();
                if !out.is_empty() {
                    on_data(&out, now_ns());
                }
                if d.done {
                    break;
                }
                if self.fill().await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                rest = std::mem::take(&mut self.buf);
            }
        } else if let Some(len) = length {
            let mut got = 0;
            loop {
                let take = rest.len().min(len - got);
                if take > 0 {
                    on_data(&rest[..take], now_ns());
                }
                got += take;
                if got == len {
                    break;
                }
                rest.clear();
                if self.fill().await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                rest = std::mem::take(&mut self.buf);
            }
        } else {
            // Until the server closes (HTTP/1.0 style).
            on_data(&rest, now_ns());
            loop {
                self.buf.clear();
                if self.fill().await? == 0 {
                    break;
                }
                on_data(&self.buf, now_ns());
            }
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        if close {
            RECONNECTS.fetch_add(1, Ordering::Relaxed);
            *self = Conn::open(self.addr).await?;
        }
        Ok(status)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An incremental decoder of `Transfer-Encoding: chunked`.
#[derive(Default)]
struct Dechunk {
    pending: Vec<u8>,
    left: usize,
    crlf: bool,
    done: bool,
}

impl Dechunk {
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.pending.extend_from_slice(input);
        let mut i = 0;
        loop {
            if self.left > 0 {
                let n = self.left.min(self.pending.len() - i);
                out.extend_from_slice(&self.pending[i..i + n]);
                i += n;
                self.left -= n;
                if self.left > 0 {
                    break;
                }
                self.crlf = true;
            }
            if self.crlf {
                if self.pending.len() - i < 2 {
                    break;
                }
                i += 2;
                self.crlf = false;
            }
            let Some(end) = find(&self.pending[i..], b"\r\n") else {
                break;
            };
            let line = String::from_utf8_lossy(&self.pending[i..i + end]).to_string();
            let size =
                usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
            i += end + 2;
            if size == 0 {
                self.done = true;
                break;
            }
            self.left = size;
        }
        self.pending.drain(..i);
    }
}

/// One request of a run: due (open loop) or sent (closed loop), sent, done, all ns since the
/// epoch; and whether its answer was the expected one.
#[derive(Clone, Copy)]
pub struct Sample {
    pub due: u64,
    pub sent: u64,
    pub done: u64,
    pub ok: bool,
}

/// A run's samples (warm-up excluded) and the first unexpected answer.
pub struct Run {
    pub samples: Vec<Sample>,
    pub failures: usize,
    pub first_failure: Option<String>,
    /// Requests sent in all, warm-up included.
    pub sent: u64,
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Lets `std::thread::sleep` wake within ~1 µs of its deadline on this thread (the default
/// timer slack is 50 µs).
fn tight_timer() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000u64, 0u64, 0u64, 0u64);
    }
}

/// Open loop at `rate` requests/s for `warmup + seconds`; samples of the last `seconds`.
pub fn open_loop(
    addr: SocketAddr,
    rate: f64,
    warmup: f64,
    seconds: f64,
    conns: usize,
    make: MakeRequest,
    check: fn(&Answer) -> bool,
) -> Run {
    let total = ((warmup + seconds) * rate) as u64;
    let rt = runtime();
    rt.block_on(async move {
        let mut txs = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
            txs.push(tx);
            let make = make.clone();
            let mut conn = Conn::open(addr).await.expect("connect");
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                let mut failed = 0usize;
                let mut first = None;
                while let Some((k, due)) = rx.recv().await {
                    let req = make(k);
                    let sent = now_ns();
                    let ok = match conn.roundtrip(&req).await {
                        Ok(a) if check(&a) => true,
                        Ok(a) => {
                            first.get_or_insert_with(|| {
                                format!("{} {}", a.status, String::from_utf8_lossy(&a.body))
                            });
                            false
                        }
                        Err(e) => {
                            first.get_or_insert_with(|| format!("io: {e}"));
                            if let Ok(c) = Conn::open(addr).await {
                                conn = c;
                            }
                            false
                        }
                    };
                    if !ok {
                        failed += 1;
                    }
                    out.push(Sample {
                        due,
                        sent,
                        done: now_ns(),
                        ok,
                    });
                }
                (out, failed, first)
            }));
        }
        let t0 = now_ns() + 100_000_000;
        let measured_from = t0 + (warmup * 1e9) as u64;
        let clock = std::thread::spawn(move || {
            tight_timer();
            let interval = 1e9 / rate;
            for k in 0..total {
                let due = t0 + (k as f64 * interval) as u64;
                let now = now_ns();
                if now < due {
                    std::thread::sleep(Duration::from_nanos(due - now));
                }
                let _ = txs[(k as usize) % txs.len()].send((k, due));
            }
        });
        let mut samples = Vec::with_capacity(total as usize);
        let mut failures = 0;
        let mut first_failure = None;
        for t in tasks {
            let (s, f, first) = t.await.unwrap();
            samples.extend(s.into_iter().filter(|s| s.due >= measured_from));
            failures += f;
            if first_failure.is_none() {
                first_failure = first;
            }
        }
        clock.join().unwrap();
        Run {
            samples,
            failures,
            first_failure,
            sent: total,
        }
    })
}

/// Closed loop over `conns` connections for `warmup + seconds`; samples of the last
/// `seconds` (sent then).
pub fn closed_loop(
    addr: SocketAddr,
    conns: usize,
    warmup: f64,
    seconds: f64,
    make: MakeRequest,
    check: fn(&Answer) -> bool,
) -> Run {
    let rt = runtime();
    rt.block_on(async move {
        let start = now_ns() + 100_000_000;
        let measured_from = start + (warmup * 1e9) as u64;
        let end = measured_from + (seconds * 1e9) as u64;
        let counter = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for c in 0..conns {
            let make = make.clone();
            let counter = counter.clone();
            let mut conn = Conn::open(addr).await.expect("connect");
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_nanos(start.saturating_sub(now_ns()))).await;
                let mut out = Vec::new();
                let mut failed = 0usize;
                let mut first = None;
                let mut k = c as u64;
                loop {
                    let sent = now_ns();
                    if sent >= end {
                        break;
                    }
                    counter.fetch_add(1, Ordering::Relaxed);
                    let ok = match conn.roundtrip(&make(k)).await {
                        Ok(a) if check(&a) => true,
                        Ok(a) => {
                            first.get_or_insert_with(|| {
                                format!("{} {}", a.status, String::from_utf8_lossy(&a.body))
                            });
                            false
                        }
                        Err(e) => {
                            first.get_or_insert_with(|| format!("io: {e}"));
                            match Conn::open(addr).await {
                                Ok(c) => conn = c,
                                Err(_) => break,
                            }
                            false
                        }
                    };
                    if !ok {
                        failed += 1;
                    }
                    if sent >= measured_from {
                        out.push(Sample {
                            due: sent,
                            sent,
                            done: now_ns(),
                            ok,
                        });
                    }
                    k += conns as u64;
                }
                (out, failed, first)
            }));
        }
        let mut samples = Vec::new();
        let mut failures = 0;
        let mut first_failure = None;
        for t in tasks {
            let (s, f, first) = t.await.unwrap();
            samples.extend(s);
            failures += f;
            if first_failure.is_none() {
                first_failure = first;
            }
        }
        Run {
            samples,
            failures,
            first_failure,
            sent: counter.load(Ordering::Relaxed),
        }
    })
}

/// One streamed answer: when it was sent, when its first content frame arrived, each content
/// frame's (stamp, arrival), all ns since the epoch.
pub struct StreamSample {
    pub sent: u64,
    pub first: Option<u64>,
    pub frames: Vec<(u64, u64)>,
    pub ok: bool,
}

/// `concurrency` clients, each streaming one answer after another for `warmup + seconds`
/// (starts spread over `spread`, so the streams do not move in lock step); the streams sent
/// in the last `seconds`, and the first failure.
#[allow(clippy::too_many_arguments)]
pub fn streams(
    addr: SocketAddr,
    concurrency: usize,
    warmup: f64,
    seconds: f64,
    spread: Duration,
    expect_frames: usize,
    timeout: Duration,
    make: MakeRequest,
) -> (Vec<StreamSample>, usize, Option<String>) {
    let rt = runtime();
    rt.block_on(async move {
        let start = now_ns() + 200_000_000;
        let measured_from = start + (warmup * 1e9) as u64;
        let end = measured_from + (seconds * 1e9) as u64;
        let mut tasks = Vec::new();
        for c in 0..concurrency {
            let make = make.clone();
            let offset = spread.as_nanos() as u64 * c as u64 / concurrency as u64;
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_nanos(
                    (start + offset).saturating_sub(now_ns()),
                ))
                .await;
                let mut out = Vec::new();
                let mut failed = 0usize;
                let mut first_failure = None;
                let mut conn = match Conn::open(addr).await {
                    Ok(c) => c,
                    Err(e) => return (out, 1, Some(format!("connect: {e}"))),
                };
                let mut k = c as u64;
                while now_ns() < end {
                    let req = make(k);
                    k += concurrency as u64;
                    let sent = now_ns();
                    let mut first = None;
                    let mut frames = Vec::with_capacity(expect_frames);
                    let mut text: Vec<u8> = Vec::new();
                    let mut scanned = 0usize;
                    let mut on_data = |d: &[u8], at: u64| {
                        text.extend_from_slice(d);
                        // Stamps are `@<digits>@`; a stamp may straddle two reads.
                        while let Some(a) = text[scanned..].iter().position(|b| *b == b'@') {
                            let from = scanned + a + 1;
                            let digits = text[from..]
                                .iter()
                                .take_while(|b| b.is_ascii_digit())
                                .count();
                            if from + digits >= text.len() {
                                break;
                            }
                            if text[from + digits] == b'@' && digits > 0 {
                                let stamp: u64 = std::str::from_utf8(&text[from..from + digits])
                                    .unwrap()
                                    .parse()
                                    .unwrap_or(0);
                                first.get_or_insert(at);
                                frames.push((stamp, at));
                                scanned = from + digits + 1;
                            } else {
                                scanned = from;
                            }
                        }
                    };
                    let r = tokio::time::timeout(timeout, conn.exchange(&req, &mut on_data)).await;
                    let done_text = String::from_utf8_lossy(&text).contains("[DONE]");
                    let ok = matches!(r, Ok(Ok(200))) && done_text && frames.len() == expect_frames;
                    if !ok {
                        failed += 1;
                        first_failure.get_or_insert_with(|| {
                            format!(
                                "{:?}, {} frames of {expect_frames}: {}",
                                r.as_ref().map(|x| x.as_ref().map_err(|e| e.to_string())),
                                frames.len(),
                                String::from_utf8_lossy(&text[..text.len().min(300)])
                            )
                        });
                        if !matches!(r, Ok(Ok(_))) {
                            match Conn::open(addr).await {
                                Ok(c) => conn = c,
                                Err(_) => break,
                            }
                        }
                    }
                    if sent >= measured_from {
                        out.push(StreamSample {
                            sent,
                            first,
                            frames,
                            ok,
                        });
                    }
                }
                (out, failed, first_failure)
            }));
        }
        let mut all = Vec::new();
        let mut failed = 0;
        let mut first = None;
        for t in tasks {
            let (s, f, ff) = t.await.unwrap();
            all.extend(s);
            failed += f;
            if first.is_none() {
                first = ff;
            }
        }
        (all, failed, first)
    })
}

/// Percentile `p` (0..1) of sorted nanoseconds, in µs.
pub fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)] as f64 / 1_000.0
}
