//! The RPM `cargo xtask dist` builds, built here from the real binaries: what it holds and its
//! header (snapshots), byte-identical builds, rpmlint's verdict, and an install into a tree.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use xshell::{Shell, cmd};
use xtask::dist::{self, Arch, Metadata, rpm};
use xtask::provision::{find_in_path, skip_or_fail};
use xtask::vm_test::project_root;

/// A fixed build time, so the snapshots do not follow the last commit.
const EPOCH: u64 = 1_700_000_000;

/// Whether every tool in `tools` is here; if not, the test skips (fails under CI), naming the
/// package to install.
fn have(tools: &[(&str, &str)]) -> bool {
    for (tool, package) in tools {
        if find_in_path(tool).is_none() {
            skip_or_fail(&format!(
                "{tool} is missing: install {package} (cargo xtask provision does)"
            ));
            return false;
        }
    }
    true
}

/// Builds the binaries (after the first time cargo has nothing to do) and the package for
/// `arch` into `out_dir`, with [`EPOCH`] as its time.
fn package(arch: Arch, out_dir: &Path) -> (PathBuf, dist::Binaries) {
    let root = project_root();
    let sh = Shell::new().unwrap();
    let meta = Metadata::read(&root).unwrap();
    let binaries = dist::build_binaries(&sh, &root, arch).unwrap();
    let package = rpm::build_rpm(&sh, &root, &meta, EPOCH, &binaries, out_dir).unwrap();
    assert_eq!(
        package.file_name().unwrap().to_str(),
        Some(rpm::file_name(&meta, arch).as_str())
    );
    (package, binaries)
}

/// `rpm -qp` with `args` on `package`.
fn query(package: &Path, args: &[&str]) -> String {
    let sh = Shell::new().unwrap();
    cmd!(sh, "rpm -qp {args...} {package}")
        .quiet()
        .read()
        .unwrap()
}

/// The payload, one line per entry: mode, owner, `%doc`/`%license` flags, path, link target;
/// sizes and digests left out, so a change to the code does not change the listing.
fn listing(package: &Path) -> String {
    let times = query(package, &["--qf", "[%{FILEMTIMES}\\n]"]);
    assert!(
        times.lines().all(|t| t == EPOCH.to_string()),
        "every entry has the build's time: {times}"
    );
    let entries = query(
        package,
        &[
            "--qf",
            "[%{FILEMODES:perms}\t%{FILEUSERNAME}:%{FILEGROUPNAME}\t%{FILEFLAGS:fflags}\t\
             %{FILENAMES}\t%{FILELINKTOS}\n]",
        ],
    );
    let mut lines = Vec::new();
    for entry in entries.lines() {
        let [mode, owner, flags, path, target] = entry.split('\t').collect::<Vec<_>>()[..] else {
            panic!("{entry:?}: expected five fields");
        };
        // `d` a %doc file, `l` a %license one, `-` neither.
        let flags = if flags.is_empty() { "-" } else { flags };
        let mut line = format!("{mode} {owner} {flags} {path}");
        if !target.is_empty() {
            line.push_str(&format!(" -> {target}"));
        }
        lines.push(line);
    }
    lines.join("\n") + "\n"
}

/// The header's facts: tags, dependencies and scriptlets. The versions of the glibc and
/// libgcc symbols builder uses are masked (they follow its code), each library kept once.
fn header(package: &Path) -> String {
    let tags = query(
        package,
        &[
            "--qf",
            "Name: %{NAME}\nVersion: %{VERSION}\nRelease: %{RELEASE}\nArch: %{ARCH}\n\
             License: %{LICENSE}\nSummary: %{SUMMARY}\nBuildHost: %{BUILDHOST}\n\
             BuildTime: %{BUILDTIME}\nPayload: %{PAYLOADCOMPRESSOR} %{PAYLOADFLAGS}\n",
        ],
    );
    let symbol_version = regex::Regex::new(r"\((GLIBC|GCC)_[0-9.]+\)").unwrap();
    let mut requires: Vec<String> = query(package, &["--requires"])
        .lines()
        .map(|l| symbol_version.replace(l, "(${1}_[version])").into_owned())
        .collect();
    requires.dedup();
    format!(
        "{tags}\nRequires:\n{}\n\nRecommends:\n{}\n\n{}\n",
        requires.join("\n"),
        query(package, &["--recommends"]),
        query(package, &["--scripts"])
    )
}

