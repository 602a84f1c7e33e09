//! Work on a sequence done by several threads and handed back in the sequence's order,
//! within a memory budget: [`map_in_order`]. `collect` uses it to read and parse drop
//! files ahead of the ledger work, so that waiting on the file system (opening many
//! small files) overlaps with parsing and with the ledger's transaction.
//!
//! Owns: the ordering (results reach the consumer exactly in input order, each once), the
//! bound on what waits (finished results held at once weigh at most `budget` bytes,
//! plus the one the consumer waits for), and the stop (when the consumer returns, early
//! or not, every thread ends).

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};

/// Shared between the consumer and the workers.
#[derive(Default)]
struct Gate {
    /// Weight of the finished results handed over and not yet taken by the consumer.
    held: u64,
    /// The position the consumer waits for (a result for it is never held back).
    next: u64,
    /// The consumer returned (or a worker panicked): workers end.
    stopped: bool,
}

/// Sets `stopped` if a worker unwinds, so no other worker waits for a result that
/// will never come.
struct StopOnPanic<'a>(&'a (Mutex<Gate>, Condvar));

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let (m, cv) = self.0;
            if let Ok(mut g) = m.lock() {
                g.stopped = true;
            }
            cv.notify_all();
        }
    }
}

fn lock(m: &Mutex<Gate>) -> std::sync::MutexGuard<'_, Gate> {
    // A worker that panicked never holds the lock while unwinding its work; the gate's
    // fields stay meaningful either way.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The results of [`map_in_order`], in the order of its items. Dropping it stops the
/// work: every thread ends.
pub struct InOrder<'g, U> {
    results: Receiver<(u64, U, u64)>,
    pending: BTreeMap<u64, (U, u64)>,
    next: u64,
    gate: &'g (Mutex<Gate>, Condvar),
}

impl<U> Iterator for InOrder<'_, U> {
    type Item = U;
    fn next(&mut self) -> Option<U> {
        loop {
            if let Some((u, w)) = self.pending.remove(&self.next) {
                self.next += 1;
                {
                    let mut g = lock(&self.gate.0);
                    g.next = self.next;
                    g.held -= w;
                }
                self.gate.1.notify_all();
                return Some(u);
            }
            let (i, u, w) = self.results.recv().ok()?;
            self.pending.insert(i, (u, w));
        }
    }
}

impl<U> Drop for InOrder<'_, U> {
    fn drop(&mut self) {
        lock(&self.gate.0).stopped = true;
        self.gate.1.notify_all();
    }
}

