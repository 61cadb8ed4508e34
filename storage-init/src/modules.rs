//! Loading the kernel modules the mini initramfs ships, in the order builder wrote them.

use std::fs::File;

use rustix::io::Errno;

use crate::contract::{ModuleList, Necessity};
use crate::error::{Context, Fatal};
use crate::log::Log;

/// Loads every module of `list` with `finit_module(2)`. A module already in the kernel (loaded
/// or built in under the same name) is fine; a required module that fails is fatal, an optional
/// one a warning.
pub fn load_all(list: &ModuleList, log: &mut Log) -> Result<usize, Fatal> {
    let mut loaded = 0;
    for entry in &list.entries {
        let shown = entry.path.display();
        let result = File::open(&entry.path)
            .map_err(|e| e.to_string())
            .and_then(|file| rustix::system::finit_module(&file, c"", 0).map_err(errno_text));
        match result {
            Ok(()) => {
                loaded += 1;
                log.step(&format!("loaded module {shown}"));
            }
            Err(why) if why == errno_text(Errno::EXIST) => {}
            Err(why) => match entry.necessity {
                Necessity::Required => {
                    return Err(why).context(|| format!("loading kernel module {shown}"));
                }
                Necessity::Optional => {
                    log.warn(&format!("optional module {shown} not loaded: {why}"))
                }
            },
        }
    }
    Ok(loaded)
}

/// The errno with its name, e.g. "ENOEXEC (Exec format error)": the name is what people search.
pub fn errno_text(errno: Errno) -> String {
    let io = std::io::Error::from_raw_os_error(errno.raw_os_error());
    format!("{io}")
}
