//! What follows the FATAL line: the configured emergency action. Never returns.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rustix::system::RebootCommand;

use crate::config::{Config, Emergency};
use crate::efi_vars;
use crate::log::Log;

/// How often `halt` repeats the FATAL line, so a console attached later still shows it.
const HALT_REPEAT: Duration = Duration::from_secs(10);
/// The rescue shell `shell` execs, when the mini initramfs ships one.
const SHELL: &str = "/bin/sh";

/// The emergency action and what it needs, as far as the boot read its configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmergencyPlan {
    pub action: Emergency,
    /// `fallback_entry`: the entry `fallback` makes systemd-boot start once.
    pub fallback_entry: Option<String>,
}

impl EmergencyPlan {
    /// The plan a fully read configuration gives.
    pub fn of(config: &Config) -> EmergencyPlan {
        EmergencyPlan {
            action: config.emergency,
            fallback_entry: config.fallback_entry.clone(),
        }
    }
}

impl From<Emergency> for EmergencyPlan {
    fn from(action: Emergency) -> EmergencyPlan {
        EmergencyPlan {
            action,
            fallback_entry: None,
        }
    }
}

/// Carries out `plan` after the FATAL line for `fatal_message` has been logged once.
pub fn act(plan: &EmergencyPlan, log: &mut Log, fatal_message: &str) -> ! {
    match plan.action {
        Emergency::Halt => {}
        Emergency::PowerOff => reboot(log, RebootCommand::PowerOff),
        Emergency::Reboot => reboot(log, RebootCommand::Restart),
        Emergency::Shell => {
            if Path::new(SHELL).is_file() {
                let error = Command::new(SHELL).exec();
                log.warn(&format!(
                    "emergency shell {SHELL}: {error}; halting instead"
                ));
            } else {
                log.warn(&format!(
                    "emergency shell: no {SHELL} in the mini initramfs; halting instead"
                ));
            }
        }
        Emergency::Fallback => {
            let fatal_line = log.fatal_line(fatal_message);
            let mut warnings = Vec::new();
            let arranged = arrange_fallback(
                plan.fallback_entry.as_deref(),
                &fatal_line,
                &mut Efivarfs,
                &mut warnings,
            );
            for warning in warnings {
                log.warn(&warning);
            }
            match arranged {
                Ok(entry) => {
                    log.step(&format!(
                        "emergency fallback: the next boot starts {entry} ({}); rebooting",
                        efi_vars::LOADER_ENTRY_ONE_SHOT
                    ));
                    reboot(log, RebootCommand::Restart);
                }
                Err(why) => log.warn(&format!("emergency fallback: {why}; halting instead")),
            }
        }
    }
    // PID 1 must never exit (the kernel would panic and bury the FATAL line).
    loop {
        std::thread::sleep(HALT_REPEAT);
        log.fatal(fatal_message);
    }
}

fn reboot(log: &mut Log, command: RebootCommand) {
    rustix::fs::sync();
    if let Err(e) = rustix::system::reboot(command) {
        log.warn(&format!(
            "{command:?} failed: {}; halting instead",
            crate::modules::errno_text(e)
        ));
    }
}

/// The UEFI variables `fallback` reads and writes: efivarfs at boot, a stand-in in tests.
trait EfiVariables {
    fn mount(&mut self) -> Result<(), String>;
    fn read(&mut self, name: &str, guid: &str) -> io::Result<Vec<u8>>;
    fn write(&mut self, name: &str, guid: &str, data: &[u8]) -> io::Result<()>;
}

struct Efivarfs;

impl EfiVariables for Efivarfs {
    fn mount(&mut self) -> Result<(), String> {
        efi_vars::mount_efivarfs()
    }
    fn read(&mut self, name: &str, guid: &str) -> io::Result<Vec<u8>> {
        efi_vars::read(name, guid)
    }
    fn write(&mut self, name: &str, guid: &str, data: &[u8]) -> io::Result<()> {
        efi_vars::write(name, guid, data)
    }
}

