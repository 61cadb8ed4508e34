//! `cargo xtask dist`: the Debian package `target/dist/initoverlayfs_<version>_<arch>.deb`
//! (amd64, or arm64 cross-built), reproducibly, and beside it the RPM ([`rpm`]) from the same
//! programs. It holds the builder as `/usr/sbin/initoverlayfs`, the static storage-init at
//! builder's default path, man pages and shell completions made from builder's clap
//! definitions, and the documentation Debian asks for (copyright, changelog). Every timestamp
//! is `SOURCE_DATE_EPOCH` (default: the last commit's time), every owner root, and dpkg-deb
//! writes the entries sorted, so two builds of one commit give the same bytes.
//!
//! It ships Debian's kernel and initramfs hooks as conffiles (`builder::hooks::packaged`), and
//! maintainer scripts ([`MAINTAINER_SCRIPTS`]) that convert every kernel when the package is
//! configured, undo that when it is removed, and forget the recorded install options when it
//! is purged, so `apt purge` leaves /boot and /etc as they were.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::static_build;

pub mod crates;
pub mod rpm;

/// The package's name, and the name the builder is installed and documented under.
pub const PACKAGE: &str = "initoverlayfs";
/// Where `cargo xtask dist` writes the package, under the project root.
pub const DIST_DIR: &str = "target/dist";
/// A Debian architecture the package is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arch {
    /// x86_64, the host's: built natively.
    #[default]
    Amd64,
    /// aarch64: cross-built with the toolchain of the aarch64 VM cells ([`static_build`]).
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// Debian's name, in the control file and the package's file name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    pub fn parse(name: &str) -> Result<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .with_context(|| format!("--arch {name:?}: expected amd64 or arm64"))
    }

    /// The package architecture of a machine as static_build (and QEMU) spell it.
    pub fn for_machine(machine: &str) -> Result<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.machine() == machine)
            .with_context(|| format!("no Debian package for {machine}: amd64 and arm64 only"))
    }

    /// The machine's name as static_build (and QEMU) spell it.
    fn machine(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }

    /// The binutils that read this architecture's ELF files (binutils-aarch64-linux-gnu comes
    /// with the cross gcc).
    fn strip(self) -> &'static str {
        match self {
            Arch::Amd64 => "strip",
            Arch::Arm64 => "aarch64-linux-gnu-strip",
        }
    }
}
/// The builder in the package (the crate and `cargo run -p builder` keep the name `builder`).
pub const PROGRAM_PATH: &str = "usr/sbin/initoverlayfs";
/// storage-init in the package: `builder install`'s default (`install::DEFAULT_STORAGE_INIT`).
pub const STORAGE_INIT_PATH: &str = "usr/lib/initoverlayfs/storage-init";
/// The reproducible-builds timestamp (reproducible-builds.org's SOURCE_DATE_EPOCH).
pub const EPOCH_ENV: &str = "SOURCE_DATE_EPOCH";
/// The man pages' section: system administration, as the program runs as root.
const MAN_SECTION: &str = "8";
const DOC_DIR: &str = "usr/share/doc/initoverlayfs";
/// Where each shell looks for a completion shipped by a package.
const BASH_COMPLETION: &str = "usr/share/bash-completion/completions/initoverlayfs";
const ZSH_COMPLETION: &str = "usr/share/zsh/vendor-completions/_initoverlayfs";
const FISH_COMPLETION: &str = "usr/share/fish/vendor_completions.d/initoverlayfs.fish";
const LINTIAN_OVERRIDES: &str = "usr/share/lintian/overrides/initoverlayfs";

/// The host tools a package build runs, each with its Debian package (dpkg, gzip and coreutils
/// are Essential: on every Debian system).
pub const HOST_TOOLS: [(&str, &str); 5] = [
    ("dpkg-deb", "dpkg"),
    ("dpkg-shlibdeps", "dpkg-dev"),
    ("strip", "binutils"),
    ("gzip", "gzip"),
    ("md5sum", "coreutils"),
];
/// The package's checker, which its tests run.
pub const LINTIAN: (&str, &str) = ("lintian", "lintian");

/// What builder needs on the machine beyond its libraries: `mkfs.erofs` writes every image.
const DEPENDS: &str = "erofs-utils";
/// The live install converts a dracut initramfs only (initramfs-tools' cannot leave the
/// overlay) and `--dracut` runs dracut; Recommends rather than Depends because on Debian dracut
/// replaces initramfs-tools, which a machine that only builds images (`image`, `--root`)
/// should not be made to do.
const RECOMMENDS: &str = "dracut";
/// `builder uki`: the systemd EFI stub, and sbsign for a signed UKI.
const SUGGESTS: &str = "systemd-boot-efi, sbsigntool";

