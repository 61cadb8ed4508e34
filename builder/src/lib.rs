//! builder: builds what an initoverlayfs boot needs, reproducibly: the mini initramfs (a newc
//! cpio holding storage-init, its config, its module list and the modules) and the erofs image.
//!
//! Architecture Invariant: builder writes storage-init's files only through storage-init's own
//! types (`storage_init::config::Config`, `storage_init::contract::ModuleList`), and has no
//! network code: inputs are files and directories the caller already has.

pub mod bls;
pub mod bootfs;
pub mod cli;
pub mod compress;
pub mod cpio;
pub mod efi;
pub mod elf;
pub mod erofs;
pub mod extract;
pub mod fault;
pub mod hooks;
pub mod image;
pub mod initramfs;
pub mod install;
pub mod install_conf;
pub mod kernel_config;
pub mod listing;
pub mod mini_initramfs;
pub mod modinfo;
pub mod modules;
pub mod presets;
pub mod replace;
pub mod status;
pub mod systemd_initramfs;
#[cfg(test)]
#[path = "../../storage-init/src/test_tools.rs"]
pub(crate) mod test_tools;
pub mod uki;
pub mod verity;

/// The environment variable that fixes every timestamp builder writes (reproducible-builds.org).
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// Why `SOURCE_DATE_EPOCH` cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{SOURCE_DATE_EPOCH}={0:?} is not a whole number of seconds since the epoch")]
pub struct SourceDateEpochError(String);

/// The timestamp for everything builder writes: `SOURCE_DATE_EPOCH` if set, else 0.
pub fn source_date_epoch() -> Result<u64, SourceDateEpochError> {
    match std::env::var(SOURCE_DATE_EPOCH) {
        Ok(value) => value
            .trim()
            .parse()
            .map_err(|_| SourceDateEpochError(value)),
        Err(std::env::VarError::NotPresent) => Ok(0),
        Err(std::env::VarError::NotUnicode(value)) => {
            Err(SourceDateEpochError(value.to_string_lossy().into_owned()))
        }
    }
}

/// For tests: a real, depmod'ed kernel modules tree named by `BUILDER_REAL_KERNEL_TREE`
/// (`<root>:<kver>`); `cargo xtask test` points it at the fetched Debian kernel fixture.
#[cfg(test)]
pub(crate) fn real_kernel_tree() -> Option<modules::KernelModules> {
    let value = test_tools::provided("BUILDER_REAL_KERNEL_TREE")?;
    let Some((root, kver)) = value.split_once(':') else {
        panic!("BUILDER_REAL_KERNEL_TREE={value}: expected <root>:<kver>");
    };
    let kernel = modules::KernelModules::new(root, kver);
    if kernel.dir().join("modules.dep").is_file() {
        Some(kernel)
    } else {
        panic!(
            "BUILDER_REAL_KERNEL_TREE={value}: no modules.dep in {}",
            kernel.dir().display()
        );
    }
}

#[cfg(test)]
mod tests {
    /// Architecture Invariant: builder does not depend on testvm (only xtask ties them).
    #[test]
    fn builder_does_not_depend_on_testvm() {
        let manifest = include_str!("../Cargo.toml");
        let dependencies = manifest
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!dependencies.contains("testvm"), "{manifest}");
    }
}
