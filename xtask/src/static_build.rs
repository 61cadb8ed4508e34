//! Building storage-init as the static binary the mini initramfs runs: with musl (the
//! production build: ~400 KiB) where the Debian toolchain for it is installed, else with glibc
//! (static-pie, ~1.2 MiB). rustup cannot fetch a musl target here, so the musl build uses
//! Debian's rustc-web with `-Z build-std` against its rust-web-src (BRIEF §6).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

/// The C library storage-init is linked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Libc {
    Musl,
    Glibc,
}

impl Libc {
    fn triple(self) -> &'static str {
        match self {
            Libc::Musl => "x86_64-unknown-linux-musl",
            Libc::Glibc => "x86_64-unknown-linux-gnu",
        }
    }
}

/// A static program of the storage-init package the mini initramfs can run as PID 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pid1Binary {
    /// The product.
    #[default]
    StorageInit,
    /// `storage-init/examples/syscall_floor.rs`: the same syscalls without the decisions, the
    /// baseline of `cargo xtask bench-storage-init`.
    SyscallFloor,
    /// `storage-init/examples/boot_sampler.rs`: not a PID 1 but the boot benchmark's guest
    /// probe (`xtask::boot_probe`), built the same way; no cell names it.
    #[serde(skip)]
    BootSampler,
}

impl Pid1Binary {
    /// What to add to `cargo build --package storage-init`.
    fn cargo_args(self) -> &'static [&'static str] {
        match self {
            Pid1Binary::StorageInit => &[],
            Pid1Binary::SyscallFloor => &["--example", "syscall_floor"],
            Pid1Binary::BootSampler => &["--example", "boot_sampler"],
        }
    }

    /// Where cargo puts it, under `<target dir>/<triple>/<profile>/`.
    fn relative_path(self) -> &'static str {
        match self {
            Pid1Binary::StorageInit => "storage-init",
            Pid1Binary::SyscallFloor => "examples/syscall_floor",
            Pid1Binary::BootSampler => "examples/boot_sampler",
        }
    }
}

/// Debian's Rust toolchain (rustc-web, cargo-web), used for the musl build only.
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// What the musl build needs besides the toolchain: std's sources (rust-web-src), the musl
/// linker wrapper (musl-tools) and LLVM's libunwind (libunwind-14-dev).
pub const MUSL_BUILD_FILES: [&str; 5] = [
    DEBIAN_CARGO,
    DEBIAN_RUSTC,
    "/usr/lib/rustlib/src/rust/library/Cargo.lock",
    "/usr/bin/musl-gcc",
    "/usr/lib/llvm-14/lib/libunwind.a",
];
/// Where musl builds go: Debian's cargo is another version than rustup's, so it gets its own
/// target directory rather than invalidating the main one.
const MUSL_TARGET_DIR: &str = "target/musl";

/// Whether this machine can make the musl build.
pub fn musl_available() -> bool {
    MUSL_BUILD_FILES.iter().all(|f| Path::new(f).is_file())
}

/// Set to `glibc` or `musl` to choose the C library instead of the default (musl where its
/// toolchain is installed), e.g. to compare the two in `cargo xtask bench-storage-init`.
pub const LIBC_ENV: &str = "INITOVERLAYFS_LIBC";

/// Builds with musl where possible, else glibc (saying so once per call), unless
/// [`LIBC_ENV`] chooses.
pub fn build_preferred(sh: &Shell, root: &Path) -> Result<(PathBuf, Libc)> {
    build_preferred_binary(sh, root, Pid1Binary::StorageInit)
}

/// [`build_preferred`] for either PID 1 program.
pub fn build_preferred_binary(
    sh: &Shell,
    root: &Path,
    binary: Pid1Binary,
) -> Result<(PathBuf, Libc)> {
    let libc = match std::env::var(LIBC_ENV).as_deref() {
        Ok("glibc") => Libc::Glibc,
        Ok("musl") => Libc::Musl,
        Ok(other) => bail!("{LIBC_ENV}={other:?}: expected glibc or musl"),
        Err(_) if musl_available() => Libc::Musl,
        Err(_) => {
            eprintln!(
                "storage-init: the musl toolchain is missing (cargo xtask provision installs it); building with glibc"
            );
            Libc::Glibc
        }
    };
    Ok((build_binary(sh, root, libc, binary)?, libc))
}