/// Lintian's findings that are the design, each with why (the file is shipped, so the reasons
/// travel with the package).
const LINTIAN_OVERRIDES_TEXT: &str = "\
# storage-init is the PID 1 of the mini initramfs, which holds no dynamic loader and no
# libraries: it must be static.
initoverlayfs: statically-linked-binary [usr/lib/initoverlayfs/storage-init]
";

/// Where the packages put storage-init's service-mode units.
const UNITS_DIR: &str = "usr/lib/initoverlayfs/units";
/// The upstream command's name, a link to the program (`builder::cli::UPSTREAM_INSTALL`).
const UPSTREAM_INSTALL_PATH: &str = "usr/sbin/initoverlayfs-install";

/// The maintainer scripts, by name in DEBIAN/. None of them fails for a kernel that cannot be
/// converted: that kernel keeps its classic initramfs and the reason is printed, and a failed
/// configure would leave every later apt run stuck on this package.
pub const MAINTAINER_SCRIPTS: [(&str, &str); 3] = [
    (
        "postinst",
        "#!/bin/sh
# Every installed kernel boots through initoverlayfs, converted with the options in
# /etc/initoverlayfs/install.conf; on upgrade again, so each mini initramfs gets the new
# storage-init.
set -e
if [ \"$1\" = configure ]; then
    initoverlayfs install --all || echo \"initoverlayfs: the kernels named above boot with their classic initramfs; fix the cause, then run: initoverlayfs install --all\" >&2
fi
exit 0
",
    ),
    (
        "prerm",
        "#!/bin/sh
# Removed (not upgraded): every kernel boots its classic initramfs again, and the fallback
# entries and images go.
set -e
if [ \"$1\" = remove ]; then
    initoverlayfs uninstall || echo \"initoverlayfs: some kernels still boot through initoverlayfs (see above); their classic initramfs is kept beside them\" >&2
fi
exit 0
",
    ),
    (
        "postrm",
        "#!/bin/sh
# Purged: the install options go too (dpkg removes the hooks, which are conffiles).
set -e
if [ \"$1\" = purge ]; then
    rm -f /etc/initoverlayfs/install.conf
    rmdir /etc/initoverlayfs 2>/dev/null || true
fi
exit 0
",
    ),
];

/// The package's description: a synopsis line, then the long text (wrapped when rendered).
const SYNOPSIS: &str = "faster early boot: the initramfs as an EROFS image read on demand";
const DESCRIPTION: &[&str] = &[
    "initoverlayfs splits early boot in two. The kernel unpacks only a mini initramfs: \
     storage-init, a static PID 1, with the storage drivers and a config. storage-init finds \
     /boot, mounts an EROFS image of the full initramfs read-only under a tmpfs overlay and \
     switches root into it, so boot reads only the parts of the initramfs it uses.",
    "This package holds the builder, /usr/sbin/initoverlayfs, which turns a dracut initramfs \
     into the image and the mini initramfs and installs them with hooks that redo it after \
     every kernel or initramfs update, and the static storage-init it ships in each mini \
     initramfs.",
];

/// The MIT licence's text, for the copyright file (Debian's common licences do not have it).
const MIT_TEXT: &str = "\
Permission is hereby granted, free of charge, to any person obtaining a copy of this software \
and associated documentation files (the \"Software\"), to deal in the Software without \
restriction, including without limitation the rights to use, copy, modify, merge, publish, \
distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the \
Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or \
substantial portions of the Software.

THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, \
INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR \
PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR \
ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, \
ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE \
SOFTWARE.";
const APACHE_TEXT: &str = "\
On Debian systems, the full text of the Apache License, Version 2.0 can be found in \
/usr/share/common-licenses/Apache-2.0.";
/// The licences the copyright file can state, by SPDX identifier.
const LICENSES: &[(&str, &str)] = &[("MIT", MIT_TEXT), ("Apache-2.0", APACHE_TEXT)];
/// The machine-readable copyright format (DEP-5) the copyright file follows.
const COPYRIGHT_FORMAT: &str = "https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/";

/// The package's facts from the workspace's Cargo.toml (`[workspace.package]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub version: String,
    /// `Name <address>`: the first of the workspace's authors.
    pub maintainer: String,
    /// An SPDX expression such as `MIT OR Apache-2.0`.
    pub license: String,
    /// The crates the programs are linked with, which the copyright file names.
    pub bundled: Vec<crates::BundledCrate>,
}

impl Metadata {
    /// Reads `[workspace.package]` of `<root>/Cargo.toml`, and the crates the programs link
    /// from Cargo.lock.
    pub fn read(root: &Path) -> Result<Metadata> {
        let path = root.join("Cargo.toml");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut meta = Metadata::parse(&text)
            .with_context(|| format!("{}: [workspace.package]", path.display()))?;
        meta.bundled = crates::bundled_crates(root)?;
        Ok(meta)
    }

    fn parse(manifest: &str) -> Result<Metadata> {
        let value: toml::Value = toml::from_str(manifest)?;
        let package = value
            .get("workspace")
            .and_then(|w| w.get("package"))
            .context("no [workspace.package] table")?;
        let field = |name: &str| {
            package
                .get(name)
                .and_then(toml::Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("no {name} = \"…\": the package takes its {name} from it"))
        };
        let maintainer = package
            .get("authors")
            .and_then(toml::Value::as_array)
            .and_then(|a| a.first())
            .and_then(toml::Value::as_str)
            .filter(|a| a.contains('<') && a.ends_with('>'))
            .context(
                "no authors = [\"Name <address>\"]: the package's Maintainer is the first author",
            )?
            .to_owned();
        let version = field("version")?;
        // Debian versions start with a digit and hold no `_`, which separates the file name's
        // fields.
        if !version.starts_with(|c: char| c.is_ascii_digit())
            || !version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | '-'))
        {
            bail!("version {version:?} is not a Debian version: digits, letters and .+~- only");
        }
        Ok(Metadata {
            version,
            maintainer,
            license: field("license")?,
            bundled: Vec::new(),
        })
    }

    /// `initoverlayfs_<version>_<arch>.deb`, Debian's file name for the package.
    pub fn file_name(&self, arch: Arch) -> String {
        format!("{PACKAGE}_{}_{}.deb", self.version, arch.name())
    }
}

