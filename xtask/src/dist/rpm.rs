//! `cargo xtask dist`'s RPM: `target/dist/initoverlayfs-<version>-1.<arch>.rpm` (x86_64, or
//! aarch64 cross-built) for Fedora, CentOS and RHEL, holding the programs of the Debian package
//! at Fedora's paths, and a kernel-install plugin. rpmbuild compiles nothing: the code stages
//! the tree, writes a binary-only spec whose `%install` copies it, and runs `rpmbuild -bb`.
//!
//! Reproducible as the Debian package is: every time in it is `SOURCE_DATE_EPOCH` (the build
//! time too), the build host is a fixed name, the payload's compressor is single-threaded, and
//! no host tool reads the programs inside rpmbuild (no strip, no debuginfo, no build-id links,
//! no dependency generator), so two builds of one commit give the same bytes, for either
//! architecture, wherever the same rpm version builds them (the header records rpm's version).

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use super::{Arch, Binaries, Civil, EPOCH_ENV, Metadata, PACKAGE, PROGRAM_PATH, STORAGE_INIT_PATH};

/// The package's release: the first build of each version. Fedora's file name carries it.
pub const RELEASE: &str = "1";
/// The host tools an RPM build runs, each with its Debian package (gzip is Essential).
pub const HOST_TOOLS: [(&str, &str); 3] =
    [("rpmbuild", "rpm"), ("strip", "binutils"), ("gzip", "gzip")];
/// The package's checker, which its tests run.
pub const RPMLINT: (&str, &str) = ("rpmlint", "rpmlint");
/// rpm's own reader of an ELF file's library needs, as its dependency generator runs it: it
/// reads any architecture's ELF, so the cross-built package gets the same names.
const ELFDEPS: &str = "/usr/lib/rpm/elfdeps";

/// The kernel-install plugin in the package: kernel-install runs `/usr/lib/kernel/install.d`'s
/// plugins (an `/etc/kernel/install.d` file of the same name overrides it).
pub const KERNEL_INSTALL_PLUGIN_PATH: &str = "usr/lib/kernel/install.d/95-initoverlayfs.install";
const DOC_DIR: &str = "usr/share/doc/initoverlayfs";
const LICENSE_DIR: &str = "usr/share/licenses/initoverlayfs";
/// Fedora's zsh looks in site-functions (Debian's in vendor-completions); bash's and fish's
/// directories are the same on both.
const ZSH_COMPLETION: &str = "usr/share/zsh/site-functions/_initoverlayfs";
/// The Apache License 2.0, as published: Fedora has no common licence directory to point to.
const APACHE_TEXT: &str = include_str!("Apache-2.0.txt");

/// What builder needs on the machine beyond its libraries: `mkfs.erofs` writes every image.
const REQUIRES: &str = "erofs-utils";
/// The live install converts a dracut initramfs, and `--dracut` runs dracut: Fedora's default,
/// but a machine that only builds images (`image`, `--root`) does without it.
const RECOMMENDS: &str = "dracut";
/// The summary: Fedora's start with a capital and end without a full stop.
const SUMMARY: &str = "Faster early boot: the initramfs as an EROFS image read on demand";

/// After an install or an upgrade: convert every installed kernel, so the machine boots the
/// way the package promises. A kernel that cannot be converted keeps its classic initramfs and
/// boots as before, so the transaction never fails for it.
pub const POST_SCRIPT: &str = "\
/usr/sbin/initoverlayfs install --all || echo \"initoverlayfs: could not convert every kernel; \
those named above boot with their classic initramfs\" >&2
:
";
/// Before the last version is erased (`$1` is how many remain; an upgrade leaves 1): undo
/// every install, so no kernel is left with a mini initramfs whose program is gone.
pub const PREUN_SCRIPT: &str = "\
if [ \"$1\" -eq 0 ]; then /usr/sbin/initoverlayfs uninstall || :; fi
";

