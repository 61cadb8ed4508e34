//! Assembles the mini initramfs: an uncompressed newc cpio with storage-init as `/init`, its
//! config, its module list, the (decompressed) modules and the few directories and device nodes
//! storage-init needs before it mounts anything. Byte-identical on every rebuild from the same
//! inputs.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use storage_init::config::{CONFIG_PATH, Config};
use storage_init::contract::{MODULE_LIST_PATH, ModuleList};

use crate::compress::InitramfsCompression;
use crate::cpio::{Archive, CpioError};
use crate::modules::{self, KernelModules, ModulesError};

/// Where the kernel runs the initramfs's init (`init/main.c`: `ramdisk_execute_command`).
pub const INIT_PATH: &str = "/init";

/// Directories that exist before storage-init mounts anything: mount points for devtmpfs,
/// proc, sysfs, the run tmpfs, the boot partition and the new root.
const DIRECTORIES: [&str; 7] = ["/dev", "/proc", "/sys", "/run", "/boot", "/sysroot", "/etc"];

/// Device nodes the kernel and storage-init use before devtmpfs is mounted; numbers from the
/// kernel's `Documentation/admin-guide/devices.txt`. `/dev/console` must exist in the
/// initramfs: the kernel opens it for init's stdin/stdout/stderr before running `/init`.
const DEVICE_NODES: [(&str, u32, u32, u32); 2] =
    [("/dev/console", 0o600, 5, 1), ("/dev/kmsg", 0o600, 1, 11)];

/// Where the kernel's firmware loader looks (`fw_path` in drivers/base/firmware_loader).
const FIRMWARE_DIR: &str = "/lib/firmware";

const EXECUTABLE_MODE: u32 = 0o755;
const DIRECTORY_MODE: u32 = 0o755;
const DATA_FILE_MODE: u32 = 0o644;

