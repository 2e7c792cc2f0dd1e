//! Group tests: targeted cases, and a deterministic simulation of members joining, leaving,
//! crashing and pausing (zombies) under a seeded RNG, checking after every step that no
//! partition is held by two live members, that committed offsets only grow, and that every
//! record is eventually delivered.

use super::*;

fn topics(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn partitions(count: u32) -> BTreeMap<String, u32> {
    BTreeMap::from([("orders".to_owned(), count)])
}

fn beat(
    group: &mut Group,
    member: &Assignment,
    owned: &BTreeSet<TopicPartition>,
    now: i64,
) -> Result<Assignment, GroupError> {
    let request = Heartbeat {
        member_id: Some(member.member_id.clone()),
        member_epoch: member.member_epoch,
        instance_id: None,
        topics: topics(&["orders"]),
        owned: owned.clone(),
    };
    group.heartbeat(request, &partitions(4), now)
}

fn join(group: &mut Group, instance: Option<&str>, now: i64) -> Assignment {
    let request = Heartbeat {
        member_id: None,
        member_epoch: 0,
        instance_id: instance.map(str::to_owned),
        topics: topics(&["orders"]),
        owned: BTreeSet::new(),
    };
    group.heartbeat(request, &partitions(4), now).expect("join")
}

/// A member id fits where group names do (the wire's bound), however long the static
/// instance id it is made from, and still names a fresh incarnation.
#[test]
fn a_long_instance_id_makes_a_member_id_that_fits() {
    let mut group = Group::new(GroupConfig::default()).with_incarnation("0123456789ab");
    let instance = "é".repeat(GROUP_NAME_BYTES_MAX / 2);
    let member = join(&mut group, Some(&instance), 0);
    assert!(
        member.member_id.len() <= GROUP_NAME_BYTES_MAX,
        "{}",
        member.member_id.len()
    );
    assert!(
        member.member_id.ends_with("-0123456789ab-1"),
        "{}",
        member.member_id
    );
    let short = join(&mut group, Some("checkout"), 0);
    assert_eq!(short.member_id, "checkout-0123456789ab-2");
}

#[test]
fn partitions_move_only_after_their_owner_lets_go() {
    let mut group = Group::new(GroupConfig::default());
    let a = join(&mut group, None, 0);
    assert_eq!(a.partitions.len(), 4, "a single member gets everything");
    let a = beat(&mut group, &a, &a.partitions.clone(), 10).expect("beat");
    let b = join(&mut group, None, 20);
    assert!(
        b.partitions.is_empty(),
        "b waits while a still owns what moves to it"
    );
    let a2 = beat(&mut group, &a, &a.partitions.clone(), 30).expect("a told to revoke");
    assert_eq!(
        a2.partitions.len(),
        2,
        "incremental: a keeps two, gives up two"
    );
    let a3 = beat(&mut group, &a2, &a2.partitions.clone(), 40).expect("a lets go");
    assert_eq!(
        a3.partitions, a2.partitions,
        "a's kept partitions are untouched"
    );
    let b = beat(&mut group, &b, &BTreeSet::new(), 50).expect("b gets its share");
    assert_eq!(b.partitions.len(), 2);
    assert!(b.partitions.is_disjoint(&a3.partitions));
}

/// A group taken over from its replicated membership (mid-revocation) goes on as the old
/// one would: same members, epochs and partitions, the hand-over still waits for the old
/// owner, sessions count from the take-over, and new member ids do not repeat old ones.
#[test]
fn a_group_restored_from_its_membership_goes_on_where_it_was() {
    let config = GroupConfig {
        session_timeout_ms: 1_000,
        ..GroupConfig::default()
    };
    let mut group = Group::new(config).with_incarnation("aaaaaaaaaaaa");
    let a = join(&mut group, None, 0);
    let a = beat(&mut group, &a, &a.partitions.clone(), 10).expect("beat");
    let b = join(&mut group, None, 20);
    assert!(b.partitions.is_empty(), "b waits for a's revocation");
    let membership = group.membership();
    assert_eq!(membership.members.len(), 2);
    assert_eq!(
        membership.revoking.len(),
        2,
        "two partitions on their way to b"
    );
    // Taken over long after the last heartbeat: the sessions count from the take-over.
    let mut restored = Group::restore(config, &membership, 5_000).with_incarnation("bbbbbbbbbbbb");
    assert_eq!(restored.membership(), membership, "nothing lost on the way");
    assert_eq!(restored.generation, group.generation);
    let b_again = beat(&mut restored, &b, &BTreeSet::new(), 5_100).expect("b is known");
    assert!(b_again.partitions.is_empty(), "a has not let go yet");
    let a2 = beat(&mut restored, &a, &a.partitions.clone(), 5_200).expect("a is known");
    assert_eq!(a2.partitions.len(), 2, "a is told to give up two");
    for partition in &a2.partitions {
        restored
            .authorize_commit(&a.member_id, a.member_epoch, partition)
            .expect("a commits what it keeps");
    }
    let a3 = beat(&mut restored, &a2, &a2.partitions.clone(), 5_300).expect("a lets go");
    let b3 = beat(&mut restored, &b, &BTreeSet::new(), 5_400).expect("b takes its share");
    assert_eq!(b3.partitions.len(), 2);
    assert!(b3.partitions.is_disjoint(&a3.partitions));
    let c = join(&mut restored, None, 5_500);
    assert_eq!(
        c.member_id, "member-bbbbbbbbbbbb-3",
        "the new incarnation, and the count goes on"
    );
    // Sessions go on counting from each member's last heartbeat.
    let _ = beat(&mut restored, &c, &BTreeSet::new(), 6_000).expect("c beats");
    beat(&mut restored, &a3, &a3.partitions.clone(), 6_250).expect("a beat at 5,300: still in");
    assert!(
        matches!(
            beat(&mut restored, &b3, &b3.partitions.clone(), 6_500),
            Err(GroupError::UnknownMember(_))
        ),
        "b was silent from 5,400 to 6,500"
    );
    // The replicated form survives its encoding.
    let json = serde_json::to_vec(&membership).expect("encode");
    assert_eq!(
        serde_json::from_slice::<Membership>(&json).expect("decode"),
        membership
    );
}

#[test]
fn a_revoke_times_out_and_expired_members_lose_everything() {
    let config = GroupConfig {
        session_timeout_ms: 1_000,
        revoke_timeout_ms: 300,
        assignor: Assignor::RoundRobin,
    };
    let mut group = Group::new(config);
    let a = join(&mut group, None, 0);
    let a = beat(&mut group, &a, &a.partitions.clone(), 10).expect("beat");
    let b = join(&mut group, None, 20);
    // a keeps reporting everything (stuck processing): at the revoke deadline it is removed
    // from the group and b takes everything.
    let stuck = a.partitions.clone();
    beat(&mut group, &a, &stuck, 100).expect("beat");
    assert!(beat(&mut group, &b, &BTreeSet::new(), 200)
        .expect("beat")
        .partitions
        .is_empty());
    assert_eq!(
        beat(&mut group, &a, &stuck, 400),
        Err(GroupError::UnknownMember(a.member_id.clone())),
        "a missed its revoke deadline"
    );
    assert!(
        matches!(
            group.authorize_commit(
                &a.member_id,
                a.member_epoch,
                &TopicPartition::new("orders", 0)
            ),
            Err(GroupError::UnknownMember(_))
        ),
        "a zombie cannot commit"
    );
    let b = beat(&mut group, &b, &BTreeSet::new(), 450).expect("beat");
    assert_eq!(b.partitions.len(), 4);
    // b goes silent: after the session timeout the group is empty.
    assert_eq!(group.expire(&partitions(4), 2_000), 1);
    assert!(group.is_empty());
}

/// The longest revoke timeout a configuration allows never wraps the deadline into the past
/// (it did: `now + timeout` overflowed, so a member asked to give partitions up was expired at
/// its next heartbeat).
#[test]
fn the_longest_revoke_timeout_does_not_wrap_the_deadline() {
    let config = GroupConfig {
        session_timeout_ms: i64::MAX,
        revoke_timeout_ms: i64::MAX,
        assignor: Assignor::RoundRobin,
    };
    let mut group = Group::new(config);
    let a = join(&mut group, None, 1_000);
    let a = beat(&mut group, &a, &a.partitions.clone(), 1_010).expect("beat");
    let _b = join(&mut group, None, 1_020);
    let stuck = a.partitions.clone();
    assert!(
        beat(&mut group, &a, &stuck, 1_030).is_ok(),
        "a member still holding partitions to revoke stays until its deadline"
    );
}

/// A group holds at most MEMBERS_PER_GROUP_MAX members: one more join is refused (Full),
/// and once a member leaves, a join is taken again.
#[test]
fn a_full_group_refuses_one_more_member() {
    let mut group = Group::new(GroupConfig::default());
    let first = join(&mut group, None, 0);
    for now in 1..MEMBERS_PER_GROUP_MAX as i64 {
        join(&mut group, None, now);
    }
    let request = Heartbeat {
        member_id: None,
        member_epoch: 0,
        instance_id: None,
        topics: topics(&["orders"]),
        owned: BTreeSet::new(),
    };
    assert!(matches!(
        group.heartbeat(request.clone(), &partitions(4), 5_000),
        Err(GroupError::Full)
    ));
    group
        .leave(&first.member_id, &partitions(4), 5_001)
        .expect("leave");
    assert!(group.heartbeat(request, &partitions(4), 5_002).is_ok());
}

#[test]
fn static_members_keep_their_partitions_across_a_restart() {
    let mut group = Group::new(GroupConfig::default());
    let a = join(&mut group, Some("inventory-1"), 0);
    let b = join(&mut group, Some("inventory-2"), 1);
    let a = beat(&mut group, &a, &a.partitions.clone(), 2).expect("beat");
    let a = beat(&mut group, &a, &a.partitions.clone(), 3).expect("beat");
    let b = beat(&mut group, &b, &b.partitions.clone(), 4).expect("beat");
    let generation = group.generation;
    let restarted = join(&mut group, Some("inventory-1"), 10);
    assert_eq!(restarted.member_id, a.member_id);
    assert_eq!(
        restarted.partitions, a.partitions,
        "same partitions, no rebalance"
    );
    assert_eq!(group.generation, generation);
    assert!(
        matches!(
            group.authorize_commit(
                &a.member_id,
                a.member_epoch,
                &a.partitions.iter().next().cloned().expect("one")
            ),
            Err(GroupError::FencedMember { .. })
        ),
        "the old incarnation's epoch is fenced"
    );
    assert!(b.partitions.is_disjoint(&restarted.partitions));
}

#[test]
fn extra_members_stay_idle_and_ranges_are_contiguous() {
    let mut group = Group::new(GroupConfig::default());
    let members: Vec<Assignment> = (0..6).map(|n| join(&mut group, None, n)).collect();
    let mut granted = BTreeSet::new();
    for (n, member) in members.iter().enumerate() {
        let answer = beat(&mut group, member, &BTreeSet::new(), 10 + n as i64).expect("beat");
        granted.extend(answer.partitions.iter().cloned());
    }
    let idle = group
        .assignments()
        .values()
        .filter(|p| p.is_empty())
        .count();
    assert_eq!(
        idle, 2,
        "six members, four partitions: two idle, none failing"
    );
    let mut group = Group::new(GroupConfig::default());
    let a = join(&mut group, None, 0);
    let b = join(&mut group, None, 1);
    let a = beat(&mut group, &a, &BTreeSet::new(), 2).expect("beat");
    let b = beat(&mut group, &b, &BTreeSet::new(), 3).expect("beat");
    let ids =
        |set: &BTreeSet<TopicPartition>| set.iter().map(|tp| tp.partition).collect::<Vec<_>>();
    let (mut x, mut y) = (ids(&a.partitions), ids(&b.partitions));
    x.sort_unstable();
    y.sort_unstable();
    assert!(
        x == vec![0, 1] && y == vec![2, 3] || x == vec![2, 3] && y == vec![0, 1],
        "{x:?} {y:?}"
    );
}

/// The simulated client: its identity, the partitions it consumes with its position in
/// each (what it fetched up to), whether it runs, and its pause.
struct SimMember {
    member_id: String,
    member_epoch: i32,
    positions: BTreeMap<u32, i64>,
    crashed: bool,
    paused_until: i64,
}

/// The simulation's view of the partitions: log ends, committed offsets, records really
/// fetched by some member, and counts that show each path ran.
struct SimLog {
    log_end: Vec<i64>,
    committed: Vec<i64>,
    fetched: Vec<BTreeSet<i64>>,
    commits_accepted: usize,
    zombie_commits_refused: usize,
}

impl SimLog {
    /// A member commits its position in `partition`; asserts what the group promises.
    /// Returns whether the commit was accepted.
    fn commit(
        &mut self,
        group: &Group,
        member: &SimMember,
        partition: u32,
        position: i64,
        context: &str,
    ) -> bool {
        let key = TopicPartition::new("orders", partition);
        let p = partition as usize;
        let holders = group.assignments();
        let known = holders.contains_key(&member.member_id);
        let held_elsewhere = holders
            .iter()
            .any(|(other, set)| *other != member.member_id && set.contains(&key));
        match group.authorize_commit(&member.member_id, member.member_epoch, &key) {
            Ok(()) => {
                assert!(known, "{context}: a member the group dropped committed");
                assert!(
                    !held_elsewhere,
                    "{context}: commit on {partition} accepted while another member holds it"
                );
                assert!(
                    position >= self.committed[p],
                    "{context}: commit of {partition} went back from {} to {position}",
                    self.committed[p]
                );
                self.committed[p] = position;
                self.commits_accepted += 1;
                true
            }
            Err(_) => {
                if !known {
                    self.zombie_commits_refused += 1;
                }
                false
            }
        }
    }
}

fn join_request() -> Heartbeat {
    Heartbeat {
        member_id: None,
        member_epoch: 0,
        instance_id: None,
        topics: topics(&["orders"]),
        owned: BTreeSet::new(),
    }
}

/// Applies an assignment the way a consumer does: a partition no longer granted is
/// committed at its position and let go; a newly granted one starts at the committed offset.
fn apply_assignment(
    group: &Group,
    log: &mut SimLog,
    member: &mut SimMember,
    assignment: &Assignment,
    context: &str,
) {
    member.member_id = assignment.member_id.clone();
    member.member_epoch = assignment.member_epoch;
    let granted: BTreeSet<u32> = assignment
        .partitions
        .iter()
        .map(|tp| tp.partition)
        .collect();
    let revoked: Vec<(u32, i64)> = member
        .positions
        .iter()
        .filter(|(p, _)| !granted.contains(p))
        .map(|(p, pos)| (*p, *pos))
        .collect();
    for (partition, position) in revoked {
        log.commit(group, member, partition, position, context);
        member.positions.remove(&partition);
    }
    for partition in granted {
        member
            .positions
            .entry(partition)
            .or_insert(log.committed[partition as usize]);
    }
}

#[test]
fn seeded_simulation_of_churn() {
    let mut total_zombie_refusals = 0;
    let mut total_accepted = 0;
    for seed in 1..=25u64 {
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move |bound: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % bound
        };
        let config = GroupConfig {
            session_timeout_ms: 500,
            revoke_timeout_ms: 200,
            assignor: if seed % 2 == 0 {
                Assignor::Range
            } else {
                Assignor::RoundRobin
            },
        };
        let mut group = Group::new(config);
        let count = 4u32;
        let parts = BTreeMap::from([("orders".to_owned(), count)]);
        let mut log = SimLog {
            log_end: vec![0; count as usize],
            committed: vec![0; count as usize],
            fetched: vec![BTreeSet::new(); count as usize],
            commits_accepted: 0,
            zombie_commits_refused: 0,
        };
        let mut members: Vec<SimMember> = Vec::new();
        let mut now = 0i64;
        for step in 0..600 {
            let context = format!("seed {seed} step {step}");
            now += 10 + next(20) as i64;
            for end in log.log_end.iter_mut() {
                *end += next(3) as i64;
            }
            match next(30) {
                0 | 1 if members.iter().filter(|m| !m.crashed).count() < 6 => {
                    let assignment = group.heartbeat(join_request(), &parts, now).expect("join");
                    let mut member = SimMember {
                        member_id: String::new(),
                        member_epoch: 0,
                        positions: BTreeMap::new(),
                        crashed: false,
                        paused_until: 0,
                    };
                    apply_assignment(&group, &mut log, &mut member, &assignment, &context);
                    members.push(member);
                }
                2 => {
                    if let Some(member) = members
                        .iter_mut()
                        .filter(|m| !m.crashed)
                        .nth(next(6) as usize)
                    {
                        member.crashed = true;
                    }
                }
                3 => {
                    // Long enough, often, for the session to expire: the member comes back a
                    // zombie that still believes it owns its partitions.
                    if let Some(member) = members
                        .iter_mut()
                        .filter(|m| !m.crashed)
                        .nth(next(6) as usize)
                    {
                        member.paused_until = now + 300 + next(600) as i64;
                    }
                }
                4 => {
                    if let Some(member) = members
                        .iter_mut()
                        .filter(|m| !m.crashed)
                        .nth(next(6) as usize)
                    {
                        // A clean leave commits first, as the SDK does on stop.
                        for (partition, position) in member.positions.clone() {
                            log.commit(&group, member, partition, position, &context);
                        }
                        let _ = group.leave(&member.member_id, &parts, now);
                        member.crashed = true;
                    }
                }
                _ => {}
            }
            for member in members
                .iter_mut()
                .filter(|m| !m.crashed && m.paused_until <= now)
            {
                // Fetch a few records of each partition it believes it owns, then commit the
                // position (a zombie's commit must be refused).
                for (partition, position) in member.positions.clone() {
                    let p = partition as usize;
                    let upto = (position + next(4) as i64).min(log.log_end[p]);
                    log.fetched[p].extend(position..upto);
                    member.positions.insert(partition, upto);
                    if next(2) == 0 && !log.commit(&group, member, partition, upto, &context) {
                        // Refused: the member lost the partition; it stops consuming it.
                        member.positions.remove(&partition);
                    }
                }
                // Now and then a buggy client commits a partition it does not consume: the
                // group must refuse it while another member holds that partition.
                let stray = next(count as u64 * 4) as u32;
                if stray < count && !member.positions.contains_key(&stray) {
                    let at = log.committed[stray as usize];
                    log.commit(&group, member, stray, at, &context);
                }
                let request = Heartbeat {
                    member_id: Some(member.member_id.clone()),
                    member_epoch: member.member_epoch,
                    instance_id: None,
                    topics: topics(&["orders"]),
                    owned: member
                        .positions
                        .keys()
                        .map(|p| TopicPartition::new("orders", *p))
                        .collect(),
                };
                let assignment = match group.heartbeat(request, &parts, now) {
                    Ok(assignment) => assignment,
                    Err(_) => {
                        // Expired while paused: drop everything uncommitted and rejoin.
                        member.positions.clear();
                        group
                            .heartbeat(join_request(), &parts, now)
                            .expect("rejoin")
                    }
                };
                apply_assignment(&group, &mut log, member, &assignment, &context);
            }
            // No partition is held by two live members.
            let live: Vec<&SimMember> = members
                .iter()
                .filter(|m| !m.crashed && group.assignments().contains_key(&m.member_id))
                .collect();
            for partition in 0..count {
                let holders = live
                    .iter()
                    .filter(|m| m.positions.contains_key(&partition))
                    .count();
                assert!(
                    holders <= 1,
                    "{context}: partition {partition} consumed by {holders} live members"
                );
            }
        }
        // Settle: every earlier member is gone; one healthy member joins, is granted every
        // partition, starts from the committed offsets and fetches to the end.
        now += 10_000;
        let context = format!("seed {seed} settle");
        let mut survivor = SimMember {
            member_id: String::new(),
            member_epoch: 0,
            positions: BTreeMap::new(),
            crashed: false,
            paused_until: 0,
        };
        let assignment = group.heartbeat(join_request(), &parts, now).expect("join");
        apply_assignment(&group, &mut log, &mut survivor, &assignment, &context);
        for _ in 0..3 {
            now += 100;
            let request = Heartbeat {
                member_id: Some(survivor.member_id.clone()),
                member_epoch: survivor.member_epoch,
                instance_id: None,
                topics: topics(&["orders"]),
                owned: survivor
                    .positions
                    .keys()
                    .map(|p| TopicPartition::new("orders", *p))
                    .collect(),
            };
            let assignment = group.heartbeat(request, &parts, now).expect("beat");
            apply_assignment(&group, &mut log, &mut survivor, &assignment, &context);
        }
        assert_eq!(
            survivor.positions.len(),
            count as usize,
            "seed {seed}: the survivor owns everything"
        );
        for (partition, position) in survivor.positions.clone() {
            let p = partition as usize;
            log.fetched[p].extend(position..log.log_end[p]);
            assert!(log.commit(&group, &survivor, partition, log.log_end[p], &context));
        }
        for p in 0..count as usize {
            let missing: Vec<i64> = (0..log.log_end[p])
                .filter(|o| !log.fetched[p].contains(o))
                .collect();
            assert!(
                missing.is_empty(),
                "seed {seed}: partition {p}: offsets never fetched by any member: {missing:?}"
            );
        }
        total_zombie_refusals += log.zombie_commits_refused;
        total_accepted += log.commits_accepted;
    }
    // The paths the assertions guard really ran.
    assert!(total_accepted > 1000, "accepted commits: {total_accepted}");
    assert!(
        total_zombie_refusals > 10,
        "zombie commits refused: {total_zombie_refusals}"
    );
}

