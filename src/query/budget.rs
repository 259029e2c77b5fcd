//! One memory budget for what Kusto queries hold in memory at once: response bodies and their
//! decoded rows (docs/design.md#kusto-limits, `--query-memory-budget`).
//!
//! The budget is a count of free 1 KiB units. A query holds a [`Reservation`] from before its
//! request is sent until its window is appended, and grows it as the body streams in and as rows
//! are decoded; bytes are accounted before they are allocated, so a query that would pass the
//! budget waits instead of allocating.
//!
//! Waiting while holding units could deadlock (every query holding half of what it needs, or a
//! query queued for the whole budget ahead of one that holds part of it). The rules that prevent it:
//!
//! - A query that holds nothing waits in one first-come, first-served queue ([`MemoryBudget::reserve`]).
//! - A query that holds units never waits for more, except one at a time: the *grower*. Any other
//!   query that finds the budget busy gives everything back ([`QueryError::MemoryBusy`]) and
//!   queues for a larger reservation before it asks Kusto again, holding nothing while it waits.
//! - Units that come back go to the grower first; the queue is served only while no grower waits.
//!
//! So every holder but the grower makes progress and eventually gives its units back, and the
//! grower, which never needs more than the whole budget, gets them before anyone else. A window
//! whose needs pass the whole budget cannot fit at all and fails permanently
//! ([`QueryError::OverMemoryBudget`]).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::error::QueryError;
pub use super::error::human_bytes;
use crate::telemetry::metrics::{QUERY_MEMORY_RESERVED, QUERY_MEMORY_WAITS};

/// Bytes per unit of the budget.
pub const UNIT: u64 = 1024;

/// The default when the container has no memory limit (or none can be read).
pub const FIXED_DEFAULT: u64 = 1 << 30;

/// A cgroup limit at or above this is "no limit" (cgroup v1 writes `PAGE_COUNTER_MAX` pages, about
/// 2^63 bytes, when unlimited).
const NO_LIMIT_AT: u64 = 1 << 60;

/// The shared budget. Cheap to clone.
#[derive(Clone)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    /// Units in the whole budget.
    total: u64,
    state: Mutex<State>,
    /// Woken whenever units come back, the grower is done, or the head of the queue changes.
    changed: Notify,
}

struct State {
    free: u64,
    /// A query that holds units is waiting for more (there is at most one).
    grower: bool,
    /// Queries that hold nothing, waiting in arrival order: (ticket, units wanted).
    queue: VecDeque<(u64, u64)>,
    next_ticket: u64,
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("total_bytes", &self.total_bytes())
            .field("reserved_bytes", &self.reserved_bytes())
            .finish()
    }
}

impl MemoryBudget {
    /// A budget of `bytes`, rounded up to whole KiB (at least one).
    pub fn new(bytes: u64) -> MemoryBudget {
        let total = bytes.div_ceil(UNIT).max(1);
        MemoryBudget {
            inner: Arc::new(Inner {
                total,
                state: Mutex::new(State {
                    free: total,
                    grower: false,
                    queue: VecDeque::new(),
                    next_ticket: 0,
                }),
                changed: Notify::new(),
            }),
        }
    }

    pub fn total_bytes(&self) -> u64 {
        self.inner.total * UNIT
    }

    /// Bytes held by reservations right now.
    pub fn reserved_bytes(&self) -> u64 {
        (self.inner.total - self.state().free) * UNIT
    }

    /// Waits (holding nothing, first come first served) until `bytes` of the budget are free and
    /// reserves them; a request beyond the whole budget waits for the whole budget.
    pub async fn reserve(&self, bytes: u64) -> Reservation {
        let mut r = Reservation {
            budget: Some(self.clone()),
            held: 0,
            used: 0,
            peak: 0,
        };
        r.held = self.take_queued(self.units_for(bytes)).await;
        r
    }

