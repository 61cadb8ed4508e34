//! Building storage-init as the static binary the mini initramfs runs: with musl (the
//! production build: ~320 KiB on x86_64 and aarch64) where the toolchain for it is installed,
//! else with glibc (static, ~1.2 MiB). rustup cannot fetch a musl target here, so the musl builds
//! use Debian's rustc-web with `-Z build-std` against its rust-web-src (BRIEF §6), for aarch64
//! with arm64's musl (musl-dev:arm64) behind the cross gcc. The same aarch64 toolchain
//! cross-builds builder for the arm64 Debian package.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::disk_spec::Pid1Binary;

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

/// Debian's Rust toolchain (rustc-web, cargo-web), used for the musl builds only.
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// std's sources (rust-web-src), which `-Z build-std` compiles for the musl targets.
const RUST_SRC_LOCK: &str = "/usr/lib/rustlib/src/rust/library/Cargo.lock";
/// LLVM's libunwind (libunwind-14-dev), which Rust's static musl std links, for x86_64.
const X86_64_UNWIND_DIR: &str = "/usr/lib/llvm-14/lib";
/// What the musl build needs besides the toolchain: std's sources, the musl linker wrapper
/// (musl-tools) and LLVM's libunwind.
pub const MUSL_BUILD_FILES: [&str; 5] = [
    DEBIAN_CARGO,
    DEBIAN_RUSTC,
    RUST_SRC_LOCK,
    "/usr/bin/musl-gcc",
    "/usr/lib/llvm-14/lib/libunwind.a",
];
/// Where musl builds go: Debian's cargo is another version than rustup's, so it gets its own
/// target directory rather than invalidating the main one.
const MUSL_TARGET_DIR: &str = "target/musl";
/// std rebuilt for size, the same for both architectures. `panic_abort` as the profile says;
/// `backtrace-trace-only` leaves out std's DWARF symboliser (gimli, addr2line, a zlib inflater,
/// the demangler: ~130 KiB of code that only names the frames of a panic's backtrace, which
/// `RUST_BACKTRACE` still prints as addresses) and `optimize_for_size` picks core's smaller
/// algorithms. A panic still prints its message. x86_64: 495,760 -> 321,392 bytes.
const MUSL_BUILD_STD: [&str; 4] = [
    "-Z",
    "build-std=std,panic_abort",
    "-Z",
    "build-std-features=backtrace-trace-only,optimize_for_size",
];
/// Static and not PIE (nothing to relocate at start); musl-gcc links with Debian's musl, not
/// the self-contained copy rustup's targets carry.
const MUSL_RUSTFLAGS: &str =
    "-C link-self-contained=no -C target-feature=+crt-static -C relocation-model=static";

/// `RUSTFLAGS` for a shipped binary: `base`, then the remapping that keeps this machine's
/// paths out of it. Panic locations of dependencies name their sources under `CARGO_HOME`
/// (`/root/.cargo` here, `/home/runner/.cargo` on a CI runner), so without it the package's
/// bytes would follow the build machine; the standard library's are `/rustc/<commit>/`
/// already, the workspace's relative.
pub fn shipped_rustflags(base: &str) -> String {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    let remap = format!(
        "--remap-path-prefix={}={CARGO_HOME_REMAPPED}",
        cargo_home.display()
    );
    if base.is_empty() {
        remap
    } else {
        format!("{base} {remap}")
    }
}

/// What [`shipped_rustflags`] writes in place of `CARGO_HOME`.
pub const CARGO_HOME_REMAPPED: &str = "/cargo";

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
    let libc = choose_libc(musl_available(), "x86_64")?;
    Ok((build_binary(sh, root, libc, binary)?, libc))
}

/// [`LIBC_ENV`]'s choice, else musl where its toolchain is there.
fn choose_libc(musl_available: bool, arch: &str) -> Result<Libc> {
    Ok(match std::env::var(LIBC_ENV).as_deref() {
        Ok("glibc") => Libc::Glibc,
        Ok("musl") => Libc::Musl,
        Ok(other) => bail!("{LIBC_ENV}={other:?}: expected glibc or musl"),
        Err(_) if musl_available => Libc::Musl,
        Err(_) => {
            eprintln!(
                "storage-init: the {arch} musl toolchain is missing (cargo xtask provision installs it); building with glibc"
            );
            Libc::Glibc
        }
    })
}

