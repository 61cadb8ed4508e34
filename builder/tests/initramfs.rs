//! builder's initramfs reader and unpacker against archives in every form the kernel takes,
//! compressed by the real tools where installed (`cargo xtask provision` installs them), and
//! against hostile archives.

mod common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use builder::cpio::Archive;
use builder::extract::{ExtractError, extract};
use builder::image::{ImageError, image_from_initramfs};
use builder::initramfs::{self, Flavour, Format};

/// A newc entry written by hand, for what our writer never makes (hard links, `..`, nodes).
fn newc(name: &str, ino: u32, mode: u32, nlink: u32, data: &[u8], rdev: (u32, u32)) -> Vec<u8> {
    let mut out = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        0,
        0,
        0,
        data.len(),
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() + 1,
        0
    )
    .into_bytes();
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out.extend_from_slice(data);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out
}

fn trailer() -> Vec<u8> {
    newc("TRAILER!!!", 0, 0, 1, b"", (0, 0))
}

/// The main archive of the tests: what a small systemd initramfs has.
fn main_archive() -> Vec<u8> {
    let mut archive = Archive::new();
    archive.add_dir("/usr", 0o755).unwrap();
    archive.add_dir("/usr/lib", 0o755).unwrap();
    archive.add_dir("/usr/lib/systemd", 0o755).unwrap();
    archive
        .add_file(
            "/usr/lib/systemd/systemd",
            0o755,
            b"\x7fELF systemd".repeat(300),
        )
        .unwrap();
    archive
        .add_symlink("/init", "usr/lib/systemd/systemd")
        .unwrap();
    archive.add_dir("/etc", 0o755).unwrap();
    archive
        .add_file("/etc/initrd-release", 0o644, b"NAME=test\n".to_vec())
        .unwrap();
    archive.to_bytes(0).unwrap()
}

/// The early-microcode prefix dracut writes, uncompressed, padded to 512 bytes.
fn microcode_prefix() -> Vec<u8> {
    let mut archive = Archive::new();
    archive.add_dir("/kernel", 0o755).unwrap();
    archive.add_dir("/kernel/x86", 0o755).unwrap();
    archive.add_dir("/kernel/x86/microcode", 0o755).unwrap();
    archive
        .add_file(
            "/kernel/x86/microcode/GenuineIntel.bin",
            0o644,
            b"microcode".to_vec(),
        )
        .unwrap();
    let mut bytes = archive.to_bytes(0).unwrap();
    bytes.resize(bytes.len().div_ceil(512) * 512, 0);
    bytes
}

/// Compresses with a real tool (`program args…` as a filter); `None` when it is not on PATH.
fn with_tool(program: &str, args: &[&str], data: &[u8]) -> Option<Vec<u8>> {
    if !common::have_tool(program, "cargo xtask provision installs it") {
        return None;
    }
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(output.status.success(), "{program} failed");
    Some(output.stdout)
}

fn names(bytes: &[u8]) -> Vec<String> {
    let read = initramfs::read(bytes).unwrap();
    let mut names: Vec<String> = read
        .final_entries()
        .iter()
        .map(|e| e.name.clone())
        .collect();
    names.sort();
    names
}

/// Every compressor the kernel takes (lzo aside), as the real tools write it, after dracut's
/// microcode prefix: the same entries come out.
#[test]
fn every_compression_behind_a_microcode_prefix() {
    let main = main_archive();
    let plain_names = names(&main);
    let cases: [(&str, &[&str], Format); 6] = [
        ("gzip", &["-9", "-n", "-c"], Format::Gzip),
        ("zstd", &["-q", "-c", "-19"], Format::Zstd),
        ("xz", &["--check=crc32", "-c"], Format::Xz),
        ("lzma", &["-c"], Format::Lzma),
        ("bzip2", &["-c"], Format::Bzip2),
        ("lz4", &["-l", "-c"], Format::Lz4Legacy),
    ];
    for (program, args, format) in cases {
        let Some(compressed) = with_tool(program, args, &main) else {
            continue;
        };
        let mut file = microcode_prefix();
        let prefix_len = file.len();
        file.extend_from_slice(&compressed);
        let read = initramfs::read(&file).unwrap_or_else(|e| panic!("{program}: {e}"));
        let formats: Vec<(usize, Format)> =
            read.segments.iter().map(|s| (s.offset, s.format)).collect();
        assert_eq!(
            formats,
            [(0, Format::Newc), (prefix_len, format)],
            "{program}"
        );
        let mut got = names(&file);
        got.retain(|n| !n.starts_with("kernel"));
        assert_eq!(got, plain_names, "{program}");
        let systemd = read
            .final_entries()
            .into_iter()
            .find(|e| e.name.ends_with("systemd/systemd"))
            .unwrap();
        assert_eq!(systemd.data, b"\x7fELF systemd".repeat(300), "{program}");
    }
}

