//! Loading the kernel modules the mini initramfs ships: the start-up ones in list order, the
//! on-demand ones when a device's modalias asks for them (at coldplug or from a uevent), each
//! after the modules it needs. Every module is tried at most once.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use rustix::io::Errno;

use crate::contract::{ModuleEntry, ModuleList, Necessity};
use crate::error::{Context, Fatal};
use crate::log::Log;
use crate::modalias::AliasTable;

/// What became of one module.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Loaded,
    /// Already in the kernel (loaded, or built in under the same name).
    Present,
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

    /// Loads the `load` and `try` modules in list order. A required module that fails is fatal;
    /// an optional one a warning. Returns how many were loaded, and how many were tried.
    pub fn load_at_start(&mut self, log: &mut Log) -> Result<(usize, usize), Fatal> {
        let mut tried = 0;
        let mut loaded = 0;
        for entry in self.list.entries.iter().filter(|e| e.necessity.at_start()) {
            tried += 1;
            match self.load(entry, log) {
                Outcome::Loaded => loaded += 1,
                Outcome::Present => {}
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
            if self.load(entry, log) == Outcome::Loaded {
                newly.push(name);
            }
        }
        newly
    }

    /// Whether any alias can ask for a module: without, there is nothing to coldplug.
    pub fn has_aliases(&self) -> bool {
        !self.list.aliases.is_empty()
    }

    /// The buses whose devices an alias may match: `None` when there is no alias, `Some(None)`
    /// when a pattern's bus is itself a glob (every bus must be looked at).
    pub fn buses(&self) -> Option<Option<Vec<&'a str>>> {
        self.has_aliases().then(|| self.aliases.buses())
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
        let outcome = match finit(&entry.path) {
            Ok(()) => {
                log.step(&format!("loaded module {}", entry.path.display()));
                Outcome::Loaded
            }
            Err(why) if why == errno_text(Errno::EXIST) => Outcome::Present,
            Err(why) => {
                if !entry.necessity.at_start() {
                    log.warn(&format!(
                        "module {} not loaded: {why}",
                        entry.path.display()
                    ));
                }
                Outcome::Failed(why)
            }
        };
        self.outcomes.insert(&entry.name, outcome.clone());
        outcome
    }
}

fn finit(path: &Path) -> Result<(), String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    rustix::system::finit_module(&file, c"", 0).map_err(errno_text)
}

/// The errno with its name, e.g. "ENOEXEC (Exec format error)": the name is what people search.
pub fn errno_text(errno: Errno) -> String {
    let io = std::io::Error::from_raw_os_error(errno.raw_os_error());
    format!("{io}")
}
