//! What the target kernel can do, read from its `.config` (`/boot/config-<kver>`,
//! `/lib/modules/<kver>/config`, or a path): which erofs compressors it reads, whether it mounts
//! erofs straight from a file, which initramfs compressions it unpacks, whether it decompresses
//! modules. Every choice the builder makes about the image follows the kernel, never the build
//! host; an override the kernel cannot honour is refused with the option that is missing.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::compress::InitramfsCompression;
use crate::erofs::ErofsCompression;
use crate::initramfs::Format;

/// The erofs compressors `mkfs.erofs -z` knows and the option that lets the kernel read each.
const EROFS_COMPRESSORS: [(&str, &str); 5] = [
    ("lz4", "CONFIG_EROFS_FS_ZIP"),
    ("lz4hc", "CONFIG_EROFS_FS_ZIP"),
    ("lzma", "CONFIG_EROFS_FS_ZIP_LZMA"),
    ("deflate", "CONFIG_EROFS_FS_ZIP_DEFLATE"),
    ("zstd", "CONFIG_EROFS_FS_ZIP_ZSTD"),
];
/// The initramfs formats and their `CONFIG_RD_*` options (`usr/Kconfig`).
const INITRAMFS_FORMATS: [(Format, &str); 7] = [
    (Format::Gzip, "CONFIG_RD_GZIP"),
    (Format::Bzip2, "CONFIG_RD_BZIP2"),
    (Format::Lzma, "CONFIG_RD_LZMA"),
    (Format::Xz, "CONFIG_RD_XZ"),
    (Format::Lzo, "CONFIG_RD_LZO"),
    (Format::Lz4Legacy, "CONFIG_RD_LZ4"),
    (Format::Zstd, "CONFIG_RD_ZSTD"),
];
/// Upstream initoverlayfs's default (`erofs_compression -zlz4hc,11`): fast to read, and every
/// kernel with `CONFIG_EROFS_FS_ZIP` reads it.
pub const DEFAULT_EROFS_COMPRESSION: &str = "lz4hc,11";

/// A parsed kernel `.config`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelConfig {
    /// Where it was read from, for messages.
    pub source: PathBuf,
    /// `CONFIG_X` → `y`, `m` or the value; options that are not set are absent.
    options: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelConfigError {
    #[error("reading the kernel config {path}: {error}", path = .path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "no kernel config for {kver} under {root}: looked for {tried}; give its path with --kernel-config (the kernel package ships it as /boot/config-<kver>)",
        root = .root.display()
    )]
    NotFound {
        root: PathBuf,
        kver: String,
        tried: String,
    },
    #[error(
        "{config} has no erofs (CONFIG_EROFS_FS is not set): this kernel cannot mount an initoverlayfs image",
        config = .config.display()
    )]
    NoErofs { config: PathBuf },
    #[error(
        "the kernel of {config} cannot read {compression} erofs images ({option} is not set): use {supported} or none",
        config = .config.display()
    )]
    UnreadableCompression {
        config: PathBuf,
        compression: String,
        option: String,
        supported: String,
    },
    #[error(
        "the kernel of {config} cannot unpack a {compression} initramfs ({option} is not set): use {supported}",
        config = .config.display()
    )]
    UnpackableInitramfs {
        config: PathBuf,
        compression: InitramfsCompression,
        option: String,
        supported: String,
    },
    #[error(
        "{compression:?} is no erofs compressor builder knows: use one of lz4, lz4hc, lzma, deflate, zstd, or none"
    )]
    UnknownCompressor { compression: String },
}

impl KernelConfig {
    /// Parses `.config` text: `CONFIG_X=y|m|value` lines count, `# CONFIG_X is not set` and
    /// everything else do not.
    pub fn parse(text: &str, source: &Path) -> KernelConfig {
        let options = text
            .lines()
            .filter_map(|line| line.trim().split_once('='))
            .filter(|(name, _)| name.starts_with("CONFIG_"))
            .map(|(name, value)| (name.to_owned(), value.trim_matches('"').to_owned()))
            .collect();
        KernelConfig {
            source: source.to_owned(),
            options,
        }
    }

