//! Kernel module closure: from a few requested module names to the ordered list of module files
//! the mini initramfs must carry and storage-init must load, read from a kernel modules tree
//! (`<root>/lib/modules/<kver>/`) on which `depmod` has run.
//!
//! What is read, all written by kmod's `depmod` (see `man 5 modules.dep`):
//! * `modules.dep`: `path/to/mod.ko[.xz]: dep.ko[.xz] …`, every module with its full set of hard
//!   dependencies; the last listed is the deepest, so modprobe loads them from the end.
//! * `modules.softdep`: `softdep <mod> pre: <name>… post: <name>…`.
//! * `modules.alias`: `alias <alias> <mod>`. Exact aliases resolve requested names
//!   (`crypto-crc32c`); device aliases (`<bus>:<ids>`, usually globs such as `pci:v*d*…`) are
//!   what storage-init matches against devices' modaliases at boot.
//! * `modules.builtin`: `kernel/path/mod.ko` for each module built into the kernel image.
//!
//! Rules: names compare with `-` and `_` as the same character (as kmod does). A requested module
//! with device aliases (a storage driver) is [`Necessity::OnDemand`]: shipped with its aliases,
//! loaded at boot only if such a device exists; so is everything it alone pulls in. Every other
//! requested name is required at start. A requested name
//! that is built in is skipped with a note. A name that is no module is looked up as an alias;
//! with several candidates, the first (in `modules.alias` order, where depmod puts the
//! architecture's own implementations before the generic ones) is [`Necessity::Optional`] and
//! each later one a [`Necessity::Fallback`] for the one before it, loaded only if that one fails
//! (on demand, every candidate is loaded with the device's driver). Hard dependencies come
//! before their dependent and share its necessity; `pre:` softdeps come before the module, `post:`
//! softdeps after it, and everything reached only through a softdep is optional. A module reached
//! both ways is required. Each module appears once; cycles (possible through softdeps) are cut
//! with a note.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use storage_init::contract::{DeviceAlias, ModuleEntry, ModuleList, Necessity};

/// The index files depmod writes (kmod `depmod.c`), relative to `lib/modules/<kver>`.
const MODULES_DEP: &str = "modules.dep";
const MODULES_SOFTDEP: &str = "modules.softdep";
const MODULES_ALIAS: &str = "modules.alias";
/// Written by the kernel build (`scripts/Makefile.modinst`), shipped by distribution packages.
const MODULES_BUILTIN: &str = "modules.builtin";

/// Where modules live, relative to the tree root, as in the booted system.
const MODULES_DIR: &str = "lib/modules";

/// Why a module closure cannot be computed or a module file read.
#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error("no {MODULES_DEP} in {dir}: run `depmod -b {root} {kver}`", dir = .dir.display(), root = .root.display())]
    NoModulesDep {
        dir: PathBuf,
        root: PathBuf,
        kver: String,
    },
    #[error(
        "reading {path}: {error} (is the kernel modules tree complete? run `depmod -b <root> <kver>` after unpacking it)"
    )]
    ReadIndex { path: PathBuf, error: io::Error },
    #[error("{path} line {line}: {problem}")]
    ParseIndex {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error(
        "no kernel module, built-in module or alias named {name:?} in {dir}{via}: check the name (`modinfo -b <root> -k <kver> {name}`) or install the package that ships it",
        dir = .dir.display()
    )]
    UnknownModule {
        name: String,
        dir: PathBuf,
        /// ` (needed by <module>)` when a dependency is missing, else empty.
        via: String,
    },
    #[error("reading module file {path}: {error}")]
    ReadModule { path: PathBuf, error: io::Error },
    #[error(
        "module file {path} has an unknown compression suffix: expected .ko, .ko.xz, .ko.gz or .ko.zst"
    )]
    UnknownCompression { path: PathBuf },
}

/// A kernel modules tree: `<root>/lib/modules/<kver>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelModules {
    /// The directory holding `lib/modules/<kver>` (what `depmod -b` takes).
    pub root: PathBuf,
    /// The kernel release, `uname -r` of the target (e.g. `6.12.95+deb12-amd64`).
    pub kver: String,
}

impl KernelModules {
    pub fn new(root: impl Into<PathBuf>, kver: impl Into<String>) -> KernelModules {
        KernelModules {
            root: root.into(),
            kver: kver.into(),
        }
    }

    /// `<root>/lib/modules/<kver>`.
    pub fn dir(&self) -> PathBuf {
        self.root.join(MODULES_DIR).join(&self.kver)
    }

    /// Where the modules directory is inside the booted system: `/lib/modules/<kver>`.
    pub fn installed_dir(&self) -> String {
        format!("/{MODULES_DIR}/{}", self.kver)
    }