    /// Units for `bytes`, capped at the whole budget.
    fn units_for(&self, bytes: u64) -> u64 {
        bytes.div_ceil(UNIT).min(self.inner.total)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section below is a few integer operations that cannot panic.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `units` if they are free now (growth of a query in flight: it may pass the queue).
    fn try_take(&self, units: u64) -> bool {
        let mut st = self.state();
        if st.free < units {
            return false;
        }
        st.free -= units;
        drop(st);
        self.publish();
        true
    }

    /// Waits in the queue for `units` (holding nothing) and takes them; nothing is granted at once.
    async fn take_queued(&self, units: u64) -> u64 {
        if units == 0 {
            return 0;
        }
        let ticket = {
            let mut st = self.state();
            if !st.grower && st.queue.is_empty() && st.free >= units {
                st.free -= units;
                drop(st);
                self.publish();
                return units;
            }
            let ticket = st.next_ticket;
            st.next_ticket += 1;
            st.queue.push_back((ticket, units));
            ticket
        };
        note_wait("reserve");
        // Leaves the queue if the wait is cancelled (the exporter stopped).
        let mut place = InQueue {
            budget: self,
            ticket: Some(ticket),
        };
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.state();
                let first = st.queue.front().map(|(t, _)| *t) == Some(ticket);
                if first && !st.grower && st.free >= units {
                    st.free -= units;
                    st.queue.pop_front();
                    place.ticket = None;
                    drop(st);
                    // The next in the queue may fit too.
                    self.inner.changed.notify_waiters();
                    self.publish();
                    return units;
                }
            }
            notified.await;
        }
    }

    /// Becomes the grower unless another query is; `false` then.
    fn begin_growing(&self) -> bool {
        let mut st = self.state();
        if st.grower {
            return false;
        }
        st.grower = true;
        true
    }

    /// As the grower: waits until `units` are free, takes them and stops being the grower.
    async fn take_as_grower(&self, units: u64) {
        let growing = Growing { budget: self };
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.state();
                if st.free >= units {
                    st.free -= units;
                    drop(st);
                    self.publish();
                    growing.end();
                    return;
                }
            }
            notified.await;
        }
    }

    fn end_growing(&self) {
        self.state().grower = false;
        self.inner.changed.notify_waiters();
    }

    /// Gives `units` back and wakes whoever waits for them.
    fn give(&self, units: u64) {
        if units == 0 {
            return;
        }
        self.state().free += units;
        self.inner.changed.notify_waiters();
        self.publish();
    }

    /// Sets the reserved-bytes gauge.
    fn publish(&self) {
        metrics::gauge!(QUERY_MEMORY_RESERVED).set(self.reserved_bytes() as f64);
    }

    /// Whether a query is waiting for more units while it holds some (tests).
    #[cfg(test)]
    pub(crate) fn grower_waiting(&self) -> bool {
        self.state().grower
    }

    /// How much a growing query asks for beyond what it needs right now, so that a streaming body
    /// does not lock the budget for every chunk: 1/256 of the budget, at least one unit.
    fn step_units(&self) -> u64 {
        (self.inner.total / 256).max(1)
    }
}

/// A place in the queue, left when dropped before it was served.
struct InQueue<'a> {
    budget: &'a MemoryBudget,
    ticket: Option<u64>,
}

impl Drop for InQueue<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket {
            self.budget.state().queue.retain(|(t, _)| *t != ticket);
            self.budget.inner.changed.notify_waiters();
        }
    }
}

/// The grower's turn, ended when dropped (also when its wait is cancelled).
struct Growing<'a> {
    budget: &'a MemoryBudget,
}

impl Growing<'_> {
    fn end(self) {}
}

impl Drop for Growing<'_> {
    fn drop(&mut self) {
        self.budget.end_growing();
    }
}

/// Why a reservation could not cover what its query needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shortfall {
    /// Other queries hold the rest of the budget: give everything back and wait, or wait as the grower.
    Busy,
    /// More than the whole budget: the window can never fit.
    Over,
}

/// A query's share of the budget: `held` units, of which `used` bytes are accounted as in use.
/// Gives its units back when dropped. [`Reservation::unlimited`] belongs to no budget (`preview`,
/// tests): it covers everything.
pub struct Reservation {
    budget: Option<MemoryBudget>,
    held: u64,
    used: u64,
    peak: u64,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("limited", &self.budget.is_some())
            .field("held_bytes", &self.held_bytes())
            .field("used", &self.used)
            .field("peak", &self.peak)
            .finish()
    }
}

impl Default for Reservation {
    fn default() -> Self {
        Reservation::unlimited()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release_all();
    }
}