/// The macros that make two builds give the same bytes, and keep rpmbuild from running host
/// tools on programs that may be foreign.
const REPRODUCIBLE_MACROS: &[(&str, &str, &str)] = &[
    (
        "_buildhost",
        "reproducible",
        "the header's build host, else the machine's name",
    ),
    (
        "use_source_date_epoch_as_buildtime",
        "1",
        "the header's build time",
    ),
    ("clamp_mtime_to_source_date_epoch", "1", "every file's time"),
    (
        "source_date_epoch_from_changelog",
        "0",
        "SOURCE_DATE_EPOCH comes from the build, not the changelog",
    ),
    (
        "_binary_payload",
        "w19.zstdio",
        "zstd level 19, one thread: the bytes do not follow the host's cores",
    ),
    (
        "_build_id_links",
        "none",
        "no /usr/lib/.build-id links (strip removed the notes)",
    ),
    (
        "debug_package",
        "%{nil}",
        "no debuginfo package: the programs are stripped when staged",
    ),
    (
        "__spec_install_post",
        "%{nil}",
        "no brp scripts: they run the host's strip, which cannot read a foreign ELF; the tree is \
         stripped and gzipped when staged",
    ),
];

/// One file of the payload besides the programs, by path in the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFile {
    pub path: String,
    pub mode: u32,
    pub bytes: Vec<u8>,
    pub kind: FileKind,
}

/// How `%files` marks a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Plain,
    /// `%doc`: left out by `--excludedocs` and `tsflags=nodocs`.
    Doc,
    /// `%license`: kept even then.
    License,
}

/// The package's file name, Fedora's `<name>-<version>-<release>.<arch>.rpm`.
pub fn file_name(meta: &Metadata, arch: Arch) -> String {
    format!(
        "{PACKAGE}-{}-{RELEASE}.{}.rpm",
        meta.version,
        rpm_arch(arch)
    )
}

/// The RPM architecture: the machine's name (`x86_64`, `aarch64`).
pub fn rpm_arch(arch: Arch) -> &'static str {
    arch.machine()
}

/// The version, checked for RPM: no `-`, which separates version and release.
fn rpm_version(meta: &Metadata) -> Result<&str> {
    if meta.version.contains('-') {
        bail!(
            "version {:?} is not an RPM version: `-` separates version and release",
            meta.version
        );
    }
    Ok(&meta.version)
}

/// The kernel-install plugins, as builder ships them in packages (by path, text): calling the
/// packaged program, which takes the owner's options from /etc/initoverlayfs/install.conf.
fn kernel_install_plugins() -> Vec<(String, Vec<u8>)> {
    builder::hooks::packaged(builder::hooks::PackageFormat::Rpm)
        .into_iter()
        .map(|(path, _, text)| (path, text))
        .collect()
}

/// Where Fedora wants a file the Debian package ships: `None` for what only Debian reads.
/// A path this does not know is an error, so a file added to the Debian package is placed
/// here on purpose, never dropped or copied blindly.
fn fedora_path(debian_path: &str) -> Result<Option<String>> {
    if debian_path == super::ZSH_COMPLETION {
        return Ok(Some(ZSH_COMPLETION.to_owned()));
    }
    if debian_path == super::BASH_COMPLETION
        || debian_path == super::FISH_COMPLETION
        || debian_path.starts_with("usr/share/man/")
        || debian_path.starts_with(&format!("{}/", super::UNITS_DIR))
    {
        return Ok(Some(debian_path.to_owned()));
    }
    // The DEP-5 copyright file and the Debian changelog (the spec has its own changelog and
    // the licence texts), and lintian's overrides.
    if debian_path.starts_with(&format!("{}/", super::DOC_DIR))
        || debian_path == super::LINTIAN_OVERRIDES
    {
        return Ok(None);
    }
    bail!(
        "{debian_path}: the Debian package ships it, and xtask/src/dist/rpm.rs's fedora_path \
         does not say where the RPM puts it (or that it leaves it out)"
    )
}

/// `LICENSE-MIT`: the MIT licence with the notice dated by the build.
fn mit_license(meta: &Metadata, year: i64) -> String {
    let mut text = format!(
        "MIT License\n\nCopyright (c) {year} {}\n",
        super::maintainer_name(meta)
    );
    for paragraph in super::MIT_TEXT.split("\n\n") {
        text.push('\n');
        for line in super::wrap(paragraph, 79) {
            text.push_str(&line);
            text.push('\n');
        }
    }
    text
}

