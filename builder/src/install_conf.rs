//! `/etc/initoverlayfs/install.conf`: the choices an owner made at install time (layout,
//! presets, boot filesystem, verity, tries), which every later install keeps: the hooks run
//! `install --kver <kver> --no-hooks` after each kernel or initramfs update, and `install`
//! fills every option its command line does not give from this file. An update that forgot
//! them would build another boot than the one installed (all-storage instead of the chosen
//! preset, no verification).
//!
//! The format is `key = value` lines, `#` comments; pure parsing and rendering here, the file
//! itself is read and written by `install`.

use std::fmt;

use crate::install::LayoutKind;
use crate::presets::StoragePreset;

/// Where the file lives, under the root.
pub const INSTALL_CONF: &str = "etc/initoverlayfs/install.conf";

const HEADER: &str = "\
# initoverlayfs: the install options every kernel and initramfs update keeps.
# `initoverlayfs install` writes this file and reads it for each option its command line does
# not give; edit it to change what the next update builds (keys: layout, preset, bootfs,
# bootfstype, verity, tries).
";

/// The options one install keeps for the next. `None` or empty: not chosen (the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeptOptions {
    pub layout: Option<LayoutKind>,
    pub presets: Vec<StoragePreset>,
    pub bootfs: Option<String>,
    pub bootfstype: Option<String>,
    pub verity: bool,
    pub tries: Option<u32>,
}

/// A line of the file that cannot be read; the file is not used at all then.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct InstallConfError {
    pub line: usize,
    pub why: String,
}

impl KeptOptions {
    /// Parses the file's text. Unknown keys and bad values are errors: a typo silently ignored
    /// would build another boot than the owner asked for.
    pub fn parse(text: &str) -> Result<KeptOptions, InstallConfError> {
        let mut kept = KeptOptions::default();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let error = |why: String| InstallConfError {
                line: index + 1,
                why,
            };
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| error(format!("{line:?} is not `key = value`")))?;
            let (key, value) = (key.trim(), value.trim());
            if value.is_empty() {
                return Err(error(format!("{key} has no value")));
            }
            match key {
                "layout" => kept.layout = Some(value.parse().map_err(error)?),
                "preset" => {
                    for name in value.split(',') {
                        kept.presets.push(name.trim().parse().map_err(error)?);
                    }
                }
                "bootfs" => kept.bootfs = Some(value.to_owned()),
                "bootfstype" => kept.bootfstype = Some(value.to_owned()),
                "verity" => {
                    kept.verity = match value {
                        "yes" => true,
                        "no" => false,
                        _ => return Err(error(format!("verity = {value:?}: use yes or no"))),
                    }
                }
                "tries" => {
                    kept.tries = Some(value.parse().map_err(|_| {
                        error(format!(
                            "tries = {value:?}: a whole number (0: no counting)"
                        ))
                    })?)
                }
                _ => {
                    return Err(error(format!(
                        "unknown key {key:?}: use layout, preset, bootfs, bootfstype, verity or tries"
                    )));
                }
            }
        }
        Ok(kept)
    }

    /// Every option of `self` that is not chosen, taken from `recorded`: the command line wins.
    /// verity only turns on: an update never turns verification off (edit the file to).
    pub fn or(self, recorded: &KeptOptions) -> KeptOptions {
        KeptOptions {
            layout: self.layout.or(recorded.layout),
            presets: if self.presets.is_empty() {
                recorded.presets.clone()
            } else {
                self.presets
            },
            bootfs: self.bootfs.or_else(|| recorded.bootfs.clone()),
            bootfstype: self.bootfstype.or_else(|| recorded.bootfstype.clone()),
            verity: self.verity || recorded.verity,
            tries: self.tries.or(recorded.tries),
        }
    }
}

/// The file's text: the header, then one line per chosen option.
impl fmt::Display for KeptOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(HEADER)?;
        if let Some(layout) = self.layout {
            writeln!(f, "layout = {layout}")?;
        }
        if !self.presets.is_empty() {
            let names: Vec<&str> = self.presets.iter().map(|p| p.name()).collect();
            writeln!(f, "preset = {}", names.join(","))?;
        }
        if let Some(bootfs) = &self.bootfs {
            writeln!(f, "bootfs = {bootfs}")?;
        }
        if let Some(bootfstype) = &self.bootfstype {
            writeln!(f, "bootfstype = {bootfstype}")?;
        }
        if self.verity {
            writeln!(f, "verity = yes")?;
        }
        if let Some(tries) = self.tries {
            writeln!(f, "tries = {tries}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back() {
        let kept = KeptOptions {
            layout: Some(LayoutKind::Debian),
            presets: vec![StoragePreset::Virtio, StoragePreset::Nvme],
            bootfs: Some("LABEL=it's boot = here".into()),
            bootfstype: Some("ext4".into()),
            verity: true,
            tries: Some(0),
        };
        let text = kept.to_string();
        assert!(text.starts_with("# initoverlayfs: "), "{text}");
        assert_eq!(KeptOptions::parse(&text), Ok(kept));
        assert_eq!(
            KeptOptions::parse(&KeptOptions::default().to_string()),
            Ok(KeptOptions::default())
        );
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, line, why) in [
            ("layout = arch\n", 1, "unknown layout \"arch\""),
            ("\n# c\npreset = virtio,floppy\n", 3, "floppy"),
            ("verity = true\n", 1, "use yes or no"),
            ("tries = -1\n", 1, "a whole number"),
            ("bootfs\n", 1, "is not `key = value`"),
            ("bootfs =\n", 1, "bootfs has no value"),
            ("verity_root_hash = 00\n", 1, "unknown key"),
        ] {
            let error = KeptOptions::parse(text).unwrap_err();
            assert_eq!(error.line, line, "{text:?}: {error}");
            assert!(error.why.contains(why), "{text:?}: {error}");
        }
    }

    #[test]
    fn the_command_line_wins_and_verity_stays_on() {
        let recorded = KeptOptions {
            presets: vec![StoragePreset::Virtio],
            bootfs: Some("UUID=1".into()),
            verity: true,
            tries: Some(5),
            ..KeptOptions::default()
        };
        let given = KeptOptions {
            presets: vec![StoragePreset::Nvme],
            tries: Some(2),
            ..KeptOptions::default()
        };
        assert_eq!(
            given.or(&recorded),
            KeptOptions {
                presets: vec![StoragePreset::Nvme],
                bootfs: Some("UUID=1".into()),
                verity: true,
                tries: Some(2),
                ..KeptOptions::default()
            }
        );
        assert_eq!(KeptOptions::default().or(&recorded), recorded);
    }
}
