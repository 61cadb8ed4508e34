//! What QEMU's TCG did for a boot besides running the guest: its translation buffer and the
//! translations and TLB flushes it threw away, from the monitor's `info jit`. Under TCG a guest
//! pays for translating code the first time it runs and again after a translation is
//! invalidated (its page written, or freed and reused): work a real CPU never does, which the
//! guest's clock counts as the guest's.

use serde::{Deserialize, Serialize};

/// `info jit`'s counters at one moment (QEMU 10's `dump_exec_info`, accel/tcg/monitor.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TcgStats {
    /// Translated blocks alive in the translation buffer (`TB count`).
    pub tb_count: u64,
    /// Bytes of host code in the translation buffer (`gen code size`).
    pub code_bytes: u64,
    /// Times the whole translation buffer was thrown away (`TB flush count`).
    pub tb_flushes: u64,
    /// Translations thrown away one by one, their guest page having changed (`TB invalidate
    /// count`).
    pub tb_invalidations: u64,
    /// TLB flushes, whole and partial (`TLB full flushes`, `TLB partial flushes`).
    pub tlb_full_flushes: u64,
    pub tlb_partial_flushes: u64,
}

/// The counters of an `info jit` text; None when it has none of them (another accelerator, a
/// QEMU that words them otherwise).
pub fn parse_info_jit(text: &str) -> Option<TcgStats> {
    let mut stats = TcgStats::default();
    let mut found = false;
    for line in text.lines() {
        let fields: [(&str, &mut u64); 6] = [
            ("TB count", &mut stats.tb_count),
            ("gen code size", &mut stats.code_bytes),
            ("TB flush count", &mut stats.tb_flushes),
            ("TB invalidate count", &mut stats.tb_invalidations),
            ("TLB full flushes", &mut stats.tlb_full_flushes),
            ("TLB partial flushes", &mut stats.tlb_partial_flushes),
        ];
        for (label, field) in fields {
            // The label, then at least one space, then the number (`gen code size` gives
            // used/size).
            let Some(value) = line.strip_prefix(label) else {
                continue;
            };
            if !value.starts_with(' ') {
                continue;
            }
            let first = value.trim_start().split(['/', ' ']).next().unwrap_or("");
            if let Ok(number) = first.parse() {
                *field = number;
                found = true;
            }
        }
    }
    found.then_some(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 10.0's `info jit` under TCG, as the monitor answers it.
    const INFO_JIT: &str = "Accelerator settings:
one-insn-per-tb: off

Translation buffer state:
gen code size       26670067/1073736704
TB count            46589
TB avg target size  18 max=954 bytes
TB avg host size    330 bytes (expansion ratio: 17.6)
cross page TB count 153 (0%)
direct jump count   27175 (58%) (2 jumps=22041 47%)

Statistics:
TB flush count      0
TB invalidate count 4578
TLB full flushes    0
TLB partial flushes 37712
TLB elided flushes  275136
[TCG profiler not compiled]
";

    #[test]
    fn qemu_10() {
        assert_eq!(
            parse_info_jit(INFO_JIT),
            Some(TcgStats {
                tb_count: 46589,
                code_bytes: 26_670_067,
                tb_flushes: 0,
                tb_invalidations: 4578,
                tlb_full_flushes: 0,
                tlb_partial_flushes: 37712,
            })
        );
    }

    #[test]
    fn not_tcg() {
        assert_eq!(parse_info_jit(""), None);
        assert_eq!(
            parse_info_jit("JIT information is only available with accel=tcg\n"),
            None
        );
        assert_eq!(parse_info_jit("TB count            many\n"), None);
    }
}
