//! RPM kernel fixtures through the real code path, offline: the Debian 6.12 kernel fixture is
//! repackaged in Fedora's layout (vmlinuz, config and `.ko.xz` modules under
//! `/lib/modules/<kver>/`, split into kernel-core and kernel-modules-core) with rpmbuild, made a
//! repository with createrepo_c, and served from a loopback HTTP server; the fixture code
//! fetches it as it would fetch Fedora's, and `cargo xtask vm-test` boots a Fedora cell from
//! it. Our RPM reader is checked against rpm2cpio and `rpm -qp` on packages rpmbuild wrote.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use xshell::Shell;
use xtask::fixtures::{self, KernelPin, KernelSource};
use xtask::pins::{Mirror, RpmFile, RpmKernel};
use xtask::rpm_fixture::fetch_rpm_kernel;
use xtask::vm_test::project_root;

const REPO: &str = "releases/43/Everything/x86_64/os";
/// An empty repository: the newest build is looked for in every repository of the pin.
const UPDATES: &str = "updates/43/Everything/x86_64";

/// A loopback HTTP server over a directory: GET only, 404 for anything missing. Records the
/// paths asked for, so a test can tell what was downloaded.
struct LoopbackMirror {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl LoopbackMirror {
    fn serve(root: PathBuf) -> LoopbackMirror {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        // Lives as long as the test process; curl makes one request per connection.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request_line = String::new();
                let mut reader = BufReader::new(&mut stream);
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                // The headers: read up to the blank line.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let mut parts = request_line.split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                log.lock().unwrap().push(path.to_owned());
                let file = (method == "GET" && !path.contains(".."))
                    .then(|| root.join(path.trim_start_matches('/')))
                    .filter(|p| p.is_file());
                let _ = match file.and_then(|p| std::fs::read(p).ok()) {
                    Some(body) => stream
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .and_then(|()| stream.write_all(&body)),
                    None => stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
            }
        });
        LoopbackMirror { url, requests }
    }

    fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e} (install it: cargo xtask provision)"));
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Builds the spec's binary packages with rpmbuild, payload compressed as `payload` says
/// (`w3.zstdio`, ...); the build root is copied from `stage`. Returns the packages by name.
fn rpmbuild(work: &Path, spec: &str, stage: &Path, payload: &str) -> BTreeMap<String, PathBuf> {
    let topdir = work.join(format!("rpmbuild-{payload}"));
    std::fs::create_dir_all(&topdir).unwrap();
    let spec_path = topdir.join("test.spec");
    let spec = format!(
        "%global debug_package %{{nil}}\n\
         %global __os_install_post %{{nil}}\n\
         %global _build_id_links none\n\
         {spec}\n\
         %install\n\
         cp -a {}/. %{{buildroot}}/\n",
        stage.display()
    );
    std::fs::write(&spec_path, spec).unwrap();
    run(Command::new("rpmbuild")
        .arg("-bb")
        .arg("--target=x86_64")
        .arg("--define")
        .arg(format!("_topdir {}", topdir.display()))
        .arg("--define")
        .arg(format!("_binary_payload {payload}"))
        .arg(&spec_path));
    let rpms = topdir.join("RPMS/x86_64");
    std::fs::read_dir(&rpms)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = run(Command::new("rpm").args(["-qp", "--qf", "%{NAME}"]).arg(&p));
            (name, p)
        })
        .collect()
}

fn listing(dir: &Path) -> String {
    builder::cpio::listing(&builder::listing::tree_entries(dir).unwrap())
}

/// Our unpacked tree and package fields against rpm2cpio | cpio and rpm -qp.
fn check_against_rpm(rpm: &Path, work: &Path) {
    let name = rpm.file_name().unwrap().to_string_lossy();
    let ours = work.join(format!("ours-{name}"));
    let package = xtask::rpm::unpack_rpm(rpm, &ours).unwrap();
    assert!(
        package.header_sha256.is_some() && package.payload_digest.is_some(),
        "{name}: rpmbuild writes both digests, so unpack_rpm checked them"
    );
    let theirs = work.join(format!("theirs-{name}"));
    std::fs::create_dir_all(&theirs).unwrap();
    run(Command::new("sh")
        .arg("-c")
        .arg("rpm2cpio \"$1\" | cpio -idm --quiet")
        .arg("sh")
        .arg(rpm)
        .current_dir(&theirs));
    assert_eq!(listing(&ours), listing(&theirs), "{name}");
    let fields = run(Command::new("rpm")
        .args([
            "-qp",
            "--qf",
            "%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{PAYLOADFORMAT} %{PAYLOADCOMPRESSOR}",
        ])
        .arg(rpm));
    assert_eq!(
        fields,
        format!(
            "{} {} {} {} {} {}",
            package.name,
            package.version,
            package.release,
            package.arch,
            package.payload_format,
            package.payload_compressor
        )
    );
}

