//! Group commit for a replica's log: appends return as soon as their batches are written, and
//! a blocking task syncs the log and then tells openraft, in the order the appends came, that
//! they are durable (their flush callbacks). One sync covers every append that arrived while
//! the one before it ran, so a replica's entries become durable at the rate the disk syncs,
//! not one sync per append, and no async worker ever waits for the disk.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use herald_broker_core::log::Fence;
use herald_broker_core::storage::SyncHandle;
use openraft::storage::IOFlushed;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::types::TypeConfig;

/// Appends of one replica waiting for their sync at once; an append past this waits for a
/// place (openraft's own appends of one group come one at a time, so this only bounds).
pub(crate) const FLUSHES_WAITING_MAX: usize = 1024;

/// One append waiting to be durable.
struct Waiting {
    handle: Arc<dyn SyncHandle>,
    callback: IOFlushed<TypeConfig>,
    /// Whether its entries must be synced (else written is stored: `Memory` durability).
    sync: bool,
    _place: OwnedSemaphorePermit,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    /// Whether a blocking task is draining `waiting`.
    draining: bool,
}

/// A replica's flusher (cloned, the same one).
#[derive(Clone)]
pub(crate) struct Flusher {
    queue: Arc<Mutex<Queue>>,
    places: Arc<Semaphore>,
    fence: Fence,
}

impl Flusher {
    /// A flusher for the log whose fence is `fence` (a failed sync sets it: nothing more is
    /// appended to a log whose durability is unknown).
    pub(crate) fn new(fence: Fence) -> Self {
        Self {
            queue: Arc::default(),
            places: Arc::new(Semaphore::new(FLUSHES_WAITING_MAX)),
            fence,
        }
    }

    /// Calls `callback` once everything written to `handle`'s file so far is synced (or the
    /// sync failed), after the callbacks of every earlier call. Without `must_sync`, once the
    /// earlier calls completed, without a sync of its own (at once if none waits).
    pub(crate) async fn flush(
        &self,
        handle: Arc<dyn SyncHandle>,
        callback: IOFlushed<TypeConfig>,
        must_sync: bool,
    ) {
        if !must_sync {
            let queue = lock(&self.queue);
            if queue.waiting.is_empty() && !queue.draining {
                drop(queue);
                callback.io_completed(Ok(()));
                return;
            }
        }
        let place = match self.places.clone().acquire_owned().await {
            Ok(place) => place,
            // The semaphore is never closed; should it be, the sync happens here.
            Err(_) => {
                callback.io_completed(sync(&handle, &self.fence));
                return;
            }
        };
        let start = {
            let mut queue = lock(&self.queue);
            queue.waiting.push_back(Waiting {
                handle,
                callback,
                sync: must_sync,
                _place: place,
            });
            !std::mem::replace(&mut queue.draining, true)
        };
        if start {
            let (queue, fence) = (self.queue.clone(), self.fence.clone());
            tokio::task::spawn_blocking(move || drain(&queue, &fence));
        }
    }
}

/// Syncs and completes what waits until nothing does.
fn drain(queue: &Mutex<Queue>, fence: &Fence) {
    loop {
        let round: Vec<Waiting> = {
            let mut queue = lock(queue);
            if queue.waiting.is_empty() {
                queue.draining = false;
                return;
            }
            queue.waiting.drain(..).collect()
        };
        // The waiting appends went to one file unless the log rolled between them (a roll
        // syncs the sealed segment itself): each distinct file once, the latest last.
        let mut failure = None;
        let mut synced: Vec<&Arc<dyn SyncHandle>> = Vec::new();
        for waiting in round.iter().filter(|waiting| waiting.sync) {
            if synced.iter().any(|done| Arc::ptr_eq(done, &waiting.handle)) {
                continue;
            }
            synced.push(&waiting.handle);
            if let Err(error) = sync(&waiting.handle, fence) {
                failure = Some(error.to_string());
                break;
            }
        }
        for waiting in round {
            let result = match &failure {
                None => Ok(()),
                Some(reason) => Err(io::Error::other(reason.clone())),
            };
            waiting.callback.io_completed(result);
        }
    }
}

