//! Secure Boot for the UKI cells: a throwaway key pair made for each run (openssl), enrolled as
//! PK, KEK and db in a copy of the firmware's variable store (`virt-fw-vars` from
//! python3-virt-firmware), and the cell's Unified Kernel Image assembled by `builder::uki`,
//! signed with that key (`sbsign`), left unsigned, or signed and then tampered with.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::cells::UkiKind;

/// The owner GUID recorded with our certificates in PK, KEK and db: any GUID will do (it names
/// who enrolled a key, the firmware does not check it); this one is ours, fixed so variable
/// stores differ only by the run's key.
pub const KEY_OWNER_GUID: &str = "6a1e6f0e-9d2b-4c55-8e3a-1f0b5c7d2e41";

/// The test certificate's subject.
const KEY_SUBJECT: &str = "/CN=initoverlayfs-rs test Secure Boot key (throwaway)/";

/// The os-release a test UKI carries in `.osrel` (what a boot menu would call it).
pub const TEST_OS_RELEASE: &str = "ID=initoverlayfs-test\nNAME=\"initoverlayfs-rs test UKI\"\n";

/// A key and its self-signed certificate, PEM files.
#[derive(Debug, Clone)]
pub struct SigningKeys {
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// Makes a fresh RSA 2048 key pair in `dir` (a cell's build directory: the private key lives
/// only as long as the run's artefacts, and signs nothing but test images).
pub fn generate_keys(sh: &Shell, dir: &Path) -> Result<SigningKeys> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let keys = SigningKeys {
        key: dir.join("db.key"),
        cert: dir.join("db.crt"),
    };
    let (key, cert) = (&keys.key, &keys.cert);
    let command = cmd!(
        sh,
        "openssl req -new -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj {KEY_SUBJECT} -keyout {key} -out {cert}"
    )
    .quiet();
    run_quietly(
        command,
        "generating the Secure Boot test key pair (openssl)",
    )?;
    Ok(keys)
}

/// Writes `output`: `pristine` (the firmware package's empty variable store) with `keys`'
/// certificate enrolled as PK, KEK and db and Secure Boot switched on.
pub fn enroll(sh: &Shell, pristine: &Path, keys: &SigningKeys, output: &Path) -> Result<()> {
    let cert = &keys.cert;
    let command = cmd!(
        sh,
        "virt-fw-vars --input {pristine} --output {output}
            --set-pk {KEY_OWNER_GUID} {cert}
            --add-kek {KEY_OWNER_GUID} {cert}
            --add-db {KEY_OWNER_GUID} {cert}
            --secure-boot"
    )
    .quiet();
    run_quietly(
        command,
        "enrolling the test key in the firmware's variable store (virt-fw-vars, from python3-virt-firmware)",
    )?;
    Ok(())
}

/// Runs `command`, keeping its chatter (openssl's progress, virt-fw-vars' INFO lines) out of
/// the run's output unless it fails, when its stderr is the error.
fn run_quietly(command: xshell::Cmd<'_>, what: &str) -> Result<()> {
    let output = command
        .ignore_status()
        .output()
        .with_context(|| format!("{what}: cannot run it (cargo xtask provision installs it)"))?;
    if !output.status.success() {
        bail!(
            "{what}: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A cell's UKI: what it is made of besides the kernel and initramfs.
#[derive(Debug, Clone)]
pub struct UkiSpec {
    pub kind: UkiKind,
    /// The systemd EFI stub.
    pub stub: PathBuf,
    /// The key that signs a `signed` or `modified` image.
    pub keys: Option<SigningKeys>,
}

/// Builds the UKI of `spec` at `output`, `scratch` holding the unsigned image.
pub fn build_uki(
    spec: &UkiSpec,
    kernel: &Path,
    release: &str,
    initrd: &Path,
    cmdline: &str,
    scratch: &Path,
    output: &Path,
) -> Result<()> {
    std::fs::create_dir_all(scratch)?;
    let os_release = scratch.join("os-release");
    std::fs::write(&os_release, TEST_OS_RELEASE)?;
    let files = builder::uki::UkiFiles {
        stub: spec.stub.clone(),
        kernel: kernel.to_owned(),
        initrd: initrd.to_owned(),
        os_release,
        cmdline: cmdline.to_owned(),
        uname: Some(release.to_owned()),
    };
    if !spec.kind.signed() {
        builder::uki::write_uki(&files, output)?;
        return Ok(());
    }
    let keys = spec
        .keys
        .as_ref()
        .context("a signed UKI needs the run's key pair")?;
    let unsigned = scratch.join("unsigned.efi");
    builder::uki::write_uki(&files, &unsigned)?;
    builder::uki::sign(&unsigned, &keys.key, &keys.cert, output)?;
    if spec.kind == UkiKind::Modified {
        let mut image = std::fs::read(output)?;
        let offset = flip_byte_in_section(&mut image, ".linux")?;
        std::fs::write(output, &image)?;
        eprintln!(
            "vm-test: flipped the byte at offset {offset:#x} (in .linux) of the signed UKI {}",
            output.display()
        );
    }
    Ok(())
}

/// Flips every bit of the byte in the middle of section `name` (a tampered image whose size
/// and layout are intact, so only the signature can tell); returns its file offset.
pub fn flip_byte_in_section(image: &mut [u8], name: &str) -> Result<usize> {
    let layout = builder::uki::PeLayout::parse(image)?;
    let Some(section) = layout.sections.iter().find(|s| s.name == name) else {
        bail!("the image has no {name} section");
    };
    if section.virtual_size == 0 {
        bail!("section {name} is empty");
    }
    let offset = section.pointer_to_raw_data as usize + section.virtual_size as usize / 2;
    let byte = image
        .get_mut(offset)
        .with_context(|| format!("section {name} lies beyond the file"))?;
    *byte = !*byte;
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

    /// The tampered byte is in `.linux` and nothing else changed.
    #[test]
    fn flips_one_byte_of_the_kernel() {
        if !Path::new(DEBIAN_STUB).exists() {
            crate::provision::skip_or_fail(&format!(
                "{DEBIAN_STUB} is missing (cargo xtask provision installs systemd-boot-efi)"
            ));
            return;
        }
        let stub = std::fs::read(DEBIAN_STUB).unwrap();
        let linux = vec![0x5au8; 4096];
        let uki = builder::uki::assemble(&builder::uki::UkiParts {
            stub: &stub,
            os_release: TEST_OS_RELEASE.as_bytes(),
            cmdline: "console=ttyS0",
            uname: None,
            initrd: b"initrd",
            linux: &linux,
        })
        .unwrap();
        let mut tampered = uki.clone();
        let offset = flip_byte_in_section(&mut tampered, ".linux").unwrap();
        let differ: Vec<usize> = (0..uki.len()).filter(|&i| uki[i] != tampered[i]).collect();
        assert_eq!(differ, [offset]);
        assert_eq!(tampered[offset], !0x5a);
        let layout = builder::uki::PeLayout::parse(&tampered).unwrap();
        let data = layout.section_data(&tampered, ".linux").unwrap();
        assert_eq!(data.iter().filter(|&&b| b != 0x5a).count(), 1);
        assert!(flip_byte_in_section(&mut tampered, ".dtb").is_err());
    }
}
