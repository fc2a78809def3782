//! Every bound of the network surface, in one place. Names carry their unit last; the
//! relationships between bounds are asserted at compile time below. What happens at each bound
//! is designed: a request over a limit gets a 4xx JSON error naming the limit, a full queue
//! sheds (and counts) rather than blocking governance, a connection over the limit waits in
//! the kernel's backlog.

use std::time::Duration;

/// Largest request body accepted by default (1 MiB); `limits.max_body_bytes` in the config.
pub const BODY_BYTES_MAX_DEFAULT: usize = 1 << 20;
/// Smallest `limits.max_body_bytes` the config accepts.
pub const BODY_BYTES_MAX_MIN: usize = 1_024;
/// Most connections served at once by default; `limits.max_connections`. More wait to be
/// accepted.
pub const CONNECTIONS_MAX_DEFAULT: usize = 4_096;
/// How long one request may take by default, reading its body included (event streams
/// excepted); `limits.request_timeout`. Past it: 408.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Shortest `limits.request_timeout` the config accepts.
pub const REQUEST_TIMEOUT_MS_MIN: u64 = 100;
/// A connection with no reads or writes for this many request timeouts is closed, so idle
/// clients cannot hold the connection slots (event streams write a keep-alive every 15 s).
pub const IDLE_TIMEOUTS_PER_CONNECTION: u32 = 2;
/// Wait before accepting again after `accept` fails (out of file descriptors and the like).
pub const ACCEPT_RETRY_MS: u64 = 50;
/// Most runtimes serving connections (one per core: `http::serve::HttpThreads`).
pub const HTTP_THREADS_MAX: usize = 64;
/// How long in-flight requests get to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Longest `?wait=` of `GET /v1/agents/{id}/steps/{step}` (a long poll on a parked step). The
/// wait is also at most the node's `limits.request_timeout` ([`step_wait_cap_ms`]); at the
/// bound the answer is the step's current state (still `require_approval`), and the agent
/// asks again.
pub const STEP_WAIT_MS_MAX: u64 = 60_000;

/// The longest wait a step read grants on a node whose requests may take
/// `request_timeout_ms`: at most [`STEP_WAIT_MS_MAX`], and at most one request timeout, so
/// the wait ends (and is answered) before the connection's idle limit
/// ([`IDLE_TIMEOUTS_PER_CONNECTION`] request timeouts) could cut it. The request deadline of
/// a step read is one request timeout plus this.
pub const fn step_wait_cap_ms(request_timeout_ms: u64) -> u64 {
    if request_timeout_ms < STEP_WAIT_MS_MAX {
        request_timeout_ms
    } else {
        STEP_WAIT_MS_MAX
    }
}

/// Default page size of list endpoints (`?limit=`).
pub const PAGE_ENTRIES_DEFAULT: usize = 1_000;
/// Largest page size of list endpoints.
pub const PAGE_ENTRIES_MAX: usize = 10_000;
/// Most labels per agent.
pub const LABELS_MAX: usize = 32;
/// Longest label key or value, bytes.
pub const LABEL_BYTES_MAX: usize = 256;
/// Longest `reason` or `by` accepted, bytes: what the journal keeps of such a text.
pub const TEXT_BYTES_MAX: usize = warden_supervisor::limits::RECORD_TEXT_BYTES_MAX;
/// Smallest `limits.journal_bytes` the config accepts.
pub const JOURNAL_BYTES_MIN: u64 = 65_536;
/// Smallest `limits.segment_bytes` the config accepts.
pub const SEGMENT_BYTES_MIN: u64 = 4_096;
/// How long a forwarded request may wait for the head of the upstream's answer when the
/// upstream sets no `timeout`. A body then streams for as long as it flows.
pub const UPSTREAM_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Requests in flight to one upstream at once by default (`max_in_flight`); past it the proxy
/// answers 503 `upstream_busy` before deciding anything.
pub const UPSTREAM_IN_FLIGHT_MAX_DEFAULT: usize = 1_024;
/// Largest `max_in_flight` an upstream may set.
pub const UPSTREAM_IN_FLIGHT_MAX: usize = 65_536;
/// Most bytes of headers (names and values) a proxied tool request may carry; past it 431
/// `headers_too_large` before anything is decided (nginx refuses a header line past 8 KiB by
/// default, and many upstreams past 8–16 KiB: such a call would only fail there).
pub const PROXIED_HEADER_BYTES_MAX: usize = 32 * 1024;
/// How long the proxy waits for a TCP (and TLS) connection to an upstream.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle keep-alive connections kept per upstream host.
pub const UPSTREAM_IDLE_CONNECTIONS_MAX: usize = 256;
/// Largest whole (non-streamed) LLM answer the proxy reads, bytes; past it 502 and the
/// reservation stands.
pub const LLM_ANSWER_BYTES_MAX: usize = 32 << 20;
/// Bytes of tool calls a stream may hold while they complete (to judge them whole); past it
/// the stream ends with an error event.
pub const LLM_HELD_BYTES_MAX: usize = 1 << 20;
/// Longest server-sent event of an upstream stream, bytes; past it the stream ends.
pub const SSE_EVENT_BYTES_MAX: usize = 4 << 20;
/// Largest answer of an MCP upstream the gateway reads, bytes; past it the call fails (502).
pub const MCP_ANSWER_BYTES_MAX: usize = 16 << 20;
/// A stream with nothing to pass on for this long gets an SSE comment (`: keep-alive`).
pub const STREAM_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Frames buffered between an upstream stream and its client.
pub const STREAM_FRAMES_BUFFERED: usize = 16;

