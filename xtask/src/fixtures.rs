//! Fixtures: the pinned packages (kernels, busybox) the VM tests are made from. Debian packages
//! are fetched with `apt-get download`, RPM kernels from their distribution's mirror
//! (`rpm_fixture`); both are verified by sha256, unpacked into a cache keyed by that sha256 and
//! shared by every run and every concurrent test process (a lock, a temporary name, a rename).

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use xshell::{Shell, cmd};

// The fixture layer's front door: callers above it name the pins, the cache and the downloads here.
pub use crate::download::{Unavailable, sha256_file};
pub use crate::fixture_cache::{CACHE_ENV, cache_dir};
pub(crate) use crate::fixture_cache::{COMPLETE, RemoveDirOnDrop, single_dir_name};
pub use crate::pins::{
    DebKernel, DebPin, Fetched, FetchedFile, KERNELS_TOML, Kernel, KernelManifest, KernelPin,
    KernelSource, PACKAGES_TOML, PackageManifest, read_kernels, read_packages,
};

/// The kernel of `fixtures/kernels.toml` (under `root`) whose id is `id`, fetched and unpacked
/// ([`fetch_kernel`]).
pub fn fetch_kernel_by_id(sh: &Shell, root: &Path, id: &str) -> Result<Kernel> {
    let pins = read_kernels(root)?;
    let pin = pins
        .kernel
        .iter()
        .find(|k| k.id == id)
        .with_context(|| format!("no kernel {id} in {KERNELS_TOML}"))?;
    Ok(fetch_kernel(sh, pin)?)
}

/// Why a fixture was not fetched: the two outcomes a caller treats differently.
#[derive(Debug)]
pub enum FetchError {
    /// It cannot be fetched from this machine (no network, mirror down, file gone): the cells
    /// that need it are skipped, and it says nothing about the code.
    Unavailable(Unavailable),
    /// Anything else (a sha256 mismatch, a broken package, a full disk): a real failure.
    Failed(anyhow::Error),
}

impl FetchError {
    /// Sorts an error of the fetching code by its root cause, once, here at the fixture layer's
    /// door.
    fn classify(error: anyhow::Error) -> FetchError {
        match unavailable(&error) {
            Some(reason) => FetchError::Unavailable(reason.clone()),
            None => FetchError::Failed(error),
        }
    }
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Unavailable(reason) => write!(f, "{reason}"),
            FetchError::Failed(error) => write!(f, "{error:#}"),
        }
    }
}

impl std::error::Error for FetchError {}

/// Fetches and unpacks a kernel; runs depmod (neither format ships modules.dep). An RPM kernel
/// comes from its distribution's mirror (`INITOVERLAYFS_FEDORA_MIRROR`,
/// `INITOVERLAYFS_CENTOS_MIRROR` override the default host).
///
/// A kernel that cannot be fetched from this machine is [`FetchError::Unavailable`]: a cell
/// reports `skipped: <reason>`.
pub fn fetch_kernel(sh: &Shell, pin: &KernelPin) -> Result<Kernel, FetchError> {
    match &pin.source {
        KernelSource::Deb(deb) => fetch_deb_kernel(sh, pin, deb),
        KernelSource::Rpm(rpm) => {
            crate::rpm_fixture::fetch_rpm_kernel(sh, pin, &rpm.mirror.base_url(), &cache_dir())
        }
    }
    .map_err(FetchError::classify)
}

/// The reason a fixture could not be fetched from this machine (no network, mirror down, file
/// gone), when that is what `error` comes from; `None` for real failures.
pub fn unavailable(error: &anyhow::Error) -> Option<&Unavailable> {
    error.downcast_ref::<Unavailable>()
}

fn fetch_deb_kernel(sh: &Shell, pin: &KernelPin, deb: &DebKernel) -> Result<Kernel> {
    let fetched = fetch_deb(sh, &pin.deb(deb), true)?;
    let modules = fetched.root.join("lib/modules");
    let release = single_dir_name(&modules)?;
    let vmlinuz = fetched.root.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("{} has no boot/vmlinuz-{release}", fetched.package);
    }
    Ok(Kernel {
        fetched,
        release,
        vmlinuz,
    })
}

