//! Where agent actors run.
//!
//! A ractor call is a message plus a oneshot reply. On one thread that round trip costs well
//! under a microsecond; across threads each call is a wake-up of a parked worker and costs
//! tens of microseconds. So warden shards agents over per-core `current_thread` runtimes
//! ([`Layout::Sharded`]): an agent lives on shard `hash(id) % shards`, and callers that want
//! the fast path run on their agent's shard ([`crate::Swarm::spawn_on_shard_of`]). The other
//! layout, [`Layout::Current`], puts every actor on the caller's runtime (simplest when the
//! host application already owns a multi-threaded runtime). `docs/ARCHITECTURE.md` and
//! `docs/benchmarks.md` compare the two.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// How the swarm places its actors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `shards` dedicated threads, each running a `current_thread` tokio runtime.
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

/// Most shards accepted.
pub const MAX_SHARDS: usize = 256;

/// The runtimes agents run on.
pub(crate) struct Shards {
    handles: Vec<Handle>,
    stops: parking_lot::Mutex<Vec<oneshot::Sender<()>>>,
    threads: parking_lot::Mutex<Vec<JoinHandle<()>>>,
}

impl Shards {
    pub(crate) fn start(layout: Layout) -> std::io::Result<Self> {
        match layout {
            Layout::Current => Ok(Self {
                handles: vec![Handle::try_current().map_err(std::io::Error::other)?],
                stops: Default::default(),
                threads: Default::default(),
            }),
            Layout::Sharded { shards } => {
                let n = if shards == 0 {
                    std::thread::available_parallelism().map_or(1, |n| n.get())
                } else {
                    shards
                }
                .min(MAX_SHARDS);
                let mut handles = Vec::with_capacity(n);
                let mut stops = Vec::with_capacity(n);
                let mut threads = Vec::with_capacity(n);
                for i in 0..n {
                    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
                    let (stop_tx, stop_rx) = oneshot::channel::<()>();
                    let thread = std::thread::Builder::new()
                        .name(format!("warden-shard-{i}"))
                        .spawn(move || {
                            let rt = match tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                            {
                                Ok(rt) => rt,
                                Err(e) => {
                                    let _ = handle_tx.send(Err(e));
                                    return;
                                }
                            };
                            let _ = handle_tx.send(Ok(rt.handle().clone()));
                            rt.block_on(async {
                                let _ = stop_rx.await;
                            });
                        })?;
                    let handle = handle_rx
                        .recv()
                        .map_err(std::io::Error::other)
                        .and_then(|r| r)?;
                    handles.push(handle);
                    stops.push(stop_tx);
                    threads.push(thread);
                }
                Ok(Self {
                    handles,
                    stops: parking_lot::Mutex::new(stops),
                    threads: parking_lot::Mutex::new(threads),
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

    /// Stops the shard threads (their runtimes drop every task still on them).
    pub(crate) fn stop(&self) {
        for stop in self.stops.lock().drain(..) {
            let _ = stop.send(());
        }
        let current = std::thread::current().id();
        for t in self.threads.lock().drain(..) {
            // Never join the thread we are running on.
            if t.thread().id() != current {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        for stop in self.stops.get_mut().drain(..) {
            let _ = stop.send(());
        }
    }
}
