//! The shipped unit files, checked by systemd's own parser (`systemd-analyze verify`) in a
//! scratch root holding the host's units (for emergency.target and friends), the units and a
//! stand-in for the binary they run: any warning fails the test.

use std::path::Path;
use std::process::Command;

#[path = "../src/test_tools.rs"]
mod test_tools;

const UNITS: [&str; 3] = [
    "initoverlayfs.target",
    "initoverlayfs-prepare.service",
    "initoverlayfs-switch-root.service",
];
const HOST_UNITS: &str = "/usr/lib/systemd/system";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if kind.is_symlink() {
            let link = std::fs::read_link(entry.path()).unwrap();
            std::os::unix::fs::symlink(link, target).unwrap();
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if !test_tools::have_tool("systemd-analyze", "apt-get install systemd") {
        return;
    }
    if !Path::new(HOST_UNITS).is_dir() {
        // systemd-analyze without systemd's units: a host whose systemd is partly installed.
        return test_tools::skip_or_fail(&format!("{HOST_UNITS} is missing (install systemd)"));
    }
    let root = std::env::temp_dir().join(format!("initoverlayfs-units-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    copy_dir(Path::new(HOST_UNITS), &root.join("usr/lib/systemd/system"));
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    let system = root.join("etc/systemd/system");
    std::fs::create_dir_all(&system).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    for unit in UNITS {
        std::fs::copy(shipped.join(unit), system.join(unit)).unwrap();
    }
    // verify checks that ExecStart= names an executable file inside the root.
    for program in ["usr/lib/initoverlayfs/storage-init", "usr/bin/systemctl"] {
        let path = root.join(program);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .args(UNITS.map(|u| format!("/etc/systemd/system/{u}")))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    std::fs::remove_dir_all(&root).unwrap();
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        output.status
    );
}
