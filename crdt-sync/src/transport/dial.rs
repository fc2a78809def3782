//! Dialing a configured peer, again and again: exponential backoff with a cap and jitter,
//! and no dial while the peer is connected (whichever side dialed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::conn::{self, Ended, Slot};
use super::{PeerState, Shared, TransportLimits};
use crate::certs::SERVER_NAME;

/// A cheap, seeded generator for the jitter (SplitMix64): no OS randomness needed, and a
/// seed gives the same waits.
pub(super) struct Jitter(u64);

impl Jitter {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Jitter {
        Jitter(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The wait after `failures` failed dials in a row: the initial wait doubled per failure up
/// to the cap, less a random part of up to half of it (so peers that lost each other at
/// the same moment do not redial in step).
pub(super) fn backoff(failures: u32, limits: &TransportLimits, jitter: &mut Jitter) -> Duration {
    let doubled = limits
        .backoff_initial_ms
        .saturating_mul(1u64 << failures.min(32));
    let full = doubled.min(limits.backoff_max_ms);
    Duration::from_millis(full - jitter.next_u64() % (full / 2 + 1))
}

/// Dials configured peer `index` at `addr` until the transport shuts down.
pub(super) async fn dial_loop(
    shared: Arc<Shared>,
    index: usize,
    addr: SocketAddr,
    mut jitter: Jitter,
) {
    let mut failures = 0u32;
    let mut shutdown = shared.shutdown.clone();
    loop {
        if !wait_while_up(&shared, index).await {
            return;
        }
        shared
            .lock_table()
            .dial_state(index, PeerState::Connecting, None);
        let (error, next_failures) = match dial_once(&shared, index, addr).await {
            Ended::WasUp(why) => (Some(why), 0),
            Ended::Duplicate => (None, 0),
            Ended::Refused => (None, failures.saturating_add(1)),
            Ended::Failed(why) => (Some(why), failures.saturating_add(1)),
        };
        failures = next_failures;
        shared
            .lock_table()
            .dial_state(index, PeerState::Down, error);
        if shared.shutting_down() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff(failures, &shared.limits, &mut jitter)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One dial, run to the end of its connection.
async fn dial_once(shared: &Arc<Shared>, index: usize, addr: SocketAddr) -> Ended {
    let Some(_slot) = Slot::take(shared) else {
        return Ended::Failed("too many connections at once".into());
    };
    let connecting = match shared
        .endpoint
        .connect_with(shared.client.clone(), addr, SERVER_NAME)
    {
        Ok(connecting) => connecting,
        Err(e) => return Ended::Failed(e.to_string()),
    };
    let handshake = Duration::from_millis(crate::limits::HANDSHAKE_TIMEOUT_MS);
    match tokio::time::timeout(handshake, connecting).await {
        Ok(Ok(connection)) => conn::run(shared, connection, Some(index)).await,
        Ok(Err(e)) => conn::failed(shared, Some(index), None, addr, &e),
        Err(_) => Ended::Failed(format!("no handshake within {handshake:?}")),
    }
}

/// Waits while the peer last seen at `index` is connected. False: the transport shuts down.
async fn wait_while_up(shared: &Shared, index: usize) -> bool {
    let mut shutdown = shared.shutdown.clone();
    loop {
        if shared.shutting_down() {
            return false;
        }
        let changed = shared.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if !shared.lock_table().dial_peer_up(index) {
            return true;
        }
        shared.lock_table().dial_state(index, PeerState::Up, None);
        tokio::select! {
            _ = changed => {}
            _ = shutdown.changed() => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_at_most_half_taken_off() {
        let limits = TransportLimits {
            backoff_initial_ms: 100,
            backoff_max_ms: 1_000,
            ..Default::default()
        };
        let mut jitter = Jitter::new(7);
        for (failures, full) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1_000),
            (60, 1_000),
        ] {
            for _ in 0..100 {
                let wait = backoff(failures, &limits, &mut jitter).as_millis() as u64;
                assert!(
                    full / 2 <= wait && wait <= full,
                    "{failures}: {wait} of {full}"
                );
            }
        }
        // The jitter varies, and the same seed repeats it.
        let waits = |seed| {
            let mut j = Jitter::new(seed);
            (0..8)
                .map(|_| backoff(3, &limits, &mut j))
                .collect::<Vec<_>>()
        };
        assert_eq!(waits(1), waits(1));
        assert_ne!(waits(1), waits(2));
        assert!(waits(1).windows(2).any(|w| w[0] != w[1]));
    }
}
