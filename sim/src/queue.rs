//! The discrete-event queue: events on a virtual clock, earliest first, ties broken by
//! insertion order (`seq`), so the same schedule always pops in the same order.
//!
//! A timing wheel with one bucket per millisecond holds the events due within
//! [`WHEEL_MS`] of the last popped time: a push appends to its bucket's list (so a bucket is
//! in `seq` order), a pop takes the front of the first non-empty bucket (found through a
//! bitmap of non-empty buckets), both O(1); the events sit in one slab of nodes, reused as
//! they are popped, so memory is that of the most events ever waiting at once. Events further
//! ahead (or, should a caller ever schedule one, in the past) wait in a binary heap; a pop
//! compares the heap's first `(time, seq)` with the wheel's, so the order is exactly that of
//! one heap over everything.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Milliseconds the wheel spans (a power of two); events later than this after the last
/// popped time wait in the heap.
pub const WHEEL_MS: u64 = 1 << 16;
const WORDS: usize = (WHEEL_MS / 64) as usize;

/// One event waiting in the heap.
#[derive(Debug)]
struct Slot<E> {
    at_ms: u64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Slot<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}
impl<E> Eq for Slot<E> {}
impl<E> PartialOrd for Slot<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Slot<E> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_ms, self.seq).cmp(&(other.at_ms, other.seq))
    }
}

/// One event in the wheel: its `seq`, the next event of its bucket, the event itself
/// (`None` while the node is free).
#[derive(Debug)]
struct Node<E> {
    seq: u64,
    next: u32,
    event: Option<E>,
}

/// No node.
const NIL: u32 = u32::MAX;

/// Events on a virtual clock.
#[derive(Debug)]
pub struct EventQueue<E> {
    /// `WHEEL_MS` buckets (allocated at the first push), each `(first, last)` node of a list:
    /// bucket `t % WHEEL_MS` holds the events due at `t`, for `t` in
    /// `cursor..cursor + WHEEL_MS`, in `seq` order.
    buckets: Vec<(u32, u32)>,
    /// The wheel's events (and free nodes, reused first).
    nodes: Vec<Node<E>>,
    free: Vec<u32>,
    /// Bit `i` set when bucket `i` is not empty.
    occupied: Vec<u64>,
    /// The time of the last pop (no event in the wheel is earlier).
    cursor: u64,
    /// Events in the wheel.
    in_wheel: usize,
    /// The earliest time in the wheel, when known.
    first: Cell<Option<u64>>,
    /// Events outside the wheel's span.
    heap: BinaryHeap<Reverse<Slot<E>>>,
    next_seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self {
            buckets: Vec::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            occupied: Vec::new(),
            cursor: 0,
            in_wheel: 0,
            first: Cell::new(None),
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// Schedules `event` at `at_ms` (virtual milliseconds).
    pub fn push(&mut self, at_ms: u64, event: E) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if at_ms < self.cursor || at_ms - self.cursor >= WHEEL_MS {
            self.heap.push(Reverse(Slot { at_ms, seq, event }));
            return;
        }
        if self.buckets.is_empty() {
            self.buckets = vec![(NIL, NIL); WHEEL_MS as usize];
            self.occupied = vec![0; WORDS];
        }
        let node = Node {
            seq,
            next: NIL,
            event: Some(event),
        };
        let n = match self.free.pop() {
            Some(n) => {
                self.nodes[n as usize] = node;
                n
            }
            None => {
                self.nodes.push(node);
                u32::try_from(self.nodes.len() - 1).expect("fewer than 2^32 events")
            }
        };
        let i = (at_ms % WHEEL_MS) as usize;
        match self.buckets[i] {
            (NIL, _) => {
                self.buckets[i] = (n, n);
                self.occupied[i / 64] |= 1 << (i % 64);
            }
            (head, last) => {
                self.nodes[last as usize].next = n;
                self.buckets[i] = (head, n);
            }
        }
        self.in_wheel += 1;
        if self.first.get().is_some_and(|f| at_ms < f) || self.in_wheel == 1 {
            self.first.set(Some(at_ms));
        }
    }

    /// The earliest time in the wheel (scanning the bitmap from the cursor if not known).
    fn wheel_first(&self) -> Option<u64> {
        if self.in_wheel == 0 {
            return None;
        }
        if self.first.get().is_none() {
            self.first.set(Some(self.scan()));
        }
        self.first.get()
    }