fn sync(handle: &Arc<dyn SyncHandle>, fence: &Fence) -> Result<(), io::Error> {
    handle.sync().map_err(|error| {
        fence.set(format!("a sync failed: {error}"));
        io::Error::other(error)
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    use herald_broker_core::storage::StorageError;
    use openraft::type_config::TypeConfigExt;

    use super::*;

    /// A file whose syncs are counted, each held until the test lets it go, and failing
    /// once told to.
    struct HeldSync {
        syncs: AtomicUsize,
        started: Mutex<mpsc::Sender<()>>,
        release: Mutex<mpsc::Receiver<()>>,
        fail: std::sync::atomic::AtomicBool,
    }

    impl SyncHandle for HeldSync {
        fn sync(&self) -> Result<(), StorageError> {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            let _ = lock(&self.started).send(());
            let _ = lock(&self.release).recv_timeout(Duration::from_secs(10));
            if self.fail.load(Ordering::SeqCst) {
                return Err(StorageError {
                    operation: "sync",
                    path: "00000000000000000000.log".to_owned(),
                    reason: "injected".to_owned(),
                });
            }
            Ok(())
        }
    }

    fn held() -> (Arc<HeldSync>, mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (started, on_start) = mpsc::channel();
        let (release, on_release) = mpsc::channel();
        let handle = Arc::new(HeldSync {
            syncs: AtomicUsize::new(0),
            started: Mutex::new(started),
            release: Mutex::new(on_release),
            fail: std::sync::atomic::AtomicBool::new(false),
        });
        (handle, on_start, release)
    }

    type Done = openraft::type_config::alias::OneshotReceiverOf<TypeConfig, Result<(), io::Error>>;

    fn callback() -> (IOFlushed<TypeConfig>, Done) {
        let (tx, rx) = TypeConfig::oneshot();
        (IOFlushed::signal(tx), rx)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_during_a_sync_share_the_next_one_and_complete_in_order() {
        let (file, started, release) = held();
        let flusher = Flusher::new(Fence::default());
        let (first, mut first_done) = callback();
        flusher.flush(file.clone(), first, true).await;
        // The first sync runs (held): the appends meanwhile wait for one more.
        tokio::task::spawn_blocking(move || started.recv_timeout(Duration::from_secs(10)))
            .await
            .expect("joined")
            .expect("the first sync started");
        let mut later = Vec::new();
        for _ in 0..3 {
            let (done, wait) = callback();
            flusher.flush(file.clone(), done, true).await;
            later.push(wait);
        }
        assert!(
            first_done.try_recv().is_err(),
            "acknowledged before its sync ended"
        );
        release.send(()).expect("release the first sync");
        first_done.await.expect("completed").expect("synced");
        release.send(()).expect("release the second sync");
        for wait in later {
            wait.await.expect("completed").expect("synced");
        }
        assert_eq!(
            file.syncs.load(Ordering::SeqCst),
            2,
            "one sync for the three waiting"
        );
    }

    /// A `Memory` append is stored once written: at once when nothing waits, and after the
    /// sync of the appends before it otherwise (callbacks stay in order), never with a sync
    /// of its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unsynced_append_completes_without_a_sync_in_order() {
        let (file, started, release) = held();
        let flusher = Flusher::new(Fence::default());
        let (alone, alone_done) = callback();
        flusher.flush(file.clone(), alone, false).await;
        alone_done.await.expect("completed").expect("stored");
        assert_eq!(file.syncs.load(Ordering::SeqCst), 0, "no sync for it");

        let (synced, synced_done) = callback();
        flusher.flush(file.clone(), synced, true).await;
        tokio::task::spawn_blocking(move || started.recv_timeout(Duration::from_secs(10)))
            .await
            .expect("joined")
            .expect("the sync started");
        let (behind, mut behind_done) = callback();
        flusher.flush(file.clone(), behind, false).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            behind_done.try_recv().is_err(),
            "completed before the synced append before it"
        );
        release.send(()).expect("release the sync");
        synced_done.await.expect("completed").expect("synced");
        behind_done.await.expect("completed").expect("stored");
        assert_eq!(
            file.syncs.load(Ordering::SeqCst),
            1,
            "only the synced append's sync"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_sync_fails_every_waiting_append_and_fences_the_log() {
        let (file, _started, release) = held();
        file.fail.store(true, Ordering::SeqCst);
        let fence = Fence::default();
        let flusher = Flusher::new(fence.clone());
        let (first, first_done) = callback();
        let (second, second_done) = callback();
        flusher.flush(file.clone(), first, true).await;
        flusher.flush(file.clone(), second, true).await;
        release.send(()).expect("release");
        release.send(()).expect("release");
        for done in [first_done, second_done] {
            let error = done.await.expect("completed").expect_err("the sync failed");
            assert!(error.to_string().contains("injected"), "{error}");
        }
        let reason = fence.reason().expect("fenced");
        assert!(reason.contains("a sync failed"), "{reason}");
    }
}
