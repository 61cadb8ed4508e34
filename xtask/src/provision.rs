//! `cargo xtask provision`: checks every host tool the VM tests need and installs what is
//! missing with apt, printing each step. Debian and Debian-like hosts only for now.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

/// A host tool and the Debian package that ships it.
#[derive(Debug, Clone, Copy)]
struct Tool {
    /// A command looked up in PATH, or the absolute path of a file the package ships.
    command: &'static str,
    package: &'static str,
    /// Install from the backports suite on Debian 12 (QEMU 10: bookworm's 7.2 conflicts with the
    /// qemu-utils 10 these machines ship, and raspi4b needs 10).
    backports: bool,
}

const TOOLS: [Tool; 39] = [
    Tool {
        command: "qemu-system-x86_64",
        package: "qemu-system-x86",
        backports: true,
    },
    Tool {
        command: "mkfs.erofs",
        package: "erofs-utils",
        backports: false,
    },
    Tool {
        command: "mkfs.ext4",
        package: "e2fsprogs",
        backports: false,
    },
    Tool {
        command: "depmod",
        package: "kmod",
        backports: false,
    },
    Tool {
        command: "dpkg-deb",
        package: "dpkg",
        backports: false,
    },
    Tool {
        command: "apt-get",
        package: "apt",
        backports: false,
    },
    // `cargo xtask dist`: the Debian package's library dependencies (dpkg-shlibdeps), and the
    // checks of the packages its tests run (the RPM is built with rpmbuild, below).
    Tool {
        command: "dpkg-shlibdeps",
        package: "dpkg-dev",
        backports: false,
    },
    Tool {
        command: "lintian",
        package: "lintian",
        backports: false,
    },
    Tool {
        command: "rpmlint",
        package: "rpmlint",
        backports: false,
    },
    // The RPM's kernel-install plugin is run by systemd's kernel-install in its test.
    Tool {
        command: "kernel-install",
        package: "systemd",
        backports: false,
    },
    // Used by the tests to check what we write: disk images (sfdisk, sgdisk) and cpio archives.
    Tool {
        command: "sfdisk",
        package: "fdisk",
        backports: false,
    },
    Tool {
        command: "sgdisk",
        package: "gdisk",
        backports: false,
    },
    Tool {
        command: "cpio",
        package: "cpio",
        backports: false,
    },
    // builder's initramfs reader is checked against what the real compressors write.
    Tool {
        command: "zstd",
        package: "zstd",
        backports: false,
    },
    Tool {
        command: "lz4",
        package: "lz4",
        backports: false,
    },
    Tool {
        command: "xz",
        package: "xz-utils",
        backports: false,
    },
    Tool {
        command: "bzip2",
        package: "bzip2",
        backports: false,
    },
    // storage-init's probes are checked against filesystems these make (and blkid reads).
    Tool {
        command: "mkfs.vfat",
        package: "dosfstools",
        backports: false,
    },
    Tool {
        command: "mkfs.xfs",
        package: "xfsprogs",
        backports: false,
    },
    Tool {
        command: "mkfs.btrfs",
        package: "btrfs-progs",
        backports: false,
    },
    // The aarch64 cells: QEMU for the `virt` board, and the cross-built storage-init (the cross
    // linker; for the glibc fallback, Debian's rustc-web with arm64's std and static glibc).
    Tool {
        command: "qemu-system-aarch64",
        package: "qemu-system-arm",
        backports: true,
    },
    Tool {
        command: "/usr/bin/aarch64-linux-gnu-gcc",
        package: "gcc-aarch64-linux-gnu",
        backports: false,
    },
    // Only recommended by the cross compiler, and provisioning installs no recommends.
    Tool {
        command: "/usr/aarch64-linux-gnu/lib/libc.a",
        package: "libc6-dev-arm64-cross",
        backports: false,
    },
    // A directory: the rlib names carry hashes.
    Tool {
        command: "/usr/lib/rustlib/aarch64-unknown-linux-gnu/lib",
        package: "libstd-rust-web-dev:arm64",
        backports: false,
    },
    // The Debian trees of the real chain and the dracut fixture (debian_tree.rs).
    Tool {
        command: "mmdebstrap",
        package: "mmdebstrap",
        backports: false,
    },
    // The arm64 tree: its maintainer scripts and dracut run under qemu-user through binfmt_misc
    // (see ensure_binfmt). QEMU 10 from backports: bookworm's 7.2 conflicts with the rest of
    // QEMU here. It pulls in qemu-user-binfmt, whose binfmt.d entries ensure_binfmt registers.
    Tool {
        command: "/usr/bin/qemu-aarch64-static",
        package: "qemu-user-static",
        backports: true,
    },
    // mmdebstrap refuses a foreign architecture without it ("install arch-test").
    Tool {
        command: "arch-test",
        package: "arch-test",
        backports: false,
    },
    // RPM kernel fixtures are downloaded with curl (download.rs): no TLS stack compiled into
    // xtask, and the usual proxy variables work.
    Tool {
        command: "curl",
        package: "curl",
        backports: false,
    },
    // The RPM fixture tests build Fedora-style kernel packages and a repository of them, and
    // check our RPM reader against rpm2cpio (xtask/tests/rpm_fixtures.rs); `cargo xtask dist`
    // builds the RPM with it.
    Tool {
        command: "rpmbuild",
        package: "rpm",
        backports: false,
    },
    Tool {
        command: "createrepo_c",
        package: "createrepo-c",
        backports: false,
    },
    // The musl build of storage-init (see static_build.rs): Debian's Rust with std's sources,
    // the musl linker wrapper and LLVM's libunwind. The same list as MUSL_BUILD_FILES.
    Tool {
        command: "/usr/bin/rustc",
        package: "rustc-web",
        backports: false,
    },
    Tool {
        command: "/usr/bin/cargo",
        package: "cargo-web",
        backports: false,
    },
    Tool {
        command: "/usr/lib/rustlib/src/rust/library/Cargo.lock",
        package: "rust-web-src",
        backports: false,
    },
    Tool {
        command: "/usr/bin/musl-gcc",
        package: "musl-tools",
        backports: false,
    },
    Tool {
        command: "/usr/lib/llvm-14/lib/libunwind.a",
        package: "libunwind-14-dev",
        backports: false,
    },
    // The aarch64 musl build: arm64's musl and its wrapper of the cross gcc (arm64's libunwind
    // is a fixture: its package cannot be installed beside the amd64 one, see static_build.rs).
    Tool {
        command: "/usr/bin/aarch64-linux-musl-gcc",
        package: "musl-dev:arm64",
        backports: false,
    },
    // The oracle of builder's dm-verity hash trees (builder/tests/verity.rs).
    Tool {
        command: "veritysetup",
        package: "cryptsetup-bin",
        backports: false,
    },
    // storage-init's units are checked with systemd-analyze against the host's unit
    // directory; builder's UKI tests assemble with the host's EFI stub.
    Tool {
        command: "systemd-analyze",
        package: "systemd",
        backports: false,
    },
    Tool {
        command: "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
        package: "systemd-boot-efi",
        backports: false,
    },
];

