//! The GPT/ext4 disk writer against the real tools: two builds are byte-identical, and
//! sfdisk, sgdisk, blkid and debugfs read back what was asked for.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use testvm::Guid;
use testvm::disk::{Filesystem, GptDisk, Partition};

#[path = "../../storage-init/src/test_tools.rs"]
mod test_tools;

const DISK_GUID: &str = "6f2b0e0a-1c4d-4e8f-9a0b-1c2d3e4f5a6b";
const BOOT_PART: &str = "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e";
const BOOT_FS: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
const DATA_PART: &str = "11223344-5566-4778-899a-abbccddeeff0";
const DATA_FS: &str = "99887766-5544-4332-8110-ffeeddccbbaa";
const ESP_PART: &str = "c0ffee00-1234-4abc-8def-001122334455";
const ESP_VOLUME_ID: u32 = 0x1234_ABCD;
/// Where the third partition starts: 1 MiB, + 8 MiB boot, + 3 MiB data.
const ESP_OFFSET: u64 = 12 << 20;

/// Offset of the ext4 superblock in its filesystem and of fields in it
/// (linux/fs/ext4/ext4.h, struct ext4_super_block).
const EXT4_SUPERBLOCK_OFFSET: u64 = 1024;
const EXT4_MAGIC_OFFSET: usize = 0x38;
const EXT4_UUID_OFFSET: usize = 0x68;
const EXT4_MAGIC: u16 = 0xEF53;

/// True if `name` is on PATH; otherwise skips the test, or the part of it that needs `name`
/// (or fails it, under CI). Every tool these tests use is one `cargo xtask provision` installs.
fn has_tool(name: &str) -> bool {
    test_tools::have_tool(name, "cargo xtask provision installs it")
}

fn tools_present(names: &[&str]) -> bool {
    names.iter().all(|name| has_tool(name))
}