/// Two compressed streams back to back, and an archive after a compressed stream: the reader
/// must stop each stream where it ends.
#[test]
fn streams_end_where_they_end() {
    let first = newc("a", 1, 0o100644, 1, b"first", (0, 0));
    let mut one = first.clone();
    one.extend(trailer());
    let second = [newc("b", 2, 0o100644, 1, b"second", (0, 0)), trailer()].concat();
    let mut file = flate2_gzip(&one);
    file.extend(initramfs::lz4_legacy_compress(&second));
    let read = initramfs::read(&file).unwrap();
    assert_eq!(read.segments.len(), 2);
    let mut file =
        ruzstd::encoding::compress_to_vec(&one[..], ruzstd::encoding::CompressionLevel::Fastest);
    file.extend(&second);
    let read = initramfs::read(&file).unwrap();
    let got: Vec<&str> = read.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(got, ["a", "b"]);
}

fn flate2_gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn a_later_entry_replaces_an_earlier_one() {
    let file = [
        newc("etc/x", 1, 0o100644, 1, b"old", (0, 0)),
        trailer(),
        newc("/etc/x", 2, 0o100600, 1, b"new", (0, 0)),
        trailer(),
    ]
    .concat();
    let read = initramfs::read(&file).unwrap();
    let last = read.final_entries();
    assert_eq!(last.len(), 1);
    assert_eq!(
        (last[0].data.as_slice(), last[0].mode),
        (&b"new"[..], 0o100600)
    );
}

/// Broken input: one error that names where and what.
#[test]
fn broken_input_names_the_offset() {
    let main = main_archive();
    let gz = flate2_gzip(&main);
    let prefix = microcode_prefix();
    let at = prefix.len();
    let cases: Vec<(Vec<u8>, String)> = vec![
        (
            [prefix.clone(), gz[..gz.len() / 2].to_vec()].concat(),
            format!("at byte {at}: the gzip stream is corrupt or truncated"),
        ),
        (
            main[..main.len() - 200].to_vec(),
            "at byte 0 (newc archive): not a newc cpio archive at byte".into(),
        ),
        (
            [prefix.clone(), b"PK\x03\x04zip".to_vec()].concat(),
            format!("at byte {at}: bytes 50 4b 03 04"),
        ),
        (
            [prefix.clone(), vec![0x89, b'L', b'Z', b'O', 0, 1]].concat(),
            format!("at byte {at}: an lzo-compressed segment"),
        ),
        (vec![0; 1024], "no archive at all".into()),
        (
            flate2_gzip(b"070701 is not a header"),
            "inside the gzip stream starting there".into(),
        ),
    ];
    for (bytes, expected) in cases {
        let error = initramfs::read(&bytes).expect_err(&expected).to_string();
        assert!(error.contains(&expected), "{error}\nexpected: {expected}");
    }
}

