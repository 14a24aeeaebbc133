//! Server-side assignors of KIP-848 groups: which member should own which partition.
//!
//! * `uniform` — balanced and sticky: every member keeps what it owns up to its fair
//!   share (⌊P/N⌋, one more for the first P mod N members that already hold more), the
//!   rest goes to the least-loaded subscribed member. Members subscribing to different
//!   topics are handled: a partition only goes to a member subscribed to its topic.
//! * `range` — per topic, the subscribed members in id order get consecutive ranges
//!   (the first `P mod N` one partition more), like the classic range assignor.
//!
//! Deterministic: members and partitions are visited in sorted order.

use super::records::TopicPartitions;
use super::Topics;
use std::collections::{BTreeMap, BTreeSet};

/// What the assignor knows of a member.
#[derive(Clone, Debug, Default)]
pub struct MemberSpec {
    /// Topics subscribed to.
    pub subscribed: BTreeSet<String>,
    /// What the member owns now (its current target, for stickiness).
    pub current: TopicPartitions,
}

/// The assignor names Oxbow knows.
pub const ASSIGNORS: [&str; 2] = ["uniform", "range"];

/// Assigns the partitions of `topics` to `members` with the assignor `name`
/// (`range`, or anything else: `uniform`).
pub fn assign(
    name: &str,
    members: &BTreeMap<String, MemberSpec>,
    topics: &Topics,
) -> BTreeMap<String, TopicPartitions> {
    match name {
        "range" => range(members, topics),
        _ => uniform(members, topics),
    }
}

fn subscribed_partitions(members: &BTreeMap<String, MemberSpec>, topics: &Topics) -> Vec<(String, i32)> {
    let names: BTreeSet<&String> = members.values().flat_map(|m| m.subscribed.iter()).collect();
    names
        .into_iter()
        .filter_map(|name| topics.get(name).map(|t| (name, t.partitions)))
        .flat_map(|(name, count)| (0..count.max(0)).map(move |p| (name.clone(), p)))
        .collect()
}

fn uniform(members: &BTreeMap<String, MemberSpec>, topics: &Topics) -> BTreeMap<String, TopicPartitions> {
    let mut out: BTreeMap<String, TopicPartitions> = members
        .keys()
        .map(|id| (id.clone(), TopicPartitions::new()))
        .collect();
    if members.is_empty() {
        return out;
    }
    let all = subscribed_partitions(members, topics);
    let floor = all.len() / members.len();
    let mut extra = all.len() % members.len();
    let mut counts: BTreeMap<&String, usize> = members.keys().map(|id| (id, 0)).collect();
    let mut taken: BTreeSet<(String, i32)> = BTreeSet::new();
    let valid = |id: &String, topic: &String, p: i32| {
        members[id].subscribed.contains(topic)
            && topics.get(topic).is_some_and(|t| p >= 0 && p < t.partitions)
    };
    // Keep owned partitions up to the fair share, then one more for a few members.
    for pass_cap in [floor, floor + 1] {
        for (id, spec) in members {
            for (topic, partitions) in &spec.current {
                for p in partitions {
                    let count = counts.get(id).copied().unwrap_or(0);
                    let cap = if pass_cap > floor && extra == 0 {
                        floor
                    } else {
                        pass_cap
                    };
                    if count >= cap || !valid(id, topic, *p) || taken.contains(&(topic.clone(), *p)) {
                        continue;
                    }
                    if count == floor {
                        extra -= 1;
                    }
                    taken.insert((topic.clone(), *p));
                    out.entry(id.clone())
                        .or_default()
                        .entry(topic.clone())
                        .or_default()
                        .insert(*p);
                    counts.insert(id, count + 1);
                }
            }
        }
    }
    // The rest to the least-loaded subscribed member.
    for (topic, p) in all {
        if taken.contains(&(topic.clone(), p)) {
            continue;
        }
        let best = members
            .iter()
            .filter(|(_, spec)| spec.subscribed.contains(&topic))
            .min_by_key(|(id, _)| (counts.get(id).copied().unwrap_or(0), (*id).clone()))
            .map(|(id, _)| id);
        if let Some(id) = best {
            *counts.entry(id).or_default() += 1;
            out.entry(id.clone())
                .or_default()
                .entry(topic.clone())
                .or_default()
                .insert(p);
        }
    }
    out
}