/// Why a mini initramfs cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum MiniInitramfsError {
    #[error(
        "storage-init binary {path} cannot be read: {error} (build it first, e.g. `cargo build -p storage-init --profile initrd`)",
        path = .path.display()
    )]
    StorageInit { path: PathBuf, error: io::Error },
    #[error(transparent)]
    Modules(#[from] ModulesError),
    #[error(transparent)]
    Cpio(#[from] CpioError),
    #[error(transparent)]
    Write(#[from] crate::replace::ReplaceError),
    #[error("compressing the archive with {compression}: {error}")]
    Compress {
        compression: InitramfsCompression,
        error: io::Error,
    },
}

/// Everything a mini initramfs is made from.
#[derive(Debug, Clone)]
pub struct MiniInitramfs {
    /// The static storage-init binary, installed as `/init`.
    pub storage_init: PathBuf,
    /// Written to [`CONFIG_PATH`].
    pub config: Config,
    /// The kernel modules tree the modules come from.
    pub kernel: KernelModules,
    /// Modules to load (names or aliases); their dependencies are added.
    pub modules: Vec<String>,
    /// Modules to ship if this kernel has them (a storage preset's drivers): a name it lacks
    /// or has built in is skipped with a note.
    pub wanted_modules: Vec<String>,
    /// The mtime of every entry (seconds since the epoch; at most `u32::MAX`).
    pub mtime: u64,
    /// How the archive is compressed (the kernel must unpack it: see
    /// `KernelConfig::initramfs_compression`).
    pub compression: InitramfsCompression,
}

/// What was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiniInitramfsReport {
    /// The list written to [`MODULE_LIST_PATH`].
    pub module_list: ModuleList,
    /// Decisions of the module closure (built-in modules skipped, …).
    pub notes: Vec<String>,
    /// The size of each shipped module file (uncompressed), by module name.
    pub module_bytes: BTreeMap<String, u64>,
    /// Archive entries, the trailer not counted.
    pub entries: usize,
    /// Size of the archive in bytes, uncompressed.
    pub bytes: u64,
    /// Size of the file written, compressed as [`MiniInitramfs::compression`] says.
    pub compressed_bytes: u64,
}

/// The archive and what went into it.
pub(crate) struct Assembled {
    pub(crate) archive: Archive,
    pub(crate) module_list: ModuleList,
    pub(crate) notes: Vec<String>,
    pub(crate) module_bytes: BTreeMap<String, u64>,
}

impl MiniInitramfs {
    /// The archive and the module list it carries.
    pub fn archive(&self) -> Result<(Archive, ModuleList, Vec<String>), MiniInitramfsError> {
        self.assemble()
            .map(|built| (built.archive, built.module_list, built.notes))
    }

    /// [`MiniInitramfs::archive`], with the size of each module file it holds.
    pub(crate) fn assemble(&self) -> Result<Assembled, MiniInitramfsError> {
        let mut archive = Archive::new();
        for dir in DIRECTORIES {
            archive.add_dir(dir, DIRECTORY_MODE)?;
        }
        for (path, mode, major, minor) in DEVICE_NODES {
            archive.add_char_device(path, mode, major, minor)?;
        }
        // Checked here so the error names the binary and what to do, not the archive path.
        fs::metadata(&self.storage_init).map_err(|error| MiniInitramfsError::StorageInit {
            path: self.storage_init.clone(),
            error,
        })?;
        archive.add_file_from_host(INIT_PATH, EXECUTABLE_MODE, &self.storage_init)?;
        archive.add_file(
            CONFIG_PATH,
            DATA_FILE_MODE,
            self.config.render().into_bytes(),
        )?;

        let installed_dir = self.kernel.installed_dir();
        archive.add_dir(&installed_dir, DIRECTORY_MODE)?;
        let mut module_bytes = BTreeMap::new();
        let (module_list, notes) = if self.modules.is_empty() && self.wanted_modules.is_empty() {
            (ModuleList::default(), Vec::new())
        } else {
            let resolution = self
                .kernel
                .resolve_with_wanted(&self.modules, &self.wanted_modules)?;
            let mut notes = resolution.notes.clone();
            let mut firmware = std::collections::BTreeSet::new();
            for module in &resolution.modules {
                let bytes = modules::read_module(&resolution.dir.join(&module.relative_path))?;
                match crate::modinfo::firmware(&bytes) {
                    Ok(names) => firmware.extend(names),
                    Err(e) => notes.push(format!(
                        "{}: cannot read its .modinfo ({e}): no firmware added for it",
                        module.relative_path
                    )),
                }
                module_bytes.insert(module.name.clone(), bytes.len() as u64);
                let path = format!("{installed_dir}/{}", module.uncompressed_relative_path()?);
                archive.add_file(&path, DATA_FILE_MODE, bytes)?;
            }
            for name in &firmware {
                match self.find_firmware(name) {
                    Some((source, installed)) => {
                        archive.add_file_from_host(&installed, DATA_FILE_MODE, &source)?;
                    }
                    None => notes.push(format!(
                        "firmware {name} is not in {}: not shipped (its device may not work before the real root)",
                        self.kernel.root.join(&FIRMWARE_DIR[1..]).display()
                    )),
                }
            }
            (resolution.module_list(&installed_dir)?, notes)
        };
        archive.add_file(
            MODULE_LIST_PATH,
            DATA_FILE_MODE,
            module_list.render().into_bytes(),
        )?;
        Ok(Assembled {
            archive,
            module_list,
            notes,
            module_bytes,
        })
    }

    /// A firmware file under the kernel tree's /lib/firmware, as is or compressed the way
    /// the kernel's loader reads it (`CONFIG_FW_LOADER_COMPRESS`): (host path, archive path).
    /// A name that would leave /lib/firmware is never looked up.
    fn find_firmware(&self, name: &str) -> Option<(PathBuf, String)> {
        // The archive's own path rules (no empty, `.` or `..` component), and relative.
        let safe = !name.starts_with('/') && crate::cpio::split_path(name).is_ok();
        if !safe {
            return None;
        }
        ["", ".zst", ".xz"].iter().find_map(|suffix| {
            let installed = format!("{FIRMWARE_DIR}/{name}{suffix}");
            let source = self.kernel.root.join(&installed[1..]);
            source.is_file().then_some((source, installed))
        })
    }

    /// The file's bytes (the archive, compressed), with its report.
    pub fn to_bytes(&self) -> Result<(Vec<u8>, MiniInitramfsReport), MiniInitramfsError> {
        let Assembled {
            archive,
            module_list,
            notes,
            module_bytes,
        } = self.assemble()?;
        let bytes = archive.to_bytes(self.mtime)?;
        let compressed =
            self.compression
                .compress(&bytes)
                .map_err(|error| MiniInitramfsError::Compress {
                    compression: self.compression,
                    error,
                })?;
        let report = MiniInitramfsReport {
            module_list,
            notes,
            module_bytes,
            entries: archive.len(),
            bytes: bytes.len() as u64,
            compressed_bytes: compressed.len() as u64,
        };
        Ok((compressed, report))
    }

    /// Writes the file to `output`, replacing any old one atomically.
    pub fn write(&self, output: &Path) -> Result<MiniInitramfsReport, MiniInitramfsError> {
        let (bytes, report) = self.to_bytes()?;
        crate::replace::replace_file(output, &bytes, DATA_FILE_MODE)?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio;
    use std::io::Write as _;
    use storage_init::config::BootFs;
    use storage_init::contract::Necessity;

    const KVER: &str = "6.12.0-test";

    fn xz(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = liblzma::write::XzEncoder::new(Vec::new(), 6);
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// A synthetic kernel tree: ext4 with a crc32c softdep through an alias, and a builtin.
    fn synthetic_inputs(work: &Path) -> MiniInitramfs {
        let dir = work.join("k/lib/modules").join(KVER);
        for (relative, content) in [
            ("kernel/fs/ext4/ext4.ko.xz", "ext4"),
            ("kernel/fs/jbd2/jbd2.ko.xz", "jbd2"),
            ("kernel/crypto/crc32c_generic.ko.xz", "crc32c"),
            ("kernel/drivers/block/virtio_blk.ko.xz", "virtio_blk"),
        ] {
            let path = dir.join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            // virtio_blk declares a firmware file the tree has, ext4 one it lacks.
            let modinfo = match content {
                "virtio_blk" => format!("name={content}\0firmware=test/virtio.fw\0"),
                "ext4" => format!("name={content}\0firmware=../../etc/shadow\0firmware=none.bin\0"),
                _ => format!("name={content}\0"),
            };
            fs::write(
                &path,
                xz(&crate::modinfo::elf_with_modinfo(modinfo.as_bytes())),
            )
            .unwrap();
        }
        fs::write(
            dir.join("kernel/fs/erofs.ko"),
            crate::modinfo::elf_with_modinfo(b"name=erofs\0"),
        )
        .unwrap();
        fs::create_dir_all(work.join("k/lib/firmware/test")).unwrap();
        fs::write(work.join("k/lib/firmware/test/virtio.fw.xz"), b"firmware").unwrap();
        fs::write(
            dir.join("modules.dep"),
            "kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz\n\
             kernel/fs/jbd2/jbd2.ko.xz:\n\
             kernel/crypto/crc32c_generic.ko.xz:\n\
             kernel/drivers/block/virtio_blk.ko.xz:\n\
             kernel/fs/erofs.ko:\n",
        )
        .unwrap();
        fs::write(
            dir.join("modules.softdep"),
            "softdep ext4 pre: crypto-crc32c\n",
        )
        .unwrap();
        fs::write(
            dir.join("modules.alias"),
            "alias crypto-crc32c crc32c_generic\n",
        )
        .unwrap();
        fs::write(
            dir.join("modules.builtin"),
            "kernel/drivers/virtio/virtio_pci.ko\n",
        )
        .unwrap();
        let storage_init = work.join("storage-init");
        fs::write(&storage_init, b"\x7fELF fake storage-init").unwrap();
        MiniInitramfs {
            storage_init,
            config: Config {
                bootfs: Some(BootFs::Uuid("0123-abcd".into())),
                bootfstype: Some("ext4".into()),
                ..Config::default()
            },
            kernel: KernelModules::new(work.join("k"), KVER),
            modules: ["virtio_pci", "virtio_blk", "ext4", "erofs"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            wanted_modules: Vec::new(),
            mtime: 0,
            compression: InitramfsCompression::None,
        }
    }

    #[test]
    fn synthetic_mini_initramfs_listing() {
        let work = tempfile::tempdir().unwrap();
        let inputs = synthetic_inputs(work.path());
        let output = work.path().join("mini.cpio");
        let report = inputs.write(&output).unwrap();
        insta::assert_snapshot!(crate::listing::list_path(&output).unwrap().1);
        let necessity: Vec<Necessity> = report
            .module_list
            .entries
            .iter()
            .map(|e| e.necessity)
            .collect();
        assert_eq!(
            necessity,
            [
                Necessity::Required,
                Necessity::Optional,
                Necessity::Required,
                Necessity::Required,
                Necessity::Required
            ]
        );
        assert_eq!(report.bytes, fs::metadata(&output).unwrap().len());
        // virtio_pci is built in; ext4's two firmware names are not shipped: one would leave
        // /lib/firmware, the other is not in the tree.
        assert_eq!(report.notes.len(), 3, "{:?}", report.notes);
        assert!(
            report.notes[1].contains("firmware ../../etc/shadow is not in"),
            "{:?}",
            report.notes
        );
        assert!(
            report.notes[2].contains("firmware none.bin is not in"),
            "{:?}",
            report.notes
        );
        // The module list, config and modules round-trip through storage-init's own parsers.
        let entries = cpio::read_archive(&fs::read(&output).unwrap()).unwrap();
        assert_eq!(report.entries, entries.len());
        let file = |path: &str| {
            entries
                .iter()
                .find(|e| format!("/{}", e.name) == path)
                .unwrap_or_else(|| panic!("{path} missing"))
                .data
                .clone()
        };
        let list = ModuleList::parse(&String::from_utf8(file(MODULE_LIST_PATH)).unwrap()).unwrap();
        assert_eq!(list, report.module_list);
        for entry in &list.entries {
            assert!(
                file(&entry.path.to_string_lossy()).starts_with(b"\x7fELF"),
                "{entry:?}"
            );
        }
        let (config, warnings) =
            storage_init::config::parse_config(&String::from_utf8(file(CONFIG_PATH)).unwrap())
                .unwrap();
        assert_eq!(config, inputs.config);
        assert!(warnings.is_empty());
    }

    #[test]
    fn rebuilds_are_byte_identical() {
        let work = tempfile::tempdir().unwrap();
        let inputs = synthetic_inputs(work.path());
        let (first, _) = inputs.to_bytes().unwrap();
        let (second, _) = inputs.to_bytes().unwrap();
        assert!(first == second, "two builds differ");
        let later = MiniInitramfs {
            mtime: 1,
            ..inputs.clone()
        };
        assert!(later.to_bytes().unwrap().0 != first, "mtime is not used");
    }

    #[test]
    fn errors_name_the_input() {
        let work = tempfile::tempdir().unwrap();
        let inputs = synthetic_inputs(work.path());
        let missing_binary = MiniInitramfs {
            storage_init: work.path().join("nope"),
            ..inputs.clone()
        };
        let err = missing_binary.to_bytes().unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("cargo build"), "{err}");
        let missing_module = MiniInitramfs {
            modules: vec!["nvme".into()],
            ..inputs.clone()
        };
        let err = missing_module.to_bytes().unwrap_err().to_string();
        assert!(err.contains("\"nvme\"") && err.contains(KVER), "{err}");
    }

    #[test]
    fn real_debian_tree_builds() {
        let Some(kernel) = crate::real_kernel_tree() else {
            return;
        };
        let work = tempfile::tempdir().unwrap();
        let storage_init = work.path().join("storage-init");
        fs::write(&storage_init, b"\x7fELF fake").unwrap();
        let inputs = MiniInitramfs {
            storage_init,
            config: Config::default(),
            kernel,
            modules: ["virtio_blk", "ext4", "erofs", "overlay"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            wanted_modules: Vec::new(),
            mtime: 0,
            compression: InitramfsCompression::None,
        };
        let (bytes, report) = inputs.to_bytes().unwrap();
        println!("{}", report.module_list.render());
        println!("{} entries, {} bytes", report.entries, bytes.len());
        assert_eq!(report.module_list.entries.len(), 10);
        assert!(inputs.to_bytes().unwrap().0 == bytes, "rebuild differs");
    }

    /// The mini initramfs of each storage preset on the real Debian kernel, as `builder list`
    /// prints it: a change in what ships (a module more or less, other bytes) shows in review.
    /// storage-init is a fixed stand-in so the snapshots follow the builder, not its code.
    #[test]
    fn preset_listings() {
        use crate::presets::{StoragePreset, filesystem_modules, preset_modules};
        let Some(kernel) = crate::real_kernel_tree() else {
            return;
        };
        let work = tempfile::tempdir().unwrap();
        let storage_init = work.path().join("storage-init");
        fs::write(&storage_init, b"\x7fELF storage-init stand-in").unwrap();
        let kernel_config =
            crate::kernel_config::KernelConfig::locate(&kernel.root, &kernel.kver).unwrap();
        let config = Config {
            bootfs: Some(BootFs::Label("boot".into())),
            bootfstype: Some("ext4".into()),
            ..Config::default()
        };
        for preset in StoragePreset::ALL {
            let inputs = MiniInitramfs {
                storage_init: storage_init.clone(),
                config: config.clone(),
                kernel: kernel.clone(),
                modules: filesystem_modules(&kernel_config, Some("ext4"), "erofs", false),
                wanted_modules: preset_modules(&[preset]),
                mtime: 0,
                compression: kernel_config.initramfs_compression(None).unwrap(),
            };
            let output = work.path().join(format!("{}.img", preset.name()));
            let report = inputs.write(&output).unwrap();
            println!(
                "preset {}: {} entries, {} bytes, {} to {} bytes",
                preset.name(),
                report.entries,
                report.bytes,
                inputs.compression,
                report.compressed_bytes
            );
            let (_, listing) = crate::listing::list_path(&output).unwrap();
            insta::assert_snapshot!(format!("preset_{}", preset.name()), listing);
        }
    }
}