/// Sets up the one-shot boot of `entry` for `fallback`: the entry to reboot into, or why the
/// machine must halt instead. `warnings` gets what failed without stopping the fallback.
///
/// Only systemd-boot reads `LoaderEntryOneShot`: under any other boot loader a reboot would
/// start the same failing entry again, a reboot loop that buries the FATAL line, so anything
/// but a `LoaderInfo` naming systemd-boot halts.
fn arrange_fallback<'a>(
    entry: Option<&'a str>,
    fatal_line: &str,
    efi: &mut impl EfiVariables,
    warnings: &mut Vec<String>,
) -> Result<&'a str, String> {
    let entry = entry.ok_or_else(|| {
        "no fallback entry is configured (fallback_entry <id> in /etc/initoverlayfs.conf, or initoverlayfs.fallback_entry=<id> on the kernel command line)".to_owned()
    })?;
    efi.mount()?;
    let loader = efi.read(efi_vars::LOADER_INFO, efi_vars::LOADER_GUID);
    if let Err(why) = systemd_boot(loader) {
        return Err(format!("the boot loader is not systemd-boot ({why})"));
    }
    if let Err(e) = efi.write(
        efi_vars::INITOVERLAYFS_FATAL,
        efi_vars::INITOVERLAYFS_GUID,
        efi_vars::fatal_data(fatal_line),
    ) {
        warnings.push(format!(
            "emergency fallback: writing {}-{}: {e}; the next boot cannot report this failure",
            efi_vars::INITOVERLAYFS_FATAL,
            efi_vars::INITOVERLAYFS_GUID
        ));
    }
    efi.write(
        efi_vars::LOADER_ENTRY_ONE_SHOT,
        efi_vars::LOADER_GUID,
        &efi_vars::encode_utf16_nul(entry),
    )
    .map_err(|e| {
        format!(
            "writing {}-{}: {e}",
            efi_vars::LOADER_ENTRY_ONE_SHOT,
            efi_vars::LOADER_GUID
        )
    })?;
    Ok(entry)
}