#[test]
fn rpm_contents_and_header() {
    if !have(&rpm::HOST_TOOLS) {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let (package, _) = package(Arch::Amd64, out.path());
    insta::assert_snapshot!("rpm_contents", listing(&package));
    // The version line is kept: a new version is a reviewed change of the snapshot.
    let header = header(&package);
    insta::assert_snapshot!("rpm_header", header);
    // The scriptlets are the contract, word for word.
    let scripts = query(&package, &["--scripts"]);
    assert!(scripts.contains(rpm::POST_SCRIPT.trim_end()), "{scripts}");
    assert!(scripts.contains(rpm::PREUN_SCRIPT.trim_end()), "{scripts}");
}

#[test]
fn rpm_builds_are_byte_identical() {
    if !have(&rpm::HOST_TOOLS) {
        return;
    }
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = std::fs::read(package(Arch::Amd64, a.path()).0).unwrap();
    // Later file times in the staging tree must not reach the package.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = std::fs::read(package(Arch::Amd64, b.path()).0).unwrap();
    let digest = |bytes: &[u8]| hex::encode(Sha256::digest(bytes));
    assert!(
        first == second,
        "two builds with SOURCE_DATE_EPOCH={EPOCH} differ: {} bytes, sha256 {}; {} bytes, \
         sha256 {}",
        first.len(),
        digest(&first),
        second.len(),
        digest(&second)
    );
    println!("{} bytes, sha256 {}", first.len(), digest(&first));
}

/// rpmlint, with Fedora's settings and the package's filters, finds no error and no warning in
/// `package`; every filter is used (rpmlint says `unused-rpmlintrc-filter` otherwise).
fn check_rpmlint(package: &Path) {
    let sh = Shell::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rpmlint.toml");
    let filters = dir.path().join("initoverlayfs.rpmlintrc");
    std::fs::write(&config, rpm::RPMLINT_CONFIG).unwrap();
    std::fs::write(&filters, rpm::RPMLINT_FILTERS).unwrap();
    let output = cmd!(sh, "rpmlint -c {config} -r {filters} {package}")
        .quiet()
        .ignore_status()
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let findings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(": E: ") || l.contains(": W: "))
        .collect();
    assert!(
        output.status.success() && findings.is_empty(),
        "rpmlint {}:\n{text}{}",
        package.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn rpmlint_finds_nothing() {
    if !have(&rpm::HOST_TOOLS) || !have(&[rpm::RPMLINT]) {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    check_rpmlint(&package(Arch::Amd64, out.path()).0);
}

/// rpm installs the package into an empty tree (no dependencies, no scriptlets: the tree has
/// neither): every file lands where the listing says, with its mode, and the programs are
/// the ones built.
#[test]
fn rpm_installs_into_a_tree() {
    if !have(&rpm::HOST_TOOLS) {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let (package, binaries) = package(Arch::Amd64, out.path());
    let tree = tempfile::tempdir().unwrap();
    let sh = Shell::new().unwrap();
    let root = tree.path();
    // --dbpath is inside --root.
    cmd!(
        sh,
        "rpm --root {root} --dbpath /var/lib/rpm -i --nodeps --noscripts {package}"
    )
    .quiet()
    .ignore_stderr()
    .run()
    .unwrap();
    let mut found = Vec::new();
    let mut pending = vec![root.join("usr")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let metadata = std::fs::symlink_metadata(&path).unwrap();
            if metadata.is_dir() {
                pending.push(path.clone());
            } else {
                use std::os::unix::fs::PermissionsExt;
                found.push(format!(
                    "/{} {:04o}",
                    path.strip_prefix(root).unwrap().display(),
                    metadata.permissions().mode() & 0o7777
                ));
            }
        }
    }
    found.sort();
    insta::assert_snapshot!("rpm_installed_files", found.join("\n") + "\n");
    assert_eq!(
        std::fs::read(root.join(dist::STORAGE_INIT_PATH)).unwrap(),
        std::fs::read(&binaries.storage_init).unwrap(),
        "storage-init is shipped as built"
    );
    let plugin = std::fs::read_to_string(root.join(rpm::KERNEL_INSTALL_PLUGIN_PATH)).unwrap();
    assert!(
        plugin.contains("BUILDER=\"/usr/sbin/initoverlayfs\"\n"),
        "{plugin}"
    );
    // The packaged builder runs, and is the one the man pages describe.
    let builder = root.join(dist::PROGRAM_PATH);
    let help = cmd!(sh, "{builder} --help").quiet().read().unwrap();
    assert!(help.contains("install"), "{help}");
}

/// The aarch64 package holds the same files as the x86_64 one (the same snapshot), its header
/// differs in its architecture and dynamic loader only, and rpmlint finds nothing in it either.
#[test]
#[ignore = "cross-builds builder and storage-init for aarch64: about 9 minutes on 2 cores from \
            cold; run with --run-ignored all -E 'test(aarch64_rpm)'"]
fn aarch64_rpm_matches_x86_64_and_rpmlint_finds_nothing() {
    if !have(&rpm::HOST_TOOLS)
        || !have(&[
            rpm::RPMLINT,
            ("aarch64-linux-gnu-strip", "binutils-aarch64-linux-gnu"),
        ])
    {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let (package, _) = package(Arch::Arm64, out.path());
    insta::assert_snapshot!("rpm_contents", listing(&package));
    let x86_64 = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/snapshots/dist_rpm__rpm_header.snap"
    ))
    .unwrap();
    let x86_64 = x86_64.split("---\n").nth(2).unwrap();
    assert_eq!(
        header(&package),
        x86_64
            .replace("Arch: x86_64\n", "Arch: aarch64\n")
            .replace("ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1")
    );
    check_rpmlint(&package);
}

/// The kernel release of the Fedora tree [`kernel_install_runs_the_packaged_plugin`] installs.
const KVER: &str = "6.9.0-test";
const MACHINE_ID: &str = "0123456789abcdef0123456789abcdef";

/// A Fedora tree with one kernel: os-release, machine-id, an fstab mounting /boot by UUID, the
/// kernel, its config, modules and a classic initramfs as dracut makes it (gzip, systemd as
/// /init), and its boot entry. The package's files are installed into it separately.
fn fedora_tree(root: &Path) {
    let write = |relative: &str, bytes: &[u8]| {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    write("etc/os-release", b"NAME=\"Fedora Linux\"\nID=fedora\n");
    write("etc/machine-id", format!("{MACHINE_ID}\n").as_bytes());
    write(
        "etc/fstab",
        b"UUID=11111111-2222-3333-4444-555555555555 / ext4 defaults 0 1\n\
          UUID=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee /boot ext4 defaults 0 2\n",
    );
    let mut archive = builder::cpio::Archive::new();
    archive
        .add_file(
            "/usr/lib/systemd/systemd",
            0o755,
            b"\x7fELF systemd".to_vec(),
        )
        .unwrap();
    archive
        .add_symlink("/init", "usr/lib/systemd/systemd")
        .unwrap();
    archive
        .add_file("/etc/initrd-release", 0o644, b"NAME=dracut\n".to_vec())
        .unwrap();
    let classic = builder::compress::InitramfsCompression::Gzip
        .compress(&archive.to_bytes(0).unwrap())
        .unwrap();
    write(&format!("boot/initramfs-{KVER}.img"), &classic);
    write(&format!("boot/vmlinuz-{KVER}"), b"kernel");
    write(
        &format!("boot/config-{KVER}"),
        b"CONFIG_EROFS_FS=m\nCONFIG_EROFS_FS_ZIP=y\nCONFIG_RD_GZIP=y\n",
    );
    let mut dep = String::new();
    for name in ["ext4", "erofs", "overlay", "virtio_blk", "nvme", "loop"] {
        write(
            &format!("lib/modules/{KVER}/kernel/{name}.ko"),
            b"\x7fELF module",
        );
        dep.push_str(&format!("kernel/{name}.ko:\n"));
    }
    write(&format!("lib/modules/{KVER}/modules.dep"), dep.as_bytes());
    write(
        &format!("lib/modules/{KVER}/modules.alias"),
        b"alias virtio:d00000002v* virtio_blk\n",
    );
    write(&format!("lib/modules/{KVER}/modules.softdep"), b"");
    write(&format!("lib/modules/{KVER}/modules.builtin"), b"");
    write(
        &format!("boot/loader/entries/{MACHINE_ID}-{KVER}.conf"),
        format!(
            "title Fedora Linux ({KVER})\nversion {KVER}\nlinux /vmlinuz-{KVER}\n\
             initrd /initramfs-{KVER}.img\noptions root=UUID=11111111-2222-3333-4444-555555555555 ro\n"
        )
        .as_bytes(),
    );
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> String {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found.join("\n") + "\n"
}

/// systemd's kernel-install runs the packaged plugin, as it does on Fedora when a kernel
/// package is installed and removed: `add` converts the kernel (the image, the mini initramfs,
/// the classic one kept with its own entry), `remove` deletes what `add` made. The plugin calls
/// `/usr/sbin/initoverlayfs`: the packaged one is put there in a mount namespace of the test's
/// own (an overlay over the host's /usr/sbin), and `INITOVERLAYFS_ROOT` points it at the tree.
#[test]
fn kernel_install_runs_the_packaged_plugin() {
    if !have(&rpm::HOST_TOOLS)
        || !have(&[
            ("kernel-install", "systemd"),
            ("unshare", "util-linux"),
            ("mkfs.erofs", "erofs-utils"),
        ])
    {
        return;
    }
    if !rustix::process::geteuid().is_root() {
        skip_or_fail("mounting over /usr/sbin in a mount namespace needs root (run as root)");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let (package, _) = package(Arch::Amd64, out.path());
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("root");
    fedora_tree(&tree);
    let sh = Shell::new().unwrap();
    cmd!(
        sh,
        "rpm --root {tree} --dbpath /var/lib/rpm -i --nodeps --noscripts {package}"
    )
    .quiet()
    .ignore_stderr()
    .run()
    .unwrap();
    let boot = tree.join("boot");
    let before = files_under(&boot);
    let initramfs = boot.join(format!("initramfs-{KVER}.img"));
    let classic = std::fs::read(&initramfs).unwrap();
    let kernel_install = |args: &[&str]| {
        let script = "set -e\n\
             mount -t overlay initoverlayfs-test -o \"lowerdir=$1/usr/sbin:/usr/sbin\" /usr/sbin\n\
             shift\n\
             exec kernel-install \"$@\"\n";
        let output = std::process::Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(&tree)
            .args(args)
            .env(
                "KERNEL_INSTALL_PLUGINS",
                tree.join(rpm::KERNEL_INSTALL_PLUGIN_PATH),
            )
            .env("KERNEL_INSTALL_CONF_ROOT", tree.join("etc/kernel"))
            .env("BOOT_ROOT", &boot)
            .env("MACHINE_ID", MACHINE_ID)
            .env("INITOVERLAYFS_ROOT", &tree)
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "kernel-install {args:?}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let vmlinuz = boot.join(format!("vmlinuz-{KVER}"));
    let stderr = kernel_install(&["add", KVER, vmlinuz.to_str().unwrap()]);
    let added = files_under(&boot);
    insta::assert_snapshot!("kernel_install_add", added);
    assert!(
        !stderr.contains("is missing"),
        "the plugin found the packaged program: {stderr}"
    );
    assert_eq!(
        std::fs::read(boot.join(format!("initramfs-{KVER}.classic.img"))).unwrap(),
        classic,
        "the classic initramfs is kept as is"
    );
    assert_ne!(
        std::fs::read(&initramfs).unwrap(),
        classic,
        "the bootloader's initramfs is now the mini one"
    );
    kernel_install(&["remove", KVER]);
    let removed = files_under(&boot);
    assert_eq!(
        removed, before,
        "remove deletes what add made; the kernel's own files are its package's"
    );
    assert!(
        !Path::new("/usr/sbin/initoverlayfs").exists(),
        "the namespace's overlay leaked onto the host"
    );
}
