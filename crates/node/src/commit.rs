//! Group commit: the store writes of concurrent requests share one durable commit.
//!
//! Every message costs a few durable SQLCipher commits (a session's new state before its
//! ciphertext leaves, a received message before its receipt leaves). Each commit is a full sync
//! and rewrites and re-encrypts the pages it touched, and the store serialises them, so with many
//! messages in flight the commits queue up one behind the other. Here a caller submits its
//! writes as a step and waits; whoever finds no writer running becomes the writer, on a blocking
//! thread, and runs every step queued so far in one transaction, each inside its own savepoint
//! (a step that fails is undone alone and gets its error), commits once, then answers each step.
//! A step's result is handed out only once the commit that holds its writes is durable, so the
//! rules built on commits hold unchanged.
//!
//! Steps run in the order they were queued: steps queued while holding a session's lock reach
//! the store in that session's order. A hook given at construction runs after the last step of
//! each transaction, before the commit (the session manager saves there, once, each session the
//! steps advanced).
//!
//! Lock order: the writer holds the store, then a step may take the session map and a session.
//! Nobody may wait for the store while holding a session or the session map.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use dp2ptcs_store::Store;
use tokio::sync::oneshot;

use crate::sessions::lock;
use crate::NodeError;

/// Most steps in one transaction (the rest wait for the next one).
pub(crate) const MAX_BATCH: usize = 256;

type Value = Box<dyn Any + Send>;
type Step = Box<dyn FnOnce(&Store) -> Result<Value, NodeError> + Send>;
/// Runs in every transaction after its steps; its failure fails the whole transaction.
pub(crate) type Hook = Box<dyn Fn(&Store) -> Result<(), NodeError> + Send + Sync>;

struct Queued {
    step: Step,
    done: oneshot::Sender<Result<Value, NodeError>>,
}

#[derive(Default)]
struct Queue {
    steps: VecDeque<Queued>,
    writing: bool,
}

/// Commits the steps submitted to it in shared transactions (see the module documentation).
pub(crate) struct GroupCommit {
    store: Arc<Mutex<Store>>,
    queue: Mutex<Queue>,
    runtime: tokio::runtime::Handle,
    before_commit: Option<Hook>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

/// A submitted step's result, once its commit is durable.
pub(crate) struct Pending<T> {
    rx: oneshot::Receiver<Result<Value, NodeError>>,
    _type: std::marker::PhantomData<fn() -> T>,
}

impl<T: 'static> Pending<T> {
    /// Waits for the commit.
    pub(crate) async fn wait(self) -> Result<T, NodeError> {
        let value = self
            .rx
            .await
            .map_err(|_| NodeError::Internal("the store writer stopped".into()))??;
        value
            .downcast::<T>()
            .map(|b| *b)
            .map_err(|_| NodeError::Internal("group commit: result of another type".into()))
    }
}

impl GroupCommit {
    /// Must be called inside a tokio runtime (the writer runs on its blocking threads).
    #[cfg(test)]
    pub(crate) fn new(store: Arc<Mutex<Store>>) -> Arc<Self> {
        Self::with_hook(store, None)
    }

    /// [`GroupCommit::new`] with a hook that runs before each commit.
    pub(crate) fn with_hook(store: Arc<Mutex<Store>>, before_commit: Option<Hook>) -> Arc<Self> {
        Arc::new(Self {
            store,
            queue: Mutex::new(Queue::default()),
            runtime: tokio::runtime::Handle::current(),
            before_commit,
        })
    }

