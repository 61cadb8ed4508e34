//! What happens after a FATAL line: for now, always power off (a configurable emergency action,
//! such as a rescue shell, comes with the storage-init issue).

use crate::log::Log;

/// Flushes and powers the machine off.
pub fn power_off(log: &mut Log) {
    log.restore_devkmsg();
    rustix::fs::sync();
    if let Err(e) = rustix::system::reboot(rustix::system::RebootCommand::PowerOff) {
        log.warn(&format!(
            "power off failed: {}",
            crate::modules::errno_text(e)
        ));
    }
}