/// The signed-UKI and Secure Boot cells' tools (xtask::secure_boot, builder::uki): a key pair,
/// the signature, the firmware variable store with the key enrolled, and the tests' check of
/// the PE layout. python3-virt-firmware is in bookworm-backports only. pefile is what ukify
/// (systemd 254's, run from its unpacked package by `xtask::kernel_install`) builds a UKI with.
const UKI_TOOLS: [Tool; 5] = [
    Tool {
        command: "/usr/lib/python3/dist-packages/pefile.py",
        package: "python3-pefile",
        backports: false,
    },
    Tool {
        command: "openssl",
        package: "openssl",
        backports: false,
    },
    Tool {
        command: "sbsign",
        package: "sbsigntool",
        backports: false,
    },
    Tool {
        command: "virt-fw-vars",
        package: "python3-virt-firmware",
        backports: true,
    },
    Tool {
        command: "objdump",
        package: "binutils",
        backports: false,
    },
];

/// True when the environment says this is CI (`CI=true`, as GitHub Actions and `.ci/run` set
/// it).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value.eq_ignore_ascii_case("true") || value == "1")
}

/// For tests: one that cannot run here for `reason` (a missing tool or privilege, and how to
/// get it) prints `skipped: <reason>` and returns; under `CI=true`, where `cargo xtask
/// provision` has installed every tool and the tests run as root, it fails instead.
pub fn skip_or_fail(reason: &str) {
    assert!(!in_ci(), "{reason}; CI=true forbids skips");
    println!("skipped: {reason}");
}