/// What the aarch64 glibc build needs: Debian's toolchain, std for arm64
/// (libstd-rust-web-dev:arm64), the cross linker (gcc-aarch64-linux-gnu) and arm64's static
/// glibc (libc6-dev-arm64-cross).
pub const AARCH64_BUILD_FILES: [&str; 4] = [
    DEBIAN_CARGO,
    "/usr/lib/rustlib/aarch64-unknown-linux-gnu/lib",
    "/usr/bin/aarch64-linux-gnu-gcc",
    "/usr/aarch64-linux-gnu/lib/libc.a",
];
const AARCH64_TRIPLE: &str = "aarch64-unknown-linux-gnu";
const AARCH64_TARGET_DIR: &str = "target/aarch64";
/// What the aarch64 musl build needs: Debian's toolchain and std's sources, as for x86_64,
/// and arm64's musl with its linker wrapper around the cross gcc (musl-dev:arm64); its
/// libunwind comes from [`AARCH64_UNWIND_FIXTURE`].
pub const AARCH64_MUSL_BUILD_FILES: [&str; 4] =
    [DEBIAN_CARGO, DEBIAN_RUSTC, RUST_SRC_LOCK, AARCH64_MUSL_GCC];
const AARCH64_MUSL_GCC: &str = "/usr/bin/aarch64-linux-musl-gcc";
const AARCH64_MUSL_TRIPLE: &str = "aarch64-unknown-linux-musl";
/// LLVM's libunwind for arm64 (fixtures/packages.toml): the pinned libunwind-14-dev:arm64,
/// unpacked into the fixture cache rather than installed, because it owns the same path
/// (`/usr/lib/llvm-14/lib/libunwind.a`) as the amd64 package the x86_64 build links, and dpkg
/// refuses the pair. GCC's unwinder cannot stand in: the cross gcc's libgcc_eh calls glibc's
/// `_dl_find_object`.
const AARCH64_UNWIND_FIXTURE: &str = "libunwind-14-dev-arm64";
/// Where that package has the archive.
const UNWIND_DIR_IN_PACKAGE: &str = "usr/lib/llvm-14/lib";

/// Whether this machine can make the aarch64 musl build with Debian's toolchain.
pub fn aarch64_musl_available() -> bool {
    AARCH64_MUSL_BUILD_FILES
        .iter()
        .all(|f| Path::new(f).is_file())
}

/// The cargo that runs this xtask (`CARGO`), so builds use its toolchain.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Where cargo writes its builds for the project at `root`: `CARGO_TARGET_DIR`, else
/// `root/target`.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

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
        // The examples only as musl builds: their not-shipped users (the benchmarks) need no
        // glibc fallback.
        ("aarch64", example) => build_aarch64_musl(sh, root, example),
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

/// The aarch64 storage-init: static musl where rustup has the aarch64 musl target (GitHub's
/// runners, after `rustup target add`) or Debian's toolchain can build it, else static glibc;
/// [`LIBC_ENV`] chooses too.
fn build_aarch64(sh: &Shell, root: &Path) -> Result<PathBuf> {
    let musl = rustup_has_target(sh, AARCH64_MUSL_TRIPLE) || aarch64_musl_available();
    match choose_libc(musl, "aarch64")? {
        Libc::Musl => build_aarch64_musl(sh, root, Pid1Binary::StorageInit),
        Libc::Glibc => build_aarch64_glibc(sh, root),
    }
}

