//! Group phases of the broker benchmark: consume a topic with C members of one group
//! (throughput), then time a rebalance when a member joins (until the newcomer's partitions
//! flow) against the heartbeat interval.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_broker_client::BrokerClient;
use herald_wire::batch::count_records;
use herald_wire::groups::{Commit, GroupRequest, GroupResponse, TopicPartition};

use crate::report::report;

struct Member {
    /// `None` until joined.
    id: Option<String>,
    epoch: i32,
    owned: Vec<TopicPartition>,
    interval: Duration,
}

async fn heartbeat(client: &BrokerClient, group: &str, member: &mut Member) -> anyhow::Result<()> {
    let request = GroupRequest::Heartbeat {
        group: group.into(),
        member_id: member.id.clone(),
        member_epoch: member.epoch,
        instance_id: None,
        topics: vec!["bench".into()],
        owned: member.owned.clone(),
    };
    match client.group(request).await? {
        GroupResponse::Assignment {
            member_id,
            member_epoch,
            heartbeat_interval_ms,
            partitions,
        } => {
            member.id = Some(member_id);
            member.epoch = member_epoch;
            member.owned = partitions;
            member.interval = Duration::from_millis(u64::from(heartbeat_interval_ms));
            Ok(())
        }
        other => anyhow::bail!("unexpected {other:?}"),
    }
}

fn new_member() -> Member {
    Member {
        id: None,
        epoch: 0,
        owned: Vec::new(),
        interval: Duration::from_secs(1),
    }
}