/// A few bytes that expand to far more than any initramfs: refused at the bound, in memory
/// never past it (the fuzzer found an lzma stream of 200 bytes that expands without end).
#[test]
fn decompression_bombs_hit_the_bound() {
    let bomb = flate2_gzip(&vec![0u8; 1 << 20]);
    let error = initramfs::read_with_limit(&bomb, 1000)
        .unwrap_err()
        .to_string();
    assert!(error.contains("expands past 1000 bytes"), "{error}");
    // The fuzzer's find: an lzma header asking for a 4 GiB dictionary. liblzma's memory limit
    // refuses it instead of allocating.
    let mut lzma = vec![0x5d, 0x00, 0x00, 0x80, 0xff];
    lzma.extend([0xff; 50]);
    lzma.extend([0x00, 0x5d, 0x00, 0x00, 0x80, 0x00]);
    let error = initramfs::read_with_limit(&lzma, 64 << 20)
        .unwrap_err()
        .to_string();
    assert!(error.contains("at byte 0: the lzma stream"), "{error}");
    let lz4 = initramfs::lz4_legacy_compress(&vec![0u8; 1 << 20]);
    let error = initramfs::read_with_limit(&lz4, 1000)
        .unwrap_err()
        .to_string();
    assert!(error.contains("expands past 1000 bytes"), "{error}");
}

/// Archives that try to write outside the directory: refused before anything is written there.
#[test]
fn hostile_archives_stay_inside() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("victim");
    std::fs::create_dir(&target).unwrap();
    let escape = format!("{}", target.display());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (newc("../escaped", 1, 0o100644, 1, b"x", (0, 0)), "'..'"),
        (
            newc("a/../../escaped", 1, 0o100644, 1, b"x", (0, 0)),
            "'..'",
        ),
        (
            [
                newc("evil", 1, 0o120777, 1, escape.as_bytes(), (0, 0)),
                newc("evil/planted", 2, 0o100644, 1, b"x", (0, 0)),
            ]
            .concat(),
            "through",
        ),
        (
            [
                newc("file", 1, 0o100644, 1, b"x", (0, 0)),
                newc("file/under", 2, 0o100644, 1, b"x", (0, 0)),
            ]
            .concat(),
            "not a directory",
        ),
    ];
    for (archive, expected) in cases {
        let bytes = [archive, trailer()].concat();
        let read = initramfs::read(&bytes).unwrap();
        let root = tempfile::tempdir().unwrap();
        let error = extract(&read.final_entries(), root.path()).unwrap_err();
        assert!(
            matches!(error, ExtractError::UnsafePath { .. })
                && error.to_string().contains(expected),
            "{error}"
        );
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0, "{expected}");
    }
    assert!(!outside.path().join("escaped").exists());
}