/// `SOURCE_DATE_EPOCH` when set, else the time of the last commit, so a package built from a
/// commit carries that commit's date wherever it is built.
pub fn source_date_epoch(sh: &Shell, root: &Path) -> Result<u64> {
    if let Ok(value) = std::env::var(EPOCH_ENV) {
        return value.trim().parse().with_context(|| {
            format!("{EPOCH_ENV}={value:?}: expected a whole number of seconds since 1970")
        });
    }
    let _dir = sh.push_dir(root);
    let time = cmd!(sh, "git log -1 --format=%ct")
        .quiet()
        .ignore_stderr()
        .read()
        .map_err(|_| {
            anyhow::anyhow!(
                "{EPOCH_ENV} is not set and {} has no git history to take the last commit's \
                 time from: set {EPOCH_ENV}",
                root.display()
            )
        })?;
    time.trim()
        .parse()
        .with_context(|| format!("`git log -1 --format=%ct` printed {time:?}"))
}

/// The two programs the package ships, as built.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// What they run on.
    pub arch: Arch,
    /// builder, release build, linked against glibc.
    pub builder: PathBuf,
    /// storage-init, static (musl where its toolchain is installed, else glibc).
    pub storage_init: PathBuf,
}

/// Builds storage-init with [`static_build`] (the build the VM cells boot) and builder in
/// release mode, for `arch`. builder stays a normal glibc program: it runs on the installed
/// system, where Debian's libraries are, and [`library_depends`] names them.
pub fn build_binaries(sh: &Shell, root: &Path, arch: Arch) -> Result<Binaries> {
    let storage_init = static_build::build_for_arch(sh, root, arch.machine())?;
    if arch == Arch::Arm64 {
        return Ok(Binaries {
            arch,
            builder: static_build::build_builder_aarch64(sh, root)?,
            storage_init,
        });
    }
    // The README's build: a normal glibc program.
    Ok(Binaries {
        arch,
        builder: crate::dogfood::builder_binary(sh, root)?,
        storage_init,
    })
}

