//! Kernel fixtures from RPM distributions (Fedora, CentOS Stream): the kernel-core and
//! kernel-modules-core packages of one build, downloaded from the distribution's mirror,
//! verified by sha256, unpacked in Rust (`crate::rpm`), given a modules.dep by depmod, and
//! cached like the .deb fixtures (a lock, a scratch directory, a rename, a COMPLETE marker).
//!
//! A pin either names its files (`files`: path below the mirror and sha256) or leaves them to
//! the repository metadata: the newest build of the first package in `repos`, its sha256 taken
//! from the metadata (verified against repomd.xml's sha256 of the primary file), recorded as
//! not pinned. A pinned file that has left the mirror (Fedora's updates repository keeps only
//! the newest kernel) falls back to the metadata, with a warning, as a vanished .deb pin does.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::download::{Unavailable, curl, verify_sha256};
use crate::fixture_cache::{COMPLETE, RemoveDirOnDrop, single_dir_name};
use crate::pins::{
    Fetched, FetchedFile, KERNELS_TOML, Kernel, KernelPin, KernelSource, RpmFile, RpmKernel,
};
use crate::rpm_repo::{self, RepoPackage};

/// Bound on a decompressed primary.xml (Fedora's is about 150 MB).
const MAX_PRIMARY: u64 = 2 << 30;

/// Fetches the RPM kernel `pin` from the mirror at `base_url` into the cache at `cache`
/// (`fixtures::fetch_kernel` passes the defaults; tests pass their own).
pub fn fetch_rpm_kernel(
    sh: &Shell,
    pin: &KernelPin,
    base_url: &str,
    cache: &Path,
) -> Result<Kernel> {
    let KernelSource::Rpm(source) = &pin.source else {
        bail!("kernel {} is not an RPM kernel", pin.id);
    };
    if source.packages.is_empty() {
        bail!("kernel {}: `packages` names no package", pin.id);
    }
    let base_url = base_url.trim_end_matches('/');
    let rpms = cache.join("rpms");
    std::fs::create_dir_all(&rpms).with_context(|| format!("creating {}", rpms.display()))?;
    let lock_path = rpms.join(format!("{}.lock", pin.id));
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    // Serialises concurrent test processes filling the same entry; released when `lock` drops.
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;

    let fetch = Fetch {
        sh,
        pin,
        source,
        base_url,
        rpms: &rpms,
    };
    if source.files.is_empty() {
        fetch.unpinned()
    } else {
        fetch.pinned()
    }
}

/// The newest build of an RPM kernel, as pinned files (for `cargo xtask fixtures update`).
pub fn resolve_files(
    sh: &Shell,
    pin: &KernelPin,
    base_url: &str,
    cache: &Path,
) -> Result<Vec<RpmFile>> {
    let KernelSource::Rpm(source) = &pin.source else {
        bail!("kernel {} is not an RPM kernel", pin.id);
    };
    let rpms = cache.join("rpms");
    std::fs::create_dir_all(&rpms).with_context(|| format!("creating {}", rpms.display()))?;
    Fetch {
        sh,
        pin,
        source,
        base_url: base_url.trim_end_matches('/'),
        rpms: &rpms,
    }
    .resolve()
}

struct Fetch<'a> {
    sh: &'a Shell,
    pin: &'a KernelPin,
    source: &'a RpmKernel,
    base_url: &'a str,
    rpms: &'a Path,
}