fn make_contents(dir: &Path) {
    fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    fs::write(dir.join("initoverlayfs.conf"), "bootfs LABEL=boot\n").unwrap();
    fs::write(dir.join("sub/run.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(dir.join("sub/run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    for i in 0..100 {
        fs::write(dir.join(format!("sub/deeper/f{i}")), format!("{i}\n")).unwrap();
    }
    symlink("sub/run.sh", dir.join("link")).unwrap();
    // Best effort: only root can give a file away; otherwise the files are the user's anyway.
    let _ = std::os::unix::fs::chown(dir.join("initoverlayfs.conf"), Some(1000), Some(1000));
}

/// Contents of an ESP: files at the top, the bootloader two levels down, and a directory with
/// more entries than one cluster holds (its children are read across the cluster chain).
fn make_esp_contents(dir: &Path) {
    fs::create_dir_all(dir.join("EFI/BOOT")).unwrap();
    fs::create_dir_all(dir.join("loader/entries")).unwrap();
    fs::create_dir_all(dir.join("many")).unwrap();
    fs::write(dir.join("readme.txt"), "kernels go here\n").unwrap();
    fs::write(dir.join("initoverlayfs-6.12.img"), vec![0x5a; 70_000]).unwrap();
    fs::write(dir.join("EFI/BOOT/BOOTX64.EFI"), vec![0x4d; 5_000]).unwrap();
    fs::write(dir.join("loader/loader.conf"), "timeout 0\n").unwrap();
    fs::write(
        dir.join("loader/entries/debian-6.12.conf"),
        "linux /vmlinuz-6.12\n",
    )
    .unwrap();
    for i in 0..60 {
        fs::write(dir.join(format!("many/file-with-a-long-name-{i}.txt")), "x").unwrap();
    }
}

fn disk(boot: &Path, data: &Path) -> GptDisk {
    GptDisk {
        disk_guid: DISK_GUID.parse().unwrap(),
        partitions: vec![
            Partition {
                name: "boot".into(),
                part_guid: BOOT_PART.parse().unwrap(),
                filesystem: Filesystem::Ext4 {
                    uuid: BOOT_FS.parse().unwrap(),
                },
                label: "boot".into(),
                size_mib: 8,
                contents: boot.to_owned(),
                keep_owners: false,
            },
            Partition {
                name: "data partition".into(),
                part_guid: DATA_PART.parse().unwrap(),
                filesystem: Filesystem::Ext4 {
                    uuid: DATA_FS.parse().unwrap(),
                },
                label: "data".into(),
                size_mib: 3,
                contents: data.to_owned(),
                keep_owners: false,
            },
            Partition {
                name: "esp".into(),
                part_guid: ESP_PART.parse().unwrap(),
                filesystem: Filesystem::Vfat {
                    volume_id: ESP_VOLUME_ID,
                },
                label: "ESP".into(),
                size_mib: 8,
                contents: data.to_owned(),
                keep_owners: false,
            },
        ],
        timestamp: 1_700_000_000,
        power_of_two_size: false,
        sector_size: 512,
    }
}

#[test]
fn two_builds_are_byte_identical() {
    if !tools_present(&["mkfs.ext4", "debugfs"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (boot, data) = (tmp.path().join("boot"), tmp.path().join("data"));
    make_contents(&boot);
    make_esp_contents(&data);
    let spec = disk(&boot, &data);
    spec.write(&tmp.path().join("one.img")).unwrap();
    // Reading the sources moved their atimes; touching one moves its ctime. Neither may show.
    fs::write(dir_file(&boot), "bootfs LABEL=boot\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    spec.write(&tmp.path().join("two.img")).unwrap();
    let one = fs::read(tmp.path().join("one.img")).unwrap();
    let two = fs::read(tmp.path().join("two.img")).unwrap();
    assert_eq!(
        one.len(),
        21 << 20,
        "1 MiB GPT + 8 + 3 + 8 + 1 MiB backup GPT"
    );
    assert!(one == two, "two builds differ");
}

fn dir_file(boot: &Path) -> std::path::PathBuf {
    boot.join("initoverlayfs.conf")
}

#[test]
fn tools_read_back_the_layout() {
    if !tools_present(&["mkfs.ext4", "debugfs", "sfdisk", "blkid"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (boot, data) = (tmp.path().join("boot"), tmp.path().join("data"));
    make_contents(&boot);
    make_esp_contents(&data);
    let image = tmp.path().join("disk.img");
    disk(&boot, &data).write(&image).unwrap();

    let output = Command::new("sfdisk")
        .arg("--json")
        .arg(&image)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let table: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let table = &table["partitiontable"];
    assert_eq!(table["label"], "gpt");
    assert_eq!(table["id"].as_str().unwrap().to_lowercase(), DISK_GUID);
    let parts = table["partitions"].as_array().unwrap();
    let expected = [
        (2048, 8 * 2048, BOOT_PART, "boot"),
        (9 * 2048, 3 * 2048, DATA_PART, "data partition"),
        (12 * 2048, 8 * 2048, ESP_PART, "esp"),
    ];
    assert_eq!(parts.len(), expected.len());
    for (part, (start, size, uuid, name)) in parts.iter().zip(expected) {
        assert_eq!(part["start"], start);
        assert_eq!(part["size"], size);
        assert_eq!(part["uuid"].as_str().unwrap().to_lowercase(), uuid);
        assert_eq!(part["name"], name);
        let expected_type = if name == "esp" {
            Guid::EFI_SYSTEM
        } else {
            Guid::LINUX_FILESYSTEM
        };
        assert_eq!(
            part["type"].as_str().unwrap().to_lowercase(),
            expected_type.to_string()
        );
    }

    // The FAT partition as blkid sees it, and fsck.fat's check of the whole filesystem.
    let probe = Command::new("blkid")
        .args(["-p", "-o", "export", "-O", &ESP_OFFSET.to_string()])
        .arg(&image)
        .output()
        .unwrap();
    let probe = String::from_utf8_lossy(&probe.stdout);
    assert!(
        probe.contains("TYPE=vfat")
            && probe.contains("UUID=1234-ABCD")
            && probe.contains("LABEL=ESP"),
        "{probe}"
    );
    if has_tool("fsck.fat") {
        let esp = tmp.path().join("esp.img");
        let bytes = fs::read(&image).unwrap();
        fs::write(
            &esp,
            &bytes[ESP_OFFSET as usize..(ESP_OFFSET + (8 << 20)) as usize],
        )
        .unwrap();
        // -l lists every file it checks: the subdirectories are walked, not only the root.
        let check = Command::new("fsck.fat")
            .args(["-n", "-v", "-l"])
            .arg(&esp)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&check.stdout);
        assert!(
            check.status.success(),
            "fsck.fat: {text}{}",
            String::from_utf8_lossy(&check.stderr)
        );
        // fsck.fat reports its repairs ("Dirty bit", "Deleting", "'.' is not first") on stdout
        // even with -n; a clean check says nothing of the kind.
        for complaint in ["not first", "Deleting", "bad", "Correct"] {
            assert!(!text.contains(complaint), "fsck.fat: {text}");
        }
        for path in [
            "/EFI/BOOT/BOOTX64.EFI",
            "/loader/entries/debian-6.12.conf",
            "/many/file-with-a-long-name-59.txt",
        ] {
            assert!(text.contains(path), "fsck.fat did not list {path}: {text}");
        }
    }

    if has_tool("sgdisk") {
        // sgdisk checks both headers, both entry arrays and their CRCs.
        let verify = Command::new("sgdisk")
            .arg("-v")
            .arg(&image)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&verify.stdout);
        assert!(text.contains("No problems found"), "{text}");
    }

    let bytes = fs::read(&image).unwrap();
    for (offset, fs_uuid, label) in [(1u64 << 20, BOOT_FS, "boot"), (9 << 20, DATA_FS, "data")] {
        let superblock = &bytes[(offset + EXT4_SUPERBLOCK_OFFSET) as usize..][..1024];
        let magic = u16::from_le_bytes([
            superblock[EXT4_MAGIC_OFFSET],
            superblock[EXT4_MAGIC_OFFSET + 1],
        ]);
        assert_eq!(magic, EXT4_MAGIC);
        let uuid: [u8; 16] = superblock[EXT4_UUID_OFFSET..][..16].try_into().unwrap();
        assert_eq!(Guid::from_bytes(uuid).to_string(), fs_uuid);

        let probe = Command::new("blkid")
            .args(["-p", "-o", "export", "-O", &offset.to_string()])
            .arg(&image)
            .output()
            .unwrap();
        let probe = String::from_utf8_lossy(&probe.stdout);
        assert!(probe.contains(&format!("UUID={fs_uuid}")), "{probe}");
        assert!(probe.contains(&format!("LABEL={label}")), "{probe}");
        assert!(probe.contains("TYPE=ext4"), "{probe}");
    }

    // Modes kept, owners root, times clamped, symlink intact.
    let boot_fs = format!("{}?offset={}", image.display(), 1u64 << 20);
    let stat = |path: &str| {
        let output = Command::new("debugfs")
            .args(["-R", &format!("stat {path}"), &boot_fs])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let script = stat("/sub/run.sh");
    assert!(script.contains("Mode:  0750"), "{script}");
    assert!(script.contains("User:     0   Group:     0"), "{script}");
    assert!(
        !script.contains(" 2026 ") && script.contains("mtime: 0x"),
        "{script}"
    );
    let conf = stat("/initoverlayfs.conf");
    assert!(conf.contains("User:     0   Group:     0"), "{conf}");
    let link = stat("/link");
    assert!(link.contains("Type: symlink"), "{link}");
    assert!(link.contains("Fast link dest: \"sub/run.sh\""), "{link}");
}

/// `keep_owners`: a real root's files of other users and its setuid programs survive, times are
/// still clamped.
#[test]
fn keep_owners_keeps_owners_and_setuid_bits() {
    if !tools_present(&["mkfs.ext4", "debugfs"]) {
        return;
    }
    if !test_tools::have_root("giving files to another user") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("home/user")).unwrap();
    fs::write(root.join("home/user/notes"), "mine\n").unwrap();
    std::os::unix::fs::chown(root.join("home/user"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::chown(root.join("home/user/notes"), Some(1000), Some(1001)).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::write(root.join("usr/bin/su"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("usr/bin/su"), fs::Permissions::from_mode(0o4755)).unwrap();
    let mut spec = disk(&root, &root);
    spec.partitions.truncate(1);
    spec.partitions[0].keep_owners = true;
    let image = tmp.path().join("root.img");
    spec.write(&image).unwrap();

    let fs_image = format!("{}?offset={}", image.display(), 1u64 << 20);
    let stat = |path: &str| {
        let output = Command::new("debugfs")
            .args(["-R", &format!("stat {path}"), &fs_image])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let notes = stat("/home/user/notes");
    assert!(notes.contains("User:  1000   Group:  1001"), "{notes}");
    assert!(
        !notes.contains(" 2026 ") && notes.contains("mtime: 0x"),
        "{notes}"
    );
    let home = stat("/home/user");
    assert!(home.contains("User:  1000   Group:  1000"), "{home}");
    let su = stat("/usr/bin/su");
    assert!(su.contains("Mode:  04755"), "{su}");
    assert!(su.contains("User:     0   Group:     0"), "{su}");
}

/// A prebuilt partition image (a LUKS2 container, an LVM physical volume) is copied in as it
/// is, the rest of its partition zero, under the type asked for; one too large is refused.
#[test]
fn an_image_partition_is_copied_as_is() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("pv.img");
    let bytes: Vec<u8> = (0..(1 << 20) + 4096).map(|i| (i % 251) as u8 + 1).collect();
    fs::write(&image, &bytes).unwrap();
    let partition = |size_mib| Partition {
        name: "root".into(),
        part_guid: DATA_PART.parse().unwrap(),
        filesystem: Filesystem::Image {
            type_guid: Guid::LINUX_LVM,
        },
        label: String::new(),
        size_mib,
        contents: image.clone(),
        keep_owners: false,
    };
    let spec = |size_mib| GptDisk {
        disk_guid: DISK_GUID.parse().unwrap(),
        partitions: vec![partition(size_mib)],
        timestamp: 0,
        power_of_two_size: false,
        sector_size: 512,
    };
    let path = tmp.path().join("disk.img");
    spec(2).write(&path).unwrap();
    let disk = fs::read(&path).unwrap();
    assert_eq!(disk.len(), 4 << 20, "1 MiB GPT + 2 MiB + 1 MiB backup GPT");
    let start = 1 << 20;
    assert!(
        disk[start..start + bytes.len()] == bytes[..],
        "the image, as it is"
    );
    assert!(
        disk[start + bytes.len()..start + (2 << 20)]
            .iter()
            .all(|&b| b == 0)
    );
    // The first partition entry (LBA 2) starts with its type GUID, mixed-endian on disk.
    let entry = &disk[2 * 512..2 * 512 + 16];
    assert_eq!(
        entry,
        [
            0x79, 0xd3, 0xd6, 0xe6, 0x07, 0xf5, 0xc2, 0x44, 0xa2, 0x3c, 0x23, 0x8f, 0x2a, 0x3d,
            0xf9, 0x28
        ]
    );
    let error = spec(1).write(&path).unwrap_err().to_string();
    assert!(error.contains("more than the partition's"), "{error}");
}