    pub fn read(path: &Path) -> Result<KernelConfig, KernelConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| KernelConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Ok(KernelConfig::parse(&text, path))
    }

    /// The config of kernel `kver` in the tree `root` (`/` for the running system): the kernel
    /// package's `/boot/config-<kver>`, else the copy some distributions keep with the modules.
    pub fn locate(root: &Path, kver: &str) -> Result<KernelConfig, KernelConfigError> {
        let candidates = [
            format!("boot/config-{kver}"),
            format!("lib/modules/{kver}/config"),
            format!("usr/lib/modules/{kver}/config"),
        ];
        for candidate in &candidates {
            let path = root.join(candidate);
            if path.is_file() {
                return KernelConfig::read(&path);
            }
        }
        Err(KernelConfigError::NotFound {
            root: root.to_owned(),
            kver: kver.to_owned(),
            tried: candidates.join(", "),
        })
    }

    /// The value of a set option (`y`, `m`, a number, a string without its quotes).
    pub fn value(&self, option: &str) -> Option<&str> {
        self.options.get(option).map(String::as_str)
    }

    /// Built in or a module.
    pub fn enabled(&self, option: &str) -> bool {
        matches!(
            self.options.get(option).map(String::as_str),
            Some("y" | "m")
        )
    }

    /// The `mkfs.erofs -z` compressors this kernel reads.
    pub fn erofs_compressors(&self) -> Vec<&'static str> {
        EROFS_COMPRESSORS
            .iter()
            .filter(|(_, option)| self.enabled(option))
            .map(|(name, _)| *name)
            .collect()
    }

    /// Linux 6.12+ with `CONFIG_EROFS_FS_BACKED_BY_FILE`: the image mounts without a loop
    /// device, so the mini initramfs needs no `loop` module.
    pub fn erofs_file_backed(&self) -> bool {
        self.enabled("CONFIG_EROFS_FS_BACKED_BY_FILE")
    }

    /// The initramfs compressions the kernel unpacks (uncompressed newc always works).
    pub fn initramfs_formats(&self) -> Vec<Format> {
        INITRAMFS_FORMATS
            .iter()
            .filter(|(_, option)| self.enabled(option))
            .map(|(format, _)| *format)
            .collect()
    }

    /// `CONFIG_MODULE_DECOMPRESS`: the kernel takes `.ko.xz`/`.ko.zst` through finit_module.
    pub fn module_decompress(&self) -> bool {
        self.enabled("CONFIG_MODULE_DECOMPRESS")
    }

    /// The mini initramfs's compression: `requested` if the kernel unpacks it (refused with the
    /// missing `CONFIG_RD_*` option otherwise), else the preferred one it unpacks.
    pub fn initramfs_compression(
        &self,
        requested: Option<InitramfsCompression>,
    ) -> Result<InitramfsCompression, KernelConfigError> {
        let formats = self.initramfs_formats();
        let Some(requested) = requested else {
            return Ok(InitramfsCompression::preferred(&formats));
        };
        let format = requested.format();
        if format == Format::Newc || formats.contains(&format) {
            return Ok(requested);
        }
        let option = INITRAMFS_FORMATS
            .iter()
            .find(|(f, _)| *f == format)
            .map_or("CONFIG_RD_*", |(_, option)| option);
        let names: Vec<&str> = formats.iter().map(|f| f.name()).collect();
        Err(KernelConfigError::UnpackableInitramfs {
            config: self.source.clone(),
            compression: requested,
            option: (*option).to_owned(),
            supported: if names.is_empty() {
                "none".to_owned()
            } else {
                format!("none or {}", names.join(", "))
            },
        })
    }

    /// The erofs compression for an image this kernel mounts: `requested` if the kernel reads it
    /// (refused with the missing option otherwise), else upstream's lz4hc where the kernel reads
    /// compressed images at all, else none (RHEL 9's kernels, for one).
    pub fn erofs_compression(
        &self,
        requested: Option<Option<ErofsCompression>>,
    ) -> Result<Option<ErofsCompression>, KernelConfigError> {
        if !self.enabled("CONFIG_EROFS_FS") {
            return Err(KernelConfigError::NoErofs {
                config: self.source.clone(),
            });
        }
        let supported = self.erofs_compressors();
        let Some(requested) = requested else {
            return Ok(if supported.contains(&"lz4hc") {
                ErofsCompression::parse(DEFAULT_EROFS_COMPRESSION)
                    .ok()
                    .flatten()
            } else {
                None
            });
        };
        let Some(compression) = requested else {
            return Ok(None);
        };
        let name = compression.compressor();
        let Some((_, option)) = EROFS_COMPRESSORS.iter().find(|(n, _)| *n == name) else {
            return Err(KernelConfigError::UnknownCompressor {
                compression: compression.to_string(),
            });
        };
        if supported.contains(&name) {
            Ok(Some(compression))
        } else {
            Err(KernelConfigError::UnreadableCompression {
                config: self.source.clone(),
                compression: compression.to_string(),
                option: (*option).to_owned(),
                supported: if supported.is_empty() {
                    "no compressor".to_owned()
                } else {
                    supported.join(", ")
                },
            })
        }
    }
}

impl fmt::Display for KernelConfig {
    /// A summary of what matters here, one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let formats: Vec<&str> = self.initramfs_formats().iter().map(|f| f.name()).collect();
        write!(
            f,
            "{}: erofs {}, compressors [{}], {}, initramfs [{}], modules {}",
            self.source.display(),
            if self.enabled("CONFIG_EROFS_FS") {
                "yes"
            } else {
                "no"
            },
            self.erofs_compressors().join(", "),
            if self.erofs_file_backed() {
                "file-backed mounts"
            } else {
                "loop device needed"
            },
            formats.join(", "),
            if self.module_decompress() {
                "may stay compressed"
            } else {
                "decompressed at build time"
            }
        )
    }
}
