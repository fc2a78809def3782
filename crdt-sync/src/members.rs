//! The cluster's members: a fixed, sorted list of node names that every node is configured with.
//!
//! Membership is static (the config's `sync.peers` plus the node itself): the escrow's
//! initial split and the heir ring need every node to agree on it, so two nodes whose member
//! lists (or replicated pool limits) differ refuse to sync — the cluster digest (`SyncConfig::digest`) goes into the
//! first message of every connection. Adding a node is a config change on every node.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A member's position in the sorted member list (`0..n`).
pub type NodeIx = u16;

/// Most members a cluster may have (the rights matrix is `n × n`).
pub const MAX_MEMBERS: usize = 64;

/// Why a member list is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembersError {
    /// A name breaks the node name rules.
    #[error(
        "node name `{0}` is not valid: 1-63 characters of a-z, 0-9 and '-', not starting with '-'"
    )]
    BadName(String),
    /// The same name twice.
    #[error("node `{0}` is listed twice")]
    Duplicate(String),
    /// More than [`MAX_MEMBERS`].
    #[error("a cluster has at most {MAX_MEMBERS} members, {0} were given")]
    TooMany(usize),
    /// The node itself is not among the members.
    #[error("this node `{0}` is not among the members")]
    NotMember(String),
}

/// Whether `name` is a valid node name (the rule `warden certs issue` applies too).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The sorted member list and which of them this node is.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    names: Vec<String>,
    me: NodeIx,
}

impl Members {
    /// Members from this node's name and its peers' names (any order).
    ///
    /// # Errors
    /// A bad or repeated name, more than [`MAX_MEMBERS`], or `me` missing.
    pub fn new(me: &str, peers: impl IntoIterator<Item = String>) -> Result<Self, MembersError> {
        let mut names: Vec<String> = peers.into_iter().collect();
        names.push(me.to_owned());
        if let Some(bad) = names.iter().find(|n| !valid_name(n)) {
            return Err(MembersError::BadName(bad.clone()));
        }
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(MembersError::Duplicate(w[0].clone()));
        }
        if names.len() > MAX_MEMBERS {
            return Err(MembersError::TooMany(names.len()));
        }
        let me = names
            .iter()
            .position(|n| n == me)
            .ok_or_else(|| MembersError::NotMember(me.to_owned()))?;
        Ok(Self {
            names,
            me: me as NodeIx,
        })
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Never true: a node is always a member.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// This node's index.
    pub fn me(&self) -> NodeIx {
        self.me
    }

    /// The name of member `ix`.
    pub fn name(&self, ix: NodeIx) -> &str {
        &self.names[usize::from(ix)]
    }

    /// The index of `name`, if it is a member.
    pub fn index(&self, name: &str) -> Option<NodeIx> {
        self.names
            .binary_search_by(|n| n.as_str().cmp(name))
            .ok()
            .map(|i| i as NodeIx)
    }

    /// Every member's index, in name order.
    pub fn all(&self) -> impl Iterator<Item = NodeIx> + '_ {
        (0..self.names.len()).map(|i| i as NodeIx)
    }

    /// The member that grants `ix` its caps and may reclaim its rights: the next one in name
    /// order, around the ring. `None` in a cluster of one.
    pub fn heir(&self, ix: NodeIx) -> Option<NodeIx> {
        let n = self.names.len();
        (n > 1).then(|| ((usize::from(ix) + 1) % n) as NodeIx)
    }

    /// The members whose heir is `ix`.
    pub fn wards(&self, ix: NodeIx) -> impl Iterator<Item = NodeIx> + '_ {
        self.all().filter(move |&w| self.heir(w) == Some(ix))
    }

    /// The member list as the same view on every node (for the handshake).
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl fmt::Debug for Members {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Members({:?}, me = {})", self.names, self.name(self.me))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_sorted_and_the_heir_is_the_next_around_the_ring() {
        let m = Members::new("b", ["c".to_owned(), "a".to_owned()]).unwrap();
        assert_eq!(m.names(), ["a", "b", "c"]);
        assert_eq!(m.me(), 1);
        assert_eq!(m.heir(0), Some(1));
        assert_eq!(m.heir(2), Some(0));
        assert_eq!(m.wards(0).collect::<Vec<_>>(), [2]);
        assert_eq!(m.index("c"), Some(2));
        assert_eq!(m.index("d"), None);
        assert_eq!(Members::new("a", []).unwrap().heir(0), None);
    }

    #[test]
    fn bad_member_lists_are_refused_by_name() {
        assert_eq!(
            Members::new("a", ["a".to_owned()]),
            Err(MembersError::Duplicate("a".into()))
        );
        assert_eq!(
            Members::new("A", []),
            Err(MembersError::BadName("A".into()))
        );
        assert_eq!(
            Members::new("-x", []),
            Err(MembersError::BadName("-x".into()))
        );
        let many = (0..64).map(|i| format!("n{i}"));
        assert_eq!(Members::new("me", many), Err(MembersError::TooMany(65)));
    }
}