/// Consumes every record of topic `bench` with `consumers` members of group `group`.
pub(crate) async fn consume(
    clients: &[BrokerClient],
    group: &str,
    consumers: usize,
    total: usize,
    record_bytes: usize,
    label: &str,
) -> anyhow::Result<()> {
    let consumed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..consumers {
        let client = clients[n % clients.len()].clone();
        let consumed = consumed.clone();
        let group = group.to_owned();
        tasks.spawn(async move {
            let mut member = new_member();
            let mut positions: BTreeMap<TopicPartition, i64> = BTreeMap::new();
            let mut last_heartbeat = Instant::now() - Duration::from_secs(3600);
            while consumed.load(Ordering::Relaxed) < total {
                if last_heartbeat.elapsed() >= member.interval / 3 || member.owned.is_empty() {
                    heartbeat(&client, &group, &mut member).await?;
                    last_heartbeat = Instant::now();
                    if member.owned.is_empty() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
                for partition in member.owned.clone() {
                    let position = *positions.entry(partition.clone()).or_insert(0);
                    let fetched = client
                        .fetch(
                            &partition.topic,
                            partition.partition,
                            position,
                            4 * 1024 * 1024,
                            Duration::ZERO,
                            1,
                        )
                        .await?;
                    let records = count_records(&fetched.batches) as usize;
                    if records > 0 {
                        positions.insert(partition.clone(), position + records as i64);
                        consumed.fetch_add(records, Ordering::Relaxed);
                        let commit = GroupRequest::Commit {
                            group: group.clone(),
                            member_id: member.id.clone().unwrap_or_default(),
                            member_epoch: member.epoch,
                            offsets: vec![Commit {
                                partition: partition.clone(),
                                offset: position + records as i64,
                                metadata: String::new(),
                            }],
                        };
                        let _ = client.group(commit).await;
                    }
                }
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let name = format!("{label}-group-{consumers}-consumers");
    report(
        &name,
        "group_consume",
        consumed.load(Ordering::Relaxed),
        record_bytes,
        started.elapsed(),
        Vec::new(),
    );
    Ok(())
}

/// Members heartbeating at their interval; a newcomer joins; reports how long until its
/// partitions are granted (flowing), in milliseconds and in heartbeat intervals.
pub(crate) async fn rebalance(
    client: &BrokerClient,
    members: usize,
    label: &str,
    interval: Duration,
) -> anyhow::Result<()> {
    let group = "rebalance";
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..members {
        let client = client.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut member = new_member();
            while !stop.load(Ordering::Relaxed) {
                heartbeat(&client, group, &mut member).await?;
                tokio::time::sleep(member.interval).await;
            }
            Ok::<_, anyhow::Error>(member.interval)
        });
    }
    // Let the group settle: several intervals.
    let mut probe = new_member();
    heartbeat(client, group, &mut probe).await?;
    client
        .group(GroupRequest::Leave {
            group: group.into(),
            member_id: probe.id.clone().unwrap_or_default(),
        })
        .await?;
    tokio::time::sleep(interval * 3).await;
    let mut newcomer = new_member();
    let joined = Instant::now();
    heartbeat(client, group, &mut newcomer).await?;
    while newcomer.owned.is_empty() {
        // The newcomer heartbeats at its interval, like every member.
        tokio::time::sleep(newcomer.interval).await;
        heartbeat(client, group, &mut newcomer).await?;
        anyhow::ensure!(
            joined.elapsed() < interval * 20,
            "the newcomer got no partition within 20 heartbeat intervals"
        );
    }
    let elapsed = joined.elapsed();
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    println!(
        "system={label} phase=rebalance_on_join members_before={members} heartbeat_interval_ms={} rebalance_ms={:.1} heartbeat_intervals={:.2}",
        interval.as_millis(),
        elapsed.as_secs_f64() * 1000.0,
        elapsed.as_secs_f64() / interval.as_secs_f64()
    );
    Ok(())
}

/// Time from a member's crash (it stops heartbeating, no leave) until every partition of
/// topic `bench` is owned by a surviving member again. Bounded by the session timeout (three
/// heartbeat intervals) plus the survivors' next heartbeat.
pub(crate) async fn rebalance_on_death(
    client: &BrokerClient,
    members: usize,
    partitions: u32,
    label: &str,
    interval: Duration,
) -> anyhow::Result<()> {
    anyhow::ensure!(members >= 2, "a death needs a survivor");
    let group = "rebalance-death";
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let owned: Arc<std::sync::Mutex<Vec<Vec<TopicPartition>>>> =
        Arc::new(std::sync::Mutex::new(vec![Vec::new(); members]));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..members {
        let (client, stop, killed, owned) =
            (client.clone(), stop.clone(), killed.clone(), owned.clone());
        tasks.spawn(async move {
            let mut member = new_member();
            while !stop.load(Ordering::Relaxed) {
                if index == 0 && killed.load(Ordering::Relaxed) {
                    // Crashed: silent from now on.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                heartbeat(&client, group, &mut member).await?;
                if let Ok(mut owned) = owned.lock() {
                    owned[index] = member.owned.clone();
                }
                tokio::time::sleep(member.interval).await;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    let covered = |owned: &Vec<Vec<TopicPartition>>, from: usize| {
        let mut all: Vec<u32> = owned[from..]
            .iter()
            .flatten()
            .map(|p| p.partition)
            .collect();
        all.sort_unstable();
        all.dedup();
        all.len() == partitions as usize
    };
    // Settle: every partition owned by someone, the victim holding some.
    let settle = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let ready = owned
            .lock()
            .map(|o| covered(&o, 0) && !o[0].is_empty())
            .unwrap_or(false);
        if ready {
            break;
        }
        anyhow::ensure!(settle.elapsed() < interval * 30, "the group never settled");
    }
    let died = Instant::now();
    killed.store(true, Ordering::Relaxed);
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if owned.lock().map(|o| covered(&o, 1)).unwrap_or(false) {
            break;
        }
        anyhow::ensure!(died.elapsed() < interval * 30, "partitions never moved");
    }
    let elapsed = died.elapsed();
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    println!(
        "system={label} phase=rebalance_on_death members_before={members} heartbeat_interval_ms={} rebalance_ms={:.1} heartbeat_intervals={:.2}",
        interval.as_millis(),
        elapsed.as_secs_f64() * 1000.0,
        elapsed.as_secs_f64() / interval.as_secs_f64()
    );
    Ok(())
}