/// Absolute names land inside; hard links stay links; device nodes and FIFOs are made; a
/// read-only directory still gets its content; symlinks keep their (absolute) targets.
#[test]
fn unpacks_like_the_kernel() {
    let bytes = [
        newc("/", 1, 0o040755, 2, b"", (0, 0)),
        newc("/abs", 2, 0o040555, 2, b"", (0, 0)),
        newc("/abs/file", 3, 0o100644, 1, b"content", (0, 0)),
        newc("link1", 9, 0o100755, 2, b"", (0, 0)),
        newc("link2", 9, 0o100755, 2, b"shared", (0, 0)),
        newc("dev/null", 4, 0o020666, 1, b"", (1, 3)),
        newc("fifo", 5, 0o010600, 1, b"", (0, 0)),
        newc("bin", 6, 0o120777, 1, b"/usr/bin", (0, 0)),
        trailer(),
    ]
    .concat();
    let read = initramfs::read(&bytes).unwrap();
    let root = tempfile::tempdir().unwrap();
    let result = extract(&read.final_entries(), root.path());
    let as_root = rustix::process::geteuid().is_root();
    if !as_root {
        assert!(
            matches!(result, Err(ExtractError::DeviceNeedsRoot { .. })),
            "{result:?}"
        );
        return;
    }
    let done = result.unwrap();
    assert_eq!(
        (done.files, done.hardlinks, done.nodes, done.symlinks),
        (2, 1, 2, 1)
    );
    let r = root.path();
    assert_eq!(std::fs::read(r.join("abs/file")).unwrap(), b"content");
    assert_eq!(
        std::fs::metadata(r.join("abs"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o555
    );
    let (one, two) = (
        std::fs::metadata(r.join("link1")).unwrap(),
        std::fs::metadata(r.join("link2")).unwrap(),
    );
    assert_eq!((one.ino(), one.nlink()), (two.ino(), 2));
    assert_eq!(std::fs::read(r.join("link1")).unwrap(), b"shared");
    let null = std::fs::metadata(r.join("dev/null")).unwrap();
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(
        std::fs::read_link(r.join("bin")).unwrap(),
        Path::new("/usr/bin")
    );
}

#[test]
fn flavours() {
    assert_eq!(
        initramfs::flavour(["init", "conf/initramfs.conf", "scripts/init-top/udev"]),
        Flavour::InitramfsTools
    );
    assert_eq!(
        initramfs::flavour(["./usr/lib/systemd/systemd", "init"]),
        Flavour::Systemd
    );
    assert_eq!(
        initramfs::flavour(["init", "bin/busybox"]),
        Flavour::Unknown
    );
}

/// The whole path: a gzip'ed initramfs with a microcode prefix becomes an erofs image that
/// fsck.erofs accepts and that holds the same files; an initramfs-tools image is refused.
#[test]
fn erofs_image_from_an_initramfs() {
    if !common::have_mkfs() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("initrd.img");
    std::fs::write(
        &input,
        [microcode_prefix(), flate2_gzip(&main_archive())].concat(),
    )
    .unwrap();
    let output = work.path().join("initoverlayfs.img");
    let options = builder::erofs::ErofsOptions {
        mtime: 0,
        compression: None,
        keep_owners: false,
        pcluster_bytes: None,
    };
    let report = image_from_initramfs(&input, &output, &options).unwrap();
    assert_eq!(report.flavour, Flavour::Systemd);
    let extracted = work.path().join("fsck");
    let fsck = Command::new("fsck.erofs")
        .arg(format!("--extract={}", extracted.display()))
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stderr)
    );
    assert_eq!(
        std::fs::read(extracted.join("usr/lib/systemd/systemd")).unwrap(),
        b"\x7fELF systemd".repeat(300)
    );
    assert_eq!(
        std::fs::read(extracted.join("kernel/x86/microcode/GenuineIntel.bin")).unwrap(),
        b"microcode"
    );
    assert_eq!(
        std::fs::read_link(extracted.join("init")).unwrap(),
        Path::new("usr/lib/systemd/systemd")
    );
    // No scratch directory is left beside the output.
    let left: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".initoverlayfs-unpack"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    let tools = [
        newc(
            "conf/initramfs.conf",
            1,
            0o100644,
            1,
            b"MODULES=most\n",
            (0, 0),
        ),
        newc("init", 2, 0o100755, 1, b"#!/bin/sh\n", (0, 0)),
        trailer(),
    ]
    .concat();
    std::fs::write(&input, flate2_gzip(&tools)).unwrap();
    let error = image_from_initramfs(&input, &output, &options).unwrap_err();
    assert!(
        matches!(error, ImageError::InitramfsTools { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("dracut"), "{error}");
}

/// The mini initramfs's compressors (`compress.rs`): what the distributions' own tools
/// decompress gives back the archive.
#[test]
fn system_tools_decompress_what_builder_compresses() {
    use builder::compress::InitramfsCompression;
    let archive = main_archive();
    for (compression, tool, args) in [
        (InitramfsCompression::Zstd, "zstd", &["-dc"][..]),
        (InitramfsCompression::Gzip, "gzip", &["-dc"][..]),
        (InitramfsCompression::Lz4, "lz4", &["-dc"][..]),
        (
            InitramfsCompression::Xz,
            "xz",
            &["-dc", "--single-stream"][..],
        ),
        (InitramfsCompression::Bzip2, "bzip2", &["-dc"][..]),
    ] {
        let packed = compression.compress(&archive).unwrap();
        let Some(unpacked) = with_tool(tool, args, &packed) else {
            continue;
        };
        assert!(unpacked == archive, "{tool} gave other bytes back");
    }
}