/// systemd-boot's `LoaderInfo` (its name and version), or what else the variable read gave.
fn systemd_boot(loader_info: io::Result<Vec<u8>>) -> Result<String, String> {
    let variable = format!("{}-{}", efi_vars::LOADER_INFO, efi_vars::LOADER_GUID);
    match loader_info {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(format!("{variable} is not set")),
        Err(e) => Err(format!("reading {variable}: {e}")),
        Ok(data) => match efi_vars::decode_utf16(&data) {
            Some(info) if info.starts_with("systemd-boot") => Ok(info),
            Some(info) => Err(format!("{variable} is {info:?}")),
            None => Err(format!("{variable} is not a UTF-16 string")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const ENTRY: &str = "debian-6.12.95+deb12-amd64~initoverlayfs-classic.conf";
    const FATAL: &str = "storage-init: FATAL: mounting /boot: No such device";

    /// Variables in memory; a write to a name in `refuse` fails.
    #[derive(Default)]
    struct Fake {
        mount: Option<String>,
        variables: BTreeMap<String, Vec<u8>>,
        refuse: Vec<&'static str>,
        mounted: bool,
    }

    impl Fake {
        fn with_loader(info: &str) -> Fake {
            let mut fake = Fake::default();
            fake.variables.insert(
                format!("LoaderInfo-{}", efi_vars::LOADER_GUID),
                efi_vars::encode_utf16_nul(info),
            );
            fake
        }
        fn get(&self, name: &str, guid: &str) -> Option<&[u8]> {
            self.variables
                .get(&format!("{name}-{guid}"))
                .map(|v| &v[..])
        }
        fn one_shot(&self) -> Option<&[u8]> {
            self.get(efi_vars::LOADER_ENTRY_ONE_SHOT, efi_vars::LOADER_GUID)
        }
    }

    impl EfiVariables for Fake {
        fn mount(&mut self) -> Result<(), String> {
            self.mounted = true;
            self.mount.clone().map_or(Ok(()), Err)
        }
        fn read(&mut self, name: &str, guid: &str) -> io::Result<Vec<u8>> {
            assert!(self.mounted, "read before mounting");
            self.get(name, guid)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| io::ErrorKind::NotFound.into())
        }
        fn write(&mut self, name: &str, guid: &str, data: &[u8]) -> io::Result<()> {
            assert!(self.mounted, "write before mounting");
            if self.refuse.contains(&name) {
                return Err(io::Error::other("No space left on device"));
            }
            self.variables
                .insert(format!("{name}-{guid}"), data.to_vec());
            Ok(())
        }
    }

    fn arrange(entry: Option<&str>, fake: &mut Fake) -> (Result<String, String>, Vec<String>) {
        let mut warnings = Vec::new();
        let result = arrange_fallback(entry, FATAL, fake, &mut warnings).map(str::to_owned);
        (result, warnings)
    }

    #[test]
    fn systemd_boot_gets_the_one_shot_entry_and_the_fatal_line() {
        let mut fake = Fake::with_loader("systemd-boot 257.9");
        let (result, warnings) = arrange(Some(ENTRY), &mut fake);
        assert_eq!(result.as_deref(), Ok(ENTRY));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            fake.one_shot(),
            Some(&efi_vars::encode_utf16_nul(ENTRY)[..])
        );
        assert_eq!(
            fake.get(efi_vars::INITOVERLAYFS_FATAL, efi_vars::INITOVERLAYFS_GUID),
            Some(FATAL.as_bytes())
        );
    }

    #[test]
    fn no_entry_halts_without_touching_variables() {
        let mut fake = Fake::with_loader("systemd-boot 257.9");
        let (result, _) = arrange(None, &mut fake);
        let why = result.unwrap_err();
        assert!(why.contains("no fallback entry") && why.contains("fallback_entry <id>"));
        assert!(!fake.mounted);
    }

    #[test]
    fn another_boot_loader_halts() {
        for (mut fake, shown) in [
            (Fake::with_loader("GRUB 2.12"), "\"GRUB 2.12\""),
            (Fake::default(), "is not set"),
            (
                {
                    let mut fake = Fake::default();
                    fake.variables
                        .insert(format!("LoaderInfo-{}", efi_vars::LOADER_GUID), vec![b's']);
                    fake
                },
                "not a UTF-16 string",
            ),
        ] {
            let (result, _) = arrange(Some(ENTRY), &mut fake);
            let why = result.unwrap_err();
            assert!(
                why.starts_with("the boot loader is not systemd-boot (") && why.contains(shown),
                "{why}"
            );
            assert_eq!(fake.one_shot(), None);
        }
    }

    #[test]
    fn no_efivarfs_halts() {
        let mut fake = Fake {
            mount: Some("the kernel lacks efivarfs".to_owned()),
            ..Fake::default()
        };
        let (result, _) = arrange(Some(ENTRY), &mut fake);
        assert_eq!(result.unwrap_err(), "the kernel lacks efivarfs");
    }

    #[test]
    fn the_fatal_line_is_optional_the_one_shot_entry_is_not() {
        let mut fake = Fake::with_loader("systemd-boot 252");
        fake.refuse = vec![efi_vars::INITOVERLAYFS_FATAL];
        let (result, warnings) = arrange(Some(ENTRY), &mut fake);
        assert_eq!(result.as_deref(), Ok(ENTRY));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("InitoverlayfsFatal-"), "{warnings:?}");

        let mut fake = Fake::with_loader("systemd-boot 252");
        fake.refuse = vec![efi_vars::LOADER_ENTRY_ONE_SHOT];
        let (result, _) = arrange(Some(ENTRY), &mut fake);
        let why = result.unwrap_err();
        assert!(
            why.contains("LoaderEntryOneShot-") && why.contains("No space"),
            "{why}"
        );
    }

    #[test]
    fn plans() {
        assert_eq!(EmergencyPlan::default().action, Emergency::Halt);
        let config = Config {
            emergency: Emergency::Fallback,
            fallback_entry: Some(ENTRY.to_owned()),
            ..Config::default()
        };
        assert_eq!(
            EmergencyPlan::of(&config),
            EmergencyPlan {
                action: Emergency::Fallback,
                fallback_entry: Some(ENTRY.to_owned())
            }
        );
    }
}
