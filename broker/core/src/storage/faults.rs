//! Fault injection at the storage seam: [`FaultyStorage`] wraps any [`Storage`] and fails
//! chosen calls the way a sick disk does — `ENOSPC` or `EIO`, and for appends a partial write
//! (a prefix of the bytes lands, then the call fails). Faults come from a script
//! ([`FaultyStorage::fail_next`]) or at a seeded rate per kind of call
//! ([`FaultyStorage::fail_rate`]), so a failing run replays from its seed.
//!
//! Tests drive the log through it (with [`MemoryStorage`](super::MemoryStorage) underneath
//! for crashes) and check that the log still equals the acknowledged history.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{lock, Storage, StorageError, StorageFile, SyncHandle};

/// A kind of storage call a fault can hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Call {
    Append,
    /// A read, through an open file or by name ([`Storage::read_at`], which also counts as an
    /// `Open`).
    Read,
    Truncate,
    /// A file's sync, through the file or through a sync handle.
    Sync,
    Open,
    List,
    Remove,
    CreateDir,
    SyncDir,
    /// [`Storage::replace`]: a failed one leaves the old file as it was.
    Replace,
}

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails with `ENOSPC` and does nothing.
    NoSpace,
    /// The call fails with `EIO` and does nothing.
    Io,
    /// Appends only: a prefix of the bytes is written, then the call fails with `ENOSPC`
    /// (as `write(2)` returning short and the retry failing). Other calls fail as `Io`.
    Partial,
}

impl Fault {
    fn reason(self) -> &'static str {
        match self {
            Fault::NoSpace | Fault::Partial => "No space left on device (os error 28, injected)",
            Fault::Io => "Input/output error (os error 5, injected)",
        }
    }
}

#[derive(Debug)]
struct Plan {
    /// xorshift64 state; never zero.
    rng: u64,
    /// Chance of a fault per call kind, in parts per million.
    rates: BTreeMap<Call, u32>,
    /// Scripted faults: (kind, calls of that kind to let pass first, fault).
    scripted: Vec<(Call, u32, Fault)>,
    injected: u64,
}

impl Plan {
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn decide(&mut self, call: Call) -> Option<Fault> {
        let mut fired = None;
        for (at, (kind, skip, _)) in self.scripted.iter_mut().enumerate() {
            if *kind != call {
                continue;
            }
            if *skip == 0 {
                fired = fired.or(Some(at));
            } else {
                *skip -= 1;
            }
        }
        if let Some(at) = fired {
            self.injected += 1;
            return Some(self.scripted.remove(at).2);
        }
        let rate = self.rates.get(&call).copied().unwrap_or(0);
        if rate == 0 || self.next_random() % 1_000_000 >= u64::from(rate) {
            return None;
        }
        self.injected += 1;
        Some(match (call, self.next_random() % 3) {
            (Call::Append, 0) => Fault::Partial,
            (_, 1) => Fault::Io,
            _ => Fault::NoSpace,
        })
    }
}

type SharedPlan = Arc<Mutex<Plan>>;

fn check(
    plan: &SharedPlan,
    call: Call,
    operation: &'static str,
    path: &str,
) -> Result<(), StorageError> {
    match lock(plan).decide(call) {
        Some(fault) => Err(injected(fault, operation, path)),
        None => Ok(()),
    }
}

fn injected(fault: Fault, operation: &'static str, path: &str) -> StorageError {
    StorageError {
        operation,
        path: path.to_owned(),
        reason: fault.reason().to_owned(),
    }
}

/// A [`Storage`] that fails chosen calls; see the module docs. Clones share one plan.
#[derive(Debug, Clone)]
pub struct FaultyStorage<S> {
    inner: S,
    plan: SharedPlan,
}

impl<S: Storage> FaultyStorage<S> {
    /// Wraps `inner`, injecting nothing until told; `seed` drives the random faults.
    pub fn new(inner: S, seed: u64) -> Self {
        Self {
            inner,
            plan: Arc::new(Mutex::new(Plan {
                rng: seed.max(1),
                rates: BTreeMap::new(),
                scripted: Vec::new(),
                injected: 0,
            })),
        }
    }

    /// The wrapped storage (to crash or inspect it).
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Fails calls of kind `call` at random, `per_million` in a million.
    pub fn fail_rate(&self, call: Call, per_million: u32) {
        lock(&self.plan).rates.insert(call, per_million);
    }

    /// Fails the next call of kind `call` with `fault`.
    pub fn fail_next(&self, call: Call, fault: Fault) {
        self.fail_nth(call, 0, fault);
    }

    /// Lets `skip` calls of kind `call` pass, then fails the one after with `fault`.
    pub fn fail_nth(&self, call: Call, skip: u32, fault: Fault) {
        lock(&self.plan).scripted.push((call, skip, fault));
    }

    /// Stops injecting: rates to zero, script emptied.
    pub fn heal(&self) {
        let mut plan = lock(&self.plan);
        plan.rates.clear();
        plan.scripted.clear();
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        lock(&self.plan).injected
    }
}

/// A file of a [`FaultyStorage`].
pub struct FaultyFile<F> {
    inner: F,
    plan: SharedPlan,
    path: String,
}

