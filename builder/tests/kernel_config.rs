//! Kernel awareness: the builder's choices follow the target kernel's `.config`, checked on
//! synthetic configs for the odd cases and on the real Debian 6.1 and 6.12 configs (which
//! `cargo xtask test` passes as BUILDER_REAL_KERNEL_CONFIGS).

mod common;

use std::path::Path;

use builder::erofs::ErofsCompression;
use builder::initramfs::Format;
use builder::kernel_config::{KernelConfig, KernelConfigError};

fn config(text: &str) -> KernelConfig {
    KernelConfig::parse(text, Path::new("/boot/config-test"))
}

fn compression(value: &str) -> Option<Option<ErofsCompression>> {
    Some(ErofsCompression::parse(value).unwrap())
}

/// RHEL 9's kernels: erofs without compression support. The image must be uncompressed, and
/// asking for lz4hc is refused naming the missing option.
#[test]
fn a_kernel_without_erofs_compression_gets_an_uncompressed_image() {
    let rhel9 = config(
        "CONFIG_EROFS_FS=m\nCONFIG_EROFS_FS_XATTR=y\n# CONFIG_EROFS_FS_ZIP is not set\nCONFIG_RD_GZIP=y\nCONFIG_RD_XZ=y\nCONFIG_RD_ZSTD=y\n",
    );
    assert_eq!(rhel9.erofs_compression(None).unwrap(), None);
    assert_eq!(rhel9.erofs_compression(compression("none")).unwrap(), None);
    let error = rhel9
        .erofs_compression(compression("lz4hc,11"))
        .unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(error, KernelConfigError::UnreadableCompression { .. })
            && text.contains("CONFIG_EROFS_FS_ZIP is not set")
            && text.contains("/boot/config-test")
            && text.contains("use no compressor or none"),
        "{text}"
    );
    assert!(!rhel9.erofs_file_backed());
    assert_eq!(
        rhel9.initramfs_formats(),
        [Format::Gzip, Format::Xz, Format::Zstd]
    );
}

#[test]
fn odd_configs() {
    let none = config("# CONFIG_EROFS_FS is not set\n");
    let error = none.erofs_compression(None).unwrap_err().to_string();
    assert!(
        error.contains("cannot mount an initoverlayfs image"),
        "{error}"
    );
    let lz4_only = config("CONFIG_EROFS_FS=y\nCONFIG_EROFS_FS_ZIP=y\n");
    let error = lz4_only
        .erofs_compression(compression("lzma"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("CONFIG_EROFS_FS_ZIP_LZMA") && error.contains("use lz4, lz4hc or none"),
        "{error}"
    );
    let error = lz4_only
        .erofs_compression(compression("brotli"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("no erofs compressor builder knows"),
        "{error}"
    );
    // Values in quotes and comments do not confuse the parser.
    let quoted = config("CONFIG_LOCALVERSION=\"-test\"\n# CONFIG_EROFS_FS_ZIP=y is a comment\n");
    assert!(!quoted.enabled("CONFIG_EROFS_FS_ZIP"));
}

/// The real Debian configs (amd64 and arm64): 6.12 (backports) mounts erofs from a file and
/// reads every compressor; 6.1 needs a loop device and reads lz4 only. All unpack every
/// initramfs format.
#[test]
fn real_debian_configs() {
    let Some(paths) = common::provided("BUILDER_REAL_KERNEL_CONFIGS") else {
        return;
    };
    let (mut saw_6_12, mut saw_6_1) = (false, false);
    for path in paths.split(':') {
        let kernel = KernelConfig::read(Path::new(path)).unwrap();
        println!("{kernel}");
        // An RPM kernel's config (lib/modules/<release>/config), where a mirror was reachable:
        // whatever its options, the default image is one it reads.
        if !path.contains("/boot/config-") {
            let default = kernel.erofs_compression(None).unwrap();
            assert_eq!(
                default.is_some(),
                kernel.enabled("CONFIG_EROFS_FS_ZIP"),
                "{path}: compressed exactly when the kernel reads compressed erofs"
            );
            continue;
        }
        let default = kernel.erofs_compression(None).unwrap();
        assert_eq!(
            default.as_ref().map(|c| c.as_str()),
            Some("lz4hc,11"),
            "{path}"
        );
        assert_eq!(kernel.initramfs_formats().len(), 7, "{path}");
        if path.contains("config-6.12.") {
            assert!(kernel.erofs_file_backed());
            assert_eq!(
                kernel.erofs_compressors(),
                ["lz4", "lz4hc", "lzma", "deflate", "zstd"]
            );
            assert!(kernel.module_decompress());
            saw_6_12 = true;
        } else if path.contains("config-6.1.") {
            assert!(!kernel.erofs_file_backed());
            assert_eq!(kernel.erofs_compressors(), ["lz4", "lz4hc"]);
            assert!(kernel.erofs_compression(compression("lzma")).is_err());
            assert!(!kernel.module_decompress());
            saw_6_1 = true;
        }
    }
    assert!(
        saw_6_12 && saw_6_1,
        "expected the 6.1 and 6.12 configs in {paths}"
    );
}

#[test]
fn locates_the_config_in_a_tree() {
    let root = tempfile::tempdir().unwrap();
    let error = KernelConfig::locate(root.path(), "9.9")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("boot/config-9.9") && error.contains("--kernel-config"),
        "{error}"
    );
    let modules = root.path().join("usr/lib/modules/9.9");
    std::fs::create_dir_all(&modules).unwrap();
    std::fs::write(modules.join("config"), "CONFIG_EROFS_FS=y\n").unwrap();
    let found = KernelConfig::locate(root.path(), "9.9").unwrap();
    assert!(found.enabled("CONFIG_EROFS_FS"));
    assert_eq!(found.source, modules.join("config"));
}