/// Every tool `ensure` provides.
fn all_tools() -> impl Iterator<Item = &'static Tool> {
    TOOLS.iter().chain(UKI_TOOLS.iter())
}

/// The QEMU major version the harness needs.
const MIN_QEMU_MAJOR: u32 = 10;

const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/initoverlayfs-rs-backports.sources";

/// Makes sure every tool is present, installing the missing ones.
pub fn ensure(sh: &Shell) -> Result<()> {
    let missing: Vec<Tool> = all_tools().copied().filter(|t| !tool_ok(sh, t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|t| t.package).collect();
    eprintln!("provision: missing host packages: {}", names.join(" "));
    let privilege = Privilege::detect(sh);
    if let Privilege::None = privilege {
        bail!(
            "provision: installing packages needs root; run as root or with passwordless sudo:\n  \
             sudo apt-get install -y {}\n(on Debian 12, add the bookworm-backports suite first and install qemu-system-x86 from it)",
            names.join(" ")
        );
    }
    let codename = os_codename().unwrap_or_default();
    let backports_suite = format!("{codename}-backports");
    let needs_backports = codename == "bookworm" && missing.iter().any(|t| t.backports);
    if needs_backports {
        ensure_backports_source(sh, &privilege, &backports_suite)?;
    }
    // Packages of another architecture (`libstd-rust-web-dev:arm64`) need it added to dpkg.
    for arch in foreign_architectures(&missing) {
        let known = cmd!(sh, "dpkg --print-foreign-architectures")
            .quiet()
            .read()
            .unwrap_or_default();
        if !known.lines().any(|a| a.trim() == arch) {
            eprintln!("provision: dpkg --add-architecture {arch}");
            privilege.run(sh, "dpkg", &["--add-architecture", arch])?;
        }
    }
    eprintln!("provision: apt-get update");
    privilege.run(sh, "apt-get", &["update", "-q"])?;
    let (from_backports, plain): (Vec<Tool>, Vec<Tool>) =
        missing.iter().partition(|t| t.backports && needs_backports);
    if !plain.is_empty() {
        let packages: Vec<&str> = plain.iter().map(|t| t.package).collect();
        eprintln!("provision: apt-get install {}", packages.join(" "));
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(packages);
        privilege.run(sh, "apt-get", &args)?;
    }
    if !from_backports.is_empty() {
        let packages: Vec<&str> = from_backports.iter().map(|t| t.package).collect();
        eprintln!(
            "provision: apt-get install -t {backports_suite} {}",
            packages.join(" ")
        );
        let mut args = vec![
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "-t",
            &backports_suite,
        ];
        args.extend(packages);
        privilege.run(sh, "apt-get", &args)?;
    }
    let still: Vec<&str> = all_tools()
        .filter(|t| !tool_ok(sh, t))
        .map(|t| t.command)
        .collect();
    if !still.is_empty() {
        bail!(
            "provision: still missing after installing: {}",
            still.join(" ")
        );
    }
    eprintln!("provision: all host tools present");
    Ok(())
}

/// Whether the tool exists (and, for QEMU, is new enough).
fn tool_ok(sh: &Shell, tool: &Tool) -> bool {
    if tool.command.starts_with('/') {
        return Path::new(tool.command).exists();
    }
    let Some(path) = find_in_path(tool.command) else {
        return false;
    };
    if tool.command.starts_with("qemu-system") {
        let version = cmd!(sh, "{path} --version")
            .quiet()
            .ignore_stderr()
            .read()
            .unwrap_or_default();
        return qemu_major(&version).is_some_and(|major| major >= MIN_QEMU_MAJOR);
    }
    true
}

/// `QEMU emulator version 10.0.2 (Debian …)` → 10.
pub fn qemu_major(version_output: &str) -> Option<u32> {
    let rest = version_output.split("version ").nth(1)?;
    rest.split('.').next()?.trim().parse().ok()
}

/// Looks a command up in PATH plus the sbin directories (a non-root PATH may lack them).
pub fn find_in_path(command: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(command))
        .find(|candidate| candidate.is_file())
}