    /// Reads and parses the depmod index files.
    pub fn load_index(&self) -> Result<ModuleIndex, ModulesError> {
        let dir = self.dir();
        let dep_path = dir.join(MODULES_DEP);
        if !dep_path.is_file() {
            return Err(ModulesError::NoModulesDep {
                dir,
                root: self.root.clone(),
                kver: self.kver.clone(),
            });
        }
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|error| ModulesError::ReadIndex { path, error })
        };
        ModuleIndex::parse(
            &dir,
            &IndexFiles {
                dep: &read(MODULES_DEP)?,
                softdep: &read(MODULES_SOFTDEP)?,
                alias: &read(MODULES_ALIAS)?,
                builtin: &read(MODULES_BUILTIN)?,
            },
        )
    }

    /// Computes the closure of `requested` (see the module documentation).
    pub fn resolve(&self, requested: &[String]) -> Result<Resolution, ModulesError> {
        self.load_index()?.resolve(requested)
    }

    /// The closure of `required` and of `wanted`, names this kernel may lack (a preset's).
    pub fn resolve_with_wanted(
        &self,
        required: &[String],
        wanted: &[String],
    ) -> Result<Resolution, ModulesError> {
        self.load_index()?.resolve_with_wanted(required, wanted)
    }
}

/// The text of the depmod index files.
#[derive(Debug, Clone, Copy)]
pub struct IndexFiles<'a> {
    pub dep: &'a str,
    pub softdep: &'a str,
    pub alias: &'a str,
    pub builtin: &'a str,
}

#[derive(Debug, Clone)]
struct ModuleInfo {
    /// As written in modules.dep: relative to `lib/modules/<kver>`, compression suffix included.
    relative_path: String,
    /// Normalised names, as listed (deepest last).
    deps: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct SoftDeps {
    pre: Vec<String>,
    post: Vec<String>,
}

/// The parsed depmod index of one kernel.
#[derive(Debug, Clone)]
pub struct ModuleIndex {
    dir: PathBuf,
    modules: BTreeMap<String, ModuleInfo>,
    builtin: BTreeSet<String>,
    /// Normalised alias → normalised module names, in file order.
    aliases: BTreeMap<String, Vec<String>>,
    /// Normalised module name → the modalias patterns of the devices it drives, in file order.
    device_aliases: BTreeMap<String, Vec<String>>,
    softdeps: BTreeMap<String, SoftDeps>,
}

/// `-` and `_` are the same in module names (kmod's `modname_normalize`).
pub fn normalize_name(name: &str) -> String {
    name.replace('-', "_")
}

/// Compression suffixes depmod accepts after `.ko`, and what reads them.
const COMPRESSIONS: [(&str, Compression); 4] = [
    (".ko", Compression::None),
    (".ko.xz", Compression::Xz),
    (".ko.gz", Compression::Gzip),
    (".ko.zst", Compression::Zstd),
];

/// How a module file is compressed, from its file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Xz,
    Gzip,
    Zstd,
}

/// Splits `dir/name.ko.xz` into (`dir/name.ko`, `Xz`).
fn split_compression(path: &str) -> Option<(&str, Compression)> {
    COMPRESSIONS
        .iter()
        .rev()
        .find(|(suffix, _)| path.ends_with(suffix))
        .map(|(suffix, compression)| {
            let stem_len = path.len() - suffix.len() + ".ko".len();
            (&path[..stem_len], *compression)
        })
}

/// The module name of a path in modules.dep or modules.builtin: file name without `.ko…`.
fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file.split_once(".ko").map(|(stem, _)| stem)?;
    (!stem.is_empty()).then(|| normalize_name(stem))
}

