//! Delivery reports: [`Delivery`], the [`DeliveryFuture`] `send` returns per record, and the
//! outcome a batch's futures share (one allocation per batch, completed once, waking every
//! registered waker).

use std::sync::{Arc, Mutex};

use super::ProduceError;

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub partition: u32,
    pub offset: i64,
}

/// Where a batch's records landed.
#[derive(Debug)]
pub(super) struct Landed {
    pub(super) base_offset: i64,
    /// Each record's offset when not dense from `base_offset` (a dedup window dropped some).
    pub(super) record_offsets: Vec<i64>,
}

impl Landed {
    fn offset(&self, index: u32) -> i64 {
        self.record_offsets
            .get(index as usize)
            .copied()
            .unwrap_or(self.base_offset + i64::from(index))
    }
}

/// The outcome of one batch (its base offset, or why it failed), shared by the delivery
/// futures of its records: one allocation per batch, not per record.
#[derive(Debug, Default)]
pub(super) struct BatchOutcome {
    result: std::sync::OnceLock<Result<Landed, ProduceError>>,
    wakers: Mutex<Vec<std::task::Waker>>,
}

/// Completes a batch's outcome once; dropped without completing, it reports `Closed`.
#[derive(Debug)]
pub(super) struct Completer(pub(super) Arc<BatchOutcome>);

impl Completer {
    pub(super) fn new() -> Self {
        Self(Arc::new(BatchOutcome::default()))
    }

    pub(super) fn complete(&self, result: Result<Landed, ProduceError>) {
        if self.0.result.set(result).is_ok() {
            let wakers =
                std::mem::take(&mut *self.0.wakers.lock().unwrap_or_else(|p| p.into_inner()));
            for waker in wakers {
                waker.wake();
            }
        }
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        self.complete(Err(ProduceError::Closed));
    }
}

/// Resolves to where a queued record landed, or why it was not delivered.
#[derive(Debug)]
pub struct DeliveryFuture {
    pub(super) outcome: Arc<BatchOutcome>,
    pub(super) partition: u32,
    pub(super) index: u32,
    /// Where this future's waker sits in the batch's list once registered: a re-poll
    /// replaces it there, so the list holds at most one waker per future.
    pub(super) slot: Option<usize>,
}

impl DeliveryFuture {
    fn ready(&self) -> Option<Result<Delivery, ProduceError>> {
        self.outcome.result.get().map(|result| match result {
            Ok(landed) => Ok(Delivery {
                partition: self.partition,
                offset: landed.offset(self.index),
            }),
            Err(error) => Err(error.clone()),
        })
    }
}

impl std::future::Future for DeliveryFuture {
    type Output = Result<Delivery, ProduceError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        if let Some(result) = self.ready() {
            return std::task::Poll::Ready(result);
        }
        {
            let mut wakers = self
                .outcome
                .wakers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match self.slot.and_then(|slot| wakers.get_mut(slot)) {
                Some(waker) => waker.clone_from(cx.waker()),
                None => {
                    wakers.push(cx.waker().clone());
                    let slot = wakers.len() - 1;
                    drop(wakers);
                    self.slot = Some(slot);
                }
            }
        }
        // Completed while registering: the waker list may already have been drained.
        match self.ready() {
            Some(result) => std::task::Poll::Ready(result),
            None => std::task::Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    #[test]
    fn a_delivery_future_keeps_one_waker_however_often_it_is_polled() {
        let completer = Completer::new();
        let mut futures: Vec<DeliveryFuture> = (0..3)
            .map(|index| DeliveryFuture {
                outcome: completer.0.clone(),
                partition: 2,
                index,
                slot: None,
            })
            .collect();
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        for _ in 0..100 {
            for future in &mut futures {
                assert!(std::pin::Pin::new(future).poll(&mut cx).is_pending());
            }
        }
        assert_eq!(completer.0.wakers.lock().map(|w| w.len()).unwrap_or(0), 3);
        completer.complete(Ok(Landed {
            base_offset: 40,
            record_offsets: Vec::new(),
        }));
        let offsets: Vec<i64> = futures
            .iter_mut()
            .map(|future| match std::pin::Pin::new(future).poll(&mut cx) {
                std::task::Poll::Ready(Ok(delivery)) => delivery.offset,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(offsets, [40, 41, 42]);
    }

    #[test]
    fn a_dropped_batch_reports_closed() {
        let completer = Completer::new();
        let mut future = DeliveryFuture {
            outcome: completer.0.clone(),
            partition: 0,
            index: 0,
            slot: None,
        };
        drop(completer);
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(matches!(
            std::pin::Pin::new(&mut future).poll(&mut cx),
            std::task::Poll::Ready(Err(ProduceError::Closed))
        ));
    }
}
