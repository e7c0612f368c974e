//! Group commit for single allocations: concurrent requests share one transaction and one
//! commit. A dispatcher waits for a free slot, then takes everything queued (up to
//! `GROUP_BATCH_MAX`) as one batch; while the slots are busy the queue grows, so batches grow
//! with load and each commit carries more requests.

use std::sync::Arc;

use super::Core;
use crate::domain::allocate::{AllocateCmd, AllocateOk};
use crate::store::{StoreError, StoreResult};

/// Most allocations one group-commit transaction carries.
const GROUP_BATCH_MAX: usize = 512;
/// Group-commit transactions in flight at once; each holds one pooled connection.
const GROUP_IN_FLIGHT_MAX: usize = 4;
/// Allocations that may wait for a group-commit slot before callers get 503 + Retry-After.
const GROUP_QUEUE_MAX: usize = 16_384;

type Pending = (AllocateCmd, tokio::sync::oneshot::Sender<StoreResult<AllocateOk>>);

pub struct Batcher {
    queue: tokio::sync::mpsc::Sender<Pending>,
}

impl Batcher {
    pub fn start(core: Arc<Core>) -> Self {
        let (queue, mut rx) = tokio::sync::mpsc::channel::<Pending>(GROUP_QUEUE_MAX);
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(GROUP_IN_FLIGHT_MAX));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else { return };
                let Some(first) = rx.recv().await else { return };
                let mut batch = vec![first];
                while batch.len() < GROUP_BATCH_MAX {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                crate::metrics::batch("postgres", batch.len(), rx.len());
                let core = core.clone();
                tokio::spawn(async move {
                    let (cmds, replies): (Vec<AllocateCmd>, Vec<_>) = batch.into_iter().unzip();
                    let results = core.allocate_now(cmds).await;
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(result);
                    }
                    drop(permit);
                });
            }
        });
        Self { queue }
    }

    pub async fn submit(&self, cmd: AllocateCmd) -> StoreResult<AllocateOk> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue.try_send((cmd, reply)).map_err(|_| StoreError::Busy("the allocation queue is full"))?;
        answer.await.map_err(|_| StoreError::Busy("the group-commit worker stopped"))?
    }
}
