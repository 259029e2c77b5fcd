//! Which StatefulSet replica runs which MetricsExporter (docs/design.md#scale-out scale-out). Pure.
//!
//! Rendezvous (highest-random-weight) hashing: every replica ordinal `0..replicas` gets a weight
//! `hash(uid, ordinal)` and the highest weight owns the resource. The hash is a hand-written FNV-1a
//! 64 with a splitmix64 finaliser, so it never changes with the Rust or crate versions: two
//! replicas built from different releases still agree. Every uid has exactly one owner; going
//! from N to N+1 replicas moves about 1/(N+1) of the resources, and only to the new replica.
//!
//! The ordinal is the number after the last `-` of the pod name (`adxexporter-2`). The replica
//! count ([`Membership`]) is read from the pod's StatefulSet (`spec.replicas`, followed while
//! running, so a rescale moves ownership without a restart), or fixed by `--replicas`. A replica
//! whose ordinal is not below the count (it is being scaled away) owns nothing: it stops querying
//! and only drains its own WAL.
//!
//! What a rescale can duplicate, and why it never loses a window:
//! - Each replica keeps its own WAL (its PVC); a window is appended there before its watermark
//!   can be written to the resource's status, and the status is patched at most every few seconds.
//! - When ownership of a resource moves, the new owner (with no WAL entry for it) resumes from the
//!   status watermark, which is never ahead of what the old owner appended: every window up to it
//!   is in the old owner's WAL, and the old owner keeps draining its WAL whether or not it still
//!   owns the resource. So no window is skipped.
//! - Duplicated: windows the old owner appended after its last status patch (up to one status
//!   interval plus one query), and windows both replicas query while they disagree about the
//!   replica count (until each has seen the StatefulSet's new `spec.replicas`; with `--replicas`,
//!   a rolling restart with the new flag). Those windows are exported
//!   twice with identical samples (same series, timestamps and values); Prometheus-compatible
//!   receivers keep one, OTLP receivers may count both.
//! - While replicas disagree a resource may also briefly have no owner; its new owner later
//!   catches up from the status watermark (delayed, not lost).
//! - A replica removed by a scale-down drains for `--shutdown-grace`; what it could not push stays
//!   on its PVC and is delivered when that ordinal runs again.

/// A replica's place among its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub ordinal: u32,
    pub replicas: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShardError {
    #[error(
        "--replicas {replicas} needs this pod's ordinal, but the pod name {pod:?} does not end in -<number>: run as a StatefulSet (pod adxexporter-0, adxexporter-1, …) or set --pod-name / ADXEXPORTER_POD_NAME"
    )]
    NoOrdinal { pod: String, replicas: u32 },
    #[error(
        "--replicas {replicas} needs this pod's ordinal: set --pod-name / ADXEXPORTER_POD_NAME (or HOSTNAME) to the StatefulSet pod name, e.g. adxexporter-0"
    )]
    NoPodName { replicas: u32 },
    #[error(
        "--statefulset {statefulset} needs this pod's ordinal, but the pod name {pod:?} does not end in -<number>: set --pod-name / ADXEXPORTER_POD_NAME to the StatefulSet pod name (e.g. {statefulset}-0), or give --replicas"
    )]
    StatefulSetNoOrdinal { statefulset: String, pod: String },
}

/// Where the replica count comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// Fixed for the life of the process: `--replicas`, or one instance that runs everything (a pod
    /// name without an ordinal: not a StatefulSet pod).
    Fixed(Shard),
    /// `spec.replicas` of StatefulSet `name` in `namespace` (`None`: the client's namespace),
    /// followed while running; this pod is `ordinal`.
    StatefulSet {
        name: String,
        namespace: Option<String>,
        ordinal: u32,
    },
}

impl Membership {
    /// From the flags: `--replicas` wins (no StatefulSet is read); else a pod name ending in
    /// `-<ordinal>` (or an explicit `--statefulset`) follows the StatefulSet, named by
    /// `--statefulset` or the pod name without its ordinal; else a single instance.
    pub(crate) fn resolve(
        replicas: Option<u32>,
        statefulset: Option<&str>,
        namespace: Option<&str>,
        pod: Option<&str>,
    ) -> Result<Membership, ShardError> {
        if let Some(replicas) = replicas {
            return Shard::from_pod_name(pod, replicas).map(Membership::Fixed);
        }
        let pod = pod.map(str::trim).filter(|p| !p.is_empty());
        let statefulset = statefulset.map(str::trim).filter(|s| !s.is_empty());
        let namespace = namespace
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        match (
            pod.and_then(|p| Some((p, ordinal_from_pod_name(p)?))),
            statefulset,
        ) {
            (Some((pod, ordinal)), name) => Ok(Membership::StatefulSet {
                name: name
                    .map(str::to_owned)
                    .unwrap_or_else(|| statefulset_of_pod(pod).to_owned()),
                namespace,
                ordinal,
            }),
            (None, Some(name)) => Err(ShardError::StatefulSetNoOrdinal {
                statefulset: name.to_owned(),
                pod: pod.unwrap_or_default().to_owned(),
            }),
            (None, None) => Ok(Membership::Fixed(Shard::SINGLE)),
        }
    }
}

