//! The fixture pin policy against the real apt archive: a pinned version that apt no longer
//! offers falls back to the newest of its series (recorded as not pinned); a hash that does not
//! match the download is refused, naming the file and both hashes.

use xshell::Shell;
use xtask::fixtures::{DebPin, fetch_deb, read_packages};
use xtask::vm_test::project_root;

fn busybox_pin() -> DebPin {
    read_packages(&project_root())
        .unwrap()
        .package
        .into_iter()
        .find(|p| p.package == "busybox-static")
        .unwrap()
}

#[test]
fn a_vanished_pin_falls_back_to_the_newest_of_its_series() {
    let sh = Shell::new().unwrap();
    let real = busybox_pin();
    let gone = DebPin {
        id: "test-vanished-pin".to_owned(),
        version: "1:0.0-vanished".to_owned(),
        sha256: "0".repeat(64),
        ..real.clone()
    };
    let fetched = fetch_deb(&sh, &gone, false).unwrap();
    assert!(!fetched.pinned, "{fetched:?}");
    assert_ne!(fetched.version, gone.version);
    assert_eq!(fetched.sha256.len(), 64);
    assert!(
        fetched.root.join("bin/busybox").is_file(),
        "{}",
        fetched.root.display()
    );
}

#[test]
fn a_hash_mismatch_is_refused_naming_both_hashes() {
    let sh = Shell::new().unwrap();
    let real = busybox_pin();
    let wrong = "ab".repeat(32);
    let tampered = DebPin {
        id: "test-hash-mismatch".to_owned(),
        sha256: wrong.clone(),
        ..real.clone()
    };
    let error = format!("{:#}", fetch_deb(&sh, &tampered, false).unwrap_err());
    assert!(
        error.contains("sha256 mismatch") && error.contains(&wrong) && error.contains(&real.sha256),
        "{error}"
    );
    assert!(
        error.contains(".deb"),
        "the message names the file: {error}"
    );
    let scratch = xtask::fixtures::cache_dir()
        .join("debs")
        .join(format!("tmp-test-hash-mismatch-{}", std::process::id()));
    assert!(
        !scratch.exists(),
        "the refused download is not left in the cache"
    );
}
