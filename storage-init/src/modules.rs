//! Loading the kernel modules the mini initramfs ships: the start-up ones in list order, the
//! on-demand ones when a device's modalias asks for them (at coldplug or from a uevent), each
//! after the modules it needs. Every module is tried at most once.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use rustix::io::Errno;

use crate::contract::{ModuleEntry, ModuleList, Necessity};
use crate::error::{Context, Fatal};
use crate::log::Log;
use crate::modalias::AliasTable;

/// Most machines that boot this have 2-8 cores; past 4 loaders the kernel's own locks
/// (module_mutex, the vmap area) serialise more than they overlap.
const MAX_LOADERS: usize = 4;
/// A loader thread only makes a syscall.
const LOADER_STACK: usize = 64 << 10;

/// What became of one module.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Loaded by us, the kernel taking this long in finit_module.
    Loaded(Duration),
    /// Already in the kernel (loaded, or built in under the same name).
    Present,
    /// An `else` candidate left out: the one it stands in for is in the kernel.
    NotNeeded,
    Failed(String),
}

/// The shipped modules and what has been done with them.
#[derive(Debug)]
pub struct Drivers<'a> {
    list: &'a ModuleList,
    aliases: AliasTable<'a>,
    outcomes: BTreeMap<&'a str, Outcome>,
}

impl<'a> Drivers<'a> {
    pub fn new(list: &'a ModuleList) -> Drivers<'a> {
        Drivers {
            list,
            aliases: AliasTable::new(&list.aliases),
            outcomes: BTreeMap::new(),
        }
    }

    /// Loads the `load` and `try` modules, each after the modules it needs: one at a time in
    /// list order on one CPU, else on up to [`MAX_LOADERS`] threads, a module starting as soon
    /// as its dependencies are done (the kernel relocates, checks and initialises modules in
    /// parallel). A required module that fails is fatal; an optional one a warning. Returns how
    /// many were loaded, and how many were tried.
    pub fn load_at_start(&mut self, log: &mut Log) -> Result<(usize, usize), Fatal> {
        let start: Vec<&'a ModuleEntry> = self
            .list
            .entries
            .iter()
            .filter(|e| e.necessity.at_start())
            .collect();
        // The CPUs this process may run on: one syscall (std's available_parallelism also reads
        // cgroup files, which an initramfs does not have).
        let loaders = rustix::thread::sched_getaffinity(None)
            .map_or(1, |set| set.count() as usize)
            .clamp(1, MAX_LOADERS);
        // builder makes a start-up module need only earlier start-up modules; a list that does
        // otherwise loads the simple way.
        let self_contained = start.iter().all(|e| {
            e.after
                .iter()
                .all(|dep| start.iter().any(|s| s.name == *dep))
        });
        if loaders > 1 && start.len() > 1 && self_contained {
            self.load_in_parallel(&start, loaders, log);
        }
        let mut tried = 0;
        let mut loaded = 0;
        for entry in start {
            let outcome = self.load(entry, log);
            if outcome != Outcome::NotNeeded {
                tried += 1;
            }
            match outcome {
                Outcome::Loaded(_) => loaded += 1,
                Outcome::Present | Outcome::NotNeeded => {}
                Outcome::Failed(why) => {
                    if entry.necessity == Necessity::Required {
                        return Err(why)
                            .context(|| format!("loading kernel module {}", entry.path.display()));
                    }
                    log.warn(&format!(
                        "optional module {} not loaded: {why}",
                        entry.path.display()
                    ));
                }
            }
        }
        Ok((loaded, tried))
    }

    /// Loads `start` (each entry's dependencies among them) on `loaders` threads and records
    /// the outcomes, which `load_at_start` then reads.
    fn load_in_parallel(&mut self, start: &[&'a ModuleEntry], loaders: usize, log: &mut Log) {
        let index_of = |name: &str| start.iter().position(|e| e.name == name);
        let deps: Vec<Vec<usize>> = start
            .iter()
            .map(|e| e.after.iter().filter_map(|d| index_of(d)).collect())
            .collect();
        let log = Mutex::new(log);
        let outcomes: Vec<Mutex<Option<Outcome>>> =
            start.iter().map(|_| Mutex::new(None)).collect();
        in_dependency_order(&deps, loaders, |i| {
            let entry = start[i];
            // The candidate it stands in for is among its dependencies, so it is done by now.
            let replaced = entry.stands_in_for().and_then(|name| {
                let slot = outcomes[index_of(name)?].lock().ok()?;
                slot.clone()
            });
            let outcome = if needed(replaced.as_ref()) {
                attempt(entry)
            } else {
                Outcome::NotNeeded
            };
            if let Outcome::Loaded(took) = outcome
                && let Ok(mut log) = log.lock()
            {
                log.step(&loaded_line(entry, took));
            }
            let keep_going = !matches!(
                (&outcome, entry.necessity),
                (Outcome::Failed(_), Necessity::Required)
            );
            if let Ok(mut slot) = outcomes[i].lock() {
                *slot = Some(outcome);
            }
            keep_going
        });
        for (entry, outcome) in start.iter().zip(outcomes) {
            if let Some(outcome) = outcome.into_inner().ok().flatten() {
                self.outcomes.insert(&entry.name, outcome);
            }
        }
    }

    /// Loads the modules whose aliases match `modalias` (with what they need first); returns
    /// the names of those newly loaded.
    pub fn load_for_device(&mut self, modalias: &str, log: &mut Log) -> Vec<&'a str> {
        let mut newly = Vec::new();
        for name in self.aliases.modules_for(modalias) {
            if self.outcomes.contains_key(name) {
                continue;
            }
            let Some(entry) = self.list.entry(name) else {
                continue;
            };
            if matches!(self.load(entry, log), Outcome::Loaded(_)) {
                newly.push(name);
            }
        }
        newly
    }

    /// The buses whose devices an alias may match: `None` when there is no alias (nothing to
    /// coldplug), `Some(None)` when a pattern's bus is itself a glob (every bus must be looked at).
    pub fn buses(&self) -> Option<Option<Vec<&'a str>>> {
        (!self.list.aliases.is_empty()).then(|| self.aliases.buses())
    }

