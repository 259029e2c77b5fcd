//! Group commit: writes that arrive together share one fsync (docs/design.md#group-commit).
//!
//! A write alone commits as it always did, in one `Durability::Immediate` transaction. A write that
//! finds others under way commits `Durability::None` instead (redb keeps it in memory, visible to
//! later transactions) and joins the open [`Batch`]; then one of the batch's writers leads: it
//! waits for the writes already running to join too, and makes the whole batch durable with one
//! empty `Immediate` commit, which persists every non-durable commit before it. A write or a
//! leader that panics still ends its part ([`Ticket`], [`Leader`]), so the others never wait
//! forever. No write returns before the commit that made it durable, so the WAL's promise is
//! unchanged; a batch whose durable
//! commit fails, or whose store is closed after an I/O error first, fails every write in it (redb
//! reopens at the last durable commit, so none of them was kept).
//!
//! A reader may see a write up to one fsync before it is durable. Should that fsync fail or the
//! process die, the write is gone and its caller never heard `Ok`: a window a drain loop pushed
//! meanwhile is queried again and may be delivered twice, the in-flight case docs/guarantees.md
//! allows.

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use crate::telemetry::metrics as m;

/// The writes of one durable commit; its outcome is set once, by the leader or by a close.
#[derive(Default)]
pub(super) struct Batch {
    outcome: OnceLock<Result<(), Arc<str>>>,
}

/// What a writer waiting for its batch does next.
pub(super) enum Turn<'g> {
    /// The batch's outcome: `Err` holds why its durable commit failed.
    Done(Result<(), Arc<str>>),
    /// Make the open batch durable, then report with [`Leader::finish`].
    Lead(Leader<'g>),
}

/// Writes of the store so far, for telemetry and the tests: `writes / commits` is how many writes
/// an fsync carried on average.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitCounts {
    /// Durable (fsynced) commits.
    pub commits: u64,
    /// Writes those commits made durable.
    pub writes: u64,
}

#[derive(Default)]
pub(super) struct Group {
    state: Mutex<State>,
    changed: Condvar,
}

/// A write under way, from [`Group::begin`] until dropped: [`Ticket::end`] says how it ended; one
/// dropped without (a panic in the write) ends as not durable, so no leader waits for it forever.
pub(super) struct Ticket<'g> {
    group: &'g Group,
    number: u64,
    /// Nothing else was under way: it commits durably on its own.
    pub(super) alone: bool,
    durable: bool,
}

impl Ticket<'_> {
    /// The write's own transaction ended; `durable` when it committed `Immediate` on its own.
    pub(super) fn end(mut self, durable: bool) {
        self.durable = durable;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.group.end(self.number, self.durable);
    }
}

/// The writer making the open batch durable, until dropped: [`Leader::finish`] gives the batch its
/// outcome; one dropped without (a panic in its commit) fails the batch, so neither its writers nor
/// the next leader wait forever.
pub(super) struct Leader<'g> {
    group: &'g Group,
    closed: Option<(Arc<Batch>, u64)>,
    outcome: Option<Result<(), Arc<str>>>,
}

impl Leader<'_> {
    /// Takes the open batch. Called holding the write transaction of the durable commit, so a
    /// non-durable commit from now on joins the next batch.
    pub(super) fn close_open(&mut self) {
        self.closed = Some(self.group.close_open());
    }

    /// The durable commit ended: `outcome` is the batch's (the open one's, if it was never taken).
    pub(super) fn finish(mut self, outcome: Result<(), Arc<str>>) {
        self.outcome = Some(outcome);
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let closed = (self.closed.take()).unwrap_or_else(|| self.group.close_open());
        let outcome = (self.outcome.take()).unwrap_or_else(|| {
            Err(Arc::from(
                "the durable commit panicked (a bug: see the log)",
            ))
        });
        self.group.finish(closed, outcome);
    }
}

