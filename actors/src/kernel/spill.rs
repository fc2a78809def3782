//! [`SpillMap`]: a map whose first few entries live inline, in the kernel itself.
//!
//! An agent usually has one or two steps open and uses a handful of tools, but the kernel
//! must also bear thousands (up to its bounds). A `HashMap` puts even one entry in a heap
//! table of its own: with thousands of agents, deciding a step then touches the kernel, the
//! table's control bytes and its bucket, each likely a cache miss. Here the first `N`
//! entries sit in an inline array, searched linearly (`N` is small), and only entries past
//! them go to a `HashMap`, so the common case touches the kernel's own memory alone while
//! the worst case stays O(1) per operation.
//!
//! Iteration order is unspecified (as a `HashMap`'s); callers that need an order sort.

use std::collections::HashMap;
use std::hash::Hash;

use smallvec::SmallVec;

/// A map keeping up to `N` entries inline and the rest in a `HashMap`.
#[derive(Debug, Clone)]
pub(crate) struct SpillMap<K, V, const N: usize> {
    /// Never more than `N` entries, so it never leaves its inline storage.
    inline: SmallVec<[(K, V); N]>,
    spilled: HashMap<K, V>,
}

impl<K, V, const N: usize> Default for SpillMap<K, V, N> {
    fn default() -> Self {
        Self {
            inline: SmallVec::new(),
            spilled: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash, V, const N: usize> SpillMap<K, V, N> {
    /// Entries.
    pub(crate) fn len(&self) -> usize {
        self.inline.len() + self.spilled.len()
    }

    /// The value for `key`.
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        match self.inline.iter().find(|(k, _)| k == key) {
            Some((_, v)) => Some(v),
            None if self.spilled.is_empty() => None,
            None => self.spilled.get(key),
        }
    }

    /// True if `key` is in the map.
    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// Inserts `value` for `key`, returning the value it replaces.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some((_, v)) = self.inline.iter_mut().find(|(k, _)| *k == key) {
            return Some(std::mem::replace(v, value));
        }
        if self.inline.len() < N && !self.spilled.contains_key(&key) {
            self.inline.push((key, value));
            return None;
        }
        self.spilled.insert(key, value)
    }

    /// Removes `key`, returning its value.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        if let Some(i) = self.inline.iter().position(|(k, _)| k == key) {
            return Some(self.inline.swap_remove(i).1);
        }
        if self.spilled.is_empty() {
            return None;
        }
        self.spilled.remove(key)
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.inline
            .iter()
            .map(|(k, v)| (k, v))
            .chain(self.spilled.iter())
    }

    /// Every key, in no particular order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }

    /// Every value, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Takes every entry out, in no particular order.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (K, V)> + '_ {
        self.inline.drain(..).chain(self.spilled.drain())
    }
}

/// A set keeping up to `N` members inline and the rest in a `HashMap`.
pub(crate) type SpillSet<K, const N: usize> = SpillMap<K, (), N>;

impl<K: Copy + Eq + Hash, const N: usize> SpillSet<K, N> {
    /// Adds `key`; true if it was not there.
    pub(crate) fn insert_key(&mut self, key: K) -> bool {
        self.insert(key, ()).is_none()
    }
}

impl<K: Copy + Eq + Hash, const N: usize> FromIterator<K> for SpillSet<K, N> {
    fn from_iter<I: IntoIterator<Item = K>>(iter: I) -> Self {
        let mut set = Self::default();
        for k in iter {
            set.insert_key(k);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The same operations on a SpillMap and a BTreeMap give the same answers and contents,
    /// across the inline/spilled boundary and back.
    #[test]
    fn behaves_as_a_map_across_the_spill() {
        let mut m: SpillMap<u64, u64, 2> = SpillMap::default();
        let mut reference = BTreeMap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = x % 7;
            match x % 5 {
                0 | 1 => assert_eq!(m.insert(key, i), reference.insert(key, i), "insert {key}"),
                2 => assert_eq!(m.remove(&key), reference.remove(&key), "remove {key}"),
                3 => assert_eq!(m.get(&key), reference.get(&key), "get {key}"),
                _ => assert_eq!(m.contains_key(&key), reference.contains_key(&key)),
            }
            assert_eq!(m.len(), reference.len());
            assert!(m.inline.len() <= 2 && !m.inline.spilled());
            let mut all: Vec<(u64, u64)> = m.iter().map(|(k, v)| (*k, *v)).collect();
            all.sort_unstable();
            assert_eq!(
                all,
                reference.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>()
            );
        }
        let mut drained: Vec<(u64, u64)> = m.drain().collect();
        drained.sort_unstable();
        assert_eq!(drained, reference.into_iter().collect::<Vec<_>>());
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn a_set_counts_members_once() {
        let mut s: SpillSet<u64, 2> = [1, 2, 3, 2, 1].into_iter().collect();
        assert_eq!(s.len(), 3);
        assert!(!s.insert_key(3));
        assert!(s.insert_key(4));
        let mut members: Vec<u64> = s.keys().copied().collect();
        members.sort_unstable();
        assert_eq!(members, [1, 2, 3, 4]);
    }
}