    /// The on-demand modules that failed, for the FATAL line of a search that found nothing.
    pub fn failures(&self) -> Vec<String> {
        self.outcomes
            .iter()
            .filter_map(|(name, outcome)| match outcome {
                Outcome::Failed(why) => Some(format!("{name}: {why}")),
                _ => None,
            })
            .collect()
    }

    /// Loads `entry` after the modules it needs (each once; a failed dependency is left for
    /// the kernel to report as an unknown symbol).
    fn load(&mut self, entry: &'a ModuleEntry, log: &mut Log) -> Outcome {
        if let Some(outcome) = self.outcomes.get(entry.name.as_str()) {
            return outcome.clone();
        }
        for dep in &entry.after {
            // The contract guarantees every dependency is listed earlier; its own failure has
            // been reported by then.
            if let Some(dep) = self.list.entry(dep) {
                self.load(dep, log);
            }
        }
        let replaced = entry
            .stands_in_for()
            .and_then(|name| self.outcomes.get(name));
        let outcome = if needed(replaced) {
            attempt(entry)
        } else {
            Outcome::NotNeeded
        };
        match &outcome {
            Outcome::Loaded(took) => log.step(&loaded_line(entry, *took)),
            Outcome::Failed(why) if !entry.necessity.at_start() => log.warn(&format!(
                "module {} not loaded: {why}",
                entry.path.display()
            )),
            _ => {}
        }
        self.outcomes.insert(&entry.name, outcome.clone());
        outcome
    }
}

/// Whether a module is to be loaded, given what became of the candidate it stands in for (an
/// `else` module; `None` for every other): only if that one failed. A candidate never tried
/// (the list stopped at a failure) leaves the decision to the caller's load.
fn needed(replaced: Option<&Outcome>) -> bool {
    matches!(replaced, None | Some(Outcome::Failed(_)))
}