fn os_codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_owned())
}

/// How packages get installed.
#[derive(Debug)]
enum Privilege {
    Root,
    Sudo,
    None,
}

impl Privilege {
    fn detect(sh: &Shell) -> Privilege {
        if rustix::process::geteuid().is_root() {
            Privilege::Root
        } else if cmd!(sh, "sudo -n true")
            .quiet()
            .ignore_stderr()
            .run()
            .is_ok()
        {
            Privilege::Sudo
        } else {
            Privilege::None
        }
    }

    fn run(&self, sh: &Shell, program: &str, args: &[&str]) -> Result<()> {
        let _env = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
        match self {
            Privilege::Root => cmd!(sh, "{program} {args...}").run(),
            Privilege::Sudo => cmd!(
                sh,
                "sudo -n env DEBIAN_FRONTEND=noninteractive {program} {args...}"
            )
            .run(),
            Privilege::None => bail!("not root and no sudo"),
        }
        .with_context(|| format!("running {program} {}", args.join(" ")))
    }

    fn write_file(&self, sh: &Shell, path: &str, contents: &str) -> Result<()> {
        match self {
            Privilege::Root => {
                std::fs::write(path, contents).with_context(|| format!("writing {path}"))
            }
            _ => cmd!(sh, "sudo -n tee {path}")
                .stdin(contents)
                .quiet()
                .ignore_stdout()
                .run()
                .with_context(|| format!("writing {path} through sudo")),
        }
    }
}

/// Adds `<codename>-backports` as an apt source, copying the URI and keyring of the machine's
/// existing Debian entry: no mirror is ever written into this repository.
fn ensure_backports_source(sh: &Shell, privilege: &Privilege, suite: &str) -> Result<()> {
    let sources = read_apt_sources();
    if sources.iter().any(|s| s.suites.iter().any(|x| x == suite)) {
        return Ok(());
    }
    let Some(main) = sources.iter().find(|s| is_main_debian_entry(s)) else {
        bail!(
            "provision: no Debian apt source found to derive the {suite} mirror from; add a line such as \
             'deb <your mirror> {suite} main' to /etc/apt/sources.list.d/ and rerun"
        );
    };
    let mut text = format!(
        "# Added by cargo xtask provision (initoverlayfs-rs): QEMU 10 for Debian 12\nTypes: deb\nURIs: {}\nSuites: {suite}\nComponents: main\n",
        main.uri
    );
    if let Some(key) = &main.signed_by {
        text.push_str(&format!("Signed-By: {key}\n"));
    }
    eprintln!(
        "provision: adding apt source {BACKPORTS_SOURCE} ({suite} from {})",
        main.uri
    );
    privilege.write_file(sh, BACKPORTS_SOURCE, &text)
}

/// The architectures named by `pkg:arch` packages among `tools`.
fn foreign_architectures(tools: &[Tool]) -> Vec<&'static str> {
    let mut arches: Vec<&'static str> = tools
        .iter()
        .filter_map(|t| t.package.split_once(':').map(|(_, arch)| arch))
        .collect();
    arches.sort_unstable();
    arches.dedup();
    arches
}

/// Where the kernel takes binfmt_misc registrations, and the entries qemu-user-binfmt ships.
const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";
const BINFMT_D: &str = "/usr/lib/binfmt.d";