/// Static musl, cross-built with rustup's aarch64 musl target where it is installed (its std,
/// crt objects, libc and libunwind are its own: the cross gcc only links), else with Debian's
/// rustc-web building std from source as for x86_64, linked by musl-dev:arm64's wrapper of the
/// cross gcc.
fn build_aarch64_musl(sh: &Shell, root: &Path, binary: Pid1Binary) -> Result<PathBuf> {
    let _dir = sh.push_dir(root);
    if rustup_has_target(sh, AARCH64_MUSL_TRIPLE) {
        let cargo = cargo();
        let target_dir = target_dir(root);
        let extra = binary.cargo_args();
        cmd!(
            sh,
            "{cargo} build --quiet --package storage-init {extra...} --profile initrd --target {AARCH64_MUSL_TRIPLE}"
        )
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER",
            "aarch64-linux-gnu-gcc",
        )
        .env(
            "RUSTFLAGS",
            shipped_rustflags("-C target-feature=+crt-static -C relocation-model=static"),
        )
        .run()
        .context("building the static aarch64 storage-init (rustup's aarch64 musl target)")?;
        return checked_static(
            target_dir
                .join(AARCH64_MUSL_TRIPLE)
                .join("initrd")
                .join(binary.relative_path()),
        );
    }
    if let Some(missing) = AARCH64_MUSL_BUILD_FILES
        .iter()
        .find(|f| !Path::new(f).exists())
    {
        bail!(
            "the aarch64 musl storage-init needs {missing}: cargo xtask provision installs rustc-web, cargo-web, rust-web-src and musl-dev:arm64"
        );
    }
    let unwind = crate::fixtures::fetch_package(sh, root, AARCH64_UNWIND_FIXTURE)
        .context("fetching arm64's libunwind for the aarch64 musl storage-init")?
        .root
        .join(UNWIND_DIR_IN_PACKAGE);
    debian_musl_build(
        sh,
        root,
        AARCH64_MUSL_TRIPLE,
        AARCH64_MUSL_GCC,
        &unwind,
        binary,
    )
}

/// Static glibc, cross-built with rustup's aarch64 std where it is installed, else with
/// Debian's rustc-web and its arm64 std (rustup has only the x86_64 std here; BRIEF §6). Both
/// link with Debian's cross gcc. About 1 MiB.
fn build_aarch64_glibc(sh: &Shell, root: &Path) -> Result<PathBuf> {
    let binary = cross_build_aarch64(
        sh,
        root,
        &AarchBuild {
            what: "the static aarch64 storage-init",
            args: &["--package", "storage-init", "--profile", "initrd"],
            rustflags: shipped_rustflags(
                "-C target-feature=+crt-static -C relocation-model=static",
            ),
            output: "initrd/storage-init",
        },
    )?;
    checked_static(binary)
}

/// builder for aarch64 in release mode, for the arm64 Debian package (`cargo xtask dist`): a
/// normal glibc program, as it runs on the installed system, cross-built with the toolchain of
/// the aarch64 storage-init and linked by the cross gcc.
pub fn build_builder_aarch64(sh: &Shell, root: &Path) -> Result<PathBuf> {
    cross_build_aarch64(
        sh,
        root,
        &AarchBuild {
            what: "the aarch64 builder",
            args: &["--release", "--package", "builder"],
            rustflags: shipped_rustflags(""),
            output: "release/builder",
        },
    )
}

/// One cargo build for aarch64.
struct AarchBuild<'a> {
    /// What is built, for messages.
    what: &'a str,
    /// cargo's arguments besides the target.
    args: &'a [&'a str],
    /// RUSTFLAGS, replacing the caller's.
    rustflags: String,
    /// The built file under `<target dir>/<triple>/`.
    output: &'a str,
}