/// Numbered (1-based) lines that are neither blank nor comments, trimmed.
fn meaningful(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

fn is_glob(alias: &str) -> bool {
    alias.contains(['*', '?', '['])
}

/// Whether an alias names devices (`<bus>:<ids>`, matched against a device's modalias) rather
/// than a name (`fs-ext4`, `crypto-crc32c`, `block-major-7-*`) or a device node
/// (`devname:loop-control`).
fn is_device_alias(alias: &str) -> bool {
    alias
        .split_once(':')
        .is_some_and(|(bus, _)| !bus.is_empty() && bus != "devname")
}

impl ModuleIndex {
    /// Parses the index files of the tree `dir` (used in messages and to read modules).
    pub fn parse(dir: &Path, files: &IndexFiles<'_>) -> Result<ModuleIndex, ModulesError> {
        let error = |name: &str, line: usize, problem: String| ModulesError::ParseIndex {
            path: dir.join(name),
            line,
            problem,
        };
        let relative = |path: &str| -> String {
            // Old depmod wrote absolute paths; make them relative to the tree.
            let dir_text = dir.to_string_lossy();
            path.strip_prefix(dir_text.as_ref())
                .map(|p| p.trim_start_matches('/').to_owned())
                .unwrap_or_else(|| path.to_owned())
        };

        let mut modules = BTreeMap::new();
        for (number, line) in meaningful(files.dep) {
            let (module, deps) = line.split_once(':').ok_or_else(|| {
                error(
                    MODULES_DEP,
                    number,
                    format!("expected '<module>: <deps>', found {line:?}"),
                )
            })?;
            let name = module_name(module).ok_or_else(|| {
                error(
                    MODULES_DEP,
                    number,
                    format!("{module:?} is not a module path"),
                )
            })?;
            let deps = deps
                .split_whitespace()
                .map(|dep| {
                    module_name(dep).ok_or_else(|| {
                        error(MODULES_DEP, number, format!("{dep:?} is not a module path"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            modules.insert(
                name,
                ModuleInfo {
                    relative_path: relative(module),
                    deps,
                },
            );
        }

        let mut softdeps: BTreeMap<String, SoftDeps> = BTreeMap::new();
        for (number, line) in meaningful(files.softdep) {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                // Other directives (e.g. `weakdep` in newer kmod) do not order loading.
                continue;
            }
            let module = words.next().ok_or_else(|| {
                error(
                    MODULES_SOFTDEP,
                    number,
                    "softdep without a module name".into(),
                )
            })?;
            let entry = softdeps.entry(normalize_name(module)).or_default();
            let mut list: Option<&mut Vec<String>> = None;
            for word in words {
                match word {
                    "pre:" => list = Some(&mut entry.pre),
                    "post:" => list = Some(&mut entry.post),
                    name => {
                        // kmod ignores names before any `pre:`/`post:` (Debian 6.12 has
                        // `softdep cifs gcm`), so do we.
                        if let Some(list) = list.as_deref_mut() {
                            list.push(normalize_name(name));
                        }
                    }
                }
            }
        }

        let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut device_aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (number, line) in meaningful(files.alias) {
            let mut words = line.split_whitespace();
            let (Some("alias"), Some(alias), Some(module)) =
                (words.next(), words.next(), words.next())
            else {
                return Err(error(
                    MODULES_ALIAS,
                    number,
                    format!("expected 'alias <alias> <module>', found {line:?}"),
                ));
            };
            let module = normalize_name(module);
            if is_device_alias(alias) {
                let patterns = device_aliases.entry(module.clone()).or_default();
                if !patterns.iter().any(|p| p == alias) {
                    patterns.push(alias.to_owned());
                }
            }
            if is_glob(alias) {
                continue;
            }
            let candidates = aliases.entry(normalize_name(alias)).or_default();
            if !candidates.contains(&module) {
                candidates.push(module);
            }
        }

        let builtin = meaningful(files.builtin)
            .into_iter()
            .filter_map(|(_, line)| module_name(line))
            .collect();

        Ok(ModuleIndex {
            dir: dir.to_owned(),
            modules,
            builtin,
            aliases,
            device_aliases,
            softdeps,
        })
    }

    /// Computes the ordered closure of `requested`. A requested module that drives devices
    /// (it has modalias patterns) is loaded on demand, when such a device shows up; every other
    /// requested name is required at start.
    pub fn resolve(&self, requested: &[String]) -> Result<Resolution, ModulesError> {
        self.resolve_with_wanted(requested, &[])
    }

    /// [`ModuleIndex::resolve`], plus `wanted` names that this kernel may lack or have built
    /// in (a storage preset lists drivers of every architecture): those are skipped with a note,
    /// and a wanted module without device aliases is optional (`try`).
    pub fn resolve_with_wanted(
        &self,
        required: &[String],
        wanted: &[String],
    ) -> Result<Resolution, ModulesError> {
        let mut walk = Walk {
            index: self,
            order: Vec::new(),
            necessity: BTreeMap::new(),
            after: BTreeMap::new(),
            stands_in_for: BTreeMap::new(),
            in_progress: BTreeSet::new(),
            notes: Vec::new(),
        };
        let drives_devices = |name: &str| {
            self.device_aliases.contains_key(&normalize_name(name))
                && self.modules.contains_key(&normalize_name(name))
        };
        let named = [
            (required, Necessity::Required),
            (wanted, Necessity::Optional),
        ];
        for (names, otherwise) in named {
            for name in names {
                let necessity = if drives_devices(name) {
                    Necessity::OnDemand
                } else {
                    otherwise
                };
                walk.visit_name(name, necessity, None)?;
            }
        }
        let position: BTreeMap<&str, usize> = walk
            .order
            .iter()
            .enumerate()
            .map(|(i, name)| (name.as_str(), i))
            .collect();
        let modules = walk
            .order
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let necessity = walk.necessity[name];
                // A fallback names the candidate it stands in for first (contract: `else`).
                let replaced = (necessity == Necessity::Fallback)
                    .then(|| walk.stands_in_for.get(name))
                    .flatten();
                // Only what comes earlier: a dependency cut from a cycle is not waited for.
                let mut after: Vec<String> = Vec::new();
                for dep in replaced
                    .into_iter()
                    .chain(walk.after.get(name).into_iter().flatten())
                {
                    if position.get(dep.as_str()).is_some_and(|&p| p < i) && !after.contains(dep) {
                        after.push(dep.clone());
                    }
                }
                // A fallback without its candidate before it has nothing to stand in for.
                let necessity = match (necessity, replaced) {
                    (Necessity::Fallback, Some(replaced)) if after.first() == Some(replaced) => {
                        necessity
                    }
                    (Necessity::Fallback, _) => Necessity::Optional,
                    (other, _) => other,
                };
                ResolvedModule {
                    name: name.clone(),
                    relative_path: self.modules[name].relative_path.clone(),
                    necessity,
                    after,
                    device_aliases: if necessity == Necessity::OnDemand {
                        self.device_aliases.get(name).cloned().unwrap_or_default()
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        Ok(Resolution {
            dir: self.dir.clone(),
            modules,
            notes: walk.notes,
        })
    }
}

/// The state of one closure computation.
struct Walk<'a> {
    index: &'a ModuleIndex,
    /// Load order, each module once.
    order: Vec<String>,
    necessity: BTreeMap<String, Necessity>,
    /// Module → the modules to load before it (hard dependencies, `pre:` softdeps).
    after: BTreeMap<String, Vec<String>>,
    /// A later alias candidate → the earlier one it stands in for (while it is a fallback).
    stands_in_for: BTreeMap<String, String>,
    /// Modules whose dependencies are being visited, to cut cycles.
    in_progress: BTreeSet<String>,
    notes: Vec<String>,
}

impl Walk<'_> {
    /// Visits a name that may be a module, a built-in module or an alias.
    /// Returns the modules the name stands for.
    fn visit_name(
        &mut self,
        name: &str,
        necessity: Necessity,
        needed_by: Option<&str>,
    ) -> Result<Vec<String>, ModulesError> {
        let normalized = normalize_name(name);
        let via = needed_by
            .map(|m| format!(" (needed by {m})"))
            .unwrap_or_default();
        if self.index.modules.contains_key(&normalized) {
            self.visit_module(&normalized, necessity)?;
            return Ok(vec![normalized]);
        }
        if self.index.builtin.contains(&normalized) {
            self.note(format!(
                "{name} is built into the kernel{via}: nothing to load"
            ));
            return Ok(Vec::new());
        }
        if let Some(candidates) = self.index.aliases.get(&normalized) {
            let candidate_necessity = if candidates.len() == 1 {
                necessity
            } else {
                necessity.min(Necessity::Optional)
            };
            let mut modules: Vec<String> = Vec::new();
            for candidate in candidates {
                if self.index.modules.contains_key(candidate) {
                    // At start one provider is enough: the next is only a fallback.
                    let preferred = modules.last().filter(|_| candidate_necessity.at_start());
                    match preferred {
                        Some(preferred) => {
                            if !self.necessity.contains_key(candidate) {
                                self.stands_in_for
                                    .insert(candidate.clone(), preferred.clone());
                            }
                            self.visit_module(candidate, Necessity::Fallback)?;
                        }
                        None => self.visit_module(candidate, candidate_necessity)?,
                    }
                    modules.push(candidate.clone());
                } else if self.index.builtin.contains(candidate) {
                    self.note(format!(
                        "{candidate} (for alias {name}{via}) is built into the kernel: nothing to load"
                    ));
                } else {
                    self.note(format!(
                        "alias {name} names {candidate}, which is no module of this kernel: skipped"
                    ));
                }
            }
            return Ok(modules);
        }
        match necessity {
            Necessity::Required => Err(ModulesError::UnknownModule {
                name: name.to_owned(),
                dir: self.index.dir.clone(),
                via,
            }),
            Necessity::Optional | Necessity::Fallback | Necessity::OnDemand => {
                self.note(format!(
                    "optional {name}{via} is no module, built-in or alias of this kernel: skipped"
                ));
                Ok(Vec::new())
            }
        }
    }

    fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    fn visit_module(&mut self, name: &str, necessity: Necessity) -> Result<(), ModulesError> {
        if self.in_progress.contains(name) {
            self.note(format!(
                "dependency cycle through {name}: its later mention was cut"
            ));
            return Ok(());
        }
        let info = &self.index.modules[name];
        let softdeps = self.index.softdeps.get(name).cloned().unwrap_or_default();
        let soft = soft_necessity(necessity);
        let hard = hard_necessity(necessity);
        match self.necessity.get(name).copied() {
            Some(known) if known >= necessity => return Ok(()),
            Some(_) => {
                // Reached again with a stronger need (required, or at start instead of on
                // demand): upgrade it and what it pulls in, which are already earlier in the
                // order.
                self.necessity.insert(name.to_owned(), necessity);
                self.in_progress.insert(name.to_owned());
                for pre in &softdeps.pre {
                    self.visit_name(pre, soft, Some(name))?;
                }
                for dep in info.deps.iter().rev() {
                    self.visit_dep(dep, name, hard)?;
                }
                for post in &softdeps.post {
                    self.visit_name(post, soft, Some(name))?;
                }
                self.in_progress.remove(name);
                return Ok(());
            }
            None => {}
        }
        self.in_progress.insert(name.to_owned());
        let mut after = Vec::new();
        for pre in &softdeps.pre {
            after.extend(self.visit_name(pre, soft, Some(name))?);
        }
        for dep in info.deps.iter().rev() {
            self.visit_dep(dep, name, hard)?;
            after.push(dep.clone());
        }
        self.necessity.insert(name.to_owned(), necessity);
        self.after.insert(name.to_owned(), after);
        self.order.push(name.to_owned());
        for post in &softdeps.post {
            self.visit_name(post, soft, Some(name))?;
        }
        self.in_progress.remove(name);
        Ok(())
    }

    fn visit_dep(
        &mut self,
        dep: &str,
        dependent: &str,
        necessity: Necessity,
    ) -> Result<(), ModulesError> {
        if self.index.modules.contains_key(dep) {
            self.visit_module(dep, necessity)
        } else {
            Err(ModulesError::UnknownModule {
                name: dep.to_owned(),
                dir: self.index.dir.clone(),
                via: format!(" (needed by {dependent}, listed in {MODULES_DEP})"),
            })
        }
    }
}

/// What a soft dependency of a module with `necessity` gets: never required, and on demand
/// when the module itself is.
fn soft_necessity(necessity: Necessity) -> Necessity {
    hard_necessity(necessity.min(Necessity::Optional))
}

/// What a hard dependency of a module with `necessity` gets: the same, but a fallback's
/// dependencies are plainly optional (a fallback stands in for one module, which they do not).
fn hard_necessity(necessity: Necessity) -> Necessity {
    match necessity {
        Necessity::Fallback => Necessity::Optional,
        other => other,
    }
}

/// One module of a closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModule {
    /// Normalised module name (`crc32c_intel`).
    pub name: String,
    /// As in modules.dep: relative to `lib/modules/<kver>`, compression suffix included.
    pub relative_path: String,
    pub necessity: Necessity,
    /// Modules to load before it, all earlier in the order.
    pub after: Vec<String>,
    /// For an on-demand module: the modalias patterns that ask for it.
    pub device_aliases: Vec<String>,
}

impl ResolvedModule {
    /// The path relative to `lib/modules/<kver>` once decompressed (`kernel/fs/ext4/ext4.ko`).
    pub fn uncompressed_relative_path(&self) -> Result<&str, ModulesError> {
        split_compression(&self.relative_path)
            .map(|(stem, _)| stem)
            .ok_or_else(|| ModulesError::UnknownCompression {
                path: PathBuf::from(&self.relative_path),
            })
    }
}

/// An ordered module closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The tree's `lib/modules/<kver>` directory.
    pub dir: PathBuf,
    /// In load order.
    pub modules: Vec<ResolvedModule>,
    /// Decisions worth telling (built-in modules skipped, cycles cut, optional names missing).
    pub notes: Vec<String>,
}

impl Resolution {
    /// The list storage-init reads, with paths as installed under `installed_dir`
    /// (`/lib/modules/<kver>`).
    pub fn module_list(&self, installed_dir: &str) -> Result<ModuleList, ModulesError> {
        let entries = self
            .modules
            .iter()
            .map(|module| {
                Ok(ModuleEntry {
                    name: module.name.clone(),
                    path: PathBuf::from(format!(
                        "{installed_dir}/{}",
                        module.uncompressed_relative_path()?
                    )),
                    necessity: module.necessity,
                    after: module.after.clone(),
                })
            })
            .collect::<Result<Vec<_>, ModulesError>>()?;
        let aliases = self
            .modules
            .iter()
            .flat_map(|module| {
                module.device_aliases.iter().map(|pattern| DeviceAlias {
                    pattern: pattern.clone(),
                    module: module.name.clone(),
                })
            })
            .collect();
        Ok(ModuleList { entries, aliases })
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for module in &self.modules {
            let verb = match module.necessity {
                Necessity::Required => "load",
                Necessity::Optional => "try",
                Necessity::Fallback => "else",
                Necessity::OnDemand => "device",
            };
            writeln!(f, "{verb} {} ({})", module.name, module.relative_path)?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}

/// Reads a module file, decompressing `.ko.xz`, `.ko.gz` and `.ko.zst`.
pub fn read_module(path: &Path) -> Result<Vec<u8>, ModulesError> {
    let read_error = |error| ModulesError::ReadModule {
        path: path.to_owned(),
        error,
    };
    let (_, compression) = split_compression(&path.to_string_lossy()).ok_or_else(|| {
        ModulesError::UnknownCompression {
            path: path.to_owned(),
        }
    })?;
    let file = fs::File::open(path).map_err(read_error)?;
    let file = io::BufReader::new(file);
    let mut out = Vec::new();
    match compression {
        Compression::None => {
            let mut file = file;
            file.read_to_end(&mut out).map_err(read_error)?;
        }
        Compression::Xz => {
            liblzma::read::XzDecoder::new(file)
                .read_to_end(&mut out)
                .map_err(read_error)?;
        }
        Compression::Gzip => {
            flate2::read::GzDecoder::new(file)
                .read_to_end(&mut out)
                .map_err(read_error)?;
        }
        Compression::Zstd => {
            let mut file = file;
            ruzstd::decoding::StreamingDecoder::new(&mut file)
                .map_err(|e| read_error(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?
                .read_to_end(&mut out)
                .map_err(read_error)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic index: modules.dep lines use `kernel/<name>.ko.xz` paths.
    struct Tree {
        dep: &'static str,
        softdep: &'static str,
        alias: &'static str,
        builtin: &'static str,
    }

    const DIR: &str = "/trees/lib/modules/1.0";

    fn parse(tree: &Tree) -> Result<ModuleIndex, ModulesError> {
        let files = IndexFiles {
            dep: tree.dep,
            softdep: tree.softdep,
            alias: tree.alias,
            builtin: tree.builtin,
        };
        ModuleIndex::parse(Path::new(DIR), &files)
    }

    fn index(tree: &Tree) -> ModuleIndex {
        parse(tree).unwrap()
    }

    /// `expected`: one `load name` / `try name` per line, then `note: …` lines.
    fn check(tree: &Tree, requested: &[&str], expected: &str) {
        let requested: Vec<String> = requested.iter().map(|s| s.to_string()).collect();
        let resolution = index(tree).resolve(&requested).unwrap();
        let shown: String = resolution
            .to_string()
            .lines()
            .map(|l| match l.strip_prefix("note: ") {
                Some(_) => format!("{l}\n"),
                None => format!("{}\n", l.split(" (").next().unwrap_or(l)),
            })
            .collect();
        assert_eq!(shown.trim(), expected.trim(), "requested {requested:?}");
    }

    const DEBIAN_LIKE: Tree = Tree {
        dep: "kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz
kernel/fs/jbd2/jbd2.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/lib/crc16.ko.xz:
kernel/fs/erofs/erofs.ko.xz: kernel/lib/libcrc32c.ko.xz
kernel/lib/libcrc32c.ko.xz:
kernel/arch/x86/crypto/crc32c-intel.ko.xz:
kernel/crypto/crc32c_generic.ko.xz:
kernel/drivers/block/virtio_blk.ko.xz:
kernel/fs/overlayfs/overlay.ko.xz:
",
        softdep: "# Soft dependencies extracted from modules themselves.
softdep ext4 pre: crypto-crc32c
softdep jbd2 pre: crypto-crc32c
softdep libcrc32c pre: crc32c
",
        alias: "# Aliases extracted from modules themselves.
alias crypto-crc32c-intel crc32c_intel
alias crypto-crc32c crc32c_intel
alias crc32c crc32c_intel
alias cpu:type:x86,ven*fam*mod*:feature:*0094* crc32c_intel
alias crypto-crc32c crc32c_generic
alias crc32c crc32c_generic
alias fs-ext4 ext4
",
        builtin: "kernel/drivers/virtio/virtio_pci.ko\nkernel/fs/fat/vfat.ko\n",
    };

    #[test]
    fn debian_like_tree() {
        check(
            &DEBIAN_LIKE,
            &["virtio_blk", "ext4", "erofs", "overlay"],
            "
load virtio_blk
try crc32c_intel
else crc32c_generic
load jbd2
load mbcache
load crc16
load ext4
load libcrc32c
load erofs
load overlay
",
        );
    }

    /// One provider of an alias is enough at start: the next is an `else` standing in for the
    /// one before it, unless something needs it for itself.
    #[test]
    fn later_alias_candidates_are_fallbacks() {
        let list = |requested: &[&str]| {
            let requested: Vec<String> = requested.iter().map(|r| (*r).to_owned()).collect();
            let list = index(&DEBIAN_LIKE)
                .resolve(&requested)
                .unwrap()
                .module_list("/lib/modules/1.0")
                .unwrap();
            let text = list.render();
            assert_eq!(ModuleList::parse(&text), Ok(list), "{text}");
            text
        };
        let text = list(&["erofs"]);
        assert!(
            text.contains("try crc32c_intel /lib/modules/1.0/kernel/arch/x86/crypto/crc32c-intel.ko\n")
                && text.contains(
                    "else crc32c_generic /lib/modules/1.0/kernel/crypto/crc32c_generic.ko crc32c_intel\n"
                )
                && text.contains("load libcrc32c /lib/modules/1.0/kernel/lib/libcrc32c.ko crc32c_intel crc32c_generic\n"),
            "{text}"
        );
        check(
            &DEBIAN_LIKE,
            &["erofs", "crc32c_generic"],
            "
try crc32c_intel
load crc32c_generic
load libcrc32c
load erofs
",
        );
        check(
            &DEBIAN_LIKE,
            &["crc32c_generic", "erofs"],
            "
load crc32c_generic
try crc32c_intel
load libcrc32c
load erofs
",
        );
        let text = list(&["crc32c_generic", "erofs"]);
        assert!(
            text.contains("load crc32c_generic /lib/modules/1.0/kernel/crypto/crc32c_generic.ko\n"),
            "asked for by name: loaded for itself, standing in for nothing: {text}"
        );
    }

    /// On demand, every candidate goes with the device's driver, as before.
    #[test]
    fn on_demand_alias_candidates_are_all_loaded() {
        const TREE: Tree = Tree {
            dep: "drv.ko:\nfast.ko:\nslow.ko:\n",
            softdep: "softdep drv pre: sum\n",
            alias: "alias pci:v00001234d* drv\nalias sum fast\nalias sum slow\n",
            builtin: "",
        };
        check(&TREE, &["drv"], "device fast\ndevice slow\ndevice drv\n");
        check(&TREE, &["sum"], "try fast\nelse slow\n");
    }

    const DEVICES: Tree = Tree {
        dep: "kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko
kernel/drivers/nvme/host/nvme-core.ko:
kernel/drivers/block/virtio_blk.ko:
kernel/lib/crc64.ko:
kernel/fs/erofs/erofs.ko:
",
        softdep: "softdep nvme_core pre: crc64\n",
        alias: "alias pci:v*d*sv*sd*bc01sc08i02* nvme
alias pci:v0000144Dd0000A808sv*sd*bc*sc*i* nvme
alias virtio:d00000002v* virtio_blk
alias devname:nvme-fabrics nvme_core
alias fs-erofs erofs
",
        builtin: "",
    };

    #[test]
    fn device_drivers_load_on_demand_with_their_aliases() {
        check(
            &DEVICES,
            &["nvme", "virtio_blk", "erofs"],
            "
device crc64
device nvme_core
device nvme
device virtio_blk
load erofs
",
        );
        let requested: Vec<String> = ["nvme", "virtio_blk", "erofs"].map(String::from).to_vec();
        let list = index(&DEVICES)
            .resolve(&requested)
            .unwrap()
            .module_list("/lib/modules/1.0")
            .unwrap();
        let text = list.render();
        assert!(
            text.contains(
                "device nvme /lib/modules/1.0/kernel/drivers/nvme/host/nvme.ko nvme_core\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "device nvme_core /lib/modules/1.0/kernel/drivers/nvme/host/nvme-core.ko crc64\n"
            ),
            "the pre: softdep is loaded first: {text}"
        );
        let aliases: Vec<(&str, &str)> = list
            .aliases
            .iter()
            .map(|a| (a.pattern.as_str(), a.module.as_str()))
            .collect();
        assert_eq!(
            aliases,
            [
                ("pci:v*d*sv*sd*bc01sc08i02*", "nvme"),
                ("pci:v0000144Dd0000A808sv*sd*bc*sc*i*", "nvme"),
                ("virtio:d00000002v*", "virtio_blk"),
            ],
            "device aliases of on-demand modules only (not devname:, not fs-)"
        );
        assert_eq!(ModuleList::parse(&text), Ok(list));
    }

    #[test]
    fn needed_at_start_wins_over_on_demand() {
        // nvme_core asked for by name: required at start, and so its softdep is tried at start.
        check(
            &DEVICES,
            &["nvme", "nvme_core"],
            "
try crc64
load nvme_core
device nvme
",
        );
    }

    #[test]
    fn builtin_names_and_dashes() {
        check(
            &DEBIAN_LIKE,
            &["virtio-pci", "virtio-blk"],
            "
load virtio_blk
note: virtio-pci is built into the kernel: nothing to load
",
        );
    }

    #[test]
    fn alias_with_one_candidate_keeps_necessity() {
        check(
            &DEBIAN_LIKE,
            &["fs-ext4"],
            "
try crc32c_intel
else crc32c_generic
load jbd2
load mbcache
load crc16
load ext4
",
        );
        // Glob aliases are never matched by name.
        let err = index(&DEBIAN_LIKE)
            .resolve(&["cpu:type:x86,ven*fam*mod*:feature:*0094*".into()])
            .unwrap_err();
        assert!(matches!(err, ModulesError::UnknownModule { .. }), "{err}");
    }

    const SOFT: Tree = Tree {
        dep: "a.ko: b.ko
b.ko:
c.ko:
d.ko: c.ko
e.ko:
",
        softdep: "softdep a pre: d post: e missing
softdep e pre: a
softdep b ignored-before-pre
",
        alias: "",
        builtin: "",
    };

    #[test]
    fn softdeps_are_optional_and_required_wins() {
        // d (pre) and its hard dep c come first, optional; e (post) after a; the cycle a -> e ->
        // a is cut; a missing optional softdep is a note.
        check(
            &SOFT,
            &["a"],
            "
try c
try d
load b
load a
try e
note: dependency cycle through a: its later mention was cut
note: optional missing (needed by a) is no module, built-in or alias of this kernel: skipped
",
        );
        // Asked for later as required: d and its dependency c become required, order unchanged.
        check(
            &SOFT,
            &["a", "d"],
            "
load c
load d
load b
load a
try e
note: dependency cycle through a: its later mention was cut
note: optional missing (needed by a) is no module, built-in or alias of this kernel: skipped
",
        );
        check(&SOFT, &["b", "b"], "load b");
    }

    #[test]
    fn missing_modules_name_module_and_tree() {
        let err = index(&DEBIAN_LIKE)
            .resolve(&["nvme".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"nvme\"") && err.contains(DIR), "{err}");
        let broken = Tree {
            dep: "a.ko: gone.ko\n",
            softdep: "",
            alias: "",
            builtin: "",
        };
        let err = index(&broken)
            .resolve(&["a".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"gone\"") && err.contains("needed by a"),
            "{err}"
        );
    }

    #[test]
    fn malformed_index_lines_are_named() {
        let check_parse = |tree: Tree, fragment: &str| {
            let err = parse(&tree).unwrap_err().to_string();
            assert!(err.contains(fragment), "{err}");
        };
        let empty = || Tree {
            dep: "",
            softdep: "",
            alias: "",
            builtin: "",
        };
        check_parse(
            Tree {
                dep: "\na.ko b.ko\n",
                ..empty()
            },
            "modules.dep line 2",
        );
        check_parse(
            Tree {
                softdep: "softdep\n",
                ..empty()
            },
            "modules.softdep line 1",
        );
        check_parse(
            Tree {
                alias: "alias x\n",
                ..empty()
            },
            "modules.alias line 1",
        );
    }

    fn write_tree(root: &Path, kver: &str, tree: &Tree) -> PathBuf {
        let dir = root.join(MODULES_DIR).join(kver);
        fs::create_dir_all(&dir).unwrap();
        for (name, text) in [
            (MODULES_DEP, tree.dep),
            (MODULES_SOFTDEP, tree.softdep),
            (MODULES_ALIAS, tree.alias),
            (MODULES_BUILTIN, tree.builtin),
        ] {
            fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn tree_without_depmod_says_what_to_run() {
        let root = tempfile::tempdir().unwrap();
        let kernel = KernelModules::new(root.path(), "1.0");
        fs::create_dir_all(kernel.dir()).unwrap();
        let err = kernel.resolve(&["a".into()]).unwrap_err().to_string();
        assert!(
            err.contains("no modules.dep in") && err.contains("depmod -b"),
            "{err}"
        );
        write_tree(root.path(), "1.0", &SOFT);
        fs::remove_file(kernel.dir().join(MODULES_ALIAS)).unwrap();
        let err = kernel.resolve(&["a".into()]).unwrap_err().to_string();
        assert!(err.contains("modules.alias"), "{err}");
    }

    #[test]
    fn module_files_are_decompressed() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let payload = b"\x7fELF module payload ".repeat(100);
        let xz = {
            let mut encoder = liblzma::write::XzEncoder::new(Vec::new(), 6);
            encoder.write_all(&payload).unwrap();
            encoder.finish().unwrap()
        };
        let gz = {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(&payload).unwrap();
            encoder.finish().unwrap()
        };
        let zst = ruzstd::encoding::compress_to_vec(
            &payload[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        for (name, bytes) in [
            ("a.ko", payload.clone()),
            ("b.ko.xz", xz),
            ("c.ko.gz", gz),
            ("d.ko.zst", zst),
        ] {
            let path = dir.path().join(name);
            fs::write(&path, bytes).unwrap();
            assert_eq!(read_module(&path).unwrap(), payload, "{name}");
        }
        let path = dir.path().join("e.ko.lz4");
        fs::write(&path, b"x").unwrap();
        let err = read_module(&path).unwrap_err().to_string();
        assert!(err.contains("e.ko.lz4") && err.contains(".ko.zst"), "{err}");
        let path = dir.path().join("f.ko.xz");
        fs::write(&path, b"not xz").unwrap();
        let err = read_module(&path).unwrap_err().to_string();
        assert!(err.contains("f.ko.xz"), "{err}");
    }

    fn real_tree() -> Option<KernelModules> {
        crate::real_kernel_tree()
    }

    #[test]
    fn real_debian_tree_loads_crc32c_before_ext4_and_erofs() {
        let Some(kernel) = real_tree() else { return };
        let requested: Vec<String> = ["virtio_blk", "ext4", "erofs", "overlay"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let resolution = kernel.resolve(&requested).unwrap();
        println!("{resolution}");
        let position = |name: &str| {
            resolution
                .modules
                .iter()
                .position(|m| m.name == name)
                .unwrap_or_else(|| panic!("{name} missing from {resolution}"))
        };
        let crc32c = position("crc32c_generic").min(position("crc32c_intel"));
        assert!(crc32c < position("ext4") && crc32c < position("libcrc32c"));
        assert!(position("jbd2") < position("ext4"));
        assert!(position("libcrc32c") < position("erofs"));
        let list = resolution.module_list(&kernel.installed_dir()).unwrap();
        let virtio_blk = list.entry("virtio_blk").unwrap();
        assert_eq!(virtio_blk.necessity, Necessity::OnDemand, "{list:?}");
        assert!(
            list.aliases
                .iter()
                .any(|a| a.module == "virtio_blk" && a.pattern == "virtio:d00000002v*"),
            "{:?}",
            list.aliases
        );
        assert_eq!(list.entry("erofs").unwrap().necessity, Necessity::Required);
        for (entry, module) in list.entries.iter().zip(&resolution.modules) {
            assert!(entry.path.to_string_lossy().ends_with(".ko"), "{entry:?}");
            let bytes = read_module(&resolution.dir.join(&module.relative_path)).unwrap();
            assert!(bytes.starts_with(b"\x7fELF"), "{}", module.name);
        }
    }
}