fn range(members: &BTreeMap<String, MemberSpec>, topics: &Topics) -> BTreeMap<String, TopicPartitions> {
    let mut out: BTreeMap<String, TopicPartitions> = members
        .keys()
        .map(|id| (id.clone(), TopicPartitions::new()))
        .collect();
    let names: BTreeSet<&String> = members.values().flat_map(|m| m.subscribed.iter()).collect();
    for name in names {
        let Some(info) = topics.get(name) else { continue };
        let subscribers: Vec<&String> = members
            .iter()
            .filter(|(_, spec)| spec.subscribed.contains(name))
            .map(|(id, _)| id)
            .collect();
        let count = usize::try_from(info.partitions.max(0)).unwrap_or(0);
        let per = count / subscribers.len().max(1);
        let extra = count % subscribers.len().max(1);
        let mut next = 0usize;
        for (index, id) in subscribers.iter().enumerate() {
            let take = per + usize::from(index < extra);
            let set = out
                .entry((*id).clone())
                .or_default()
                .entry(name.clone())
                .or_default();
            for p in next..next + take {
                set.insert(i32::try_from(p).unwrap_or(i32::MAX));
            }
            next += take;
        }
    }
    for assignment in out.values_mut() {
        assignment.retain(|_, partitions| !partitions.is_empty());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::TopicInfo;

    fn topics(spec: &[(&str, i32)]) -> Topics {
        spec.iter()
            .map(|(n, p)| {
                (
                    (*n).to_string(),
                    TopicInfo {
                        id: [0; 16],
                        partitions: *p,
                    },
                )
            })
            .collect()
    }

    fn members(ids: &[&str], topic: &str) -> BTreeMap<String, MemberSpec> {
        ids.iter()
            .map(|id| {
                (
                    (*id).to_string(),
                    MemberSpec {
                        subscribed: [topic.to_string()].into_iter().collect(),
                        current: TopicPartitions::new(),
                    },
                )
            })
            .collect()
    }

    fn counts(out: &BTreeMap<String, TopicPartitions>) -> Vec<usize> {
        out.values()
            .map(|a| a.values().map(BTreeSet::len).sum())
            .collect()
    }

    fn assert_exact_cover(out: &BTreeMap<String, TopicPartitions>, total: usize) {
        let mut seen = BTreeSet::new();
        for assignment in out.values() {
            for (topic, partitions) in assignment {
                for p in partitions {
                    assert!(seen.insert((topic.clone(), *p)), "{topic}-{p} assigned twice");
                }
            }
        }
        assert_eq!(seen.len(), total);
    }

    #[test]
    fn uniform_is_balanced_and_sticky() {
        let t = topics(&[("t", 8)]);
        let mut m = members(&["a", "b", "c"], "t");
        let first = assign("uniform", &m, &t);
        assert_exact_cover(&first, 8);
        let mut c = counts(&first);
        c.sort();
        assert_eq!(c, vec![2, 3, 3]);
        // A fourth member joins: the others keep most of what they had.
        for (id, spec) in m.iter_mut() {
            spec.current = first[id].clone();
        }
        m.insert(
            "d".into(),
            MemberSpec {
                subscribed: ["t".to_string()].into_iter().collect(),
                current: TopicPartitions::new(),
            },
        );
        let second = assign("uniform", &m, &t);
        assert_exact_cover(&second, 8);
        assert_eq!(counts(&second), vec![2, 2, 2, 2]);
        for id in ["a", "b", "c"] {
            let kept = second[id]["t"].intersection(&first[id]["t"]).count();
            assert_eq!(kept, 2, "{id} keeps its share");
        }
    }

    #[test]
    fn range_gives_consecutive_ranges() {
        let t = topics(&[("t", 7)]);
        let out = assign("range", &members(&["a", "b", "c"], "t"), &t);
        assert_exact_cover(&out, 7);
        assert_eq!(out["a"]["t"].iter().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(out["c"]["t"].iter().copied().collect::<Vec<_>>(), vec![5, 6]);
    }

    #[test]
    fn partitions_only_go_to_subscribers() {
        let t = topics(&[("x", 2), ("y", 3)]);
        let mut m = members(&["a"], "x");
        m.extend(members(&["b"], "y"));
        for name in ASSIGNORS {
            let out = assign(name, &m, &t);
            assert_exact_cover(&out, 5);
            assert!(out["a"].keys().all(|k| k == "x"));
            assert!(out["b"].keys().all(|k| k == "y"));
        }
    }
}