#[derive(Default)]
struct State {
    /// Writes begun so far, and the tickets of those whose own transaction has not ended yet.
    begun: u64,
    running: BTreeSet<u64>,
    /// A writer is making the open batch durable.
    leading: bool,
    open: Arc<Batch>,
    /// Non-durable commits in `open`.
    open_writes: u64,
    counts: CommitCounts,
}

impl State {
    /// One durable commit carrying `writes` writes.
    fn count_commit(&mut self, writes: u64) {
        self.counts.commits += 1;
        self.counts.writes += writes;
        metrics::counter!(m::WAL_COMMITS).increment(1);
        metrics::counter!(m::WAL_COMMITTED_WRITES).increment(writes);
    }
}

impl Group {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change under this lock is a counter or a handover, complete before it can panic.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A write begins.
    pub(super) fn begin(&self) -> Ticket<'_> {
        let mut state = self.lock();
        let alone = state.running.is_empty() && !state.leading && state.open_writes == 0;
        let number = state.begun;
        state.begun += 1;
        state.running.insert(number);
        Ticket {
            group: self,
            number,
            alone,
            durable: false,
        }
    }

    /// A write about to commit non-durably joins the open batch. Called while its write transaction
    /// is open, so no leader can close the batch between this and the commit.
    pub(super) fn join(&self) -> Arc<Batch> {
        let mut state = self.lock();
        state.open_writes += 1;
        state.open.clone()
    }

    fn end(&self, number: u64, durable: bool) {
        let mut state = self.lock();
        state.running.remove(&number);
        if durable {
            state.count_commit(1);
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Blocks until `batch` has an outcome, or until this writer is to lead. A leader first waits
    /// for the writes running now, so they share its fsync instead of each waiting for their own.
    pub(super) fn await_turn(&self, batch: &Batch) -> Turn<'_> {
        let mut state = self.lock();
        loop {
            if let Some(outcome) = batch.outcome.get() {
                return Turn::Done(outcome.clone());
            }
            if !state.leading {
                state.leading = true;
                // Writes that begin from now on wait for the next batch: the wait is bounded.
                let begun = state.begun;
                while state.running.first().is_some_and(|&t| t < begun) {
                    state = self.wait(state);
                }
                return Turn::Lead(Leader {
                    group: self,
                    closed: None,
                    outcome: None,
                });
            }
            state = self.wait(state);
        }
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        (self.changed.wait(state)).unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn close_open(&self) -> (Arc<Batch>, u64) {
        let mut state = self.lock();
        let writes = std::mem::take(&mut state.open_writes);
        (std::mem::take(&mut state.open), writes)
    }

    /// The leader's durable commit of `batch` (`writes` non-durable commits) ended.
    fn finish(&self, (batch, writes): (Arc<Batch>, u64), outcome: Result<(), Arc<str>>) {
        let mut state = self.lock();
        if outcome.is_ok() {
            state.count_commit(writes);
        }
        let _ = batch.outcome.set(outcome);
        state.leading = false;
        drop(state);
        self.changed.notify_all();
    }

    /// The store is being closed after an I/O error (the caller holds it exclusively): the open
    /// batch's non-durable commits are gone with it.
    pub(super) fn lose_open(&self, cause: &str) {
        let (batch, writes) = self.close_open();
        if writes > 0 {
            let _ = batch.outcome.set(Err(Arc::from(cause)));
        }
        self.changed.notify_all();
    }

    pub(super) fn counts(&self) -> CommitCounts {
        self.lock().counts
    }

    #[cfg(test)]
    pub(super) fn running(&self) -> usize {
        self.lock().running.len()
    }

    /// Blocks until `ready(open_writes, running)` holds; checked whenever a write ends.
    #[cfg(test)]
    pub(super) fn wait_until(&self, ready: impl Fn(u64, u64) -> bool) {
        let mut state = self.lock();
        while !ready(state.open_writes, state.running.len() as u64) {
            state = self.wait(state);
        }
    }
}