/// `loaded module <path> in 61.2 ms`: the kernel's time in finit_module, which the benchmark
/// tells apart from storage-init's own between two log lines.
fn loaded_line(entry: &ModuleEntry, took: Duration) -> String {
    let tenths = took.as_micros() / 100;
    format!(
        "loaded module {} in {}.{} ms",
        entry.path.display(),
        tenths / 10,
        tenths % 10
    )
}

/// One finit_module(2).
fn attempt(entry: &ModuleEntry) -> Outcome {
    match finit(&entry.path) {
        Ok(took) => Outcome::Loaded(took),
        Err(why) if why == errno_text(Errno::EXIST) => Outcome::Present,
        Err(why) => Outcome::Failed(why),
    }
}

/// Runs `work` on every item on up to `workers` threads, an item only once every item of its
/// `deps` (indices) has finished, lowest index first among the ready ones. Once `work`
/// returns false nothing new starts. A dependency index not lower than its item's is ignored,
/// so the lowest unstarted item is always ready or waiting on a running one: no deadlock.
fn in_dependency_order(deps: &[Vec<usize>], workers: usize, work: impl Fn(usize) -> bool + Sync) {
    struct State {
        started: Vec<bool>,
        done: Vec<bool>,
        stop: bool,
    }
    let state = Mutex::new(State {
        started: vec![false; deps.len()],
        done: vec![false; deps.len()],
        stop: false,
    });
    let changed = Condvar::new();
    let worker = || {
        let Ok(mut guard) = state.lock() else {
            return;
        };
        loop {
            if guard.stop || guard.started.iter().all(|s| *s) {
                return;
            }
            let ready = (0..deps.len())
                .find(|&i| !guard.started[i] && deps[i].iter().all(|&d| d >= i || guard.done[d]));
            let Some(i) = ready else {
                guard = match changed.wait(guard) {
                    Ok(guard) => guard,
                    Err(_) => return,
                };
                continue;
            };
            guard.started[i] = true;
            drop(guard);
            let keep_going = work(i);
            guard = match state.lock() {
                Ok(guard) => guard,
                Err(_) => return,
            };
            guard.done[i] = true;
            guard.stop |= !keep_going;
            changed.notify_all();
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..workers {
            // A thread that cannot be made only means fewer loaders.
            let _ = std::thread::Builder::new()
                .stack_size(LOADER_STACK)
                .spawn_scoped(scope, worker);
        }
        worker();
    });
}

/// Loads the module file at `path`; returns how long the kernel took.
fn finit(path: &Path) -> Result<Duration, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let start = Instant::now();
    rustix::system::finit_module(&file, c"", 0).map_err(|errno| {
        let text = errno_text(errno);
        match refusal_advice(errno) {
            Some(advice) => format!("{text}: {advice}"),
            None => text,
        }
    })?;
    Ok(start.elapsed())
}

/// What to do when the kernel refuses a module file itself, rather than the device it drives.
fn refusal_advice(errno: Errno) -> Option<&'static str> {
    match errno {
        Errno::NOEXEC => Some(
            "the kernel refuses the file as a module (damaged, or built for another kernel); \
             rebuild the mini initramfs for the running kernel with \
             `builder initramfs --kver $(uname -r) …`",
        ),
        Errno::KEYREJECTED | Errno::NOKEY => Some(
            "the kernel accepts signed modules only and this one's signature is missing or not \
             trusted; build the mini initramfs from the distribution's signed modules",
        ),
        _ => None,
    }
}