/// Cross-builds `build` for aarch64 with rustup's aarch64 std where it is installed, else with
/// Debian's rustc-web and its arm64 std, linking with Debian's cross gcc; returns the built file.
fn cross_build_aarch64(sh: &Shell, root: &Path, build: &AarchBuild<'_>) -> Result<PathBuf> {
    let _dir = sh.push_dir(root);
    let linker_env = "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER";
    let args = build.args;
    let (target_dir, toolchain) = if rustup_has_target(sh, AARCH64_TRIPLE) {
        let cargo = cargo();
        let target_dir = target_dir(root);
        cmd!(
            sh,
            "{cargo} build --quiet {args...} --target {AARCH64_TRIPLE}"
        )
        .env("RUSTFLAGS", &build.rustflags)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env(linker_env, "aarch64-linux-gnu-gcc")
        .run()
        .with_context(|| format!("building {} (rustup's aarch64 target)", build.what))?;
        (target_dir, "rustup's aarch64 target")
    } else {
        if let Some(missing) = AARCH64_BUILD_FILES.iter().find(|f| !Path::new(f).exists()) {
            bail!(
                "{} needs {missing}: cargo xtask provision installs cargo-web, libstd-rust-web-dev:arm64, gcc-aarch64-linux-gnu and libc6-dev-arm64-cross",
                build.what
            );
        }
        let target_dir = root.join(AARCH64_TARGET_DIR);
        cmd!(
            sh,
            "{DEBIAN_CARGO} build --quiet {args...} --target {AARCH64_TRIPLE}"
        )
        .env("RUSTFLAGS", &build.rustflags)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env("RUSTC", DEBIAN_RUSTC)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env(linker_env, "aarch64-linux-gnu-gcc")
        .run()
        .with_context(|| format!("building {} (Debian's rustc-web)", build.what))?;
        (target_dir, "Debian's rustc-web")
    };
    let binary = target_dir.join(AARCH64_TRIPLE).join(build.output);
    if !binary.is_file() {
        bail!(
            "cargo built {} with {toolchain} but {} is not there",
            build.what,
            binary.display()
        );
    }
    Ok(binary)
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
    if libc == Libc::Musl {
        let unwind = Path::new(X86_64_UNWIND_DIR);
        return debian_musl_build(sh, root, triple, "musl-gcc", unwind, binary);
    }
    let extra = binary.cargo_args();
    let _dir = sh.push_dir(root);
    let cargo = cargo();
    // An explicit --target keeps these flags off build scripts and proc macros. A set
    // CARGO_ENCODED_RUSTFLAGS (even empty) would override RUSTFLAGS, so it goes.
    cmd!(
        sh,
        "{cargo} build --quiet --package storage-init {extra...} --profile initrd --target {triple}"
    )
    .env_remove("CARGO_ENCODED_RUSTFLAGS")
    .env(
        "RUSTFLAGS",
        shipped_rustflags("-C target-feature=+crt-static -C relocation-model=static"),
    )
    .run()
    .context("building the static storage-init (glibc)")?;
    let target_dir = target_dir(root);
    checked_static(
        target_dir
            .join(triple)
            .join("initrd")
            .join(binary.relative_path()),
    )
}

/// The musl build with Debian's toolchain: std built from source for `triple` (RUSTC_BOOTSTRAP
/// unlocks -Z on a stable compiler) with [`MUSL_BUILD_STD`], linked by `linker` (a musl-gcc
/// wrapper) against the libunwind in `unwind_dir`.
fn debian_musl_build(
    sh: &Shell,
    root: &Path,
    triple: &str,
    linker: &str,
    unwind_dir: &Path,
    binary: Pid1Binary,
) -> Result<PathBuf> {
    let _dir = sh.push_dir(root);
    let target_dir = root.join(MUSL_TARGET_DIR);
    let extra = binary.cargo_args();
    let unwind_dir = unwind_dir.display();
    cmd!(
        sh,
        "{DEBIAN_CARGO} build --quiet {MUSL_BUILD_STD...} --package storage-init {extra...} --profile initrd --target {triple}"
    )
    .env_remove("CARGO_ENCODED_RUSTFLAGS")
    .env_remove("RUSTUP_TOOLCHAIN")
    .env("RUSTC", DEBIAN_RUSTC)
    .env("RUSTC_BOOTSTRAP", "1")
    .env("CARGO_TARGET_DIR", &target_dir)
    .env(
        "RUSTFLAGS",
        shipped_rustflags(&format!(
            "{MUSL_RUSTFLAGS} -C linker={linker} -L {unwind_dir}"
        )),
    )
    .run()
    .with_context(|| format!("building the static storage-init ({triple}, Debian's rustc-web)"))?;
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