    /// Queues `step` (it runs in a later transaction, on the writer's thread) and returns at
    /// once; [`Pending::wait`] gives its result once the commit holding its writes is durable.
    /// If the step fails its writes are undone and the others' kept; if the commit fails every
    /// step of it gets the error. Never blocks on the store: callable with a session locked.
    pub(crate) fn submit<T: Send + 'static>(
        self: &Arc<Self>,
        step: impl FnOnce(&Store) -> Result<T, NodeError> + Send + 'static,
    ) -> Pending<T> {
        let (done, rx) = oneshot::channel();
        let step: Step = Box::new(move |store| step(store).map(|t| Box::new(t) as Value));
        let start = {
            let mut q = lock(&self.queue);
            q.steps.push_back(Queued { step, done });
            !std::mem::replace(&mut q.writing, true)
        };
        if start {
            let this = self.clone();
            self.runtime.spawn_blocking(move || this.write());
        }
        Pending {
            rx,
            _type: std::marker::PhantomData,
        }
    }

    /// [`GroupCommit::submit`] and wait.
    pub(crate) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        step: impl FnOnce(&Store) -> Result<T, NodeError> + Send + 'static,
    ) -> Result<T, NodeError> {
        self.submit(step).wait().await
    }

    /// The writer: commits batches until the queue is empty.
    fn write(self: &Arc<Self>) {
        // A step that panics takes this writer down (its transaction rolls back, and the callers
        // of its batch get an error as their answers are dropped); the queue goes on.
        struct Restart<'a>(&'a Arc<GroupCommit>);
        impl Drop for Restart<'_> {
            fn drop(&mut self) {
                if !std::thread::panicking() {
                    return;
                }
                let mut q = lock(&self.0.queue);
                if q.steps.is_empty() {
                    q.writing = false;
                } else {
                    let this = self.0.clone();
                    self.0.runtime.spawn_blocking(move || this.write());
                }
            }
        }
        let _restart = Restart(self);
        loop {
            let batch: Vec<Queued> = {
                let mut q = lock(&self.queue);
                if q.steps.is_empty() {
                    q.writing = false;
                    return;
                }
                let n = q.steps.len().min(MAX_BATCH);
                q.steps.drain(..n).collect()
            };
            self.commit(batch);
        }
    }

    fn commit(&self, batch: Vec<Queued>) {
        let mut waiting = Vec::with_capacity(batch.len());
        let store = lock(&self.store);
        let committed = store.transaction(|tx| {
            for Queued { step, done } in batch {
                match tx.savepoint(step)? {
                    Ok(value) => waiting.push((done, value)),
                    // Undone; nothing of it will be committed.
                    Err(e) => {
                        let _ = done.send(Err(e));
                    }
                }
            }
            if let Some(hook) = &self.before_commit {
                hook(tx)?;
            }
            Ok::<_, NodeError>(())
        });
        drop(store);
        match committed {
            Ok(()) => {
                for (done, value) in waiting {
                    let _ = done.send(Ok(value));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, steps = waiting.len(), "a group commit failed");
                for (done, _) in waiting {
                    let _ = done.send(Err(NodeError::Internal(format!("commit failed: {e}"))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use dp2ptcs_types::NodeId;

    fn store() -> (tempfile::TempDir, Arc<Mutex<Store>>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(dp2ptcs_store::DB_FILE), &[3; 32]).unwrap();
        (dir, Arc::new(Mutex::new(store)))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_step_commits_in_order_and_a_failing_one_alone_is_undone() {
        let (dir, store) = store();
        let commit = GroupCommit::new(store.clone());
        let peer = NodeId::from_bytes([9; 32]);
        // Many steps at once, all writing the same row: the last queued must win.
        let pending: Vec<Pending<u32>> = (0..500u32)
            .map(|i| {
                commit.submit(move |s| {
                    if i == 250 {
                        s.save_session(&peer, b"undone", 0)?;
                        return Err(NodeError::Internal("step 250 fails".into()));
                    }
                    s.save_session(&peer, &i.to_be_bytes(), u64::from(i))?;
                    Ok(i)
                })
            })
            .collect();
        for (i, p) in pending.into_iter().enumerate() {
            let r = p.wait().await;
            if i == 250 {
                assert!(r.is_err());
            } else {
                assert_eq!(r.unwrap(), i as u32);
            }
        }
        drop(commit);
        drop(store);
        let reopened = Store::open(&dir.path().join(dp2ptcs_store::DB_FILE), &[3; 32]).unwrap();
        assert_eq!(
            reopened.load_session(&peer).unwrap().as_deref(),
            Some(&499u32.to_be_bytes()[..])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_hook_runs_after_the_steps_of_each_commit_and_its_failure_fails_them() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (_dir, store) = store();
        let peer = NodeId::from_bytes([5; 32]);
        let fail = Arc::new(AtomicBool::new(false));
        let hook_fails = fail.clone();
        // The hook writes after the steps: it sees (and overwrites) what they wrote.
        let hook: Hook = Box::new(move |tx: &Store| {
            let seen = tx.load_session(&peer)?.unwrap_or_default();
            if hook_fails.load(Ordering::SeqCst) {
                return Err(NodeError::Internal("hook fails".into()));
            }
            let mut after = b"hook after ".to_vec();
            after.extend(seen);
            Ok(tx.save_session(&peer, &after, 9)?)
        });
        let commit = GroupCommit::with_hook(store.clone(), Some(hook));
        commit
            .run(move |s| Ok(s.save_session(&peer, b"step", 1)?))
            .await
            .unwrap();
        assert_eq!(
            lock(&store).load_session(&peer).unwrap().as_deref(),
            Some(&b"hook after step"[..])
        );
        fail.store(true, Ordering::SeqCst);
        let r = commit
            .run(move |s| Ok(s.save_session(&peer, b"lost", 2)?))
            .await;
        assert!(r.is_err(), "a step whose commit failed reports it");
        assert_eq!(
            lock(&store).load_session(&peer).unwrap().as_deref(),
            Some(&b"hook after step"[..])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_step_that_panics_fails_its_batch_and_later_steps_still_commit() {
        let (_dir, store) = store();
        let commit = GroupCommit::new(store.clone());
        let peer = NodeId::from_bytes([6; 32]);
        let r = commit
            .run(move |s| -> Result<(), NodeError> {
                s.save_session(&peer, b"rolled back", 1)?;
                panic!("a bug in a step");
            })
            .await;
        assert!(r.is_err());
        // Without a new writer this would wait forever: a safety net, not a timing assertion.
        let after = commit.run(move |s| Ok(s.save_session(&peer, b"after", 2)?));
        tokio::time::timeout(std::time::Duration::from_secs(60), after)
            .await
            .expect("no writer after a panic")
            .unwrap();
        assert_eq!(
            lock(&store).load_session(&peer).unwrap().as_deref(),
            Some(&b"after"[..])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn steps_from_many_tasks_share_commits_and_all_finish() {
        let (_dir, store) = store();
        let commit = GroupCommit::new(store.clone());
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..32u8 {
            let commit = commit.clone();
            tasks.spawn(async move {
                let peer = NodeId::from_bytes([t; 32]);
                for i in 0..20u64 {
                    commit
                        .run(move |s| Ok(s.save_session(&peer, &i.to_be_bytes(), i)?))
                        .await
                        .unwrap();
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        let store = lock(&store);
        for t in 0..32u8 {
            let peer = NodeId::from_bytes([t; 32]);
            assert_eq!(
                store.load_session(&peer).unwrap().as_deref(),
                Some(&19u64.to_be_bytes()[..])
            );
        }
    }
}