/// What the aarch64 build needs: Debian's toolchain, std for arm64 (libstd-rust-web-dev:arm64),
/// the cross linker (gcc-aarch64-linux-gnu) and arm64's static glibc (libc6-dev-arm64-cross).
pub const AARCH64_BUILD_FILES: [&str; 4] = [
    DEBIAN_CARGO,
    "/usr/lib/rustlib/aarch64-unknown-linux-gnu/lib",
    "/usr/bin/aarch64-linux-gnu-gcc",
    "/usr/aarch64-linux-gnu/lib/libc.a",
];
const AARCH64_TRIPLE: &str = "aarch64-unknown-linux-gnu";
const AARCH64_TARGET_DIR: &str = "target/aarch64";

/// The static storage-init for a guest architecture (QEMU's name: `x86_64`, `aarch64`).
pub fn build_for_arch(sh: &Shell, root: &Path, arch: &str) -> Result<PathBuf> {
    build_binary_for_arch(sh, root, arch, Pid1Binary::StorageInit)
}

/// [`build_for_arch`] for any of the programs; the examples are built for x86_64 only (the
/// benchmarks' machines).
pub fn build_binary_for_arch(
    sh: &Shell,
    root: &Path,
    arch: &str,
    binary: Pid1Binary,
) -> Result<PathBuf> {
    match (arch, binary) {
        ("x86_64", _) => Ok(build_preferred_binary(sh, root, binary)?.0),
        ("aarch64", Pid1Binary::StorageInit) => build_aarch64(sh, root),
        (other, _) => bail!("no {binary:?} build for {other}"),
    }
}

/// Whether rustup's toolchain has `triple`'s std installed (GitHub: `rustup target add`).
fn rustup_has_target(sh: &Shell, triple: &str) -> bool {
    cmd!(sh, "rustup target list --installed")
        .quiet()
        .ignore_stderr()
        .read()
        .is_ok_and(|list| list.lines().any(|l| l.trim() == triple))
}

/// The aarch64 storage-init: static glibc, cross-built with rustup's aarch64 std where it is
/// installed (GitHub's runners, after `rustup target add`), else with Debian's rustc-web and
/// its arm64 std (rustup has only the x86_64 std here; BRIEF §6). Both link with Debian's
/// cross gcc. About 1 MiB.
fn build_aarch64(sh: &Shell, root: &Path) -> Result<PathBuf> {
    let _dir = sh.push_dir(root);
    let rustflags = "-C target-feature=+crt-static -C relocation-model=static";
    let linker_env = "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER";
    if rustup_has_target(sh, AARCH64_TRIPLE) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let target_dir =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        cmd!(
            sh,
            "{cargo} build --quiet --package storage-init --profile initrd --target {AARCH64_TRIPLE}"
        )
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env(linker_env, "aarch64-linux-gnu-gcc")
        .env("RUSTFLAGS", rustflags)
        .run()
        .context("building the static aarch64 storage-init (rustup's aarch64 target)")?;
        return checked_static(
            target_dir
                .join(AARCH64_TRIPLE)
                .join("initrd")
                .join("storage-init"),
        );
    }
    if let Some(missing) = AARCH64_BUILD_FILES.iter().find(|f| !Path::new(f).exists()) {
        bail!(
            "the aarch64 storage-init needs {missing}: cargo xtask provision installs cargo-web, libstd-rust-web-dev:arm64, gcc-aarch64-linux-gnu and libc6-dev-arm64-cross"
        );
    }
    let target_dir = root.join(AARCH64_TARGET_DIR);
    cmd!(
        sh,
        "{DEBIAN_CARGO} build --quiet --package storage-init --profile initrd --target {AARCH64_TRIPLE}"
    )
    .env_remove("CARGO_ENCODED_RUSTFLAGS")
    .env_remove("RUSTUP_TOOLCHAIN")
    .env("RUSTC", DEBIAN_RUSTC)
    .env("CARGO_TARGET_DIR", &target_dir)
    .env(linker_env, "aarch64-linux-gnu-gcc")
    .env("RUSTFLAGS", rustflags)
    .run()
    .context("building the static aarch64 storage-init (Debian's rustc-web)")?;
    checked_static(
        target_dir
            .join(AARCH64_TRIPLE)
            .join("initrd")
            .join("storage-init"),
    )
}

