//! dm-verity images against the oracle, cryptsetup's `veritysetup`: it must accept every image
//! the builder makes, compute the same tree from the same salt, and refuse a tampered one.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use builder::erofs::{ErofsOptions, build_erofs};
use builder::verity::{VerityError, append_hash_tree, read_verity};
use storage_init::verity::{BLOCK_SIZE, TreeLayout, Verity};

fn have_veritysetup() -> bool {
    common::have_tool(
        "veritysetup",
        "cargo xtask provision installs cryptsetup-bin",
    )
}

/// An uncompressed erofs image of `files` (name, size in bytes of pseudo-random content).
fn image(dir: &Path, files: &[(&str, usize)]) -> std::path::PathBuf {
    let source = dir.join("source");
    fs::create_dir_all(&source).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for (name, size) in files {
        let bytes: Vec<u8> = (0..*size)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        fs::write(source.join(name), bytes).unwrap();
    }
    let output = dir.join("image.erofs");
    let options = ErofsOptions {
        mtime: 1_700_000_000,
        compression: None,
        keep_owners: false,
        pcluster_bytes: None,
    };
    build_erofs(&source, &output, &options).unwrap();
    output
}

fn veritysetup_verify(image: &Path, verity: &Verity) -> std::process::Output {
    Command::new("veritysetup")
        .arg("verify")
        .arg(image)
        .arg(image)
        .arg(&verity.root_hash)
        .arg(format!("--hash-offset={}", verity.data_blocks * BLOCK_SIZE))
        .output()
        .unwrap()
}

fn check_against_veritysetup(files: &[(&str, usize)], levels: usize) {
    if !common::have_mkfs() || !have_veritysetup() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), files);
    let plain = fs::read(&path).unwrap();
    let verity = append_hash_tree(&path).unwrap();
    assert_eq!(verity.data_blocks * BLOCK_SIZE, plain.len() as u64);
    assert_eq!(TreeLayout::new(verity.data_blocks).levels.len(), levels);
    let with_tree = fs::read(&path).unwrap();
    assert_eq!(
        &with_tree[..plain.len()],
        &plain[..],
        "the data is untouched"
    );
    assert_eq!(
        with_tree.len() as u64,
        TreeLayout::new(verity.data_blocks).image_bytes()
    );

    let output = veritysetup_verify(&path, &verity);
    assert!(output.status.success(), "veritysetup verify: {output:?}");

    // veritysetup's own tree from the same salt and UUID is byte for byte ours.
    let theirs = dir.path().join("theirs.img");
    fs::write(&theirs, &plain).unwrap();
    let uuid = {
        let s = &with_tree[plain.len() + 16..plain.len() + 32];
        let h = hex::encode(s);
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    };
    let output = Command::new("veritysetup")
        .arg("format")
        .arg(&theirs)
        .arg(&theirs)
        .arg(format!("--hash-offset={}", plain.len()))
        .arg(format!("--data-blocks={}", verity.data_blocks))
        .arg(format!("--salt={}", verity.salt))
        .arg(format!("--uuid={uuid}"))
        .output()
        .unwrap();
    assert!(output.status.success(), "veritysetup format: {output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("Root hash:      \t{}", verity.root_hash)),
        "veritysetup's root hash differs from {}:\n{stdout}",
        verity.root_hash
    );
    assert!(
        fs::read(&theirs).unwrap() == with_tree,
        "veritysetup's file differs"
    );

    assert_eq!(read_verity(&path).unwrap(), Some(verity.clone()));
    assert!(matches!(
        append_hash_tree(&path),
        Err(VerityError::AlreadyVerity { .. })
    ));
}

#[test]
fn a_one_level_tree_is_veritysetups() {
    check_against_veritysetup(&[("small", 20_000)], 1);
}

#[test]
fn a_two_level_tree_is_veritysetups() {
    // More than 128 data blocks: two hash blocks at level 0 under one above them.
    check_against_veritysetup(&[("a", 400_000), ("b", 300_000), ("c", 5)], 2);
}