/// The StatefulSet a pod belongs to: its name without the `-<ordinal>` suffix.
pub(crate) fn statefulset_of_pod(pod: &str) -> &str {
    pod.rsplit_once('-').map_or(pod, |(set, _)| set)
}

impl Shard {
    /// One replica that owns everything.
    pub(crate) const SINGLE: Shard = Shard {
        ordinal: 0,
        replicas: 1,
    };

    /// The shard of pod `pod` among `replicas`; with one replica the pod name does not matter.
    pub(crate) fn from_pod_name(pod: Option<&str>, replicas: u32) -> Result<Shard, ShardError> {
        if replicas <= 1 {
            return Ok(Shard::SINGLE);
        }
        let pod = pod
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .ok_or(ShardError::NoPodName { replicas })?;
        let ordinal = ordinal_from_pod_name(pod).ok_or_else(|| ShardError::NoOrdinal {
            pod: pod.to_owned(),
            replicas,
        })?;
        Ok(Shard { ordinal, replicas })
    }

    /// Whether this replica runs the resource with `uid`.
    pub fn owns(&self, uid: &str) -> bool {
        self.replicas <= 1 || owner(uid, self.replicas) == self.ordinal
    }

    /// The replica that runs `uid` when it is not this one, or `None` when this one does.
    pub(crate) fn other_owner(&self, uid: &str) -> Option<u32> {
        (!self.owns(uid)).then(|| owner(uid, self.replicas))
    }
}