impl Reservation {
    /// Belongs to no budget: every request is covered.
    pub fn unlimited() -> Reservation {
        Reservation {
            budget: None,
            held: 0,
            used: 0,
            peak: 0,
        }
    }

    /// The whole budget in bytes (`None` when unlimited).
    pub fn budget_bytes(&self) -> Option<u64> {
        self.budget.as_ref().map(MemoryBudget::total_bytes)
    }

    pub fn held_bytes(&self) -> u64 {
        self.held * UNIT
    }

    /// Bytes accounted as in use now.
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// The most bytes accounted at once over this reservation's life: what the next window of the
    /// same exporter is likely to need.
    pub fn peak_bytes(&self) -> u64 {
        self.peak
    }

    /// Accounts `used` bytes as in use, taking more units without waiting when needed.
    pub(crate) fn try_cover(&mut self, used: u64) -> Result<(), Shortfall> {
        let Some(budget) = &self.budget else {
            self.set_used(used);
            return Ok(());
        };
        let need = used.div_ceil(UNIT);
        if need > budget.inner.total {
            return Err(Shortfall::Over);
        }
        if need > self.held {
            let more = need - self.held;
            // With slack first (the budget is locked less often), then exactly what is needed.
            let with_slack = (more + budget.step_units()).min(budget.inner.total - self.held);
            let Some(got) = [with_slack, more].into_iter().find(|n| budget.try_take(*n)) else {
                return Err(Shortfall::Busy);
            };
            self.held += got;
        }
        self.set_used(used);
        Ok(())
    }

    /// As [`Reservation::try_cover`], but when the budget is busy waits for other queries to give
    /// units back — only if no other query is waiting that way (the grower rule in the module
    /// docs); else `Busy`, and the caller must give everything back before it waits.
    pub(crate) async fn cover(&mut self, used: u64) -> Result<(), Shortfall> {
        match self.try_cover(used) {
            Err(Shortfall::Busy) => {}
            done => return done,
        }
        let Some(budget) = self.budget.clone() else {
            return Ok(());
        };
        if !budget.begin_growing() {
            return Err(Shortfall::Busy);
        }
        // Ask for some room beyond `used` so the next chunks do not wait again at once.
        let target = used
            .saturating_add((used / 2).max(budget.step_units() * UNIT))
            .min(budget.total_bytes());
        let more = budget.units_for(target).saturating_sub(self.held);
        note_wait("grow");
        budget.take_as_grower(more).await;
        self.held += more;
        self.try_cover(used)
    }

    /// Before anything is allocated (nothing in use): makes the hold at least `bytes` (capped at
    /// the whole budget), waiting in the queue holding nothing when the budget is busy.
    pub(crate) async fn hold_at_least(&mut self, bytes: u64) {
        let Some(budget) = self.budget.clone() else {
            return;
        };
        let units = budget.units_for(bytes);
        if units <= self.held {
            return;
        }
        if budget.try_take(units - self.held) {
            self.held = units;
            return;
        }
        debug_assert_eq!(self.used, 0, "waiting while holding what is in use");
        self.release_all();
        self.held = budget.take_queued(units).await;
    }

    /// Lowers the accounting to `used` bytes and gives back the units beyond it; a `used` above
    /// what is held takes more when free (never waits: the bytes already exist).
    pub fn shrink_to(&mut self, used: u64) {
        let Some(budget) = &self.budget else {
            self.set_used(used);
            return;
        };
        let keep = budget.units_for(used);
        if keep < self.held {
            budget.give(self.held - keep);
            self.held = keep;
            self.used = used;
        } else if self.try_cover(used).is_err() {
            self.used = used;
        }
        self.peak = self.peak.max(self.used);
    }

    /// Gives every unit back (the accounting drops to zero; the peak is kept).
    pub fn release_all(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give(self.held);
        }
        self.held = 0;
        self.used = 0;
    }

    fn set_used(&mut self, used: u64) {
        self.used = used;
        self.peak = self.peak.max(used);
    }
}

/// How the process gives freed heap memory back to the OS, registered by the binary (glibc's
/// `malloc_trim`: the allocator keeps freed memory in per-thread arenas, so without it the pages a
/// finished window freed stay resident while the next window allocates in another arena, and RSS
/// grows past the budget; measured in docs/deploy.md#memory-sizing).
static RELEASE_FREED: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Registers how freed memory is given back to the OS (once; later calls are ignored).
pub fn set_memory_release(release: fn()) {
    let _ = RELEASE_FREED.set(release);
}