/// The `Depends` entries for the shared libraries `binary` links, with the minimum versions its
/// symbols need, as `dpkg-shlibdeps` computes them from the host's packages. `work` is laid out
/// as a Debian source tree: `binary` staged under `work/debian/initoverlayfs/`, and a
/// `work/debian/control` naming the package, which dpkg-shlibdeps reads.
fn library_depends(sh: &Shell, binary: &Path, work: &Path) -> Result<String> {
    fs::write(
        work.join("debian/control"),
        format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n"),
    )?;
    let _dir = sh.push_dir(work);
    let output = cmd!(sh, "dpkg-shlibdeps -O {binary}")
        .quiet()
        .read()
        .with_context(|| {
            format!(
                "dpkg-shlibdeps {}: install dpkg-dev (cargo xtask provision installs it)",
                binary.display()
            )
        })?;
    output
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::to_owned)
        .with_context(|| format!("dpkg-shlibdeps printed no shlibs:Depends: {output:?}"))
}

/// What goes in the package besides the two binaries: every other file, by path in the
/// package, with its mode. Pure, so a test can read it without building anything.
pub fn generated_files(meta: &Metadata, epoch: u64) -> Result<Vec<(String, u32, Vec<u8>)>> {
    let mut files = Vec::new();
    for (name, page) in man_pages(&meta.version, epoch)? {
        files.push((
            format!("usr/share/man/man{MAN_SECTION}/{name}.gz"),
            0o644,
            page,
        ));
    }
    for (path, shell) in [
        (BASH_COMPLETION, clap_complete::Shell::Bash),
        (ZSH_COMPLETION, clap_complete::Shell::Zsh),
        (FISH_COMPLETION, clap_complete::Shell::Fish),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut program_command(), PACKAGE, &mut text);
        files.push((path.to_owned(), 0o644, text));
    }
    files.push((
        format!("{DOC_DIR}/copyright"),
        0o644,
        copyright(meta, Civil::from_epoch(epoch).year)?.into_bytes(),
    ));
    files.push((
        format!("{DOC_DIR}/changelog.gz"),
        0o644,
        changelog(meta, epoch).into_bytes(),
    ));
    // Service mode's units, for a distribution's initramfs generator (a dracut module) to
    // take; not the host's units, so not where systemd reads them.
    for (name, text) in builder::systemd_initramfs::UNITS {
        files.push((
            format!("{UNITS_DIR}/{name}"),
            0o644,
            text.as_bytes().to_vec(),
        ));
    }
    files.push((
        LINTIAN_OVERRIDES.to_owned(),
        0o644,
        LINTIAN_OVERRIDES_TEXT.as_bytes().to_vec(),
    ));
    Ok(files)
}

/// builder's command line under the name the package installs it as.
fn program_command() -> clap::Command {
    builder::cli::command().name(PACKAGE).bin_name(PACKAGE)
}

/// One man page per command: `initoverlayfs.8` and `initoverlayfs-<subcommand>.8` for each
/// subcommand (`initoverlayfs-install.8` also covers upstream's `initoverlayfs-install`, the
/// link to the program), in roff (gzipped when staged). The date is the build's, so the pages change
/// only with the source.
fn man_pages(version: &str, epoch: u64) -> Result<Vec<(String, Vec<u8>)>> {
    let date = Civil::from_epoch(epoch).date();
    let mut command = program_command().disable_help_subcommand(true);
    command.build();
    let mut commands = vec![command.clone()];
    commands.extend(
        command
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .cloned(),
    );
    let mut pages = Vec::new();
    for command in commands {
        let man = clap_mangen::Man::new(command)
            .section(MAN_SECTION)
            .date(&date)
            .source(format!("{PACKAGE} {version}"))
            .manual("System Administration");
        let mut text = Vec::new();
        man.render(&mut text).context("rendering a man page")?;
        pages.push((man.get_filename(), text));
    }
    Ok(pages)
}

/// `debian/copyright` in the machine-readable format (DEP-5): the workspace's licence for
/// every file, the notice dated by the build (the year of the last commit, by default).
fn copyright(meta: &Metadata, year: i64) -> Result<String> {
    let ids: Vec<&str> = meta.license.split(" OR ").map(str::trim).collect();
    let mut text = format!("Format: {COPYRIGHT_FORMAT}\nUpstream-Name: initoverlayfs-rs\n");
    if !meta.bundled.is_empty() {
        text.push_str(
            "Comment: The programs are statically linked with these Rust crates, each under\n \
             the licence its authors state (crate version: SPDX licence expression):\n",
        );
        for linked in &meta.bundled {
            writeln!(
                text,
                " {} {}: {}",
                linked.name, linked.version, linked.license
            )?;
        }
    }
    write!(
        text,
        "\nFiles: *\nCopyright: {year} {}\nLicense: {}\n",
        maintainer_name(meta),
        ids.join(" or ")
    )?;
    for id in ids {
        let Some((_, body)) = LICENSES.iter().find(|(known, _)| *known == id) else {
            bail!(
                "license {:?}: no text for {id} in xtask/src/dist.rs's LICENSES (only OR of \
                 those is understood)",
                meta.license
            );
        };
        write!(text, "\nLicense: {id}\n")?;
        for paragraph in body.split("\n\n") {
            if !text.ends_with(&format!("{id}\n")) {
                text.push_str(" .\n");
            }
            for line in wrap(paragraph, 79) {
                writeln!(text, " {line}")?;
            }
        }
    }
    Ok(text)
}