/// `binary`, if it is static: a dynamically linked PID 1 cannot start.
fn checked_static(binary: PathBuf) -> Result<PathBuf> {
    let bytes = std::fs::read(&binary).with_context(|| {
        format!(
            "cargo built storage-init but {} cannot be read",
            binary.display()
        )
    })?;
    if has_interpreter(&bytes) {
        bail!(
            "{} is dynamically linked: it cannot run as PID 1 of the mini initramfs",
            binary.display()
        );
    }
    Ok(binary)
}

/// Builds the static storage-init with the `initrd` size profile and checks it is static.
pub fn build(sh: &Shell, root: &Path, libc: Libc) -> Result<PathBuf> {
    build_binary(sh, root, libc, Pid1Binary::StorageInit)
}

/// [`build`] for either PID 1 program.
pub fn build_binary(sh: &Shell, root: &Path, libc: Libc, binary: Pid1Binary) -> Result<PathBuf> {
    let triple = libc.triple();
    let extra = binary.cargo_args();
    let _dir = sh.push_dir(root);
    let target_dir = match libc {
        Libc::Glibc => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            // An explicit --target keeps these flags off build scripts and proc macros. A set
            // CARGO_ENCODED_RUSTFLAGS (even empty) would override RUSTFLAGS, so it goes.
            cmd!(
                sh,
                "{cargo} build --quiet --package storage-init {extra...} --profile initrd --target {triple}"
            )
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env(
                "RUSTFLAGS",
                "-C target-feature=+crt-static -C relocation-model=static",
            )
            .run()
            .context("building the static storage-init (glibc)")?;
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
        }
        Libc::Musl => {
            let target_dir = root.join(MUSL_TARGET_DIR);
            // Debian's std is built here from source for musl (RUSTC_BOOTSTRAP unlocks -Z on a
            // stable compiler); linking goes through musl-gcc, static and not PIE.
            cmd!(
                sh,
                "{DEBIAN_CARGO} build --quiet -Z build-std=std,panic_abort --package storage-init {extra...} --profile initrd --target {triple}"
            )
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env("RUSTC", DEBIAN_RUSTC)
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_TARGET_DIR", &target_dir)
            .env(
                "RUSTFLAGS",
                "-C link-self-contained=no -C linker=musl-gcc -C target-feature=+crt-static -C relocation-model=static -L /usr/lib/llvm-14/lib",
            )
            .run()
            .context("building the static storage-init (musl, Debian's rustc-web)")?;
            target_dir
        }
    };
    checked_static(
        target_dir
            .join(triple)
            .join("initrd")
            .join(binary.relative_path()),
    )
}

/// Whether a 64-bit little-endian ELF file asks for a dynamic loader (has a `PT_INTERP`
/// program header; layout from the System V ABI, `Elf64_Ehdr` and `Elf64_Phdr`).
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let le16 = |at: usize| {
        elf.get(at..at + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let le32 = |at: usize| {
        elf.get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let le64 = |at: usize| {
        elf.get(at..at + 8).map_or(0, |b| {
            u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize
        })
    };
    let (phoff, phentsize, phnum) = (le64(0x20), le16(0x36), le16(0x38));
    (0..phnum).any(|i| le32(phoff + i * phentsize) == PT_INTERP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_executables_are_told_apart() {
        // The test binary itself is dynamically linked; /bin/sh is too on Debian.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interpreter(&me));
        assert!(!has_interpreter(b"not an ELF file"));
    }
}