/// Every file of the package but the two programs, by path, with mode and kind. Pure but for
/// what it is given, so a test can read it without building anything.
pub fn payload_files(meta: &Metadata, epoch: u64, readme: &[u8]) -> Result<Vec<PayloadFile>> {
    let mut files = Vec::new();
    for (debian_path, mode, bytes) in super::generated_files(meta, epoch)? {
        if let Some(path) = fedora_path(&debian_path)? {
            files.push(PayloadFile {
                path,
                mode,
                bytes,
                kind: FileKind::Plain,
            });
        }
    }
    for (path, bytes) in kernel_install_plugins() {
        files.push(PayloadFile {
            path,
            mode: 0o755,
            bytes,
            kind: FileKind::Plain,
        });
    }
    files.push(PayloadFile {
        path: format!("{DOC_DIR}/README.md"),
        mode: 0o644,
        bytes: readme.to_vec(),
        kind: FileKind::Doc,
    });
    let ids: Vec<&str> = meta.license.split(" OR ").map(str::trim).collect();
    for id in ids {
        let text = match id {
            "MIT" => mit_license(meta, Civil::from_epoch(epoch).year),
            "Apache-2.0" => APACHE_TEXT.to_owned(),
            other => bail!(
                "license {:?}: no text for {other} in xtask/src/dist/rpm.rs (only OR of MIT and \
                 Apache-2.0 is understood)",
                meta.license
            ),
        };
        files.push(PayloadFile {
            path: format!("{LICENSE_DIR}/LICENSE-{id}"),
            mode: 0o644,
            bytes: text.into_bytes(),
            kind: FileKind::License,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// `Tue Nov 14 2023`, the date of a spec's changelog entry.
fn changelog_date(epoch: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let civil = Civil::from_epoch(epoch);
    format!(
        "{} {} {:02} {}",
        DAYS[civil.weekday as usize],
        MONTHS[civil.month as usize - 1],
        civil.day,
        civil.year
    )
}

/// The spec file: binary-only, its `%install` copying the tree staged in `%{_sourcedir}/root`.
/// `requires` are the library capabilities the programs need ([`library_requires`]); `files`
/// the payload besides the two programs. Pure.
pub fn spec(
    meta: &Metadata,
    epoch: u64,
    requires: &[String],
    files: &[PayloadFile],
) -> Result<String> {
    let version = rpm_version(meta)?;
    let mut text = String::from(
        "# Written by `cargo xtask dist`, which stages the tree and runs `rpmbuild -bb`.\n",
    );
    for (name, value, why) in REPRODUCIBLE_MACROS {
        writeln!(text, "# {why}\n%global {name} {value}")?;
    }
    write!(
        text,
        "\nName: {PACKAGE}\nVersion: {version}\nRelease: {RELEASE}\nSummary: {SUMMARY}\n\
         License: {}\n\
         # The programs are built before; their library needs are stated below, as rpm's\n\
         # generator names them, and read from the programs themselves rather than the host.\n\
         AutoReqProv: no\nRequires: {REQUIRES}\n",
        meta.license
    )?;
    for capability in requires {
        writeln!(text, "Requires: {capability}")?;
    }
    writeln!(text, "Recommends: {RECOMMENDS}\n\n%description")?;
    for (index, paragraph) in super::DESCRIPTION.iter().enumerate() {
        if index > 0 {
            text.push('\n');
        }
        for line in super::wrap(paragraph, 79) {
            writeln!(text, "{line}")?;
        }
    }
    write!(
        text,
        "\n%install\ncp -a %{{_sourcedir}}/root/. %{{buildroot}}/\n\n\
         %post\n{POST_SCRIPT}\n%preun\n{PREUN_SCRIPT}\n\
         %files\n%defattr(-,root,root,-)\n/{PROGRAM_PATH}\n/{}\n%dir /usr/lib/{PACKAGE}\n\
         /{STORAGE_INIT_PATH}\n%dir /{DOC_DIR}\n%dir /{LICENSE_DIR}\n",
        super::UPSTREAM_INSTALL_PATH
    )?;
    for file in files {
        let mark = match file.kind {
            FileKind::Plain => "",
            FileKind::Doc => "%doc ",
            FileKind::License => "%license ",
        };
        writeln!(text, "{mark}/{}", file.path)?;
    }
    write!(
        text,
        "\n%changelog\n* {} {} - {version}-{RELEASE}\n\
         - Built from the initoverlayfs-rs sources with `cargo xtask dist`.\n",
        changelog_date(epoch),
        meta.maintainer
    )?;
    Ok(text)
}

/// The library capabilities `binary` needs (`libc.so.6(GLIBC_2.34)(64bit)`, …), as rpm's
/// dependency generator would name them on Fedora.
fn library_requires(sh: &Shell, binary: &Path) -> Result<Vec<String>> {
    let output = cmd!(sh, "{ELFDEPS} --requires")
        .stdin(format!("{}\n", binary.display()))
        .quiet()
        .read()
        .with_context(|| format!("{ELFDEPS} (from rpm) on {}", binary.display()))?;
    Ok(output.lines().map(str::to_owned).collect())
}

/// Stages the package's tree under `out_dir`, writes its spec and builds
/// `out_dir/<file name>` with rpmbuild; returns the package's path.
pub fn build_rpm(
    sh: &Shell,
    root: &Path,
    meta: &Metadata,
    epoch: u64,
    binaries: &Binaries,
    out_dir: &Path,
) -> Result<PathBuf> {
    let arch = binaries.arch;
    let work = out_dir.join(format!(
        ".build-{PACKAGE}-{}-{RELEASE}.{}",
        meta.version,
        rpm_arch(arch)
    ));
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let stage = work.join("SOURCES/root");
    let write =
        |relative: &str, mode: u32, bytes: &[u8]| super::stage_file(&stage, relative, mode, bytes);
    let program = super::stage_programs(sh, &stage, binaries)?;
    let requires = library_requires(sh, &program)?;
    let readme = root.join("README.md");
    let readme = fs::read(&readme).with_context(|| format!("reading {}", readme.display()))?;
    let files = payload_files(meta, epoch, &readme)?;
    for file in &files {
        let path = write(&file.path, file.mode, &file.bytes)?;
        // Fedora's man pages are gzipped (brp-compress's work, done here); -n: no name or
        // time in the header.
        if file.path.ends_with(".gz") {
            let plain = path.with_extension("");
            fs::rename(&path, &plain)?;
            cmd!(sh, "gzip -9n {plain}").quiet().run()?;
            fs::set_permissions(&path, fs::Permissions::from_mode(file.mode))?;
        }
    }
    for path in super::walk(&stage)? {
        if fs::symlink_metadata(&path)?.is_dir() {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        }
    }
    let spec_path = work.join(format!("SPECS/{PACKAGE}.spec"));
    fs::create_dir_all(spec_path.parent().unwrap())?;
    fs::write(&spec_path, spec(meta, epoch, &requires, &files)?)?;
    let target = format!("{}-linux", rpm_arch(arch));
    let topdir = format!("_topdir {}", work.display());
    // HOME is the work directory: a ~/.rpmmacros of whoever builds must not change the bytes.
    cmd!(
        sh,
        "rpmbuild -bb --quiet --target {target} --define {topdir} {spec_path}"
    )
    .env(EPOCH_ENV, epoch.to_string())
    .env("HOME", &work)
    .env("LC_ALL", "C")
    .env("TZ", "UTC")
    .quiet()
    .ignore_stdout()
    .run()
    .context("rpmbuild -bb")?;
    let built = work
        .join("RPMS")
        .join(rpm_arch(arch))
        .join(file_name(meta, arch));
    let rpm = out_dir.join(file_name(meta, arch));
    fs::rename(&built, &rpm)
        .with_context(|| format!("moving {} to {}", built.display(), rpm.display()))?;
    fs::remove_dir_all(&work)?;
    Ok(rpm)
}

/// rpmlint's settings (`rpmlint -c`) where its defaults are another distribution's: Fedora
/// gzips man pages, and states licences in SPDX, as the License tag does.
pub const RPMLINT_CONFIG: &str = "\
CompressExtension = \"gz\"
ValidLicenses = [\"MIT\", \"Apache-2.0\"]
";

/// rpmlint's findings that are the design or rpmlint's mistake, each with why (`rpmlint -r`:
/// a filter that matches nothing is an error, so none outlives its cause).
pub const RPMLINT_FILTERS: &str = "\
# storage-init is the PID 1 of the mini initramfs, which holds no dynamic loader and no
# libraries: it must be static, and is not PIE (nothing to relocate at its start).
addFilter(\"statically-linked-binary /usr/lib/initoverlayfs/storage-init\")
addFilter(\"position-independent-executable-suggested /usr/lib/initoverlayfs/storage-init\")
# rpmlint 2.4 records a man page's section instead of its name (man_base_regex's `category`),
# so it never finds /usr/share/man/man8/initoverlayfs.8.gz, which the package ships.
addFilter(\"no-manual-page-for-binary initoverlayfs\")
# The project has no published home yet to name.
addFilter(\"no-url-tag\")
# A package built from a clone is unsigned: the distributor signs it (rpmsign --addsign).
addFilter(\"no-signature\")
# Fedora's guidelines drop the Group tag and leave Packager to the build system.
addFilter(\"no-group-tag\")
addFilter(\"no-packager-tag\")
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::tests::meta;

    #[test]
    fn file_names_are_fedoras() {
        assert_eq!(
            file_name(&meta(), Arch::Amd64),
            "initoverlayfs-0.1.0-1.x86_64.rpm"
        );
        assert_eq!(
            file_name(&meta(), Arch::Arm64),
            "initoverlayfs-0.1.0-1.aarch64.rpm"
        );
        let dashed = Metadata {
            version: "0.1-2".into(),
            ..meta()
        };
        let error = format!("{:#}", spec(&dashed, 0, &[], &[]).unwrap_err());
        assert!(error.contains("not an RPM version"), "{error}");
    }

    /// The whole spec, for review: a change to the package's header or file list shows here.
    #[test]
    fn spec_text() {
        let files = payload_files(&meta(), 1_700_000_000, b"readme").unwrap();
        let requires = ["libc.so.6()(64bit)".to_owned()];
        insta::assert_snapshot!(spec(&meta(), 1_700_000_000, &requires, &files).unwrap());
    }

    #[test]
    fn changelog_dates_are_rpms() {
        assert_eq!(changelog_date(0), "Thu Jan 01 1970");
        assert_eq!(changelog_date(1_700_000_000), "Tue Nov 14 2023");
    }

    /// Every file the Debian package ships is placed or left out on purpose.
    #[test]
    fn every_debian_file_has_a_fedora_place() {
        let files = payload_files(&meta(), 0, b"readme").unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert!(paths.contains(&ZSH_COMPLETION), "{paths:?}");
        assert!(paths.contains(&KERNEL_INSTALL_PLUGIN_PATH), "{paths:?}");
        assert!(!paths.iter().any(|p| p.contains("lintian")), "{paths:?}");
        assert!(fedora_path("etc/something-new").is_err());
    }

    #[test]
    fn the_plugins_call_the_packaged_program() {
        let plugins = kernel_install_plugins();
        assert_eq!(plugins.len(), 2, "the bls and the uki layout's");
        assert!(plugins.iter().any(|(p, _)| p == KERNEL_INSTALL_PLUGIN_PATH));
        for (path, text) in plugins {
            let text = String::from_utf8(text).unwrap();
            assert!(
                text.contains("BUILDER=\"/usr/sbin/initoverlayfs\""),
                "{path}: {text}"
            );
            assert!(!text.contains('@'), "{path}: {text}");
            assert!(text.contains("--no-hooks"), "{path}: {text}");
        }
    }

    #[test]
    fn licence_files_for_each_licence() {
        let files = payload_files(&meta(), 1_700_000_000, b"").unwrap();
        let licences: Vec<&PayloadFile> = files
            .iter()
            .filter(|f| f.kind == FileKind::License)
            .collect();
        assert_eq!(licences.len(), 2);
        let mit = String::from_utf8(licences[1].bytes.clone()).unwrap();
        assert!(licences[1].path.ends_with("LICENSE-MIT"));
        assert!(
            mit.contains("Copyright (c) 2023 The initoverlayfs-rs developers\n"),
            "{mit}"
        );
        assert!(mit.lines().all(|l| l.len() <= 79), "{mit}");
    }
}