/// The name part of `Name <address>`.
fn maintainer_name(meta: &Metadata) -> &str {
    meta.maintainer
        .split('<')
        .next()
        .unwrap_or(&meta.maintainer)
        .trim()
}

/// A native package's changelog: one entry for the version, dated by the build.
fn changelog(meta: &Metadata, epoch: u64) -> String {
    format!(
        "{PACKAGE} ({}) unstable; urgency=medium\n\n  \
         * Built from the initoverlayfs-rs sources with `cargo xtask dist`.\n\n \
         -- {}  {}\n",
        meta.version,
        meta.maintainer,
        Civil::from_epoch(epoch).rfc2822()
    )
}

/// The control file; `depends` is the library part ([`library_depends`]).
pub fn control(meta: &Metadata, arch: Arch, depends: &str, installed_size_kib: u64) -> String {
    let mut text = format!(
        "Package: {PACKAGE}\nVersion: {}\nArchitecture: {}\nMaintainer: {}\n\
         Installed-Size: {installed_size_kib}\nDepends: {depends}, {DEPENDS}\n\
         Recommends: {RECOMMENDS}\nSuggests: {SUGGESTS}\nSection: admin\nPriority: optional\n\
         Description: {SYNOPSIS}\n",
        meta.version,
        arch.name(),
        meta.maintainer
    );
    for (index, paragraph) in DESCRIPTION.iter().enumerate() {
        if index > 0 {
            text.push_str(" .\n");
        }
        for line in wrap(paragraph, 79) {
            text.push(' ');
            text.push_str(&line);
            text.push('\n');
        }
    }
    text
}

/// `text`'s words in lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + word.len() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

/// A UTC time of day and date, from seconds since 1970.
#[derive(Debug, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    seconds_of_day: u64,
    /// 0 is Sunday.
    weekday: u64,
}

impl Civil {
    /// Howard Hinnant's `civil_from_days` (the proleptic Gregorian calendar).
    fn from_epoch(epoch: u64) -> Civil {
        let days = (epoch / 86_400) as i64;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            seconds_of_day: epoch % 86_400,
            // 1970-01-01 was a Thursday.
            weekday: (epoch / 86_400 + 4) % 7,
        }
    }

    /// `2026-12-07`, the man pages' date.
    fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// `Mon, 07 Dec 2026 15:05:39 +0000`, the changelog's date (RFC 2822).
    fn rfc2822(&self) -> String {
        const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let s = self.seconds_of_day;
        format!(
            "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
            DAYS[self.weekday as usize],
            self.day,
            MONTHS[self.month as usize - 1],
            self.year,
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }
}

