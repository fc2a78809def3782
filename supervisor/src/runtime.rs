//! Where agent actors run.
//!
//! A ractor call is a message plus a oneshot reply. On one thread that round trip costs well
//! under a microsecond; across threads each call wakes a parked thread and costs several
//! microseconds, more at the tail. So warden shards agents over per-core single-worker
//! runtimes ([`Layout::Sharded`]): an agent lives on shard `hash(id) % shards`, and callers that want
//! the fast path run on their agent's shard ([`crate::Swarm::spawn_on_shard_of`]). The other
//! layout, [`Layout::Current`], puts every actor on the caller's runtime (simplest when the
//! host application already owns a multi-threaded runtime). `docs/ARCHITECTURE.md` and
//! `docs/benchmarks.md` compare the two.

use std::future::Future;
use std::hash::{Hash, Hasher};
use tokio::runtime::{Handle, Runtime};

use crate::limits::SHARDS_MAX;

/// How the swarm places its actors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `shards` tokio runtimes of one worker thread each.
    /// 0 means one per available core.
    Sharded {
        /// Number of shard threads.
        shards: usize,
    },
    /// Everything on the tokio runtime that builds the swarm.
    Current,
}

impl Default for Layout {
    fn default() -> Self {
        Layout::Sharded { shards: 0 }
    }
}

/// The runtimes agents run on.
pub(crate) struct Shards {
    handles: Vec<Handle>,
    /// Owned runtimes (empty for [`Layout::Current`]).
    runtimes: parking_lot::Mutex<Vec<Runtime>>,
}

impl Shards {
    pub(crate) fn start(layout: Layout) -> std::io::Result<Self> {
        match layout {
            Layout::Current => Ok(Self {
                handles: vec![Handle::try_current().map_err(std::io::Error::other)?],
                runtimes: Default::default(),
            }),
            Layout::Sharded { shards } => {
                let n = if shards == 0 {
                    std::thread::available_parallelism().map_or(1, |n| n.get())
                } else {
                    shards
                }
                .min(SHARDS_MAX);
                let mut runtimes = Vec::with_capacity(n);
                for i in 0..n {
                    // One worker per shard. The multi-threaded flavour with a single worker,
                    // rather than `current_thread`, because its LIFO slot runs a task woken by
                    // the running one next: an actor's reply resumes its caller at once, with
                    // the caller's state still in cache (measured: +20% decisions/s with 1,000
                    // agents, same latency).
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(1)
                        .thread_name(format!("warden-shard-{i}"))
                        .enable_all()
                        .build()?;
                    runtimes.push(rt);
                }
                Ok(Self {
                    handles: runtimes.iter().map(|rt| rt.handle().clone()).collect(),
                    runtimes: parking_lot::Mutex::new(runtimes),
                })
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.handles.len()
    }

    pub(crate) fn shard_of(&self, key: &str) -> usize {
        if self.handles.len() == 1 {
            return 0;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() % self.handles.len() as u64) as usize
    }

    pub(crate) fn spawn_on<F>(&self, shard: usize, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handles[shard].spawn(fut)
    }

    /// Stops the shard runtimes, waiting up to a second for each to wind down (their tasks are
    /// dropped). Blocks: call it off the async workers.
    pub(crate) fn stop(&self) {
        for rt in self.runtimes.lock().drain(..) {
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
        }
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        // May run inside a runtime (the last handle dropped in a task): never block here.
        for rt in self.runtimes.get_mut().drain(..) {
            rt.shutdown_background();
        }
    }
}