    /// The first occupied bucket's time at or after the cursor (the wheel is not empty).
    fn scan(&self) -> u64 {
        let start = (self.cursor % WHEEL_MS) as usize;
        let mut word = start / 64;
        let mut bits = self.occupied[word] & (!0u64 << (start % 64));
        let mut offset = 0u64; // buckets from the cursor's word start to `word`'s
        loop {
            if bits != 0 {
                let i = word * 64 + bits.trailing_zeros() as usize;
                let ahead = (i as u64 + offset).wrapping_sub(start as u64);
                return self.cursor + ahead;
            }
            word += 1;
            if word == WORDS {
                word = 0;
                offset = WHEEL_MS;
            }
            bits = self.occupied[word];
        }
    }

    /// The time of the next event.
    pub fn peek_time(&self) -> Option<u64> {
        let wheel = self.wheel_first();
        let heap = self.heap.peek().map(|Reverse(s)| s.at_ms);
        match (wheel, heap) {
            (Some(w), Some(h)) => Some(w.min(h)),
            (w, h) => w.or(h),
        }
    }

    /// The next event: the earliest, and of those the first scheduled.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        let wheel = self.wheel_first();
        let from_heap = match (wheel, self.heap.peek()) {
            (None, None) => return None,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (Some(w), Some(Reverse(s))) => {
                let head = self.buckets[(w % WHEEL_MS) as usize].0;
                (s.at_ms, s.seq) < (w, self.nodes[head as usize].seq)
            }
        };
        let (at_ms, event) = if from_heap {
            let Reverse(s) = self.heap.pop()?;
            (s.at_ms, s.event)
        } else {
            let w = wheel?;
            let i = (w % WHEEL_MS) as usize;
            let n = self.buckets[i].0;
            let node = &mut self.nodes[n as usize];
            let event = node.event.take()?;
            self.buckets[i].0 = node.next;
            self.free.push(n);
            self.in_wheel -= 1;
            if self.buckets[i].0 == NIL {
                self.buckets[i].1 = NIL;
                self.occupied[i / 64] &= !(1 << (i % 64));
                self.first.set(None);
            }
            (w, event)
        };
        if at_ms > self.cursor {
            // Nothing in the wheel is earlier than `at_ms`: moving the cursor keeps every
            // wheel event within `cursor..cursor + WHEEL_MS`.
            self.cursor = at_ms;
        }
        Some((at_ms, event))
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.in_wheel + self.heap.len()
    }

    /// True when nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn pops_by_time_then_by_insertion_order() {
        let mut q = EventQueue::default();
        q.push(5, "c");
        q.push(1, "a");
        q.push(5, "d");
        q.push(1, "b");
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, [(1, "a"), (1, "b"), (5, "c"), (5, "d")]);
    }

    /// The wheel and its heap pop in exactly the order of one binary heap over `(time, seq)`,
    /// with pushes interleaved with pops, near and far (beyond the wheel), ties included.
    #[test]
    fn pops_as_one_heap_would() {
        let mut rng = Rng::new(42);
        let mut q = EventQueue::default();
        let mut model: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
        let (mut now, mut seq) = (0u64, 0u64);
        for _ in 0..200_000 {
            if rng.chance(55) || model.is_empty() {
                let ahead = match rng.range(0, 9) {
                    0 => rng.range(WHEEL_MS - 3, 4 * WHEEL_MS),
                    1 => 0,
                    2 => WHEEL_MS - 1,
                    _ => rng.range(0, 3_000),
                };
                q.push(now + ahead, seq);
                model.push(Reverse((now + ahead, seq)));
                seq += 1;
            } else {
                let Reverse((t, s)) = model.pop().unwrap();
                assert_eq!(q.peek_time(), Some(t));
                assert_eq!(q.pop(), Some((t, s)));
                now = t;
            }
            assert_eq!(q.len(), model.len());
        }
        while let Some(Reverse((t, s))) = model.pop() {
            assert_eq!(q.pop(), Some((t, s)));
        }
        assert!(q.is_empty() && q.pop().is_none() && q.peek_time().is_none());
    }
}