/// Stages the package's tree under `out_dir` and builds `out_dir/<file name>` from it with
/// dpkg-deb; returns the package's path.
pub fn build_deb(
    sh: &Shell,
    root: &Path,
    meta: &Metadata,
    epoch: u64,
    binaries: &Binaries,
    out_dir: &Path,
) -> Result<PathBuf> {
    // The tree a Debian source package stages its binary package in, as dpkg-shlibdeps
    // expects.
    let arch = binaries.arch;
    let work = out_dir.join(format!(".build-{PACKAGE}_{}_{}", meta.version, arch.name()));
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let stage = work.join("debian").join(PACKAGE);
    // DEBIAN first: dpkg-shlibdeps finds the package's root by it.
    let debian = stage.join("DEBIAN");
    fs::create_dir_all(&debian).with_context(|| format!("creating {}", debian.display()))?;
    let write = |relative: &str, mode: u32, bytes: &[u8]| stage_file(&stage, relative, mode, bytes);
    let program = stage_programs(sh, &stage, binaries)?;
    let depends = library_depends(sh, &program, &work)?;
    let readme = root.join("README.md");
    let readme = fs::read(&readme).with_context(|| format!("reading {}", readme.display()))?;
    // Debian compresses documentation over 4 KiB (policy 12.3), as dh_compress does: staged
    // under its final name, compressed with the man pages below.
    write(&format!("{DOC_DIR}/README.md.gz"), 0o644, &readme)?;
    for (relative, mode, bytes) in generated_files(meta, epoch)? {
        write(&relative, mode, &bytes)?;
    }
    let hooks = builder::hooks::packaged(builder::hooks::PackageFormat::Deb);
    for (relative, mode, bytes) in &hooks {
        write(relative, *mode, bytes)?;
    }
    // gzip -n: no name or time in the header, so the bytes depend on the content alone.
    let to_compress: Vec<PathBuf> = walk(&stage)?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "gz"))
        .collect();
    for path in &to_compress {
        let plain = path.with_extension("");
        fs::rename(path, &plain)?;
        cmd!(sh, "gzip -9n {plain}").quiet().run()?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o644))?;
    }
    let files: Vec<PathBuf> = walk(&stage)?
        .into_iter()
        .filter(|p| !p.starts_with(&debian))
        .collect();
    let mut installed_kib = 0;
    // The root's mode too: created under the builder's umask, it is the package's `./`.
    fs::set_permissions(&stage, fs::Permissions::from_mode(0o755))?;
    for path in &files {
        let metadata = fs::symlink_metadata(path)?;
        // Policy 5.6.20's estimate, as dpkg-gencontrol makes it: each file in KiB rounded
        // up, one for every other entry.
        installed_kib += if metadata.is_file() {
            metadata.len().div_ceil(1024)
        } else {
            1
        };
        if metadata.is_dir() {
            fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
        }
    }
    fs::set_permissions(&debian, fs::Permissions::from_mode(0o755))?;
    write(
        "DEBIAN/control",
        0o644,
        control(meta, arch, &depends, installed_kib).as_bytes(),
    )?;
    // Everything under /etc is a conffile (policy 10.7.2): dpkg keeps the owner's changes and
    // removes them on purge.
    let conffiles: String = hooks
        .iter()
        .filter(|(relative, _, _)| relative.starts_with("etc/"))
        .map(|(relative, _, _)| format!("/{relative}\n"))
        .collect();
    write("DEBIAN/conffiles", 0o644, conffiles.as_bytes())?;
    for (name, text) in MAINTAINER_SCRIPTS {
        write(&format!("DEBIAN/{name}"), 0o755, text.as_bytes())?;
    }
    // md5sums lists regular files, not the links.
    let regular: Vec<String> = files
        .iter()
        .filter(|p| p.symlink_metadata().is_ok_and(|m| m.is_file()))
        .map(|p| p.strip_prefix(&stage).unwrap().display().to_string())
        .collect();
    let md5sums = {
        let _dir = sh.push_dir(&stage);
        cmd!(sh, "md5sum -- {regular...}").quiet().read()?
    };
    write("DEBIAN/md5sums", 0o644, format!("{md5sums}\n").as_bytes())?;
    // Every entry gets the build's time, whatever its file's; dpkg-deb would only clamp
    // later times down to SOURCE_DATE_EPOCH.
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    for path in std::iter::once(stage.clone()).chain(walk(&stage)?) {
        fs::File::open(&path)
            .and_then(|file| file.set_modified(time))
            .with_context(|| format!("setting the time of {}", path.display()))?;
    }
    let deb = out_dir.join(meta.file_name(arch));
    // --root-owner-group: every entry root:root whoever builds. One xz thread: liblzma's
    // multi-threaded encoder writes other bytes than its single-threaded one, and the number
    // of threads would otherwise follow the host's cores.
    let epoch_text = epoch.to_string();
    cmd!(
        sh,
        "dpkg-deb --root-owner-group -Zxz --threads-max=1 --build {stage} {deb}"
    )
    .env(EPOCH_ENV, &epoch_text)
    .quiet()
    .ignore_stdout()
    .run()
    .context("dpkg-deb --build")?;
    fs::remove_dir_all(&work)?;
    Ok(deb)
}

/// Writes `bytes` at `relative` under `stage` with permission bits `mode`, making its
/// directories; returns the path.
fn stage_file(stage: &Path, relative: &str, mode: u32, bytes: &[u8]) -> Result<PathBuf> {
    let path = stage.join(relative);
    fs::create_dir_all(path.parent().unwrap())?;
    fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(path)
}

