//! The node's background tasks, tracked so that shutdown can stop every one of them.
//!
//! A task holds the node's state (and with it the QUIC endpoint and its UDP socket) for as long
//! as it runs. Untracked, a task in the middle of a slow dial or lookup kept the socket bound
//! well after `Node::shutdown` returned. Every task the node starts goes through [`Tasks::spawn`]
//! instead: shutdown lets them finish within its deadline, then cancels the rest and waits until
//! they are gone.

use std::future::Future;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The background tasks of one node.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Tasks {
    /// Runs `task` in the background until it ends or the node stops. Once the node has
    /// stopped, `task` is dropped without running.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            cancel.run_until_cancelled(task).await;
        });
    }

    /// Runs `task` in the background to its end, even if the caller stops waiting for the
    /// returned handle (a timeout, a cancelled request) and even when the node stops (shutdown
    /// waits for it). For work that must not stop halfway: a commit and the events that report
    /// it. `task` must end on its own soon (no wait on the network).
    pub(crate) fn spawn_to_end<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Waits until `end` for the tasks to end on their own, then cancels those left and waits
    /// until they have been dropped. Returns how many were cancelled.
    pub(crate) async fn stop(&self, end: Instant) -> usize {
        self.tracker.close();
        let _ = tokio::time::timeout_at(end, self.tracker.wait()).await;
        let left = self.tracker.len();
        self.cancel.cancel();
        self.tracker.wait().await;
        left
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn stop_drops_every_task_and_what_it_holds() {
        let tasks = Tasks::default();
        let held = Arc::new(());
        for _ in 0..3 {
            let held = held.clone();
            tasks.spawn(async move {
                let _held = held;
                std::future::pending::<()>().await;
            });
        }
        let quick = held.clone();
        tasks.spawn(async move {
            drop(quick);
        });
        let cancelled = tasks.stop(Instant::now() + Duration::from_millis(50)).await;
        assert_eq!(
            cancelled, 3,
            "the task that ended on its own is not counted"
        );
        assert_eq!(
            Arc::strong_count(&held),
            1,
            "every task released what it held"
        );
        assert!(tasks.tracker.is_empty());
    }

    #[tokio::test]
    async fn a_task_spawned_after_stop_does_not_run() {
        let tasks = Tasks::default();
        tasks.stop(Instant::now()).await;
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(async move {
            let _ = tx.send(());
        });
        tasks.stop(Instant::now()).await;
        assert!(rx.try_recv().is_err(), "the task ran after stop");
    }

    #[tokio::test]
    async fn tasks_that_end_within_the_deadline_are_not_cancelled() {
        let tasks = Tasks::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = tx.send(());
        });
        let cancelled = tasks.stop(Instant::now() + Duration::from_secs(30)).await;
        assert_eq!(cancelled, 0);
        assert!(rx.await.is_ok(), "the task finished its work");
    }
}