/// Makes sure this host runs binaries of the Debian architecture `arch` (`arm64`): nothing to do
/// for the host's own; otherwise binfmt_misc mounted and qemu-user's entry registered (a
/// container or a host without systemd-binfmt has neither), checked with `arch-test`, as
/// mmdebstrap does.
pub fn ensure_binfmt(sh: &Shell, arch: &str) -> Result<()> {
    let host = cmd!(sh, "dpkg --print-architecture").quiet().read()?;
    if host.trim() == arch {
        return Ok(());
    }
    if find_in_path("arch-test").is_none() {
        bail!(
            "building a Debian {arch} tree on this {} host needs arch-test (mmdebstrap checks \
             foreign binaries with it) and qemu-user-static: run `cargo xtask provision`",
            host.trim()
        );
    }
    let runs = || {
        cmd!(sh, "arch-test {arch}")
            .quiet()
            .ignore_stderr()
            .read()
            .is_ok_and(|out| out.contains(": ok"))
    };
    if runs() {
        return Ok(());
    }
    let qemu_arch = match arch {
        "arm64" => "aarch64",
        other => bail!("no qemu-user mapping for the Debian architecture {other}"),
    };
    let cannot = |why: String| {
        anyhow::anyhow!(
            "this host cannot run {arch} binaries: {why}. The {arch} Debian tree needs them (mmdebstrap runs the packages' scripts and dracut in the tree): run `cargo xtask provision` as root (building the tree in a helper VM of that architecture instead is not implemented)"
        )
    };
    let register = Path::new(BINFMT_MISC).join("register");
    if !register.exists() {
        eprintln!("provision: mounting binfmt_misc on {BINFMT_MISC}");
        cmd!(sh, "mount -t binfmt_misc binfmt_misc {BINFMT_MISC}")
            .quiet()
            .run()
            .map_err(|e| {
                cannot(format!(
                    "binfmt_misc is not mounted and mounting it failed ({e})"
                ))
            })?;
    }
    if !Path::new(BINFMT_MISC)
        .join(format!("qemu-{qemu_arch}"))
        .exists()
    {
        let entry = Path::new(BINFMT_D).join(format!("qemu-{qemu_arch}.conf"));
        let line = std::fs::read_to_string(&entry).map_err(|e| {
            cannot(format!(
                "{} ({e}; qemu-user-binfmt ships it)",
                entry.display()
            ))
        })?;
        eprintln!(
            "provision: registering {} with binfmt_misc",
            entry.display()
        );
        std::fs::write(&register, line.trim_end())
            .map_err(|e| cannot(format!("registering {} failed ({e})", entry.display())))?;
    }
    if !runs() {
        return Err(cannot(format!(
            "`arch-test {arch}` still fails with qemu-{qemu_arch} registered"
        )));
    }
    Ok(())
}

/// The machine's Debian mirror, from its apt sources (never written into this repository).
pub fn debian_mirror() -> Result<String> {
    read_apt_sources()
        .into_iter()
        .find(is_main_debian_entry)
        .map(|s| s.uri)
        .context(
            "no Debian apt source found to take the mirror from; add one (e.g. 'deb <your mirror> bookworm main') to /etc/apt/sources.list.d/",
        )
}

/// One apt source entry, from either the one-line or the deb822 format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    pub uri: String,
    pub suites: Vec<String>,
    pub signed_by: Option<String>,
}

fn is_main_debian_entry(source: &AptSource) -> bool {
    source
        .suites
        .iter()
        .any(|s| !s.contains('-') && !s.contains('/'))
        && !source.uri.contains("security")
}

fn read_apt_sources() -> Vec<AptSource> {
    let mut sources = Vec::new();
    let mut files: Vec<PathBuf> = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut extra: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        extra.sort();
        files.extend(extra);
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        match file.extension().and_then(|e| e.to_str()) {
            Some("sources") => sources.extend(parse_deb822(&text)),
            Some("list") => sources.extend(parse_one_line(&text)),
            _ if file == Path::new("/etc/apt/sources.list") => {
                sources.extend(parse_one_line(&text))
            }
            _ => {}
        }
    }
    sources
}

/// `deb [signed-by=/k.gpg] http://mirror/debian bookworm main`
pub fn parse_one_line(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        let mut signed_by = None;
        let mut rest = rest.trim();
        if let Some(options) = rest.strip_prefix('[') {
            let Some((options, after)) = options.split_once(']') else {
                continue;
            };
            signed_by = options
                .split_whitespace()
                .find_map(|o| o.strip_prefix("signed-by="))
                .map(str::to_owned);
            rest = after.trim();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(AptSource {
            uri: uri.to_owned(),
            suites: vec![suite.to_owned()],
            signed_by,
        });
    }
    out
}