/// The errno with its name, e.g. "ENOEXEC (Exec format error)": the name is what people search.
pub fn errno_text(errno: Errno) -> String {
    let io = std::io::Error::from_raw_os_error(errno.raw_os_error());
    format!("{io}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A file the kernel refuses as a module says what to rebuild; other failures keep the
    /// kernel's word alone.
    #[test]
    fn refused_modules_say_what_to_do() {
        let advice = refusal_advice(Errno::NOEXEC).unwrap();
        assert!(
            advice.contains("`builder initramfs --kver $(uname -r)"),
            "{advice}"
        );
        assert!(
            refusal_advice(Errno::KEYREJECTED)
                .unwrap()
                .contains("signed")
        );
        for errno in [Errno::NODEV, Errno::INVAL, Errno::NOMEM, Errno::EXIST] {
            assert_eq!(refusal_advice(errno), None, "{errno}");
        }
    }
    use std::time::Duration;

    /// Runs the scheduler with work that takes a few milliseconds; returns the order of
    /// (item, started?) events and the most items seen running at once.
    fn run(
        deps: &[Vec<usize>],
        workers: usize,
        fail: Option<usize>,
    ) -> (Vec<(usize, bool)>, usize) {
        let events = Mutex::new(Vec::new());
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        in_dependency_order(deps, workers, |i| {
            events.lock().unwrap().push((i, true));
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            running.fetch_sub(1, Ordering::SeqCst);
            events.lock().unwrap().push((i, false));
            fail != Some(i)
        });
        (events.into_inner().unwrap(), most.into_inner())
    }

    #[test]
    fn dependencies_finish_before_their_dependents_start() {
        // ext4-like: 0 crc32c, 1 jbd2 (needs 0), 2 mbcache, 3 ext4 (needs 0 1 2), 4 erofs, 5 overlay.
        let deps = vec![vec![], vec![0], vec![], vec![0, 1, 2], vec![], vec![]];
        let (events, most) = run(&deps, 3, None);
        let position = |item: usize, start: bool| events.iter().position(|e| *e == (item, start));
        for (item, needs) in deps.iter().enumerate() {
            let started = position(item, true).expect("every item runs");
            for &dep in needs {
                assert!(
                    position(dep, false).unwrap() < started,
                    "{item} before {dep} ended"
                );
            }
        }
        assert!(events.len() == 2 * deps.len());
        assert!(
            (2..=3).contains(&most),
            "independent modules overlap, within the limit: {most}"
        );
    }

    #[test]
    fn a_fallback_loads_only_when_its_candidate_failed() {
        let check = |replaced: Option<Outcome>, expected: bool| {
            assert_eq!(needed(replaced.as_ref()), expected, "{replaced:?}")
        };
        check(None, true);
        check(
            Some(Outcome::Failed("ENODEV (No such device)".into())),
            true,
        );
        check(Some(Outcome::Loaded(Duration::from_millis(5))), false);
        check(Some(Outcome::Present), false);
        // A fallback of a fallback: the first candidate loaded, so neither later one is needed.
        check(Some(Outcome::NotNeeded), false);
    }

    #[test]
    fn loaded_lines_say_how_long_the_kernel_took() {
        let entry = ModuleEntry {
            name: "fat".into(),
            path: "/lib/modules/k/kernel/fs/fat/fat.ko".into(),
            necessity: Necessity::Required,
            after: Vec::new(),
        };
        let check =
            |took: Duration, expected: &str| assert_eq!(loaded_line(&entry, took), expected);
        check(
            Duration::from_micros(61_249),
            "loaded module /lib/modules/k/kernel/fs/fat/fat.ko in 61.2 ms",
        );
        check(
            Duration::from_micros(950),
            "loaded module /lib/modules/k/kernel/fs/fat/fat.ko in 0.9 ms",
        );
    }

    #[test]
    fn one_worker_keeps_list_order() {
        let (events, most) = run(&[vec![], vec![], vec![0]], 1, None);
        let starts: Vec<usize> = events.iter().filter(|e| e.1).map(|e| e.0).collect();
        assert_eq!((starts, most), (vec![0, 1, 2], 1));
    }

    #[test]
    fn a_failure_that_stops_starts_nothing_more() {
        let (events, _) = run(&[vec![], vec![0], vec![1]], 1, Some(0));
        assert_eq!(events, [(0, true), (0, false)]);
    }
}
