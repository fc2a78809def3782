//! The replicated policy: a multi-value register (`MVReg` of the `crdts` crate) of policy
//! versions, so every node converges on the policy an operator installed anywhere, and two
//! edits made concurrently on different nodes both stay visible as a **conflict** (surfaced as
//! an event and the metric `warden_sync_policy_conflicts`) until an operator writes a new
//! version, which supersedes both. Nothing is silently dropped.

use crdts::{CmRDT, CvRDT, MVReg};
use serde::{Deserialize, Serialize};

use crate::members::NodeIx;

/// Most bytes of policy text replicated (a larger policy stays local, with a log line).
pub const MAX_POLICY_TEXT_BYTES: usize = 128 * 1024;

/// One policy version as written by a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// The node that installed it.
    pub node: NodeIx,
    /// That node's policy version number.
    pub version: u64,
    /// BLAKE3 of the text, hex (how nodes compare policies without reading them).
    pub digest: String,
    /// The YAML text.
    pub text: String,
}

/// The register.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRegister {
    reg: MVReg<PolicyVersion, NodeIx>,
}

impl PolicyRegister {
    /// Writes `version` as node `me`, superseding every value this node has seen.
    pub fn write(&mut self, me: NodeIx, version: PolicyVersion) {
        let ctx = self.reg.read_ctx().derive_add_ctx(me);
        let op = self.reg.write(version, ctx);
        self.reg.apply(op);
    }

    /// The current values, ordered by digest: one normally, several after concurrent edits,
    /// none before any node wrote.
    pub fn values(&self) -> Vec<PolicyVersion> {
        let mut v = self.reg.read().val;
        v.sort_by(|a, b| a.digest.cmp(&b.digest));
        v.dedup_by(|a, b| a.digest == b.digest);
        v
    }

    /// Whether concurrent edits with different texts are both present.
    pub fn in_conflict(&self) -> bool {
        self.values().len() > 1
    }

    /// Merges a peer's register. Returns whether the values changed.
    pub fn merge(&mut self, theirs: PolicyRegister) -> bool {
        let before = self.values();
        self.reg.merge(theirs.reg);
        self.values() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(node: NodeIx, version: u64, text: &str) -> PolicyVersion {
        PolicyVersion {
            node,
            version,
            digest: format!("d-{text}"),
            text: text.to_owned(),
        }
    }

    #[test]
    fn concurrent_edits_surface_as_a_conflict_until_a_new_write_supersedes_both() {
        let (mut a, mut b) = (PolicyRegister::default(), PolicyRegister::default());
        a.write(0, v(0, 1, "one"));
        assert!(b.merge(a.clone()));
        a.write(0, v(0, 2, "two"));
        b.write(1, v(1, 2, "three"));
        assert!(a.merge(b.clone()));
        b.merge(a.clone());
        assert!(a.in_conflict());
        assert_eq!(a, b);
        assert_eq!(
            a.values()
                .iter()
                .map(|p| p.text.as_str())
                .collect::<Vec<_>>(),
            ["three", "two"]
        );
        a.write(0, v(0, 3, "four"));
        b.merge(a.clone());
        assert!(!b.in_conflict());
        assert_eq!(b.values()[0].text, "four");
        // Merging again changes nothing; merge order does not matter.
        assert!(!b.merge(a.clone()));
    }
}

#[cfg(test)]
mod laws {
    use proptest::prelude::*;

    use super::*;

    /// Three replicas writing and exchanging in a random order: views of one history.
    fn views() -> impl Strategy<Value = [PolicyRegister; 3]> {
        prop::collection::vec((0..3usize, any::<bool>(), 0..3usize), 0..20).prop_map(|ops| {
            let mut r: [PolicyRegister; 3] = Default::default();
            for (k, (node, write, from)) in ops.into_iter().enumerate() {
                if write {
                    let text = format!("policy {k}");
                    r[node].write(
                        node as NodeIx,
                        PolicyVersion {
                            node: node as NodeIx,
                            version: k as u64,
                            digest: format!("d{k}"),
                            text,
                        },
                    );
                } else {
                    let other = r[from].clone();
                    r[node].merge(other);
                }
            }
            r
        })
    }

    fn join(x: &PolicyRegister, y: &PolicyRegister) -> PolicyRegister {
        let mut z = x.clone();
        z.merge(y.clone());
        z
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_and_idempotent(v in views()) {
            let [a, b, c] = v;
            prop_assert_eq!(join(&a, &b).values(), join(&b, &a).values());
            prop_assert_eq!(join(&join(&a, &b), &c).values(), join(&a, &join(&b, &c)).values());
            prop_assert_eq!(join(&a, &a).values(), a.values());
        }
    }
}