/// deb822 stanzas: `Types`, `URIs`, `Suites`, `Signed-By`, separated by blank lines.
pub fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (key, value) = l.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        let enabled = field("Enabled").is_none_or(|v| v != "no");
        let is_deb = field("Types").is_some_and(|t| t.split_whitespace().any(|x| x == "deb"));
        let (Some(uris), Some(suites)) = (field("URIs"), field("Suites")) else {
            continue;
        };
        if !enabled || !is_deb {
            continue;
        }
        for uri in uris.split_whitespace() {
            out.push(AptSource {
                uri: uri.to_owned(),
                suites: suites.split_whitespace().map(str::to_owned).collect(),
                signed_by: field("Signed-By"),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_static_build_toolchains_are_provisioned() {
        for file in crate::static_build::MUSL_BUILD_FILES
            .iter()
            .chain(&crate::static_build::AARCH64_BUILD_FILES)
            .chain(&crate::static_build::AARCH64_MUSL_BUILD_FILES)
        {
            assert!(
                TOOLS.iter().any(|t| t.command == *file),
                "{file} is not provisioned"
            );
        }
    }

    /// What `cargo xtask dist` and its tests run comes from provisioning, but for what
    /// Debian's Essential packages hold.
    #[test]
    fn the_package_tools_are_provisioned() {
        const ESSENTIAL: [&str; 3] = ["dpkg", "gzip", "coreutils"];
        for (command, package) in crate::dist::HOST_TOOLS
            .iter()
            .chain(&crate::dist::rpm::HOST_TOOLS)
            .chain([&crate::dist::LINTIAN, &crate::dist::rpm::RPMLINT])
            .filter(|(_, package)| !ESSENTIAL.contains(package))
        {
            assert!(
                all_tools().any(|t| t.package == *package),
                "{command} ({package}) is not provisioned"
            );
        }
    }

    /// What the UKI and Secure Boot cells run on the host comes from provisioning, the
    /// firmware tools from backports (bookworm has no python3-virt-firmware).
    #[test]
    fn the_secure_boot_tools_are_provisioned() {
        for command in ["openssl", "sbsign", "virt-fw-vars"] {
            assert!(
                all_tools().any(|t| t.command == command),
                "{command} is not provisioned"
            );
        }
        assert!(all_tools().any(|t| t.package == "python3-virt-firmware" && t.backports));
    }

    #[test]
    fn foreign_packages_name_their_architecture() {
        assert_eq!(foreign_architectures(&TOOLS), ["arm64"]);
    }

    const MIRROR: &str = "http://mirror.invalid/debian";

    #[test]
    fn deb822_sources() {
        let text = format!(
            "Types: deb\n# comment\nURIs: {MIRROR}\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\nComponents: main\n"
        );
        let sources = parse_deb822(&text);
        assert_eq!(sources.len(), 2);
        assert_eq!(sources[0].uri, MIRROR);
        assert_eq!(sources[0].suites, ["bookworm", "bookworm-updates"]);
        assert!(is_main_debian_entry(&sources[0]));
        assert!(!is_main_debian_entry(&sources[1]));
        assert_eq!(
            parse_deb822("Types: deb-src\nURIs: x\nSuites: bookworm\n"),
            []
        );
    }

    #[test]
    fn one_line_sources() {
        let text = format!(
            "# c\ndeb [arch=amd64 signed-by=/k.gpg] {MIRROR} bookworm main\ndeb-src {MIRROR} bookworm main\n"
        );
        assert_eq!(
            parse_one_line(&text),
            [AptSource {
                uri: MIRROR.into(),
                suites: vec!["bookworm".into()],
                signed_by: Some("/k.gpg".into())
            }]
        );
    }

    #[test]
    fn qemu_versions() {
        assert_eq!(
            qemu_major("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n"),
            Some(10)
        );
        assert_eq!(qemu_major("QEMU emulator version 7.2.15"), Some(7));
        assert_eq!(qemu_major("garbage"), None);
    }
}
