//! The pinned fixtures as `fixtures/kernels.toml` and `fixtures/packages.toml` name them (Debian
//! packages by version and sha256, RPM kernels by mirror, repositories and files), and what
//! fetching one gives: plain data of the spec layer. `fixtures` fetches them; `cells` expands
//! the matrix over the kernel pins.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

pub const KERNELS_TOML: &str = "fixtures/kernels.toml";
pub const PACKAGES_TOML: &str = "fixtures/packages.toml";

/// A Debian package pinned by version and file hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebPin {
    pub id: String,
    pub package: String,
    pub version: String,
    pub sha256: String,
    /// A regular expression over package names: the fallback when the pin has left the archive.
    pub series: String,
}

/// A kernel fixture: a Debian `linux-image-*` package or RPM kernel packages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelPin {
    pub id: String,
    /// QEMU's name for the architecture: `x86_64`, `aarch64` (also RPM's).
    pub arch: String,
    pub distro: String,
    /// `format = "deb"` or `format = "rpm"` and that format's fields.
    #[serde(flatten)]
    pub source: KernelSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "lowercase")]
pub enum KernelSource {
    Deb(DebKernel),
    Rpm(RpmKernel),
}

/// A kernel from a pinned Debian package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebKernel {
    pub package: String,
    pub version: String,
    pub sha256: String,
    pub series: String,
}

impl KernelPin {
    /// The pin of a Debian kernel's one package.
    pub fn deb(&self, deb: &DebKernel) -> DebPin {
        DebPin {
            id: self.id.clone(),
            package: deb.package.clone(),
            version: deb.version.clone(),
            sha256: deb.sha256.clone(),
            series: deb.series.clone(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KernelManifest {
    #[serde(default)]
    pub kernel: Vec<KernelPin>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PackageManifest {
    #[serde(default)]
    pub package: Vec<DebPin>,
}

pub fn read_kernels(root: &Path) -> Result<KernelManifest> {
    read_toml(&root.join(KERNELS_TOML))
}

pub fn read_packages(root: &Path) -> Result<PackageManifest> {
    read_toml(&root.join(PACKAGES_TOML))
}

fn read_toml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// What a run actually used: the pin, or the fallback version when the pin was gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fetched {
    pub id: String,
    pub package: String,
    pub version: String,
    pub sha256: String,
    /// False when the pinned version was not offered and a newer one of the series was used.
    pub pinned: bool,
    /// The unpacked package.
    pub root: PathBuf,
    /// The files downloaded for an RPM kernel (a Debian fixture is one package: the fields
    /// above). For an RPM kernel `sha256` is the cache key: the sha256 of these files'
    /// `sha256sum` lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FetchedFile>,
}

/// One downloaded file of a fixture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FetchedFile {
    pub url: String,
    pub sha256: String,
}

/// An unpacked kernel package, ready to boot.
#[derive(Debug, Clone, Serialize)]
pub struct Kernel {
    pub fetched: Fetched,
    /// The release string, `uname -r` in the guest (`6.12.95+deb12-amd64`).
    pub release: String,
    pub vmlinuz: PathBuf,
}

impl Kernel {
    /// The modules tree root as builder wants it: the directory holding `lib/modules/<release>`.
    pub fn modules_root(&self) -> &Path {
        &self.fetched.root
    }

    /// A device tree the package ships (`broadcom/bcm2837-rpi-3-b.dtb`), where Debian puts
    /// them: `usr/lib/linux-image-<release>/`.
    pub fn dtb(&self, name: &str) -> Result<PathBuf> {
        let path = self
            .fetched
            .root
            .join("usr/lib")
            .join(format!("linux-image-{}", self.release))
            .join(name);
        if !path.is_file() {
            bail!(
                "{} ships no device tree {name} (looked for {})",
                self.fetched.package,
                path.display()
            );
        }
        Ok(path)
    }
}

/// Which distribution's download host a pin's paths are below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mirror {
    Fedora,
    CentosStream,
}

impl Mirror {
    /// The variable that replaces the default base URL (a local or nearer mirror).
    pub fn env(self) -> &'static str {
        match self {
            Mirror::Fedora => "INITOVERLAYFS_FEDORA_MIRROR",
            Mirror::CentosStream => "INITOVERLAYFS_CENTOS_MIRROR",
        }
    }

    /// The distribution's own download host. Fedora's master (not the redirector, which could
    /// send repomd.xml and the primary file it names to two mirrors at different syncs).
    pub fn default_url(self) -> &'static str {
        match self {
            Mirror::Fedora => "https://dl.fedoraproject.org/pub/fedora/linux",
            Mirror::CentosStream => "https://mirror.stream.centos.org",
        }
    }

    pub fn base_url(self) -> String {
        std::env::var(self.env())
            .ok()
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| self.default_url().to_owned())
    }
}

/// A kernel from RPM packages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpmKernel {
    pub mirror: Mirror,
    /// Repositories below the mirror's base URL (holding `repodata/repomd.xml`); the newest
    /// build among them wins.
    pub repos: Vec<String>,
    /// Packages of one build unpacked together; the first holds `vmlinuz`.
    pub packages: Vec<String>,
    /// The pinned files, one per package; empty: resolved from the repository metadata.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<RpmFile>,
}

/// A pinned package file: its path below the mirror's base URL and its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpmFile {
    pub path: String,
    pub sha256: String,
}