/// Stages the programs as both packages ship them under `stage`: builder at [`PROGRAM_PATH`],
/// stripped (what dh_strip does: the symbols serve no one on the installed system), upstream's
/// command as a link to it, storage-init as built. Returns the staged builder.
fn stage_programs(sh: &Shell, stage: &Path, binaries: &Binaries) -> Result<PathBuf> {
    let builder = fs::read(&binaries.builder)
        .with_context(|| format!("reading {}", binaries.builder.display()))?;
    let program = stage_file(stage, PROGRAM_PATH, 0o755, &builder)?;
    let strip = binaries.arch.strip();
    cmd!(
        sh,
        "{strip} --strip-unneeded --remove-section=.comment --remove-section=.note {program}"
    )
    .quiet()
    .run()
    .with_context(|| format!("stripping builder ({strip}, from binutils)"))?;
    std::os::unix::fs::symlink(
        Path::new(PROGRAM_PATH).file_name().unwrap(),
        stage.join(UPSTREAM_INSTALL_PATH),
    )?;
    let storage_init = fs::read(&binaries.storage_init)
        .with_context(|| format!("reading {}", binaries.storage_init.display()))?;
    stage_file(stage, STORAGE_INIT_PATH, 0o755, &storage_init)?;
    Ok(program)
}

/// Every path under `dir` (not `dir` itself), sorted.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in fs::read_dir(&next).with_context(|| format!("reading {}", next.display()))? {
            let path = entry?.path();
            if path.is_dir() && !path.is_symlink() {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// A package format `cargo xtask dist` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `initoverlayfs_<version>_<arch>.deb`, for Debian and Ubuntu.
    Deb,
    /// `initoverlayfs-<version>-1.<arch>.rpm`, for Fedora, CentOS and RHEL ([`rpm`]).
    Rpm,
}

impl Format {
    pub const ALL: [Format; 2] = [Format::Deb, Format::Rpm];

    pub fn name(self) -> &'static str {
        match self {
            Format::Deb => "deb",
            Format::Rpm => "rpm",
        }
    }

    pub fn parse(name: &str) -> Result<Format> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .with_context(|| format!("--format {name:?}: expected deb or rpm"))
    }
}