/// A window smaller than this at its peak frees too little to be worth giving back at once.
const RELEASE_FROM: u64 = 32 << 20;

/// Gives the memory a window of `peak` bytes freed back to the OS, off the async workers, before
/// its units are handed to the next query.
pub(crate) async fn release_freed_memory(peak: u64) {
    if let Some(release) = RELEASE_FREED.get().copied()
        && peak >= RELEASE_FROM
    {
        let _ = tokio::task::spawn_blocking(release).await;
    }
}

/// Counts one wait for budget (`wait`: one of `MEMORY_WAITS`).
pub(crate) fn note_wait(wait: &'static str) {
    metrics::counter!(QUERY_MEMORY_WAITS, "wait" => wait).increment(1);
}

/// Where the budget's size came from, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetOrigin {
    /// `--query-memory-budget` (or its variable).
    Flag,
    /// Half the container's memory limit, read from this file.
    Cgroup { file: String, limit: u64 },
    /// No memory limit found: the fixed default.
    Fixed,
}

impl std::fmt::Display for BudgetOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BudgetOrigin::Flag => f.write_str("from --query-memory-budget"),
            BudgetOrigin::Cgroup { file, limit } => write!(
                f,
                "half the container's memory limit of {} ({file})",
                human_bytes(*limit)
            ),
            BudgetOrigin::Fixed => write!(
                f,
                "the fixed default: no container memory limit found in /sys/fs/cgroup; set --query-memory-budget to about half the memory limit"
            ),
        }
    }
}

/// The budget in bytes and where it came from: the flag when given, else half the cgroup memory
/// limit under `cgroup_root` (normally `/sys/fs/cgroup`), else [`FIXED_DEFAULT`].
pub fn resolve_budget(flag: Option<u64>, cgroup_root: &Path) -> (u64, BudgetOrigin) {
    if let Some(bytes) = flag {
        return (bytes, BudgetOrigin::Flag);
    }
    match cgroup_memory_limit(cgroup_root) {
        Some((limit, file)) => (
            (limit / 2).max(UNIT),
            BudgetOrigin::Cgroup {
                file: file.display().to_string(),
                limit,
            },
        ),
        None => (FIXED_DEFAULT, BudgetOrigin::Fixed),
    }
}

/// The container's memory limit: cgroup v2 `memory.max`, else cgroup v1
/// `memory/memory.limit_in_bytes`, under `root`. `None` when neither file holds a limit.
pub fn cgroup_memory_limit(root: &Path) -> Option<(u64, std::path::PathBuf)> {
    [
        root.join("memory.max"),
        root.join("memory/memory.limit_in_bytes"),
    ]
    .into_iter()
    .find_map(|file| {
        let text = std::fs::read_to_string(&file).ok()?;
        let limit = parse_limit(&text)?;
        Some((limit, file))
    })
}

/// A limit file's content: bytes, or `max` (v2) / a huge number (v1) for none.
fn parse_limit(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    let bytes: u64 = t.parse().ok()?;
    (bytes > 0 && bytes < NO_LIMIT_AT).then_some(bytes)
}