/// Runs `work` over `items` on `workers` threads (the items are drawn on one more) and
/// hands `consume` the results in the order of `items`. `work` returns a result and
/// its weight (bytes it holds): finished results wait for `consume` only while their
/// weights add up to at most `budget`; the result it needs next never waits, so a
/// single heavy item always goes through. When `consume` returns (having taken every
/// result or stopped early), every thread ends and its value is returned; a panic in
/// `work` or `consume` is propagated once every thread has ended.
pub fn map_in_order<T, U, R>(
    items: impl Iterator<Item = T> + Send,
    workers: usize,
    budget: u64,
    work: impl Fn(T) -> (U, u64) + Sync,
    consume: impl FnOnce(&mut InOrder<'_, U>) -> R,
) -> R
where
    T: Send,
    U: Send,
{
    let workers = workers.max(1);
    let gate = (Mutex::new(Gate::default()), Condvar::new());
    std::thread::scope(|scope| {
        // Jobs wait in a short queue; the drawing thread blocks when it is full and ends
        // when every worker has gone (the receiver with them).
        let (job_tx, job_rx) = sync_channel::<(u64, T)>(2 * workers);
        let job_rx: Arc<Mutex<Receiver<(u64, T)>>> = Arc::new(Mutex::new(job_rx));
        let (res_tx, res_rx) = sync_channel::<(u64, U, u64)>(4 * workers);
        scope.spawn(move || {
            for (i, item) in items.enumerate() {
                if job_tx.send((i as u64, item)).is_err() {
                    return;
                }
            }
        });
        for _ in 0..workers {
            let (job_rx, res_tx, gate, work) = (Arc::clone(&job_rx), res_tx.clone(), &gate, &work);
            scope.spawn(move || {
                let _guard = StopOnPanic(gate);
                loop {
                    let job = job_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok((i, item)) = job else { return };
                    if lock(&gate.0).stopped {
                        return;
                    }
                    let (u, w) = work(item);
                    let w = w.max(1);
                    let mut g = lock(&gate.0);
                    while !g.stopped && i != g.next && g.held + w > budget {
                        g = gate.1.wait(g).unwrap_or_else(|p| p.into_inner());
                    }
                    if g.stopped {
                        return;
                    }
                    g.held += w;
                    drop(g);
                    if res_tx.send((i, u, w)).is_err() {
                        return;
                    }
                }
            });
        }
        drop((job_rx, res_tx));
        let mut results = InOrder {
            results: res_rx,
            pending: BTreeMap::new(),
            next: 0,
            gate: &gate,
        };
        consume(&mut results)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    #[test]
    fn results_come_in_input_order_even_when_later_items_finish_first() {
        let mut got = Vec::new();
        let r: Result<(), ()> = map_in_order(
            0..200u64,
            4,
            1 << 20,
            |i| {
                // Early items are slow, so later ones finish first.
                if i % 7 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                (i * 10, 1)
            },
            |results| {
                got.extend(results);
                Ok(())
            },
        );
        assert!(r.is_ok());
        assert_eq!(got, (0..200u64).map(|i| i * 10).collect::<Vec<_>>());
    }

    #[test]
    fn finished_results_held_never_weigh_more_than_the_budget_plus_the_one_awaited() {
        let held = AtomicU64::new(0);
        let peak = AtomicU64::new(0);
        let r: Result<(), ()> = map_in_order(
            0..300u64,
            4,
            10,
            |i| {
                // Item 0 is slow: everything after it would pile up without the budget.
                if i == 0 {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let now = held.fetch_add(3, Ordering::SeqCst) + 3;
                peak.fetch_max(now, Ordering::SeqCst);
                (i, 3)
            },
            |results| {
                for _ in results {
                    held.fetch_sub(3, Ordering::SeqCst);
                }
                Ok(())
            },
        );
        assert!(r.is_ok());
        // Counted from when work finishes until the consumer has taken it: the gate's
        // budget (10, so three results), the awaited one, one finished result per worker
        // waiting at the gate, and the one the consumer is taking. Without the gate all
        // 300 (900) pile up behind item 0.
        let p = peak.load(Ordering::SeqCst);
        assert!(p <= 3 * 3 + 3 + 4 * 3 + 3, "peak {p}");
    }

    #[test]
    fn a_result_heavier_than_the_budget_still_goes_through() {
        let mut got = Vec::new();
        let r: Result<(), ()> = map_in_order(
            0..5u64,
            2,
            1,
            |i| (i, 100),
            |results| {
                got.extend(results);
                Ok(())
            },
        );
        assert!(r.is_ok());
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_consumer_that_stops_early_ends_the_work_and_nothing_after_it_is_taken() {
        let mut got = Vec::new();
        let drawn = AtomicU64::new(0);
        let items = (0..1_000_000u64).inspect(|_| {
            drawn.fetch_add(1, Ordering::SeqCst);
        });
        let r = map_in_order(
            items,
            3,
            16,
            |i| (i, 1),
            |results| {
                for u in results {
                    if u == 10 {
                        return Err(u);
                    }
                    got.push(u);
                }
                Ok(())
            },
        );
        assert_eq!(r, Err(10));
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        // The drawing stopped soon after (bounded queues), not at the end of the input.
        assert!(drawn.load(Ordering::SeqCst) < 10_000);
    }

    #[test]
    fn a_panic_in_work_is_propagated_and_nothing_hangs() {
        let r = std::panic::catch_unwind(|| {
            map_in_order(
                0..100u64,
                3,
                1,
                |i| {
                    if i == 0 {
                        std::thread::sleep(Duration::from_millis(20));
                        panic!("boom");
                    }
                    (i, 1)
                },
                |results| results.count(),
            );
        });
        assert!(r.is_err());
    }
}
