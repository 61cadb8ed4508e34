//! Matching a device's modalias (`pci:v00001AF4d00001042sv…`, `virtio:d00000002v00001AF4`)
//! against the alias patterns of the shipped modules, as kmod does with fnmatch(3): shell globs
//! with `*`, `?` and bracket expressions. Pure functions over strings, fuzzed.

use std::collections::BTreeMap;

use crate::contract::DeviceAlias;

/// Whether `text` matches the glob `pattern` (fnmatch without flags: `*` and `?` match any
/// character, `/` included; `[abc]`, `[a-z]`, `[!a]`/`[^a]`; `\` quotes the next character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Iterative with one backtrack point (the last `*`): linear in practice, never exponential.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some('?') => {
                p += 1;
                t += 1;
                continue;
            }
            Some('[') => {
                if let Some((matched, next)) = bracket(&pattern, p, text[t]) {
                    if matched {
                        p = next;
                        t += 1;
                        continue;
                    }
                } else if text[t] == '[' {
                    // An unterminated bracket is an ordinary character.
                    p += 1;
                    t += 1;
                    continue;
                }
            }
            Some('\\') if pattern.get(p + 1) == Some(&text[t]) => {
                p += 2;
                t += 1;
                continue;
            }
            Some(&c) if c != '\\' && c == text[t] => {
                p += 1;
                t += 1;
                continue;
            }
            _ => {}
        }
        // Mismatch: let the last `*` swallow one more character, or fail.
        match star {
            Some((star_p, star_t)) => {
                p = star_p + 1;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Evaluates the bracket expression starting at `pattern[open]` (`[`) against `c`: whether it
/// matched and the index after its `]`; `None` when there is no closing `]`.
fn bracket(pattern: &[char], open: usize, c: char) -> Option<(bool, usize)> {
    let mut i = open + 1;
    let negated = matches!(pattern.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let current = *pattern.get(i)?;
        if current == ']' && !first {
            return Some((matched != negated, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&'-') && pattern.get(i + 2).is_some_and(|&e| e != ']') {
            let end = pattern[i + 2];
            matched |= current <= c && c <= end;
            i += 3;
        } else {
            matched |= current == c;
            i += 1;
        }
    }
}

/// Modalias prefixes of the devices firmware describes (device tree `of:`, ACPI `acpi:`): the
/// kernel makes them platform devices, and their drivers bind there.
const FIRMWARE_PREFIXES: [&str; 2] = ["of", "acpi"];
/// The sysfs bus of firmware-described devices.
const PLATFORM_BUS: &str = "platform";

/// The alias patterns of the shipped modules, grouped by bus (the text before the first `:`),
/// so a device is matched only against its own bus's patterns.
#[derive(Debug, Default)]
pub struct AliasTable<'a> {
    by_bus: BTreeMap<&'a str, Vec<&'a DeviceAlias>>,
    /// Patterns whose bus part is itself a glob (`acpi*:PNP0A05:*`): tried against every device.
    any_bus: Vec<&'a DeviceAlias>,
}

impl<'a> AliasTable<'a> {
    pub fn new(aliases: &'a [DeviceAlias]) -> AliasTable<'a> {
        let mut table = AliasTable::default();
        for alias in aliases {
            match alias.pattern.split_once(':') {
                Some((bus, _)) if !bus.contains(['*', '?', '[', '\\']) => {
                    table.by_bus.entry(bus).or_default().push(alias)
                }
                _ => table.any_bus.push(alias),
            }
        }
        table
    }

    /// The sysfs buses (`/sys/bus/<bus>`) whose devices the patterns may match, sorted: each
    /// pattern's prefix, the platform bus for firmware-described devices (`of:`, and kmod's
    /// `acpi*:` for ACPI ids). `None` when some pattern's prefix is another glob: it may match
    /// a device of any bus.
    pub fn buses(&self) -> Option<Vec<&'a str>> {
        let mut buses: Vec<&'a str> = Vec::new();
        for &prefix in self.by_bus.keys() {
            buses.push(if FIRMWARE_PREFIXES.contains(&prefix) {
                PLATFORM_BUS
            } else {
                prefix
            });
        }
        for alias in &self.any_bus {
            let (prefix, _) = alias.pattern.split_once(':')?;
            let firmware = prefix
                .strip_suffix('*')
                .is_some_and(|head| FIRMWARE_PREFIXES.contains(&head));
            if !firmware {
                return None;
            }
            buses.push(PLATFORM_BUS);
        }
        buses.sort_unstable();
        buses.dedup();
        Some(buses)
    }

    /// The modules whose patterns match `modalias`, each once, in the list's order.
    pub fn modules_for(&self, modalias: &str) -> Vec<&'a str> {
        let bus = modalias.split_once(':').map_or("", |(bus, _)| bus);
        let mut modules: Vec<&'a str> = Vec::new();
        let candidates = self.by_bus.get(bus).into_iter().flatten();
        for alias in candidates.chain(&self.any_bus) {
            if !modules.contains(&alias.module.as_str()) && glob_match(&alias.pattern, modalias) {
                modules.push(&alias.module);
            }
        }
        modules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_as_fnmatch() {
        let cases = [
            // Real patterns from Debian 6.12's modules.alias.
            (
                "pci:v00001AF4d*sv*sd*bc*sc*i*",
                "pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00",
                true,
            ),
            (
                "pci:v00001AF4d*sv*sd*bc*sc*i*",
                "pci:v00008086d00001042sv00001AF4sd00001100bc01sc00i00",
                false,
            ),
            ("virtio:d00000002v*", "virtio:d00000002v00001AF4", true),
            ("virtio:d00000002v*", "virtio:d00000012v00001AF4", false),
            (
                "pci:v*d*sv*sd*bc01sc08i02*",
                "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02",
                true,
            ),
            ("usb:v0BDAp8153d[1-2]*", "usb:v0BDAp8153d2000dc00", true),
            ("usb:v0BDAp8153d[1-2]*", "usb:v0BDAp8153d3000dc00", false),
            ("a[!x]c", "abc", true),
            ("a[!x]c", "axc", false),
            ("a[^x]c", "abc", true),
            ("a[]]c", "a]c", true),
            ("a[x-]c", "a-c", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a\\*c", "a*c", true),
            ("a\\*c", "abc", false),
            ("a[b", "a[b", true),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("of:N*T*Cvirtio,mmio", "of:NvirtioT(null)Cvirtio,mmio", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(glob_match(pattern, text), expected, "{pattern} vs {text}");
        }
    }

    #[test]
    fn many_stars_stay_fast() {
        let pattern = "*a".repeat(50) + "b";
        let text = "a".repeat(5000);
        assert!(!glob_match(&pattern, &text));
    }

    #[test]
    fn table_matches_by_bus() {
        let alias = |pattern: &str, module: &str| DeviceAlias {
            pattern: pattern.into(),
            module: module.into(),
        };
        let aliases = [
            alias("virtio:d00000002v*", "virtio_blk"),
            alias("virtio:d00000008v*", "virtio_scsi"),
            alias("pci:v*d*sv*sd*bc01sc08i02*", "nvme"),
            alias("pci:v0000144Dd0000A808sv*sd*bc*sc*i*", "nvme"),
            alias("acpi*:PNP0A05:*", "bus_glob"),
        ];
        let table = AliasTable::new(&aliases);
        assert_eq!(
            table.modules_for("virtio:d00000002v00001AF4"),
            ["virtio_blk"]
        );
        assert_eq!(
            table.modules_for("pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02"),
            ["nvme"],
            "two patterns, one module"
        );
        assert_eq!(table.modules_for("acpi:PNP0A05:"), ["bus_glob"]);
        assert!(table.modules_for("usb:v1234p5678").is_empty());
        assert!(table.modules_for("no bus").is_empty());
        let table = AliasTable::new(&aliases[..3]);
        assert_eq!(table.buses(), Some(vec!["pci", "virtio"]));
    }

    /// Which /sys/bus directories coldplug walks for a list's patterns.
    #[test]
    fn buses_to_walk() {
        let check = |patterns: &[&str], expected: Option<&[&str]>| {
            let aliases: Vec<DeviceAlias> = patterns
                .iter()
                .map(|p| DeviceAlias {
                    pattern: (*p).into(),
                    module: "m".into(),
                })
                .collect();
            let buses = AliasTable::new(&aliases).buses();
            assert_eq!(buses.as_deref(), expected, "{patterns:?}");
        };
        check(
            &["virtio:d00000002v*", "pci:v*d*sv*sd*bc01sc08i02*"],
            Some(&["pci", "virtio"]),
        );
        // Debian's virtio preset: virtio_mmio's device-tree and ACPI ids are platform devices.
        check(
            &[
                "of:N*T*Cvirtio,mmio",
                "acpi*:LNRO0005:*",
                "virtio:d00000002v*",
                "scsi:t-0x00*",
            ],
            Some(&["platform", "scsi", "virtio"]),
        );
        check(&["acpi:PNP0A05:"], Some(&["platform"]));
        // Any other glob over the prefix may name any bus.
        check(&["dmi*:svnLENOVO*"], None);
        check(&["*:x"], None);
        check(&["*"], None);
        check(&[], Some(&[]));
    }
}