/// Directories, a nested file, an executable, a symlink, hard links: what rpmbuild writes for
/// each payload compressor, as rpm2cpio unpacks it.
#[test]
fn our_reader_unpacks_as_rpm2cpio_does() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let work = tempfile::tempdir().unwrap();
    let stage = work.path().join("stage");
    std::fs::create_dir_all(stage.join("usr/lib/t/sub")).unwrap();
    std::fs::write(stage.join("usr/lib/t/sub/data"), vec![7u8; 100_000]).unwrap();
    std::fs::write(stage.join("usr/lib/t/tool"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        stage.join("usr/lib/t/tool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::hard_link(stage.join("usr/lib/t/tool"), stage.join("usr/lib/t/tool2")).unwrap();
    symlink("sub/data", stage.join("usr/lib/t/link")).unwrap();
    let spec = "Name: t\nVersion: 1.2\nRelease: 3.test\nSummary: t\nLicense: MIT\n\
                AutoReqProv: no\n%description\nt\n\
                %files\n%dir /usr/lib/t\n/usr/lib/t/sub\n/usr/lib/t/tool\n/usr/lib/t/tool2\n\
                /usr/lib/t/link\n";
    for payload in ["w3.zstdio", "w2.xzdio", "w6.gzdio", "w9.bzdio", "w6.lzdio"] {
        let built = rpmbuild(work.path(), spec, &stage, payload);
        check_against_rpm(&built["t"], work.path());
        let ours = work.path().join(format!(
            "ours-{}",
            built["t"].file_name().unwrap().to_string_lossy()
        ));
        let tool = ours.join("usr/lib/t/tool");
        assert!(
            std::fs::metadata(&tool).unwrap().permissions().mode() & 0o777 == 0o755,
            "{payload}"
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(&tool).unwrap().ino(),
            std::fs::metadata(ours.join("usr/lib/t/tool2"))
                .unwrap()
                .ino(),
            "{payload}: hard links stay hard links"
        );
    }
}

fn copy_into(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    run(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// kernel-core, kernel-modules-core and kernel-modules in Fedora's layout, from the Debian
/// 6.12 kernel: enough of it to boot the busybox flow on virtio-blk.
fn fedora_style_kernel(sh: &Shell, work: &Path) -> (fixtures::Kernel, BTreeMap<String, PathBuf>) {
    let kernels = fixtures::read_kernels(&project_root()).unwrap();
    let pin = kernels
        .kernel
        .iter()
        .find(|k| k.id == "debian12-6.12-amd64")
        .unwrap();
    let debian = fixtures::fetch_kernel(sh, pin).unwrap();
    let kver = &debian.release;
    let from = debian.fetched.root.join("lib/modules").join(kver);
    let stage = work.join("kernel-stage");
    let to = stage.join("lib/modules").join(kver);
    copy_into(&debian.vmlinuz, &to.join("vmlinuz"));
    copy_into(
        &debian.fetched.root.join(format!("boot/config-{kver}")),
        &to.join("config"),
    );
    copy_into(
        &debian.fetched.root.join(format!("boot/System.map-{kver}")),
        &to.join("System.map"),
    );
    for file in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        copy_into(&from.join(file), &to.join(file));
    }
    // Fedora's split: filesystems and libraries in kernel-core, the common drivers in
    // kernel-modules-core, the rest (MMC among them) in kernel-modules; a subset of the
    // drivers keeps the test quick.
    let core = ["kernel/fs", "kernel/lib", "kernel/crypto", "kernel/arch"];
    let modules_core = [
        "kernel/drivers/block",
        "kernel/drivers/scsi",
        "kernel/drivers/nvme",
        "kernel/drivers/virtio",
        "kernel/drivers/ata",
        "kernel/drivers/cdrom",
        "kernel/drivers/md",
    ];
    let modules = ["kernel/drivers/mmc"];
    for dir in core.iter().chain(&modules_core).chain(&modules) {
        if from.join(dir).exists() {
            copy_into(&from.join(dir), &to.join(dir));
        }
    }
    let lines = |dirs: &[&str]| -> String {
        dirs.iter()
            .filter(|d| to.join(d).exists())
            .map(|d| format!("/lib/modules/{kver}/{d}\n"))
            .collect()
    };
    let spec = format!(
        "Name: kernel\nVersion: 6.12.95\nRelease: 1.test\nSummary: t\nLicense: GPLv2\n\
         AutoReqProv: no\n%description\nt\n\
         %package core\nSummary: t\n%description core\nt\n\
         %package modules-core\nSummary: t\n%description modules-core\nt\n\
         %package modules\nSummary: t\n%description modules\nt\n\
         %files core\n%dir /lib/modules/{kver}\n%dir /lib/modules/{kver}/kernel\n\
         /lib/modules/{kver}/vmlinuz\n/lib/modules/{kver}/config\n/lib/modules/{kver}/System.map\n\
         /lib/modules/{kver}/modules.order\n/lib/modules/{kver}/modules.builtin\n\
         /lib/modules/{kver}/modules.builtin.modinfo\n{}\
         %files modules-core\n{}\
         %files modules\n{}",
        lines(&core),
        lines(&modules_core),
        lines(&modules)
    );
    // Fedora's payload compressor.
    let built = rpmbuild(work, &spec, &stage, "w3.zstdio");
    (debian, built)
}

/// A mirror laid out like Fedora's (the repositories of `fixtures/kernels.toml`'s fedora43
/// pin): the packages in the release repository, an empty updates repository.
fn fedora_mirror(work: &Path, built: &BTreeMap<String, PathBuf>) -> PathBuf {
    let mirror_root = work.join("mirror");
    let repo = mirror_root.join(REPO);
    for rpm in built.values() {
        copy_into(rpm, &repo.join("Packages/k").join(rpm.file_name().unwrap()));
    }
    std::fs::create_dir_all(mirror_root.join(UPDATES)).unwrap();
    for dir in [repo, mirror_root.join(UPDATES)] {
        run(Command::new("createrepo_c").arg("--quiet").arg(&dir));
    }
    mirror_root
}

fn rpm_pin(files: Vec<RpmFile>) -> KernelPin {
    KernelPin {
        id: format!("test-rpm-{}", files.len()),
        arch: "x86_64".into(),
        distro: "fedora-43".into(),
        source: KernelSource::Rpm(RpmKernel {
            mirror: Mirror::Fedora,
            repos: vec![REPO.into(), UPDATES.into()],
            packages: vec![
                "kernel-core".into(),
                "kernel-modules-core".into(),
                "kernel-modules".into(),
            ],
            files,
        }),
    }
}

#[test]
fn a_fedora_layout_kernel_is_fetched_from_a_mirror() {
    let sh = Shell::new().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (debian, built) = fedora_style_kernel(&sh, work.path());
    for rpm in built.values() {
        check_against_rpm(rpm, work.path());
    }

    let mirror_root = fedora_mirror(work.path(), &built);
    let repo = mirror_root.join(REPO);
    let mirror = LoopbackMirror::serve(mirror_root.clone());
    let cache = work.path().join("cache");

    // Unpinned: resolved from the metadata, every file checked against its sha256.
    let started = std::time::Instant::now();
    let kernel = fetch_rpm_kernel(&sh, &rpm_pin(vec![]), &mirror.url, &cache).unwrap();
    eprintln!("first fetch: {:?}", started.elapsed());
    assert!(!kernel.fetched.pinned);
    assert_eq!(kernel.release, debian.release);
    assert_eq!(kernel.fetched.version, "6.12.95-1.test");
    assert_eq!(
        std::fs::read(&kernel.vmlinuz).unwrap(),
        std::fs::read(&debian.vmlinuz).unwrap(),
        "vmlinuz is byte-identical to the Debian one"
    );
    let modules = kernel
        .modules_root()
        .join("lib/modules")
        .join(&kernel.release);
    assert!(
        modules
            .join("kernel/drivers/block/virtio_blk.ko.xz")
            .is_file()
    );
    let modules_dep = std::fs::read_to_string(modules.join("modules.dep")).unwrap();
    assert!(
        modules_dep.contains("kernel/fs/erofs/erofs.ko.xz:"),
        "depmod ran: {modules_dep}"
    );
    // builder finds the config where Fedora keeps it.
    builder::kernel_config::KernelConfig::locate(kernel.modules_root(), &kernel.release).unwrap();
    let requests = mirror.take_requests();
    assert!(
        requests
            .iter()
            .any(|r| r.ends_with("kernel-core-6.12.95-1.test.x86_64.rpm"))
    );
    assert_eq!(kernel.fetched.files.len(), 3);

    // Again: from the cache. Only repomd.xml is read (it says which build is newest).
    let again = fetch_rpm_kernel(&sh, &rpm_pin(vec![]), &mirror.url, &cache).unwrap();
    assert_eq!(again.fetched.root, kernel.fetched.root);
    let requests = mirror.take_requests();
    assert!(
        requests.iter().all(|r| r.ends_with("repodata/repomd.xml")),
        "{requests:?}"
    );

    // Pinned by path + sha256 and in the cache: no network at all.
    let files: Vec<RpmFile> = kernel
        .fetched
        .files
        .iter()
        .map(|f| RpmFile {
            path: f
                .url
                .strip_prefix(&format!("{}/", mirror.url))
                .unwrap()
                .to_owned(),
            sha256: f.sha256.clone(),
        })
        .collect();
    let pinned = fetch_rpm_kernel(&sh, &rpm_pin(files.clone()), &mirror.url, &cache).unwrap();
    assert!(pinned.fetched.pinned);
    assert_eq!(pinned.fetched.root, kernel.fetched.root);
    assert_eq!(mirror.take_requests(), Vec::<String>::new());

    // A pinned file gone from the mirror: the newest build from the metadata, marked unpinned.
    let mut gone = files.clone();
    gone[0].path = format!("{REPO}/Packages/k/kernel-core-6.12.0-0.gone.x86_64.rpm");
    let fallback = fetch_rpm_kernel(&sh, &rpm_pin(gone), &mirror.url, &cache).unwrap();
    assert!(!fallback.fetched.pinned);
    assert_eq!(fallback.fetched.root, kernel.fetched.root);

    // A corrupted file on the mirror is refused, naming the file and both hashes, and nothing
    // lands in the cache.
    let core = repo.join("Packages/k/kernel-core-6.12.95-1.test.x86_64.rpm");
    let mut bytes = std::fs::read(&core).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&core, &bytes).unwrap();
    let fresh_cache = work.path().join("cache-2");
    let error = fetch_rpm_kernel(&sh, &rpm_pin(vec![]), &mirror.url, &fresh_cache).unwrap_err();
    let message = format!("{error:#}");
    let actual = fixtures::sha256_file(&core).unwrap();
    assert!(
        message.contains("sha256 mismatch")
            && message.contains("kernel-core-6.12.95-1.test.x86_64.rpm")
            && message.contains(&files[0].sha256)
            && message.contains(&actual),
        "{message}"
    );
    assert!(
        fixtures::unavailable(&error).is_none(),
        "a hard error, not a skip"
    );
    let leftovers: Vec<_> = std::fs::read_dir(fresh_cache.join("rpms"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock") && n != "repodata")
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());

    // An unreachable mirror: an error a cell turns into `skipped: <reason>`.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let error = fetch_rpm_kernel(&sh, &rpm_pin(vec![]), &dead_url, &fresh_cache).unwrap_err();
    let reason = fixtures::unavailable(&error).expect("unavailable, so the cell is skipped");
    assert!(reason.reason.contains(&dead_url), "{reason}");
    // Unless the build resolved last time is in the cache: then that one, still unpinned.
    let offline = fetch_rpm_kernel(&sh, &rpm_pin(vec![]), &dead_url, &cache).unwrap();
    assert_eq!(offline.fetched.root, kernel.fetched.root);
    assert!(!offline.fetched.pinned);
}

/// A Fedora cell booted end to end from the loopback mirror: `cargo xtask vm-test` fetches the
/// fedora43 pin's packages through the RPM path (metadata, download, sha256, our RPM reader,
/// depmod), builds the image and the mini initramfs from Fedora's layout (config and vmlinuz
/// under lib/modules, xz modules, three packages) and boots it. The fixture cache is a private
/// one (the shared one's Debian packages hard-linked in), so the build resolved here never
/// stands in for Fedora's own.
#[test]
fn a_fedora_layout_kernel_boots_from_a_mirror() {
    const CELL: &str = "x86_64-q35-virtio-blk-fedora43-busybox";
    let sh = Shell::new().unwrap();
    let root = project_root();
    let work = tempfile::tempdir().unwrap();
    let (_, built) = fedora_style_kernel(&sh, work.path());
    let mirror = LoopbackMirror::serve(fedora_mirror(work.path(), &built));
    let shared = fixtures::cache_dir();
    let cache = tempfile::tempdir_in(&shared).unwrap();
    run(Command::new("cp")
        .arg("-al")
        .arg(shared.join("debs"))
        .arg(cache.path().join("debs")));

    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "vm-test",
            "--tier",
            "full",
            "--require-fixtures",
            "--cell",
            CELL,
        ])
        .env("INITOVERLAYFS_FEDORA_MIRROR", &mirror.url)
        .env(fixtures::CACHE_ENV, cache.path())
        .current_dir(&root)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "vm-test failed ({}):\n{}\n{stderr}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("target/vm-test/summary.json")).unwrap(),
    )
    .unwrap();
    let result = &summary.as_array().unwrap()[0];
    assert_eq!(result["cell"], CELL);
    assert_eq!(result["result"], "passed", "{result:#}");
    let kernel = &result["fixtures"][0];
    assert_eq!(kernel["version"], "6.12.95-1.test", "{kernel:#}");
    assert_eq!(kernel["files"].as_array().unwrap().len(), 3, "{kernel:#}");
    assert!(
        mirror
            .take_requests()
            .iter()
            .any(|r| r.ends_with("kernel-modules-6.12.95-1.test.x86_64.rpm")),
        "every package of the build came from the mirror"
    );
}
