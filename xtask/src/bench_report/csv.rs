//! `boot.csv`: one row per boot, every figure of [`BootSample`] in a column, for a spreadsheet
//! or a plotting script.

use super::{BootSample, CpuSplit};

pub(super) const CSV_HEADER: &str = "chain,size,content_bytes,profile,run,passed,\
host_kernel_start,host_first_userspace,host_running_in_initrd,host_multi_user,\
guest_kernel_start,guest_first_userspace,guest_running_in_initrd,guest_multi_user,\
bytes_read,mem_used_kib,boot_files_bytes,bytes_read_to_systemd,\
read_requests,read_requests_to_systemd,initramfs_freed_kib,\
guest_initrd_root_fs,guest_switch_root,guest_real_root,guest_sysinit,guest_basic,\
peak_initrd_kib,cpu_before_busy,cpu_before_iowait,cpu_before_idle,\
cpu_initrd_busy,cpu_initrd_iowait,cpu_initrd_idle,cpu_switch_busy,cpu_switch_iowait,cpu_switch_idle,\
cpu_root_busy,cpu_root_iowait,cpu_root_idle,\
reads_initrd_requests,reads_initrd_bytes,host_other_cpus";

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
pub(super) fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// `boot.csv`: a header row, then one row per boot in the samples' order; an empty cell for a
/// figure not reached; seconds with 3 decimals.
pub fn csv(samples: &[BootSample]) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    let secs = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    let count = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
    let split = |v: Option<CpuSplit>| -> [String; 3] {
        match v {
            Some(c) => [c.busy_s, c.iowait_s, c.idle_s].map(|s| format!("{s:.2}")),
            None => Default::default(),
        }
    };
    for s in samples {
        let mut row = vec![
            s.chain.name().to_owned(),
            csv_field(&s.size),
            s.content_bytes.to_string(),
            csv_field(&s.profile),
            s.run.to_string(),
            s.passed.to_string(),
        ];
        for figures in [&s.host, &s.guest] {
            row.extend(figures.named().into_iter().map(|(_, v)| secs(v)));
        }
        row.push(count(s.bytes_read));
        row.push(count(s.mem_used_kib));
        row.push(s.boot_files_bytes.to_string());
        row.push(count(s.bytes_read_to_systemd));
        row.push(count(s.read_requests));
        row.push(count(s.read_requests_to_systemd));
        row.push(count(s.initramfs_freed_kib));
        let p = &s.phases;
        for mark in [
            p.initrd_root_fs,
            p.switch_root,
            p.real_root,
            p.sysinit,
            p.basic,
        ] {
            row.push(secs(mark));
        }
        row.push(count(s.probe.peak_initrd_kib));
        for cpu in [
            s.probe.cpu_before,
            s.probe.cpu_initrd,
            s.probe.cpu_switch,
            s.probe.cpu_root,
        ] {
            row.extend(split(cpu));
        }
        row.push(count(s.probe.reads_initrd.map(|r| r.requests)));
        row.push(count(s.probe.reads_initrd.map(|r| r.bytes)));
        row.push(
            s.host_other_cpus
                .map_or(String::new(), |v| format!("{v:.2}")),
        );
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}