struct FaultySync {
    inner: Arc<dyn SyncHandle>,
    plan: SharedPlan,
    path: String,
}

impl SyncHandle for FaultySync {
    fn sync(&self) -> Result<(), StorageError> {
        check(&self.plan, Call::Sync, "fdatasync", &self.path)?;
        self.inner.sync()
    }
}

impl<F: StorageFile> StorageFile for FaultyFile<F> {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    /// One append call (one fault decision) for all parts, as one write of them would be.
    fn append_parts(&mut self, parts: &[&[u8]]) -> Result<(), StorageError> {
        self.append(&parts.concat())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        let decision = {
            let mut plan = lock(&self.plan);
            plan.decide(Call::Append).map(|fault| {
                let prefix = match bytes.len() {
                    0 => 0,
                    len => plan.next_random() as usize % len,
                };
                (fault, prefix)
            })
        };
        match decision {
            None => self.inner.append(bytes),
            Some((Fault::Partial, prefix)) => {
                self.inner.append(&bytes[..prefix])?;
                Err(injected(Fault::Partial, "append", &self.path))
            }
            Some((fault, _)) => Err(injected(fault, "append", &self.path)),
        }
    }

    fn read_at(&self, position: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        check(&self.plan, Call::Read, "read", &self.path)?;
        self.inner.read_at(position, len)
    }

    fn truncate(&mut self, len: u64) -> Result<(), StorageError> {
        check(&self.plan, Call::Truncate, "truncate", &self.path)?;
        self.inner.truncate(len)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        check(&self.plan, Call::Sync, "fdatasync", &self.path)?;
        self.inner.sync()
    }

    fn sync_handle(&self) -> Result<Arc<dyn SyncHandle>, StorageError> {
        Ok(Arc::new(FaultySync {
            inner: self.inner.sync_handle()?,
            plan: self.plan.clone(),
            path: self.path.clone(),
        }))
    }
}

impl<S: Storage> Storage for FaultyStorage<S> {
    type File = FaultyFile<S::File>;

    fn create_dir(&self, dir: &str) -> Result<(), StorageError> {
        check(&self.plan, Call::CreateDir, "mkdir", dir)?;
        self.inner.create_dir(dir)
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        check(&self.plan, Call::List, "list", dir)?;
        self.inner.list(dir)
    }

    fn open(&self, dir: &str, name: &str, create: bool) -> Result<Self::File, StorageError> {
        let path = format!("{dir}/{name}");
        check(&self.plan, Call::Open, "open", &path)?;
        Ok(FaultyFile {
            inner: self.inner.open(dir, name, create)?,
            plan: self.plan.clone(),
            path,
        })
    }

    fn read_at(
        &self,
        dir: &str,
        name: &str,
        position: u64,
        len: usize,
    ) -> Result<Vec<u8>, StorageError> {
        let path = format!("{dir}/{name}");
        // A read by name may have to open the file (EMFILE, ENOENT...) before reading it.
        check(&self.plan, Call::Open, "open", &path)?;
        check(&self.plan, Call::Read, "read", &path)?;
        self.inner.read_at(dir, name, position, len)
    }

    fn remove(&self, dir: &str, name: &str) -> Result<(), StorageError> {
        check(&self.plan, Call::Remove, "remove", &format!("{dir}/{name}"))?;
        self.inner.remove(dir, name)
    }

    fn remove_dir(&self, dir: &str) -> Result<(), StorageError> {
        check(&self.plan, Call::Remove, "rmdir", dir)?;
        self.inner.remove_dir(dir)
    }

    fn sync_dir(&self, dir: &str) -> Result<(), StorageError> {
        check(&self.plan, Call::SyncDir, "fsync", dir)?;
        self.inner.sync_dir(dir)
    }

    fn replace(&self, dir: &str, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        check(
            &self.plan,
            Call::Replace,
            "replace",
            &format!("{dir}/{name}"),
        )?;
        self.inner.replace(dir, name, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    #[test]
    fn a_partial_append_writes_a_prefix_and_fails() {
        let storage = FaultyStorage::new(MemoryStorage::new(), 7);
        let mut file = storage.open("d", "f", true).expect("open");
        file.append(b"hello").expect("append");
        storage.fail_next(Call::Append, Fault::Partial);
        let error = file.append(b"0123456789").expect_err("injected");
        assert!(error.reason.contains("No space left"), "{error}");
        assert!(
            (5..15).contains(&file.len()),
            "a prefix only: {}",
            file.len()
        );
        file.append(b"!").expect("the next append works");
    }

    #[test]
    fn the_same_seed_injects_the_same_faults() {
        let run = |seed| {
            let storage = FaultyStorage::new(MemoryStorage::new(), seed);
            storage.fail_rate(Call::Append, 300_000);
            let mut file = storage.open("d", "f", true).expect("open");
            let outcomes: Vec<bool> = (0..64).map(|_| file.append(b"x").is_ok()).collect();
            (outcomes, storage.injected())
        };
        let (first, injected) = run(42);
        assert_eq!(run(42).0, first);
        assert!(injected > 5 && injected < 40, "{injected}");
    }
}