/// How long after its approval a parked request may still be retried; then it is settled
/// with nothing used (it never ran) and its reservation freed.
pub const APPROVED_RETRY_WINDOW: Duration = Duration::from_secs(600);
/// Proxied requests parked for approval whose retry the proxy remembers; past it the oldest is
/// forgotten (its retry gets 409 `unknown_retry`).
pub const PARKED_RETRIES_MAX: usize = 10_000;
/// Bytes of a framework's plain-text error kept when it is turned into the JSON shape.
pub const FRAMEWORK_ERROR_BYTES_MAX: usize = 4_096;

/// Shortest operator token accepted, characters.
pub const OPERATOR_TOKEN_LEN_MIN: usize = 16;
/// Random bytes in a token the node makes (shown as twice as many hex characters).
pub const TOKEN_RANDOM_BYTES: usize = 24;

/// Most webhooks a node takes.
pub const WEBHOOKS_MAX: usize = 16;
/// Events queued per webhook; past it new events for that hook are dropped and counted.
pub const WEBHOOK_QUEUE_EVENTS_MAX: usize = 1_024;
/// Attempts per webhook delivery.
pub const WEBHOOK_ATTEMPTS_MAX: u32 = 6;
/// Wait before the first webhook retry; doubled each time (0.25, 0.5, 1, 2, 4 s).
pub const WEBHOOK_BACKOFF_FIRST: Duration = Duration::from_millis(250);
/// One webhook attempt's limit (connect, send, answer).
pub const WEBHOOK_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// At shutdown: time left for queued webhook deliveries.
pub const WEBHOOK_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Shortest webhook secret accepted, characters.
pub const WEBHOOK_SECRET_LEN_MIN: usize = 16;

/// The typed client's default timeout for one request.
pub const CLIENT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Largest answer the typed client reads (a full page of agents or journal entries fits).
pub const CLIENT_ANSWER_BYTES_MAX: u64 = 256 << 20;
/// Longest line, and longest data of one event (its data lines together), of an event stream
/// the typed client reads (`/v1/events`); a longer one ends the stream with an error.
pub const CLIENT_EVENT_LINE_BYTES_MAX: usize = 1 << 20;
/// Idle connections the typed client keeps open (all hosts, and per host): one per thread
/// of a load generator up to this many threads.
pub const CLIENT_IDLE_CONNECTIONS_MAX: usize = 64;

/// Shortest `export.seal_interval` accepted: 1 s (each close starts a segment file).
pub const SEAL_INTERVAL_MS_MIN: u64 = 1_000;
/// Entries one export transaction carries unless `export.postgres.batch` says otherwise.
pub const EXPORT_BATCH_ENTRIES_DEFAULT: usize = 1_000;
/// Most entries one export transaction may carry (`export.postgres.batch`).
pub const EXPORT_BATCH_ENTRIES_MAX: usize = 10_000;
/// The shortest wait between an export's tries after a failure; it doubles up to
/// [`EXPORT_RETRY_MS_MAX`].
pub const EXPORT_RETRY_MS_MIN: u64 = 100;
/// The longest wait between an export's tries after failures.
pub const EXPORT_RETRY_MS_MAX: u64 = 30_000;
/// How often an export that has caught up looks for new entries.
pub const EXPORT_POLL_MS: u64 = 200;

const _: () = assert!(EXPORT_BATCH_ENTRIES_DEFAULT <= EXPORT_BATCH_ENTRIES_MAX);
const _: () = assert!(EXPORT_RETRY_MS_MIN <= EXPORT_RETRY_MS_MAX);
const _: () = assert!(BODY_BYTES_MAX_MIN <= BODY_BYTES_MAX_DEFAULT);
const _: () = assert!(REQUEST_TIMEOUT_MS_MIN <= REQUEST_TIMEOUT_MS_DEFAULT);
const _: () = assert!(PAGE_ENTRIES_DEFAULT <= PAGE_ENTRIES_MAX);
const _: () = assert!(UPSTREAM_IN_FLIGHT_MAX_DEFAULT <= UPSTREAM_IN_FLIGHT_MAX);
// A step read's whole life (one request timeout, then the longest wait) fits in the idle
// limit of its connection, which nothing is written to while it waits.
const _: () = assert!(IDLE_TIMEOUTS_PER_CONNECTION >= 2);
// With the default request timeout, `?wait=30s` (the design's example) is granted whole.
const _: () = assert!(step_wait_cap_ms(REQUEST_TIMEOUT_MS_DEFAULT) >= 30_000);
// A token the node makes is long enough to be accepted as an operator token.
const _: () = assert!(TOKEN_RANDOM_BYTES * 2 >= OPERATOR_TOKEN_LEN_MIN);
// Every entry of a full page fits in what the client reads (an entry is well under 16 KiB).
const _: () = assert!(PAGE_ENTRIES_MAX as u64 * (16 << 10) <= CLIENT_ANSWER_BYTES_MAX);
// A text field fits in any accepted body.
const _: () = assert!(TEXT_BYTES_MAX < BODY_BYTES_MAX_MIN * 8);