/// The error for a window that cannot fit: `used` bytes needed so far, `rows` decoded so far
/// (`None` while the body is read).
pub(crate) fn over_budget(
    r: &Reservation,
    used: u64,
    rows: Option<usize>,
    max_rows: usize,
) -> QueryError {
    QueryError::OverMemoryBudget {
        budget: r.budget_bytes().unwrap_or(u64::MAX),
        needed: used,
        rows,
        max_rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgroup_v2_and_v1_limits() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cgroup_memory_limit(dir.path()), None);
        // v1 only.
        std::fs::create_dir(dir.path().join("memory")).unwrap();
        let v1 = dir.path().join("memory/memory.limit_in_bytes");
        std::fs::write(&v1, "1073741824\n").unwrap();
        assert_eq!(cgroup_memory_limit(dir.path()), Some((1 << 30, v1.clone())));
        // v1 unlimited (PAGE_COUNTER_MAX pages).
        std::fs::write(&v1, "9223372036854771712\n").unwrap();
        assert_eq!(cgroup_memory_limit(dir.path()), None);
        // v2 wins over v1.
        let v2 = dir.path().join("memory.max");
        std::fs::write(&v1, "1073741824\n").unwrap();
        std::fs::write(&v2, "2147483648\n").unwrap();
        assert_eq!(cgroup_memory_limit(dir.path()), Some((2 << 30, v2.clone())));
        // v2 "max" is no limit: v1 is then read.
        std::fs::write(&v2, "max\n").unwrap();
        assert_eq!(cgroup_memory_limit(dir.path()), Some((1 << 30, v1.clone())));
        // Garbage and zero are no limit.
        std::fs::write(&v1, "lots\n").unwrap();
        assert_eq!(cgroup_memory_limit(dir.path()), None);
        std::fs::write(&v2, "0").unwrap();
        assert_eq!(cgroup_memory_limit(dir.path()), None);
    }

    #[test]
    fn the_default_is_half_the_limit_else_fixed_and_the_flag_wins() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            resolve_budget(None, dir.path()),
            (FIXED_DEFAULT, BudgetOrigin::Fixed)
        );
        std::fs::write(dir.path().join("memory.max"), "1073741824").unwrap();
        let (bytes, origin) = resolve_budget(None, dir.path());
        assert_eq!(bytes, 512 << 20);
        assert_eq!(
            origin.to_string(),
            format!(
                "half the container's memory limit of 1 GiB ({})",
                dir.path().join("memory.max").display()
            )
        );
        assert_eq!(
            resolve_budget(Some(5 << 20), dir.path()),
            (5 << 20, BudgetOrigin::Flag)
        );
        assert!(
            BudgetOrigin::Fixed
                .to_string()
                .contains("--query-memory-budget")
        );
    }

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(17), "17 B");
        assert_eq!(human_bytes(300 << 10), "300 KiB");
        assert_eq!(human_bytes(512 << 20), "512 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }

    #[tokio::test]
    async fn units_are_taken_and_given_back() {
        let budget = MemoryBudget::new(64 << 10);
        assert_eq!(budget.total_bytes(), 64 << 10);
        let mut r = budget.reserve(10 << 10).await;
        assert_eq!(r.held_bytes(), 10 << 10);
        assert_eq!(budget.reserved_bytes(), 10 << 10);
        // Covered by what is held: no more units.
        r.try_cover(9 << 10).unwrap();
        assert_eq!(r.held_bytes(), 10 << 10);
        // Growth takes what is missing plus a step (1/256 of the budget, at least 1 KiB).
        r.try_cover((20 << 10) + 1).unwrap();
        assert_eq!(r.held_bytes(), 22 << 10);
        assert_eq!(r.used_bytes(), (20 << 10) + 1);
        // Shrinking gives back all but what covers the new use.
        r.shrink_to(3000);
        assert_eq!(r.held_bytes(), 3 << 10);
        assert_eq!(budget.reserved_bytes(), 3 << 10);
        assert_eq!(r.peak_bytes(), (20 << 10) + 1);
        drop(r);
        assert_eq!(budget.reserved_bytes(), 0);
    }

    #[tokio::test]
    async fn over_the_whole_budget_is_over_and_busy_is_busy() {
        let budget = MemoryBudget::new(16 << 10);
        let mut a = budget.reserve(1).await;
        assert_eq!(a.try_cover((16 << 10) + 1), Err(Shortfall::Over));
        a.try_cover(12 << 10).unwrap();
        // 11 KiB more plus a step of 1 KiB.
        assert_eq!(a.held_bytes(), 13 << 10);
        let mut b = budget.reserve(1 << 10).await;
        // The last 2 KiB are free: b gets them (without the step, which is not free), then no more.
        b.try_cover(3 << 10).unwrap();
        assert_eq!(b.held_bytes(), 3 << 10);
        assert_eq!(b.try_cover((3 << 10) + 1), Err(Shortfall::Busy));
        // Covering never waits when it cannot: the failed attempt changed nothing.
        assert_eq!(b.used_bytes(), 3 << 10);
        assert_eq!(budget.reserved_bytes(), 16 << 10);
        // Unlimited covers anything.
        let mut u = Reservation::unlimited();
        u.try_cover(u64::MAX / 2).unwrap();
        assert_eq!(u.budget_bytes(), None);
    }

    #[tokio::test]
    async fn a_reservation_waits_for_units_and_is_served_in_order() {
        let budget = MemoryBudget::new(8 << 10);
        let mut a = budget.reserve(6 << 10).await;
        a.try_cover(6 << 10).unwrap();
        // Needs 4 KiB with 2 free: waits.
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(4 << 10).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        a.shrink_to(4 << 10);
        let b = waiting.await.unwrap();
        assert_eq!(b.held_bytes(), 4 << 10);
        assert_eq!(budget.reserved_bytes(), 8 << 10);
        // A request beyond the whole budget waits for the whole budget.
        drop((a, b));
        let all = budget.reserve(1 << 40).await;
        assert_eq!(all.held_bytes(), 8 << 10);
    }

    /// The deadlock the grower's priority prevents: a query queued for the whole budget (holding
    /// nothing) ahead of the grower, which holds half of it.
    #[tokio::test]
    async fn a_queued_request_for_everything_does_not_block_the_grower() {
        let budget = MemoryBudget::new(16 << 10);
        let mut a = budget.reserve(8 << 10).await;
        a.try_cover(8 << 10).unwrap();
        let mut c = budget.reserve(8 << 10).await;
        c.try_cover(8 << 10).unwrap();
        let queued = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(16 << 10).await }
        });
        while budget.state().queue.is_empty() {
            tokio::task::yield_now().await;
        }
        let grower = tokio::spawn(async move {
            let r = a.cover(12 << 10).await;
            (r, a)
        });
        while !budget.grower_waiting() {
            tokio::task::yield_now().await;
        }
        // c finishes: its units go to the grower, not to the head of the queue.
        drop(c);
        let (r, a) = grower.await.unwrap();
        assert_eq!(r, Ok(()));
        assert_eq!(a.used_bytes(), 12 << 10);
        assert!(!queued.is_finished());
        // The grower finishes: now the queue is served.
        drop(a);
        let all = queued.await.unwrap();
        assert_eq!(all.held_bytes(), 16 << 10);
    }

    /// A wait that is given up (the exporter stopped) leaves the queue, so the next one is served.
    #[tokio::test]
    async fn a_cancelled_wait_leaves_the_queue() {
        let budget = MemoryBudget::new(8 << 10);
        let a = budget.reserve(6 << 10).await;
        let first = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(8 << 10).await }
        });
        while budget.state().queue.is_empty() {
            tokio::task::yield_now().await;
        }
        let second = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(2 << 10).await }
        });
        while budget.state().queue.len() < 2 {
            tokio::task::yield_now().await;
        }
        // The second waits behind the first although its 2 KiB are free.
        assert!(!second.is_finished());
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        let b = second.await.unwrap();
        assert_eq!(b.held_bytes(), 2 << 10);
        assert_eq!(budget.reserved_bytes(), 8 << 10);
        assert!(budget.state().queue.is_empty());
        drop((a, b));
        assert_eq!(budget.reserved_bytes(), 0);
    }

    #[tokio::test]
    async fn one_grower_waits_the_others_must_give_back() {
        let budget = MemoryBudget::new(16 << 10);
        let mut a = budget.reserve(8 << 10).await;
        a.try_cover(8 << 10).unwrap();
        let mut b = budget.reserve(8 << 10).await;
        b.try_cover(8 << 10).unwrap();
        let mut c = budget.reserve(0).await;
        // a becomes the grower and waits for b's units.
        let grower = tokio::spawn(async move {
            let r = a.cover(12 << 10).await;
            (r, a)
        });
        while !budget.grower_waiting() {
            tokio::task::yield_now().await;
        }
        assert!(!grower.is_finished());
        // While a waits, nobody else may wait holding units.
        assert_eq!(b.cover(9 << 10).await, Err(Shortfall::Busy));
        assert_eq!(c.cover(1 << 10).await, Err(Shortfall::Busy));
        // b restarts: gives everything back, and a gets its units.
        b.release_all();
        let (r, a) = grower.await.unwrap();
        assert_eq!(r, Ok(()));
        assert!(a.held_bytes() >= 12 << 10, "{a:?}");
        assert_eq!(a.used_bytes(), 12 << 10);
        // The grower lock is free again.
        drop(a);
        c.cover(1 << 10).await.unwrap();
    }
}
