//! Which accelerator the VMs use: `--accel auto|kvm|tcg` (or `INITOVERLAYFS_ACCEL`, which the
//! VM tests read). `auto` uses KVM only where it really runs a kernel: the probe
//! (`testvm::accel`) boots the cell's kernel under KVM once per host boot, its answer is kept
//! in `target/vm-test/kvm-probe` with the host's boot id, and a broken KVM is reported and
//! replaced by TCG.

use std::path::Path;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use testvm::accel::{KvmProbe, probe_kvm};
use testvm::machine::{Accel, Board};

/// The environment variable the VM tests take the choice from.
pub const ACCEL_ENV: &str = "INITOVERLAYFS_ACCEL";
const PROBE_FILE: &str = "kvm-probe";
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    /// KVM where it works, else TCG.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl FromStr for AccelChoice {
    type Err = anyhow::Error;

    fn from_str(value: &str) -> Result<AccelChoice> {
        match value {
            "auto" => Ok(AccelChoice::Auto),
            "kvm" => Ok(AccelChoice::Kvm),
            "tcg" => Ok(AccelChoice::Tcg),
            other => bail!("accelerator {other:?}: expected auto, kvm or tcg"),
        }
    }
}

impl AccelChoice {
    /// `INITOVERLAYFS_ACCEL`, else auto.
    pub fn from_env() -> Result<AccelChoice> {
        match std::env::var(ACCEL_ENV) {
            Ok(value) => value
                .parse()
                .with_context(|| format!("{ACCEL_ENV}={value}")),
            Err(_) => Ok(AccelChoice::Auto),
        }
    }
}

/// The accelerator for a VM booting `kernel` on `board`; `artifacts` is target/vm-test.
pub fn resolve(choice: AccelChoice, board: Board, kernel: &Path, artifacts: &Path) -> Accel {
    match choice {
        AccelChoice::Kvm => Accel::Kvm,
        AccelChoice::Tcg => Accel::Tcg,
        // KVM runs guests of the host's own architecture only, and not every board.
        AccelChoice::Auto if board.arch() != std::env::consts::ARCH || !board.kvm_capable() => {
            Accel::Tcg
        }
        AccelChoice::Auto => probed(board, kernel, artifacts),
    }
}

/// The accelerator a probe of this host boot (`boot_id`) chose, from the cache file's `text`:
/// the boot id, then the accelerator's name, then the probe's description. Nothing is trusted
/// without a boot id to match (KVM's state changes with the host's kernel and modules), nor a
/// cache of another boot or naming no accelerator.
fn cached(text: &str, boot_id: &str) -> Option<Accel> {
    let mut lines = text.lines();
    if boot_id.is_empty() || lines.next() != Some(boot_id) {
        return None;
    }
    let name = lines.next()?;
    [Accel::Kvm, Accel::Tcg]
        .into_iter()
        .find(|accel| accel.name() == name)
}

fn probed(board: Board, kernel: &Path, artifacts: &Path) -> Accel {
    let boot_id = std::fs::read_to_string(BOOT_ID).unwrap_or_default();
    let boot_id = boot_id.trim();
    let cache = artifacts.join(PROBE_FILE);
    if let Some(accel) = std::fs::read_to_string(&cache)
        .ok()
        .and_then(|text| cached(&text, boot_id))
    {
        return accel;
    }
    let _ = std::fs::create_dir_all(artifacts);
    let probe = probe_kvm(board, kernel, artifacts);
    eprintln!("vm-test: {}", probe.describe());
    let accel = probe.accel();
    // Best effort: without the cache the next process probes again.
    let temporary = cache.with_extension("tmp");
    if std::fs::write(
        &temporary,
        format!("{boot_id}\n{}\n{}\n", accel.name(), probe.describe()),
    )
    .is_ok()
    {
        let _ = std::fs::rename(&temporary, &cache);
    }
    if let KvmProbe::Broken(_) = probe {
        eprintln!(
            "vm-test: the KVM probe's console and stderr are in {}",
            artifacts.display()
        );
    }
    accel
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices() {
        assert_eq!("auto".parse::<AccelChoice>().unwrap(), AccelChoice::Auto);
        assert_eq!("tcg".parse::<AccelChoice>().unwrap(), AccelChoice::Tcg);
        let error = "hvf".parse::<AccelChoice>().unwrap_err().to_string();
        assert!(error.contains("auto, kvm or tcg"), "{error}");
        // Explicit choices never probe.
        let nowhere = Path::new("/nonexistent");
        assert_eq!(
            resolve(AccelChoice::Tcg, Board::Q35, nowhere, nowhere),
            Accel::Tcg
        );
        assert_eq!(
            resolve(AccelChoice::Kvm, Board::Q35, nowhere, nowhere),
            Accel::Kvm
        );
        // A foreign guest never probes: TCG.
        let foreign = if std::env::consts::ARCH == "x86_64" {
            Board::Virt
        } else {
            Board::Q35
        };
        assert_eq!(
            resolve(AccelChoice::Auto, foreign, nowhere, nowhere),
            Accel::Tcg
        );
        // Nor does a board KVM cannot run.
        assert_eq!(
            resolve(AccelChoice::Auto, Board::Raspi3b, nowhere, nowhere),
            Accel::Tcg
        );
    }

    /// The cache is trusted for the boot it was written in only.
    #[test]
    fn a_cached_verdict_holds_for_its_host_boot() {
        let boot = "b59f7749-9fc8-4fc0-8edc-b775dcfc6030";
        let text = |accel: &str| format!("{boot}\n{accel}\nKVM is there but ...\n");
        assert_eq!(cached(&text("tcg"), boot), Some(Accel::Tcg));
        assert_eq!(cached(&text("kvm"), boot), Some(Accel::Kvm));
        assert_eq!(cached(&text("tcg"), "another-boot"), None);
        assert_eq!(cached(&text("tcg"), ""), None, "no boot id to match");
        assert_eq!(cached(&text("hvf"), boot), None);
        assert_eq!(cached(boot, boot), None, "no accelerator");
        assert_eq!(cached("", boot), None);
    }

    /// `auto` on a host-architecture board reads the probe's verdict from the cache of this
    /// host boot instead of booting again (the kernel named does not exist).
    #[test]
    fn auto_uses_the_verdict_cached_for_this_boot() {
        let boot_id = std::fs::read_to_string(BOOT_ID).expect("the host's boot id");
        let native = if std::env::consts::ARCH == "x86_64" {
            Board::Q35
        } else {
            Board::Virt
        };
        for accel in [Accel::Kvm, Accel::Tcg] {
            let artifacts = tempfile::tempdir().unwrap();
            std::fs::write(
                artifacts.path().join(PROBE_FILE),
                format!(
                    "{}\n{}\nwritten by the test\n",
                    boot_id.trim(),
                    accel.name()
                ),
            )
            .unwrap();
            let kernel = artifacts.path().join("no-such-kernel");
            assert_eq!(
                resolve(AccelChoice::Auto, native, &kernel, artifacts.path()),
                accel
            );
        }
    }
}