impl Fetch<'_> {
    /// An unpinned kernel: the newest build in the repository metadata.
    fn unpinned(&self) -> Result<Kernel> {
        let files = match self.resolve() {
            Ok(files) => files,
            // Offline with the build resolved last time in the cache: use it rather than skip.
            Err(error) if error.downcast_ref::<Unavailable>().is_some() => {
                let Some(files) = self.last_resolved() else {
                    return Err(error);
                };
                eprintln!(
                    "\nWARNING: kernel {}: cannot read the repository metadata ({error:#});\n\
                     WARNING: using the build resolved last time, from the cache.\n",
                    self.pin.id
                );
                files
            }
            Err(error) => return Err(error),
        };
        let kernel = self.fill(&files, false)?;
        self.remember(&files)?;
        Ok(kernel)
    }

    /// A pinned kernel: its files, or the newest build when one is gone from the mirror.
    fn pinned(&self) -> Result<Kernel> {
        let pinned = &self.source.files;
        if pinned.len() != self.source.packages.len() {
            bail!(
                "kernel {}: {} pinned files for {} packages; pin one file per package",
                self.pin.id,
                pinned.len(),
                self.source.packages.len()
            );
        }
        match self.fill(pinned, true) {
            Err(error) if error.downcast_ref::<Unavailable>().is_some() => {
                let files = self.resolve().with_context(|| {
                    format!("{error:#}; and no fallback from the repository metadata")
                })?;
                eprintln!(
                    "\nWARNING: kernel {}: a pinned file is not offered ({error:#});\n\
                     WARNING: using the newest build in the repository metadata instead. \
                     Re-pin with `cargo xtask fixtures update`.\n",
                    self.pin.id
                );
                self.fill(&files, false)
            }
            other => other,
        }
    }

    /// The files of the newest build of the first package, and the same build of the others.
    fn resolve(&self) -> Result<Vec<RpmFile>> {
        let first = &self.source.packages[0];
        let mut best: Option<(&str, RepoPackage, Vec<RepoPackage>)> = None;
        for repo in &self.source.repos {
            let listed = self.repo_packages(repo)?;
            let newest = listed
                .iter()
                .filter(|p| &p.name == first)
                .max_by(|a, b| rpm_repo::compare_evr(a, b));
            if let Some(newest) = newest
                && best.as_ref().is_none_or(|(_, b, _)| {
                    rpm_repo::compare_evr(newest, b) == std::cmp::Ordering::Greater
                })
            {
                best = Some((repo, newest.clone(), listed));
            }
        }
        let (repo, core, listed) = best.with_context(|| {
            format!(
                "kernel {}: no {first} for {} in {:?} under {}",
                self.pin.id, self.pin.arch, self.source.repos, self.base_url
            )
        })?;
        self.source
            .packages
            .iter()
            .map(|name| {
                let package = listed
                    .iter()
                    .find(|p| &p.name == name && p.same_build(&core))
                    .with_context(|| {
                        format!(
                            "kernel {}: {repo} has {first} {} but no {name} of the same build",
                            self.pin.id,
                            core.evr()
                        )
                    })?;
                Ok(RpmFile {
                    path: format!("{repo}/{}", package.file.href),
                    sha256: package.file.sha256.clone(),
                })
            })
            .collect()
    }

    /// The pin's packages listed in `repo`'s metadata. repomd.xml is read every time (it is
    /// what says which build is newest); the primary file it names is cached by its sha256.
    fn repo_packages(&self, repo: &str) -> Result<Vec<RepoPackage>> {
        let repo_url = format!("{}/{repo}", self.base_url);
        let repomd_url = format!("{repo_url}/repodata/repomd.xml");
        let repomd_path =
            self.rpms
                .join(format!("repomd-{}-{}.xml", self.pin.id, std::process::id()));
        curl(self.sh, &repomd_url, &repomd_path)?;
        let repomd = std::fs::read_to_string(&repomd_path)
            .with_context(|| format!("reading {}", repomd_path.display()));
        let _ = std::fs::remove_file(&repomd_path); // a scratch copy
        let primary = rpm_repo::primary_location(&repomd?)
            .with_context(|| format!("reading {repomd_url}"))?;

        let metadata = self.rpms.join("repodata");
        std::fs::create_dir_all(&metadata)
            .with_context(|| format!("creating {}", metadata.display()))?;
        let cached = metadata.join(primary.sha256.to_ascii_lowercase());
        let primary_url = format!("{repo_url}/{}", primary.href);
        if !cached.is_file() {
            let partial = metadata.join(format!("tmp-{}", std::process::id()));
            curl(self.sh, &primary_url, &partial)?;
            let verified = verify_sha256(&partial, &primary_url, &primary.sha256, "repomd.xml");
            if let Err(error) = verified {
                let _ = std::fs::remove_file(&partial); // refused: never cached
                return Err(error);
            }
            std::fs::rename(&partial, &cached)
                .with_context(|| format!("moving {} to {}", partial.display(), cached.display()))?;
        }
        let bytes =
            std::fs::read(&cached).with_context(|| format!("reading {}", cached.display()))?;
        let xml = if bytes.starts_with(b"<") {
            bytes
        } else {
            builder::initramfs::decompress_stream(&bytes, MAX_PRIMARY)
                .with_context(|| format!("decompressing {primary_url}"))?
        };
        let xml = String::from_utf8(xml).with_context(|| format!("{primary_url} is not UTF-8"))?;
        rpm_repo::packages(&xml, &self.source.packages, &self.pin.arch)
            .with_context(|| format!("reading {primary_url}"))
    }

    /// Where the files of the build last resolved for this pin are recorded.
    fn resolved_path(&self) -> PathBuf {
        self.rpms.join(format!("{}.resolved", self.pin.id))
    }

    fn remember(&self, files: &[RpmFile]) -> Result<()> {
        let path = self.resolved_path();
        let partial = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&partial, manifest(files))
            .and_then(|()| std::fs::rename(&partial, &path))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The files last resolved, if their unpacked tree is still in the cache.
    fn last_resolved(&self) -> Option<Vec<RpmFile>> {
        let text = std::fs::read_to_string(self.resolved_path()).ok()?;
        let files: Vec<RpmFile> = text
            .lines()
            .map(|line| {
                let (sha256, path) = line.split_once("  ")?;
                Some(RpmFile {
                    path: path.to_owned(),
                    sha256: sha256.to_owned(),
                })
            })
            .collect::<Option<_>>()?;
        let cached = self.rpms.join(cache_key(&files)).join(COMPLETE);
        (!files.is_empty() && cached.is_file()).then_some(files)
    }

    /// Downloads, verifies and unpacks `files` into the cache (or finds them there).
    fn fill(&self, files: &[RpmFile], pinned: bool) -> Result<Kernel> {
        let key = cache_key(files);
        let cached = self.rpms.join(&key);
        if cached.join(COMPLETE).is_file() {
            return self.kernel(files, pinned, &key, cached);
        }

        let work = self
            .rpms
            .join(format!("tmp-{}-{}", self.pin.id, std::process::id()));
        let _ = std::fs::remove_dir_all(&work); // a leftover of a killed run; absent is fine
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        // Removed however this ends: a refused download must not stay in the cache.
        let _work_guard = RemoveDirOnDrop(work.clone());
        let tree = work.join("tree");
        let mut version = String::new();
        for file in files {
            let url = format!("{}/{}", self.base_url, file.path);
            let name = file.path.rsplit('/').next().unwrap_or("package.rpm");
            let rpm = work.join(name);
            curl(self.sh, &url, &rpm)?;
            let source = if pinned {
                KERNELS_TOML
            } else {
                "the repository metadata"
            };
            verify_sha256(&rpm, &url, &file.sha256, source)?;
            let package = crate::rpm::unpack_rpm(&rpm, &tree)?;
            if package.arch != self.pin.arch && package.arch != "noarch" {
                bail!(
                    "{url} is built for {}, kernel {} is {}",
                    package.arch,
                    self.pin.id,
                    self.pin.arch
                );
            }
            if version.is_empty() {
                version = format!("{}-{}", package.version, package.release);
            }
            std::fs::remove_file(&rpm).with_context(|| format!("removing {}", rpm.display()))?;
        }
        let release = modules_release(&tree)?;
        // Fedora's %posttrans builds modules.dep on the installed system; the package has none.
        cmd!(self.sh, "depmod -b {tree} {release}")
            .quiet()
            .run()
            .context("building modules.dep with depmod")?;
        let mut complete = File::create(tree.join(COMPLETE))?;
        write!(complete, "{version}\n{}", manifest(files))?;
        drop(complete);
        if !cached.join(COMPLETE).is_file() {
            let _ = std::fs::remove_dir_all(&cached); // an incomplete entry from a killed run
            std::fs::rename(&tree, &cached)
                .with_context(|| format!("moving {} to {}", tree.display(), cached.display()))?;
        }
        self.kernel(files, pinned, &key, cached)
    }

    fn kernel(&self, files: &[RpmFile], pinned: bool, key: &str, root: PathBuf) -> Result<Kernel> {
        let marker = root.join(COMPLETE);
        let complete = std::fs::read_to_string(&marker)
            .with_context(|| format!("reading {}", marker.display()))?;
        let version = complete.lines().next().unwrap_or_default().to_owned();
        let release = modules_release(&root)?;
        let vmlinuz = root.join("lib/modules").join(&release).join("vmlinuz");
        if !vmlinuz.is_file() {
            bail!(
                "kernel {}: {} ships no lib/modules/{release}/vmlinuz",
                self.pin.id,
                self.source.packages[0]
            );
        }
        Ok(Kernel {
            fetched: Fetched {
                id: self.pin.id.clone(),
                package: self.source.packages.join("+"),
                version,
                sha256: key.to_owned(),
                pinned,
                root,
                files: files
                    .iter()
                    .map(|f| FetchedFile {
                        url: format!("{}/{}", self.base_url, f.path),
                        sha256: f.sha256.clone(),
                    })
                    .collect(),
            },
            release,
            vmlinuz,
        })
    }
}

/// The files as `sha256sum` lines.
fn manifest(files: &[RpmFile]) -> String {
    files
        .iter()
        .map(|f| format!("{}  {}\n", f.sha256.to_ascii_lowercase(), f.path))
        .collect()
}

/// The cache key of a set of files: the sha256 of their `sha256sum` lines.
fn cache_key(files: &[RpmFile]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        manifest(files).as_bytes(),
    ))
}

/// The one kernel release under the tree's modules directory. Packages that put the modules in
/// `/usr/lib/modules` get a `lib/modules` symlink, so the tree looks like a Debian one (the
/// harness and builder's `--modules-root` want `lib/modules/<release>`).
fn modules_release(tree: &Path) -> Result<String> {
    let lib_modules = tree.join("lib/modules");
    if std::fs::symlink_metadata(&lib_modules).is_err() && tree.join("usr/lib/modules").is_dir() {
        std::fs::create_dir_all(tree.join("lib"))?;
        std::os::unix::fs::symlink("../usr/lib/modules", &lib_modules)
            .with_context(|| format!("linking {}", lib_modules.display()))?;
    }
    single_dir_name(&lib_modules)
}