/// `cargo xtask dist [--arch amd64|arm64] [--format deb|rpm]`: each format in `formats`, from
/// one build of the programs.
pub fn run(sh: &Shell, root: &Path, arch: Arch, formats: &[Format]) -> Result<()> {
    let meta = Metadata::read(root)?;
    let epoch = source_date_epoch(sh, root)?;
    let binaries = build_binaries(sh, root, arch)?;
    let out_dir = root.join(DIST_DIR);
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    for format in formats {
        let (package, installer) = match format {
            Format::Deb => (
                build_deb(sh, root, &meta, epoch, &binaries, &out_dir)?,
                "apt",
            ),
            Format::Rpm => (
                rpm::build_rpm(sh, root, &meta, epoch, &binaries, &out_dir)?,
                "dnf",
            ),
        };
        let size = fs::metadata(&package)?.len();
        println!(
            "{} ({size} bytes, {EPOCH_ENV}={epoch}); install it with `{installer} install ./{}`",
            package.display(),
            package.strip_prefix(root).unwrap_or(&package).display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The workspace's facts as a test states them (no cargo run), for dist's and rpm's tests.
    pub(super) fn meta() -> Metadata {
        Metadata {
            version: "0.1.0".into(),
            maintainer: "The initoverlayfs-rs developers <maintainers@initoverlayfs-rs.invalid>"
                .into(),
            license: "MIT OR Apache-2.0".into(),
            bundled: Vec::new(),
        }
    }

    #[test]
    fn metadata_comes_from_the_workspace() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let read = Metadata::read(&root).unwrap();
        assert!(read.maintainer.ends_with('>'), "{read:?}");
        assert_eq!(
            read.file_name(Arch::Amd64),
            format!("initoverlayfs_{}_amd64.deb", read.version)
        );
        assert_eq!(
            read.file_name(Arch::Arm64),
            format!("initoverlayfs_{}_arm64.deb", read.version)
        );
        for (manifest, error) in [
            ("[workspace]\n", "no [workspace.package]"),
            (
                "[workspace.package]\nversion = \"1\"\nlicense = \"MIT\"\n",
                "authors",
            ),
            (
                "[workspace.package]\nversion = \"v1_2\"\nlicense = \"MIT\"\nauthors = [\"a <b>\"]\n",
                "not a Debian version",
            ),
        ] {
            let message = format!("{:#}", Metadata::parse(manifest).unwrap_err());
            assert!(message.contains(error), "{manifest}: {message}");
        }
    }

    #[test]
    fn architectures_by_debian_name() {
        for arch in Arch::ALL {
            assert_eq!(Arch::parse(arch.name()).unwrap(), arch);
        }
        let error = format!("{:#}", Arch::parse("x86_64").unwrap_err());
        assert!(
            error.contains("x86_64") && error.contains("amd64 or arm64"),
            "{error}"
        );
    }

    #[test]
    fn dates_are_utc_calendar_dates() {
        let check = |epoch: u64, date: &str, rfc: &str| {
            let civil = Civil::from_epoch(epoch);
            assert_eq!(civil.date(), date, "{epoch}");
            assert_eq!(civil.rfc2822(), rfc, "{epoch}");
        };
        check(0, "1970-01-01", "Thu, 01 Jan 1970 00:00:00 +0000");
        check(951_782_400, "2000-02-29", "Tue, 29 Feb 2000 00:00:00 +0000");
        check(
            1_796_655_939,
            "2026-12-07",
            "Mon, 07 Dec 2026 15:05:39 +0000",
        );
        check(
            4_107_542_399,
            "2100-02-28",
            "Sun, 28 Feb 2100 23:59:59 +0000",
        );
    }

    #[test]
    fn copyright_states_every_licence_of_the_expression() {
        let text = copyright(&meta(), 2026).unwrap();
        assert!(text.contains("License: MIT or Apache-2.0\n"), "{text}");
        assert!(
            text.contains("\nLicense: MIT\n Permission is hereby granted"),
            "{text}"
        );
        assert!(text.contains(" .\n The above copyright notice"), "{text}");
        assert!(
            text.contains("/usr/share/common-licenses/Apache-2.0"),
            "{text}"
        );
        assert!(text.contains("Copyright: 2026 The initoverlayfs-rs developers\n"));
        assert!(text.lines().all(|l| l.len() <= 80), "{text}");
        let linked = Metadata {
            bundled: vec![crates::BundledCrate {
                name: "rustix".into(),
                version: "1.1.6".into(),
                license: "Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT".into(),
            }],
            ..meta()
        };
        let text = copyright(&linked, 2026).unwrap();
        assert!(
            text.contains(
                "crates, each under\n the licence its authors state (crate version: SPDX licence expression):\n rustix 1.1.6: Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT\n\nFiles: *\n"
            ),
            "{text}"
        );
        let unknown = Metadata {
            license: "GPL-2.0-only".into(),
            ..meta()
        };
        let error = format!("{:#}", copyright(&unknown, 2026).unwrap_err());
        assert!(
            error.contains("GPL-2.0-only") && error.contains("LICENSES"),
            "{error}"
        );
    }

    /// One man page for the program and one per subcommand, each named after it.
    #[test]
    fn a_man_page_per_command() {
        let pages = man_pages("0.1.0", 0).unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"initoverlayfs.8"), "{names:?}");
        assert!(names.contains(&"initoverlayfs-install.8"), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
        assert_eq!(
            names.len(),
            1 + builder::cli::command().get_subcommands().count()
        );
        let install = String::from_utf8(
            pages[names
                .iter()
                .position(|n| *n == "initoverlayfs-install.8")
                .unwrap()]
            .1
            .clone(),
        )
        .unwrap();
        assert!(install.contains("\\-\\-builder\\-path"), "{install}");
        assert!(
            install.contains(".TH initoverlayfs-install 8 1970-01-01 \"initoverlayfs 0.1.0\""),
            "{install}"
        );
        assert!(install.contains("upstream initoverlayfs"), "{install}");
    }

    #[test]
    fn control_lines_fit_and_describe() {
        let text = control(&meta(), Arch::Arm64, "libc6 (>= 2.34)", 1234);
        assert!(text.contains("\nArchitecture: arm64\n"), "{text}");
        assert!(
            text.contains("Depends: libc6 (>= 2.34), erofs-utils\n"),
            "{text}"
        );
        assert!(text.contains("Installed-Size: 1234\n"), "{text}");
        // The long description's lines (those after the synopsis) fit 80 columns.
        assert!(
            text.lines()
                .filter(|l| l.starts_with(' '))
                .all(|l| l.len() <= 80),
            "{text}"
        );
        assert!(SYNOPSIS.len() <= 80 - "Description: ".len());
    }
}
