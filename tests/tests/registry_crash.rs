//! Crash test: concurrent registrations against the real `herald` binary, SIGKILL at a random
//! moment, restart on the same data directory, twelve times over. Every acknowledged
//! registration must be present with its ID and version, and no ID may ever name two contents.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_registry_client::{NewSchema, RegistryClient, Version};
use herald_tests::RegistryProcess;

const ROUNDS: usize = 12;
const WRITERS: usize = 6;
const SUBJECTS: usize = 3;

#[derive(Clone, Debug, PartialEq)]
struct Acked {
    subject: String,
    /// Read back by a lookup while the server lived; `None` when it died in between.
    version: Option<u32>,
    id: u32,
    schema: String,
}

fn schema(round: usize, writer: usize, n: usize) -> String {
    format!(
        r#"{{"type":"record","name":"R{round}w{writer}n{n}","fields":[{{"name":"f","type":"long"}}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_registrations_survive_sigkill() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::new(Mutex::new(Vec::new()));
    let mut content_by_id: HashMap<u32, String> = HashMap::new();
    let seed = std::process::id() as u64;
    for round in 0..ROUNDS {
        let server = RegistryProcess::start(dir.path())?;
        let client = RegistryClient::new(&server.url)?;
        let so_far = acked.lock().expect("lock").clone();
        verify(&client, &so_far, &mut content_by_id).await?;
        client.set_compatibility_level(None, "NONE").await?;
        let mut writers = Vec::new();
        for writer in 0..WRITERS {
            let client = client.clone();
            let acked = acked.clone();
            writers.push(tokio::spawn(async move {
                for n in 0.. {
                    let subject = format!("crash-{}", (writer + n) % SUBJECTS);
                    let text = schema(round, writer, n);
                    let Ok(id) = client.register(&subject, &NewSchema::avro(&text)).await else {
                        break;
                    };
                    // The 200 with the id is the acknowledgement; the version is read back
                    // while the server still lives.
                    let version = client
                        .lookup(&subject, &NewSchema::avro(&text))
                        .await
                        .ok()
                        .map(|found| found.version);
                    let stop = version.is_none();
                    acked.lock().expect("lock").push(Acked {
                        subject,
                        version,
                        id,
                        schema: text,
                    });
                    if stop {
                        break;
                    }
                }
            }));
        }
        // Kill somewhere between 40 and 240 ms into the round (seeded, printed on failure).
        let delay = 40
            + (seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(round as u64 * 1442695040888963407)
                >> 33)
                % 200;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill()?;
        for writer in writers {
            writer.await?;
        }
    }
    let server = RegistryProcess::start(dir.path())?;
    let client = RegistryClient::new(&server.url)?;
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() >= ROUNDS * WRITERS,
        "too few registrations to mean anything: {}",
        acked.len()
    );
    verify(&client, &acked, &mut content_by_id).await?;
    println!(
        "seed {seed}: {} acknowledged registrations survived {ROUNDS} SIGKILLs",
        acked.len()
    );
    Ok(())
}

async fn verify(
    client: &RegistryClient,
    acked: &[Acked],
    content_by_id: &mut HashMap<u32, String>,
) -> anyhow::Result<()> {
    for entry in acked {
        let usages = client
            .versions_for_id(entry.id)
            .await
            .map_err(|e| anyhow::anyhow!("acknowledged {entry:?} lost: {e}"))?;
        assert!(
            usages.iter().any(|usage| usage.subject == entry.subject),
            "{entry:?} not under its subject: {usages:?}"
        );
        if let Some(version) = entry.version {
            let found = client
                .version(&entry.subject, Version::Number(version))
                .await?;
            assert_eq!(found.id, entry.id, "{entry:?}");
        }
        let by_id = client.schema_by_id(entry.id).await?;
        let canonical: serde_json::Value = serde_json::from_str(&by_id.schema)?;
        let submitted: serde_json::Value = serde_json::from_str(&entry.schema)?;
        assert_eq!(
            canonical["name"], submitted["name"],
            "id {} names other content",
            entry.id
        );
        let previous = content_by_id
            .entry(entry.id)
            .or_insert_with(|| by_id.schema.clone());
        assert_eq!(
            previous, &by_id.schema,
            "id {} was reused for different content",
            entry.id
        );
    }
    Ok(())
}
