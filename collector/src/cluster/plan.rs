//! The even spread of shards over live nodes: what one node should release and acquire, from
//! the leases as they are. Every node runs it on its own; their quotas add up to the shard count,
//! so the cluster converges within a few rounds of a join or a leave.

/// A shard's lease as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    pub shard: u32,
    /// The node holding it, if any ever did.
    pub owner: Option<String>,
    /// Expired (or released): any node may take it.
    pub expired: bool,
}

/// What a node does this round.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Shards it holds above its quota, to release (highest first).
    pub release: Vec<u32>,
    /// Free shards to acquire up to its quota (lowest first).
    pub acquire: Vec<u32>,
    /// How many shards it should hold.
    pub quota: u32,
}

/// `me`'s plan among `live` nodes (any order; `me` counts as live) for `shards` shards. The quota
/// is `shards / live`, plus one for the first `shards % live` nodes in id order.
pub fn plan(me: &str, shards: u32, live: &[String], leases: &[LeaseState]) -> Plan {
    let mut nodes: Vec<&str> = live.iter().map(String::as_str).collect();
    if !nodes.contains(&me) {
        nodes.push(me);
    }
    nodes.sort_unstable();
    nodes.dedup();
    let n = nodes.len() as u32;
    let rank = nodes.iter().position(|&x| x == me).unwrap_or(0) as u32;
    let quota = shards / n + u32::from(rank < shards % n);

    let mut held: Vec<u32> = leases
        .iter()
        .filter(|l| !l.expired && l.owner.as_deref() == Some(me))
        .map(|l| l.shard)
        .collect();
    held.sort_unstable();
    let mut result = Plan {
        quota,
        ..Plan::default()
    };
    let held_count = held.len() as u32;
    if held_count > quota {
        result.release = held
            .iter()
            .rev()
            .take((held_count - quota) as usize)
            .copied()
            .collect();
    } else {
        let mut free: Vec<u32> = leases
            .iter()
            .filter(|l| l.expired || l.owner.is_none())
            .map(|l| l.shard)
            .collect();
        free.sort_unstable();
        result.acquire = free
            .into_iter()
            .take((quota - held_count) as usize)
            .collect();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Runs rounds of every node's plan against one lease table, as the metastore would apply
    /// them, until nothing changes; returns the number of rounds.
    fn converge(shards: u32, live: &[String], leases: &mut [LeaseState]) -> usize {
        for round in 1..=20 {
            let mut changed = false;
            for me in live {
                let p = plan(me, shards, live, leases);
                for s in p.release {
                    leases[s as usize].expired = true;
                    changed = true;
                }
                for s in p.acquire {
                    let l = &mut leases[s as usize];
                    if l.expired || l.owner.is_none() {
                        l.owner = Some(me.clone());
                        l.expired = false;
                        changed = true;
                    }
                }
            }
            if !changed {
                return round;
            }
        }
        panic!("no convergence in 20 rounds: {leases:?}");
    }

    fn held(leases: &[LeaseState], me: &str) -> usize {
        leases
            .iter()
            .filter(|l| !l.expired && l.owner.as_deref() == Some(me))
            .count()
    }

    #[test]
    fn quotas_add_up_and_differ_by_at_most_one() {
        for shards in [1u32, 2, 7, 32, 100] {
            for n in 1..=5 {
                let live: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
                let quotas: Vec<u32> = live
                    .iter()
                    .map(|me| plan(me, shards, &live, &[]).quota)
                    .collect();
                assert_eq!(quotas.iter().sum::<u32>(), shards, "{shards} over {n}");
                let (min, max) = (quotas.iter().min().unwrap(), quotas.iter().max().unwrap());
                assert!(max - min <= 1, "{quotas:?}");
            }
        }
    }

    #[test]
    fn a_cluster_spreads_evenly_then_rebalances_on_join_and_leave() {
        let shards = 32;
        let mut leases: Vec<LeaseState> = (0..shards)
            .map(|shard| LeaseState {
                shard,
                owner: None,
                expired: false,
            })
            .collect();
        let two = nodes(&["a", "b"]);
        converge(shards, &two, &mut leases);
        assert_eq!((held(&leases, "a"), held(&leases, "b")), (16, 16));

        let three = nodes(&["a", "b", "c"]);
        converge(shards, &three, &mut leases);
        let counts: Vec<usize> = ["a", "b", "c"].iter().map(|n| held(&leases, n)).collect();
        assert_eq!(counts.iter().sum::<usize>(), 32);
        assert!(counts.iter().all(|&c| c == 10 || c == 11), "{counts:?}");

        // b dies: its leases expire; a and c take them.
        for l in leases
            .iter_mut()
            .filter(|l| l.owner.as_deref() == Some("b"))
        {
            l.expired = true;
        }
        let survivors = nodes(&["a", "c"]);
        converge(shards, &survivors, &mut leases);
        assert_eq!((held(&leases, "a"), held(&leases, "c")), (16, 16));
    }

    #[test]
    fn a_node_takes_only_free_or_expired_shards() {
        let leases = vec![
            LeaseState {
                shard: 0,
                owner: Some("b".into()),
                expired: false,
            },
            LeaseState {
                shard: 1,
                owner: Some("b".into()),
                expired: true,
            },
            LeaseState {
                shard: 2,
                owner: None,
                expired: false,
            },
        ];
        let p = plan("a", 3, &nodes(&["a"]), &leases);
        assert_eq!(p.quota, 3);
        assert_eq!(p.acquire, vec![1, 2]);
        assert!(p.release.is_empty());
    }
}