/// The StatefulSet ordinal in a pod name: the number after the last `-`.
pub(crate) fn ordinal_from_pod_name(pod: &str) -> Option<u32> {
    let (_, digits) = pod.rsplit_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The replica ordinal in `0..replicas` that owns `uid` (0 when `replicas` is 0 or 1).
pub fn owner(uid: &str, replicas: u32) -> u32 {
    let mut best = (0u64, 0u32);
    for ordinal in 0..replicas.max(1) {
        let w = weight(uid, ordinal);
        // Ties (practically impossible) go to the lower ordinal, deterministically.
        if ordinal == 0 || w > best.0 {
            best = (w, ordinal);
        }
    }
    best.1
}

/// The replica that would own `uid` if its owner were gone (the second-highest weight), or the
/// owner itself with fewer than two replicas: the one replica that speaks for a resource whose
/// owner has stopped serving it (its stale Event), so the others stay quiet.
pub fn backup(uid: &str, replicas: u32) -> u32 {
    let first = owner(uid, replicas);
    (0..replicas)
        .filter(|o| *o != first)
        .max_by_key(|o| (weight(uid, *o), std::cmp::Reverse(*o)))
        .unwrap_or(first)
}

/// The rendezvous weight of `ordinal` for `uid`: stable across builds and platforms.
pub(crate) fn weight(uid: &str, ordinal: u32) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in uid.bytes().chain([0xff]).chain(ordinal.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    splitmix64(h)
}

/// Spreads FNV's low-entropy high bits so weights of neighbouring ordinals are independent.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn weights_are_pinned_across_versions() {
        // Changing these breaks agreement between replicas of different releases (values
        // cross-checked with an independent Python implementation of FNV-1a + splitmix64).
        assert_eq!(owner("9f0c1d2e-0000-4000-8000-000000000001", 3), 2);
        assert_eq!(weight("", 0), 0xd640_a1eb_2309_3c0a);
        assert_eq!(weight("uid-1", 2), 0xb64f_c27e_33e6_af14);
        let pinned: Vec<u32> = (0..8).map(|i| owner(&format!("uid-{i}"), 4)).collect();
        assert_eq!(pinned, PINNED);
    }
    const PINNED: [u32; 8] = [0, 1, 2, 3, 1, 2, 1, 0];

    #[test]
    fn ordinal_is_the_number_after_the_last_dash() {
        assert_eq!(ordinal_from_pod_name("adxexporter-2"), Some(2));
        assert_eq!(ordinal_from_pod_name("my-adx-exporter-10"), Some(10));
        assert_eq!(ordinal_from_pod_name("adxexporter"), None);
        assert_eq!(ordinal_from_pod_name("adxexporter-"), None);
        assert_eq!(ordinal_from_pod_name("adxexporter-7f9c4"), None);
        assert_eq!(ordinal_from_pod_name("adxexporter-+1"), None);
        assert_eq!(ordinal_from_pod_name("a-99999999999"), None);
    }

    #[test]
    fn one_replica_needs_no_pod_name() {
        assert_eq!(Shard::from_pod_name(None, 1), Ok(Shard::SINGLE));
        assert_eq!(Shard::from_pod_name(Some("laptop"), 1), Ok(Shard::SINGLE));
        assert!(Shard::SINGLE.owns("anything"));
    }

    #[test]
    fn several_replicas_need_an_ordinal() {
        assert_eq!(
            Shard::from_pod_name(Some("adxexporter-1"), 3),
            Ok(Shard {
                ordinal: 1,
                replicas: 3
            })
        );
        let err = Shard::from_pod_name(Some("laptop"), 3).unwrap_err();
        assert!(err.to_string().contains("--pod-name"), "{err}");
        assert!(matches!(
            Shard::from_pod_name(Some("  "), 2),
            Err(ShardError::NoPodName { replicas: 2 })
        ));
    }

    #[test]
    fn membership_follows_the_statefulset_unless_replicas_is_given() {
        let sts = |name: &str, ordinal| Membership::StatefulSet {
            name: name.to_owned(),
            namespace: None,
            ordinal,
        };
        assert_eq!(
            Membership::resolve(None, None, None, Some("adxexporter-2")),
            Ok(sts("adxexporter", 2))
        );
        assert_eq!(
            Membership::resolve(None, None, None, Some("my-adx-exporter-10")),
            Ok(sts("my-adx-exporter", 10))
        );
        assert_eq!(
            Membership::resolve(None, Some("fleet"), Some("mon"), Some("adxexporter-1")),
            Ok(Membership::StatefulSet {
                name: "fleet".into(),
                namespace: Some("mon".into()),
                ordinal: 1
            })
        );
        // --replicas wins: no StatefulSet is read.
        assert_eq!(
            Membership::resolve(Some(3), Some("fleet"), None, Some("adxexporter-1")),
            Ok(Membership::Fixed(Shard {
                ordinal: 1,
                replicas: 3
            }))
        );
        // Not a StatefulSet pod: one instance runs everything.
        for pod in [
            None,
            Some("laptop"),
            Some(""),
            Some("adxexporter-7f9c4-x2kq"),
        ] {
            assert_eq!(
                Membership::resolve(None, None, None, pod),
                Ok(Membership::Fixed(Shard::SINGLE)),
                "{pod:?}"
            );
        }
        let err = Membership::resolve(None, Some("fleet"), None, Some("laptop")).unwrap_err();
        assert!(err.to_string().contains("--pod-name"), "{err}");
    }

    #[test]
    fn the_backup_is_another_replica_and_alone_it_is_the_owner() {
        for i in 0..500 {
            let uid = format!("uid-{i}");
            let b = backup(&uid, 3);
            assert!(b < 3 && b != owner(&uid, 3), "{uid}");
            assert_eq!(b, backup(&uid, 3), "deterministic");
            assert_eq!(backup(&uid, 1), 0);
        }
    }

    #[test]
    fn a_replica_beyond_the_count_owns_nothing() {
        let gone = Shard {
            ordinal: 3,
            replicas: 3,
        };
        assert!((0..200).all(|i| !gone.owns(&format!("uid-{i}"))));
        assert!(gone.other_owner("uid-1").is_some_and(|o| o < 3));
    }

    #[test]
    fn load_is_spread_and_a_new_replica_takes_about_its_share() {
        let uids: Vec<String> = (0..10_000).map(|i| format!("uid-{i}")).collect();
        let mut counts = [0u32; 5];
        let mut moved = 0;
        for uid in &uids {
            let before = owner(uid, 4);
            let after = owner(uid, 5);
            counts[after as usize] += 1;
            if before != after {
                assert_eq!(after, 4, "{uid} moved between old replicas");
                moved += 1;
            }
        }
        // Expected 2000 per replica and 2000 moved; allow generous statistical slack.
        assert!(
            counts.iter().all(|&c| (1700..2300).contains(&c)),
            "{counts:?}"
        );
        assert!((1700..2300).contains(&moved), "{moved}");
    }

    proptest! {
        #[test]
        fn exactly_one_owner_and_deterministic(uid in ".{0,40}", replicas in 1u32..20) {
            let o = owner(&uid, replicas);
            prop_assert!(o < replicas);
            prop_assert_eq!(o, owner(&uid, replicas));
            let owners = (0..replicas)
                .filter(|&ordinal| Shard { ordinal, replicas }.owns(&uid))
                .count();
            prop_assert_eq!(owners, 1);
        }

        #[test]
        fn growing_moves_only_to_the_new_replica(uid in "[a-f0-9-]{1,36}", replicas in 1u32..20) {
            let before = owner(&uid, replicas);
            let after = owner(&uid, replicas + 1);
            prop_assert!(after == before || after == replicas);
        }
    }
}