#[test]
fn a_newcomer_always_gets_its_balanced_share() {
    for existing in 1..=4usize {
        let mut group = Group::new(GroupConfig::default());
        let mut members: Vec<Assignment> = (0..existing)
            .map(|n| join(&mut group, None, n as i64))
            .collect();
        // Let everyone settle with what they were granted.
        for round in 0..3 {
            for member in members.iter_mut() {
                *member = beat(&mut group, member, &member.partitions.clone(), 100 + round)
                    .expect("beat");
            }
        }
        let newcomer = join(&mut group, None, 200);
        let mut newcomer = newcomer;
        for round in 0..3 {
            for member in members.iter_mut() {
                *member = beat(
                    &mut group,
                    member,
                    &member.partitions.clone(),
                    300 + round * 10,
                )
                .expect("beat");
            }
            newcomer = beat(
                &mut group,
                &newcomer,
                &newcomer.partitions.clone(),
                305 + round * 10,
            )
            .expect("beat");
        }
        let expected_min = 4 / (existing + 1);
        assert!(
            newcomer.partitions.len() >= expected_min.max(if existing < 4 { 1 } else { 0 }),
            "{existing} members + 1: newcomer got {:?}",
            newcomer.partitions
        );
        let mut sizes: Vec<usize> = members
            .iter()
            .map(|m| m.partitions.len())
            .chain([newcomer.partitions.len()])
            .collect();
        sizes.sort_unstable();
        assert!(
            sizes[sizes.len() - 1] - sizes[0] <= 1,
            "balanced: {sizes:?}"
        );
    }
}
