//! Three consumers in one group share four partitions of a real `herald` broker; one is
//! killed, its partitions move to the others and no committed record is lost; then the broker
//! is SIGKILLed and restarted and the group resumes from its committed offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_broker_client::BrokerClient;
use herald_tests::BrokerProcess;
use herald_wire::batch::{batches, BatchBuilder, Record};
use herald_wire::groups::{Commit, GroupRequest, GroupResponse, TopicPartition};
use herald_wire::messages::{Durability, TopicConfig};

const PARTITIONS: u32 = 4;
const RECORDS_PER_PARTITION: usize = 200;

type Seen = Arc<Mutex<BTreeMap<u32, BTreeSet<i64>>>>;

/// A consumer: heartbeats, consumes what it is granted from the committed offset, commits.
async fn consume(
    client: BrokerClient,
    seen: Seen,
    stop_after: Option<usize>,
) -> anyhow::Result<usize> {
    let mut consumed = 0usize;
    let (mut member_id, mut epoch): (Option<String>, i32) = (None, 0);
    let mut owned: Vec<TopicPartition> = Vec::new();
    loop {
        if stop_after.is_some_and(|limit| consumed >= limit) {
            return Ok(consumed); // "killed": no leave, no more heartbeats
        }
        let request = GroupRequest::Heartbeat {
            group: "workers".into(),
            member_id: member_id.clone(),
            member_epoch: epoch,
            instance_id: None,
            topics: vec!["jobs".into()],
            owned: owned.clone(),
        };
        match client.group(request).await {
            Ok(GroupResponse::Assignment {
                member_id: id,
                member_epoch,
                partitions,
                ..
            }) => {
                member_id = Some(id);
                epoch = member_epoch;
                owned = partitions;
            }
            Ok(other) => anyhow::bail!("unexpected {other:?}"),
            Err(_) => {
                // Fenced or expired: rejoin with nothing.
                member_id = None;
                epoch = 0;
                owned.clear();
                continue;
            }
        }
        for tp in owned.clone() {
            let partition = tp.partition;
            let asked = vec![tp.clone()];
            let GroupResponse::Offsets(offsets) = client
                .group(GroupRequest::FetchOffsets {
                    group: "workers".into(),
                    partitions: asked,
                })
                .await?
            else {
                anyhow::bail!("offsets")
            };
            let from = offsets.first().and_then(|o| o.offset).unwrap_or(0);
            // One batch per round: slow enough that the doomed consumer dies holding partitions.
            let fetched = client
                .fetch(&tp.topic, partition, from, 200, Duration::ZERO, 1)
                .await?;
            let mut next = from;
            for view in batches(&fetched.batches) {
                let view = view?;
                let mut seen = seen.lock().expect("lock");
                for offset in view.base_offset()..view.next_offset() {
                    if offset >= from {
                        seen.entry(partition).or_default().insert(offset);
                        consumed += 1;
                    }
                }
                next = view.next_offset();
            }
            if next > from {
                let commit = GroupRequest::Commit {
                    group: "workers".into(),
                    member_id: member_id.clone().unwrap_or_default(),
                    member_epoch: epoch,
                    offsets: vec![Commit {
                        partition: tp,
                        offset: next,
                        metadata: String::new(),
                    }],
                };
                // A commit refused because the partition moved is fine: the new owner re-reads.
                let _ = client.group(commit).await;
            }
        }
        let done = {
            let seen = seen.lock().expect("lock");
            (0..PARTITIONS).all(|p| {
                seen.get(&p)
                    .is_some_and(|s| s.len() >= RECORDS_PER_PARTITION)
            })
        };
        if done && stop_after.is_none() {
            return Ok(consumed);
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_consumer_partitions_move_and_commits_survive_a_broker_restart(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        "group_session_timeout_ms = 600\ngroup_revoke_timeout_ms = 400\n",
    )?;
    let config_arg = config.display().to_string();
    let broker = BrokerProcess::start_with(&dir.path().join("data"), &["--config", &config_arg])?;
    let client = broker.client().await?;
    client
        .create_topic(
            "jobs",
            TopicConfig {
                partitions: PARTITIONS,
                ..TopicConfig::default()
            },
        )
        .await?;
    for partition in 0..PARTITIONS {
        for chunk in 0..(RECORDS_PER_PARTITION / 20) {
            let mut builder = BatchBuilder::new();
            for i in 0..20 {
                builder.push(Record {
                    timestamp_ms: 1,
                    key: None,
                    value: Some(format!("{partition}-{}", chunk * 20 + i).into_bytes()),
                    headers: Vec::new(),
                });
            }
            client
                .produce("jobs", partition, Durability::Memory, builder.encode()?)
                .await?;
        }
    }
    let seen: Seen = Arc::new(Mutex::new(BTreeMap::new()));
    // The doomed consumer starts alone and owns everything; it dies (no leave) while the
    // survivors wait for its partitions.
    let doomed = tokio::spawn(consume(client.clone(), seen.clone(), Some(100)));
    while seen.lock().expect("lock").is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let survivors: Vec<_> = (0..2)
        .map(|_| tokio::spawn(consume(client.clone(), seen.clone(), None)))
        .collect();
    let doomed_consumed = doomed.await??;
    assert!(
        doomed_consumed > 0 && doomed_consumed < (PARTITIONS as usize) * RECORDS_PER_PARTITION,
        "the doomed consumer died mid-way: {doomed_consumed}"
    );
    for survivor in survivors {
        tokio::time::timeout(Duration::from_secs(60), survivor).await???;
    }
    {
        let seen = seen.lock().expect("lock");
        for partition in 0..PARTITIONS {
            assert_eq!(
                seen.get(&partition).map(BTreeSet::len),
                Some(RECORDS_PER_PARTITION),
                "partition {partition}: every record delivered"
            );
        }
    }
    let asked: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new("jobs", p))
        .collect();
    let before = client
        .group(GroupRequest::FetchOffsets {
            group: "workers".into(),
            partitions: asked.clone(),
        })
        .await?;
    let GroupResponse::Offsets(offsets) = &before else {
        anyhow::bail!("offsets")
    };
    assert!(
        offsets
            .iter()
            .all(|committed| committed.offset == Some(RECORDS_PER_PARTITION as i64)),
        "every partition committed to its end: {offsets:?}"
    );
    client.close();
    broker.kill()?;
    let broker = BrokerProcess::start_with(&dir.path().join("data"), &["--config", &config_arg])?;
    let client = broker.client().await?;
    let after = client
        .group(GroupRequest::FetchOffsets {
            group: "workers".into(),
            partitions: asked,
        })
        .await?;
    assert_eq!(
        after, before,
        "the restarted broker resumes the group from its committed offsets"
    );
    Ok(())
}
