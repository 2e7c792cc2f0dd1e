//! openraft's own storage test suite over a replica: log reads, appends at a log's start,
//! truncation, purges (within the log and past its end), votes, membership lookups, applying
//! and snapshots, each on a fresh replica over the crash-modelling memory storage.

use herald_broker_core::log::LogConfig;
use herald_broker_core::storage::MemoryStorage;
use herald_raft::{LogStore, Replica, StateMachine, TypeConfig};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};

struct Fresh;

impl StoreBuilder<TypeConfig, LogStore<MemoryStorage>, StateMachine<MemoryStorage>> for Fresh {
    async fn build(
        &self,
    ) -> Result<((), LogStore<MemoryStorage>, StateMachine<MemoryStorage>), StorageError<TypeConfig>>
    {
        let replica = Replica::open(MemoryStorage::new(), "topic/0", LogConfig::default())
            .map_err(|e| {
                StorageError::from_io_error(
                    ErrorSubject::Store,
                    ErrorVerb::Read,
                    std::io::Error::other(e),
                )
            })?;
        let (log, state_machine, _) = replica.into_raft_storage();
        Ok(((), log, state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_passes_the_openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(Fresh).await
}