/// Package `id` of fixtures/packages.toml, fetched (or found in the cache).
pub fn fetch_package(sh: &Shell, root: &Path, id: &str) -> Result<Fetched> {
    let packages = read_packages(root)?;
    let pin = packages
        .package
        .iter()
        .find(|p| p.id == id)
        .with_context(|| format!("no {id} in {PACKAGES_TOML}"))?;
    fetch_deb(sh, pin, false)
}

/// Fetches, verifies and unpacks one pinned package into the cache (or finds it there).
pub fn fetch_deb(sh: &Shell, pin: &DebPin, is_kernel: bool) -> Result<Fetched> {
    let debs = cache_dir().join("debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let lock_path = debs.join(format!("{}.lock", pin.id));
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    // Serialises concurrent test processes filling the same entry; released when `lock` drops.
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;

    let cached = debs.join(&pin.sha256);
    if cached.join(COMPLETE).is_file() {
        return Ok(fetched(pin, &pin.version, &pin.sha256, true, cached));
    }

    let work = debs.join(format!("tmp-{}-{}", pin.id, std::process::id()));
    let _ = std::fs::remove_dir_all(&work); // a leftover of a killed run; absent is fine
    std::fs::create_dir_all(&work)?;
    // Removed however this ends: a refused download must not stay in the cache.
    let _work_guard = RemoveDirOnDrop(work.clone());
    let (version, pinned) = match apt_download(sh, &work, &pin.package, &pin.version) {
        Ok(()) => (pin.version.clone(), true),
        Err(error) => {
            let (package, version) = newest_in_series(sh, &pin.series, arch_suffix(&pin.package))
                .with_context(|| {
                format!("{error:#}; and no fallback in series {:?}", pin.series)
            })?;
            eprintln!(
                "\nWARNING: fixture {}: pinned {} {} is no longer offered by apt ({error:#});\n\
                 WARNING: using {package} {version} instead. Re-pin with `cargo xtask fixtures update`.\n",
                pin.id, pin.package, pin.version
            );
            apt_download(sh, &work, &package, &version)?;
            (version, false)
        }
    };
    let deb = single_deb(&work)?;
    let sha256 = sha256_file(&deb)?;
    if pinned && sha256 != pin.sha256 {
        bail!(
            "sha256 mismatch for {}: the manifest pins {}, the downloaded file has {sha256}; refusing to use it \
             (if Debian rebuilt the package on purpose, re-pin with `cargo xtask fixtures update`)",
            deb.display(),
            pin.sha256
        );
    }
    let tree = work.join("tree");
    crate::deb::unpack_deb(&deb, &tree)?;
    if is_kernel {
        let release = single_dir_name(&tree.join("lib/modules"))?;
        cmd!(sh, "depmod -b {tree} {release}")
            .quiet()
            .run()
            .context("building modules.dep with depmod")?;
    }
    std::fs::write(
        tree.join(COMPLETE),
        format!("{} {version} {sha256}\n", pin.package),
    )?;
    let cached = debs.join(&sha256);
    if !cached.join(COMPLETE).is_file() {
        let _ = std::fs::remove_dir_all(&cached); // an incomplete entry from a killed run
        std::fs::rename(&tree, &cached)
            .with_context(|| format!("moving {} to {}", tree.display(), cached.display()))?;
    }
    Ok(fetched(pin, &version, &sha256, pinned, cached))
}

fn fetched(pin: &DebPin, version: &str, sha256: &str, pinned: bool, root: PathBuf) -> Fetched {
    Fetched {
        id: pin.id.clone(),
        package: pin.package.clone(),
        version: version.to_owned(),
        sha256: sha256.to_owned(),
        pinned,
        root,
        files: Vec::new(),
    }
}

/// `apt-get download package=version` into `dir`; refreshes the package lists once when apt
/// does not know the package (a fresh machine may have none).
pub(crate) fn apt_download(sh: &Shell, dir: &Path, package: &str, version: &str) -> Result<()> {
    let _cd = sh.push_dir(dir);
    let spec = format!("{package}={version}");
    // As root apt drops to the _apt user, who cannot write to our cache: download as ourselves.
    let download = || {
        cmd!(sh, "apt-get download -q -o APT::Sandbox::User=root {spec}")
            .quiet()
            .ignore_stdout()
            .run()
    };
    if download().is_ok() {
        return Ok(());
    }
    eprintln!("fixtures: {spec} not found in the apt lists; running apt-get update");
    let _ = cmd!(sh, "apt-get update -q").quiet().ignore_stdout().run(); // best effort: not root is fine when lists are current
    download().with_context(|| format!("apt-get download {spec}"))
}

/// The newest `(package, version)` whose package name matches `series`; `arch` (`:arm64`, or
/// empty for the host's) qualifies the name, as apt prints it back.
fn newest_in_series(sh: &Shell, series: &str, arch: &str) -> Result<(String, String)> {
    let pattern =
        regex::Regex::new(series).with_context(|| format!("series {series:?} is not a regex"))?;
    let names = cmd!(sh, "apt-cache pkgnames").quiet().read()?;
    let mut candidates: Vec<(String, String)> = Vec::new();
    for name in names.lines().filter(|n| pattern.is_match(n)) {
        let name = format!("{name}{arch}");
        let madison = cmd!(sh, "apt-cache madison {name}").quiet().read()?;
        for line in madison.lines() {
            let fields: Vec<&str> = line.split('|').map(str::trim).collect();
            if let [package, version, ..] = fields[..] {
                candidates.push((package.to_owned(), version.to_owned()));
            }
        }
    }
    let mut best: Option<(String, String)> = None;
    for candidate in candidates {
        let newer = match &best {
            None => true,
            Some((_, best_version)) => {
                let v = &candidate.1;
                cmd!(sh, "dpkg --compare-versions {v} gt {best_version}")
                    .quiet()
                    .run()
                    .is_ok()
            }
        };
        if newer {
            best = Some(candidate);
        }
    }
    best.with_context(|| format!("apt offers no package matching {series:?}"))
}

fn single_deb(dir: &Path) -> Result<PathBuf> {
    std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", dir.display()))
}

/// `cargo xtask fixtures update`: re-pins every kernel and package to the newest version in its
/// series, downloading each to record its sha256.
pub fn update(sh: &Shell, root: &Path) -> Result<()> {
    let mut kernels = read_kernels(root)?;
    for kernel in &mut kernels.kernel {
        let pin = kernel.clone();
        match &mut kernel.source {
            KernelSource::Deb(deb) => {
                let (package, version, sha256) =
                    newest_pin(sh, &deb.series, arch_suffix(&deb.package))?;
                report_repin(&pin.id, &deb.package, &deb.version, &package, &version);
                (deb.package, deb.version, deb.sha256) = (package, version, sha256);
            }
            KernelSource::Rpm(rpm) => {
                let base_url = rpm.mirror.base_url();
                match crate::rpm_fixture::resolve_files(sh, &pin, &base_url, &cache_dir()) {
                    Ok(files) if files == rpm.files => {
                        eprintln!("fixtures: {}: pinned files are current", pin.id);
                    }
                    Ok(files) => {
                        for file in &files {
                            eprintln!("fixtures: {}: pinning {}", pin.id, file.path);
                        }
                        rpm.files = files;
                    }
                    // Kept as it is: re-pinning needs the mirror.
                    Err(error) => match unavailable(&error) {
                        Some(reason) => {
                            eprintln!("fixtures: {}: cannot re-pin here: {reason}", pin.id)
                        }
                        None => return Err(error.context(format!("re-pinning {}", pin.id))),
                    },
                }
            }
        }
    }
    let mut packages = read_packages(root)?;
    for pin in &mut packages.package {
        let (package, version, sha256) = newest_pin(sh, &pin.series, arch_suffix(&pin.package))?;
        report_repin(&pin.id, &pin.package, &pin.version, &package, &version);
        (pin.package, pin.version, pin.sha256) = (package, version, sha256);
    }
    write_manifest(&root.join(KERNELS_TOML), &kernels)?;
    write_manifest(&root.join(PACKAGES_TOML), &packages)
}

fn report_repin(id: &str, old_package: &str, old_version: &str, package: &str, version: &str) {
    if (old_package, old_version) == (package, version) {
        eprintln!("fixtures: {id}: {package} {version} is current");
    } else {
        eprintln!("fixtures: {id}: {old_package} {old_version} -> {package} {version}");
    }
}

/// `:arm64` of `busybox-static:arm64`; empty for a package of the host's architecture.
fn arch_suffix(package: &str) -> &str {
    package.find(':').map_or("", |at| &package[at..])
}

fn newest_pin(sh: &Shell, series: &str, arch: &str) -> Result<(String, String, String)> {
    let (package, version) = newest_in_series(sh, series, arch)?;
    let work = cache_dir().join(format!("update-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    apt_download(sh, &work, &package, &version)?;
    let sha256 = sha256_file(&single_deb(&work)?)?;
    let _ = std::fs::remove_dir_all(&work); // temporary download
    Ok((package, version, sha256))
}

/// Rewrites a manifest, keeping its leading comment block.
fn write_manifest<T: Serialize>(path: &Path, manifest: &T) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let header: String = old
        .lines()
        .take_while(|l| l.starts_with('#') || l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let body = toml::to_string(manifest).context("serialising the manifest")?;
    std::fs::write(path, format!("{header}{body}"))
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture layer sorts its errors once: an unreachable source anywhere in the chain of
    /// contexts is `Unavailable`, anything else `Failed`.
    #[test]
    fn fetch_errors_are_sorted_by_their_root_cause() {
        let unreachable = anyhow::Error::new(Unavailable {
            reason: "mirror down".into(),
        })
        .context("fetching kernel-core")
        .context("kernel fedora43-x86_64");
        match FetchError::classify(unreachable) {
            FetchError::Unavailable(reason) => assert_eq!(reason.reason, "mirror down"),
            FetchError::Failed(error) => panic!("a skip, not a failure: {error:#}"),
        }
        let broken = anyhow::anyhow!("sha256 mismatch").context("kernel debian12-6.12-amd64");
        match FetchError::classify(broken) {
            FetchError::Failed(error) => assert!(format!("{error:#}").contains("sha256")),
            FetchError::Unavailable(reason) => panic!("a failure, not a skip: {reason}"),
        }
    }

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn manifests_parse_and_pin_hashes() {
        let kernels = read_kernels(&root()).unwrap();
        let packages = read_packages(&root()).unwrap();
        assert!(!kernels.kernel.is_empty());
        let sha256s = kernels
            .kernel
            .iter()
            .flat_map(|k| match &k.source {
                KernelSource::Deb(deb) => vec![&deb.sha256],
                KernelSource::Rpm(rpm) => rpm.files.iter().map(|f| &f.sha256).collect(),
            })
            .chain(packages.package.iter().map(|p| &p.sha256));
        for sha256 in sha256s {
            assert!(
                sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()),
                "{sha256}"
            );
        }
        for kernel in &kernels.kernel {
            match &kernel.source {
                KernelSource::Deb(deb) => {
                    let series = regex::Regex::new(&deb.series).unwrap();
                    // A series names packages as apt-cache pkgnames does: without `:arch`.
                    let name = deb.package.split(':').next().unwrap_or_default();
                    assert!(
                        series.is_match(name),
                        "{} is outside its own series",
                        kernel.id
                    );
                }
                KernelSource::Rpm(rpm) => {
                    assert!(
                        !rpm.packages.is_empty() && !rpm.repos.is_empty(),
                        "{}",
                        kernel.id
                    );
                    assert!(
                        rpm.files.is_empty() || rpm.files.len() == rpm.packages.len(),
                        "{}: pin one file per package, or none",
                        kernel.id
                    );
                }
            }
        }
        // Every format and distribution the matrix names (BRIEF §5).
        for distro in [
            "debian-12",
            "fedora-",
            "centos-stream-9",
            "centos-stream-10",
        ] {
            for arch in ["x86_64", "aarch64"] {
                assert!(
                    kernels
                        .kernel
                        .iter()
                        .any(|k| k.distro.starts_with(distro) && k.arch == arch),
                    "no {distro} kernel for {arch}"
                );
            }
        }
    }

    /// `fixtures update` rewrites the manifest through serde: both formats must survive it.
    #[test]
    fn the_kernel_manifest_round_trips() {
        let kernels = read_kernels(&root()).unwrap();
        let text = toml::to_string(&kernels).unwrap();
        let again: KernelManifest = toml::from_str(&text).unwrap();
        assert_eq!(again.kernel, kernels.kernel, "{text}");
        assert!(text.contains("format = \"rpm\"") && text.contains("format = \"deb\""));
    }

    #[test]
    fn hashing_matches_sha256sum() {
        let dir = std::env::temp_dir().join(format!("xtask-sha-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("abc");
        std::fs::write(&file, b"abc").unwrap();
        assert_eq!(
            sha256_file(&file).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