#[test]
fn the_same_image_gives_the_same_root_hash() {
    if !common::have_mkfs() {
        return;
    }
    let hashes: Vec<Verity> = (0..2)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let path = image(dir.path(), &[("x", 50_000)]);
            append_hash_tree(&path).unwrap()
        })
        .collect();
    assert_eq!(hashes[0], hashes[1]);
    let dir = tempfile::tempdir().unwrap();
    let other = append_hash_tree(&image(dir.path(), &[("x", 50_001)])).unwrap();
    assert_ne!(other.salt, hashes[0].salt);
    assert_ne!(other.root_hash, hashes[0].root_hash);
}

/// What the boot-time fault cells do, here against the oracle and our own reader.
#[test]
fn tampering_is_refused() {
    if !common::have_mkfs() || !have_veritysetup() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), &[("a", 600_000)]);
    let verity = append_hash_tree(&path).unwrap();
    let good = fs::read(&path).unwrap();
    let data_bytes = (verity.data_blocks * BLOCK_SIZE) as usize;

    type Tamper = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: [(&str, Tamper); 3] = [
        ("a flipped data byte", Box::new(|b| b[300_000] ^= 1)),
        (
            "a flipped tree byte",
            Box::new(move |b| {
                let last = b.len() - 1;
                b[last - 4096 + 7] ^= 0x80
            }),
        ),
        (
            "a truncated tree",
            Box::new(move |b| b.truncate(data_bytes + 2 * 4096)),
        ),
    ];
    for (name, tamper) in cases {
        let mut bytes = good.clone();
        tamper(&mut bytes);
        fs::write(&path, &bytes).unwrap();
        assert!(
            !veritysetup_verify(&path, &verity).status.success(),
            "veritysetup accepted {name}"
        );
        match read_verity(&path) {
            // Our reader recomputes from the (tampered) data: a flipped data byte gives another
            // root hash, everything else a damaged tree.
            Ok(Some(read)) => assert_ne!(read.root_hash, verity.root_hash, "{name}"),
            Ok(None) => panic!("{name}: no tree found"),
            Err(VerityError::Damaged { .. }) => {}
            Err(e) => panic!("{name}: {e}"),
        }
    }

    fs::write(&path, &good).unwrap();
    let wrong = Verity {
        root_hash: "00".repeat(32),
        ..verity
    };
    assert!(!veritysetup_verify(&path, &wrong).status.success());
}

/// The command line: `image --verity` twice gives the same bytes, prints the root hash, and
/// `config --image` records what storage-init needs.
#[test]
fn the_cli_writes_and_records_verity() {
    if !common::have_mkfs() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    fs::create_dir_all(source.join("etc")).unwrap();
    fs::write(source.join("etc/initrd-release"), "NAME=test\n").unwrap();
    let build = |name: &str| {
        let output_path = dir.path().join(name);
        let output = common::builder()
            .arg("image")
            .arg("--source")
            .arg(&source)
            .arg("-o")
            .arg(&output_path)
            .arg("--verity")
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        (output_path, String::from_utf8(output.stdout).unwrap())
    };
    let (a, stdout) = build("a.img");
    let (b, _) = build("b.img");
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    let verity = read_verity(&a).unwrap().unwrap();
    assert!(
        stdout.contains(&format!("dm-verity: root hash {}", verity.root_hash)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "initoverlayfs.verity_root_hash={} initoverlayfs.verity_salt={} initoverlayfs.verity_data_blocks={}",
            verity.root_hash, verity.salt, verity.data_blocks
        )),
        "{stdout}"
    );
    let output = common::builder()
        .args(["config", "--bootfs", "LABEL=boot", "--image"])
        .arg(&a)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let (config, _) =
        storage_init::config::parse_config(std::str::from_utf8(&output.stdout).unwrap()).unwrap();
    assert_eq!(config.verity(), Ok(Some(verity)));
}
