//! The reports' tests: synthetic runs rendered and snapshotted, and the statistics on exact
//! inputs.

use super::csv::CSV_HEADER;
use super::markdown::crossover_sentence;
use super::*;

fn info(accel: &str) -> RunInfo {
    RunInfo {
        machine: "q35".into(),
        accel: accel.into(),
        kernel: "6.12.57+deb13-amd64".into(),
        qemu: "10.0.3".into(),
        host_cpu: "AMD EPYC 7B13 (2 cores)".into(),
        command: "cargo xtask bench-boot --runs 3 --profiles sd,nvme".into(),
        date: "2026-11-27".into(),
        runs: 3,
        notes: vec!["synthetic figures for the report's tests".into()],
        throttles: crate::bench_boot::Profile::ALL
            .iter()
            .map(|p| (p.name().to_owned(), p.describe()))
            .collect(),
    }
}

/// 5 chains × 3 sizes × 2 profiles × 3 runs, on made-up lines: the classic chains' time to
/// systemd grows 10× faster with content than initoverlayfs's on `sd`, 2× on `nvme`; zstd and
/// squash-erofs sit a fixed step from gzip; the floor a tenth of a second before
/// initoverlayfs. The classic-gzip 512M `sd` run 3 failed after systemd; one passed boot has no
/// memory figure; the classic-zstd boots carry no guest sampler figures.
fn samples() -> Vec<BootSample> {
    let sizes = [
        ("dracut", 61_234_567u64),
        ("128M", 195_452_295),
        ("512M", 598_105_479),
    ];
    let mut out = Vec::new();
    for profile in ["sd", "nvme"] {
        for (size, bytes) in sizes {
            for chain in Chain::ALL {
                for run in 1..=3u32 {
                    let mb = bytes as f64 / 1e6;
                    let jitter = [0.0, 0.12, -0.07][run as usize - 1];
                    let lazy = matches!(
                        chain,
                        Chain::Initoverlayfs | Chain::Floor | Chain::InitoverlayfsSystemd
                    );
                    let (mut systemd, boot_files, read) = match (lazy, profile) {
                        (true, "sd") => {
                            (3.4 + 0.003 * mb, 14_000_000u64, 20e6 + 0.15 * bytes as f64)
                        }
                        (true, _) => (3.0 + 0.002 * mb, 14_000_000u64, 20e6 + 0.15 * bytes as f64),
                        (false, "sd") => (
                            1.0 + 0.03 * mb,
                            12_000_000 + bytes / 3,
                            8e6 + bytes as f64 / 3.0,
                        ),
                        (false, _) => (
                            0.5 + 0.004 * mb,
                            12_000_000 + bytes / 3,
                            8e6 + bytes as f64 / 3.0,
                        ),
                    };
                    systemd += match chain {
                        Chain::ClassicZstd => 0.4,
                        Chain::SquashErofs => -0.3,
                        Chain::Floor => -0.1,
                        Chain::InitoverlayfsSystemd => 0.6,
                        _ => 0.0,
                    };
                    let host_kernel = 1.8
                        + boot_files as f64 / if profile == "sd" { 25e6 } else { 400e6 }
                        + jitter / 2.0;
                    let systemd = systemd + jitter;
                    let multi_user = systemd + 6.3 + jitter;
                    let failed = chain == Chain::ClassicGzip
                        && profile == "sd"
                        && size == "512M"
                        && run == 3;
                    let held_kib = if lazy { 1_200 } else { (bytes / 3) >> 10 };
                    let peak_kib = if lazy {
                        90_000 + run as u64
                    } else {
                        90_000 + (bytes >> 10) + run as u64
                    };
                    let probe = match chain {
                        Chain::ClassicZstd => Probe::default(),
                        _ => Probe {
                            peak_initrd_kib: Some(peak_kib),
                            cpu_before: Some(CpuSplit {
                                busy_s: systemd - 0.3,
                                iowait_s: 0.2,
                                idle_s: 0.1,
                            }),
                            cpu_initrd: Some(CpuSplit {
                                busy_s: 2.5 + jitter,
                                iowait_s: if lazy { 0.75 } else { 0.25 },
                                idle_s: 0.5,
                            }),
                            cpu_switch: Some(CpuSplit {
                                busy_s: 1.5,
                                iowait_s: if lazy { 0.25 } else { 0.0 },
                                idle_s: 0.0,
                            }),
                            cpu_root: Some(CpuSplit {
                                busy_s: 2.0,
                                iowait_s: 0.5,
                                idle_s: 0.25,
                            }),
                            reads_initrd: Some(Reads {
                                requests: if lazy { 900 + run as u64 } else { 300 },
                                bytes: if lazy { 30 << 20 } else { 8 << 20 },
                            }),
                        },
                    };
                    let mut sample = BootSample {
                        chain,
                        size: size.into(),
                        content_bytes: bytes,
                        profile: profile.into(),
                        run,
                        host: Figures {
                            kernel_start: Some(host_kernel),
                            first_userspace: Some(host_kernel + 0.9),
                            running_in_initrd: Some(host_kernel + systemd + 0.1),
                            multi_user: Some(host_kernel + multi_user + 0.2),
                        },
                        guest: Figures {
                            kernel_start: Some(0.0),
                            first_userspace: Some(0.85 + jitter / 3.0),
                            running_in_initrd: Some(systemd),
                            multi_user: Some(multi_user),
                        },
                        phases: Phases {
                            initrd_root_fs: Some(systemd + 2.0),
                            switch_root: Some(systemd + 3.0),
                            real_root: Some(systemd + 3.5),
                            sysinit: Some(systemd + 4.5),
                            basic: Some(systemd + 5.0),
                        },
                        bytes_read: Some(read as u64 + run as u64 * 4096),
                        bytes_read_to_systemd: Some(read as u64 / 3),
                        read_requests: Some(if lazy { 1700 } else { 1350 } + run as u64),
                        read_requests_to_systemd: Some(if lazy { 330 } else { 130 }),
                        mem_used_kib: Some(61_440 + if lazy { 4096 } else { 2048 } + run as u64),
                        initramfs_freed_kib: Some(held_kib),
                        probe,
                        initrd_units: vec![
                            UnitSpan {
                                unit: "systemd-udevd.service".into(),
                                start: systemd + 0.1,
                                end: systemd + if lazy { 1.4 } else { 0.9 },
                            },
                            UnitSpan {
                                unit: "systemd-fsck-root.service".into(),
                                start: systemd + 1.0,
                                end: systemd + 1.6,
                            },
                        ],
                        boot_files_bytes: boot_files,
                        passed: true,
                        failure: None,
                        host_other_cpus: Some(if lazy { 1.0 } else { 0.9 } + 0.01 * run as f64),
                        tcg: Some(TcgWork {
                            code_bytes: 40 << 20,
                            tb_invalidations: if lazy { 9000 } else { 7000 } + u64::from(run),
                            tlb_partial_flushes: 50_000,
                        }),
                    };
                    if failed {
                        sample.passed = false;
                        sample.failure = Some(
                            "milestone multi-user not reached within 400 s: Out of memory".into(),
                        );
                        sample.host.multi_user = None;
                        sample.guest.multi_user = None;
                        sample.phases.basic = None;
                        sample.bytes_read = None;
                        sample.bytes_read_to_systemd = None;
                        sample.read_requests = None;
                        sample.mem_used_kib = None;
                    }
                    if chain == Chain::Initoverlayfs
                        && profile == "nvme"
                        && size == "128M"
                        && run == 2
                    {
                        sample.mem_used_kib = None;
                    }
                    out.push(sample);
                }
            }
        }
    }
    out
}

#[test]
fn csv_rows() {
    insta::assert_snapshot!(csv(&samples()));
}

#[test]
fn markdown_report() {
    insta::assert_snapshot!(markdown(&info("tcg"), &samples()));
}

#[test]
fn markdown_without_tcg_caveat_or_failures() {
    let passed: Vec<BootSample> = samples().into_iter().filter(|s| s.passed).collect();
    let report = markdown(&info("kvm"), &passed);
    assert!(!report.contains("Under TCG"));
    assert!(report.contains("None: every boot passed."));
}

#[test]
fn svg_plot() {
    insta::assert_snapshot!(svg(&info("tcg"), &samples()));
}

/// Parses `text` as XML and returns the root element's name; fails on a syntax error, a
/// mismatched or missing end tag, a malformed or repeated attribute, an entity XML does not
/// predefine, or content outside the one root.
fn check_well_formed(text: &str) -> String {
    use quick_xml::events::{BytesStart, Event};
    let mut reader = quick_xml::Reader::from_str(text);
    let mut depth = 0usize;
    let mut roots = Vec::new();
    let mut element = |e: &BytesStart, depth: usize| {
        for attribute in e.attributes() {
            let attribute = attribute.expect("a well-formed attribute");
            attribute
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .expect("an attribute value with known entities");
        }
        if depth == 0 {
            roots.push(e.name().as_ref().to_owned());
        }
    };
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) => {
                element(&e, depth);
                depth += 1;
            }
            Event::Empty(e) => element(&e, depth),
            Event::End(_) => depth = depth.checked_sub(1).expect("an end tag too many"),
            Event::Text(t) => {
                assert!(depth > 0 || t.trim().is_empty(), "text outside the root");
            }
            Event::GeneralRef(r) => {
                assert!(depth > 0, "a reference outside the root");
                assert!(
                    r.is_char_ref() || ["amp", "lt", "gt", "quot", "apos"].contains(&&*r),
                    "undefined entity &{};",
                    &*r
                );
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(depth, 0, "unclosed elements");
    assert_eq!(roots.len(), 1, "exactly one root element: {roots:?}");
    roots.remove(0)
}

#[test]
fn svg_is_well_formed() {
    assert_eq!(check_well_formed(&svg(&info("tcg"), &samples())), "svg");
    // Text that needs escaping, and a run with nothing to plot.
    let mut odd = info("kvm");
    odd.machine = "q35 <pc> & \"friends\"".into();
    let plot = svg(&odd, &[]);
    assert_eq!(check_well_formed(&plot), "svg");
    assert!(plot.contains("q35 &lt;pc&gt; &amp; &quot;friends&quot;"));
    assert!(plot.contains("KVM"));
    assert!(plot.contains("no passed boot reached systemd"));
}

#[test]
fn empty_run_renders() {
    assert_eq!(csv(&[]), format!("{CSV_HEADER}\n"));
    let report = markdown(&info("tcg"), &[]);
    assert!(report.contains("None: every boot passed."));
}

#[test]
fn csv_quotes_fields() {
    let mut s = samples().remove(0);
    s.size = "a,\"b\"".into();
    let row = csv(&[s]);
    assert!(
        row.lines()
            .nth(1)
            .unwrap()
            .starts_with("classic-gzip,\"a,\"\"b\"\"\",61234567,sd,1,true,")
    );
}

#[test]
fn median_cases() {
    let check = |values: &[f64], expected: Option<f64>| assert_eq!(median(values), expected);
    check(&[], None);
    check(&[4.0], Some(4.0));
    check(&[3.0, 1.0, 2.0], Some(2.0));
    check(&[4.0, 1.0, 3.0, 2.0], Some(2.5));
    check(&[1.0, 10.0], Some(5.5));
    check(&[5.0, 5.0, 1.0, 9.0, 9.0], Some(5.0));
}

#[test]
fn stats_over_values() {
    assert_eq!(
        stats(&[3.0, 1.0, 2.0, 10.0]),
        Some(Stats {
            median: 2.5,
            min: 1.0,
            max: 10.0,
            n: 4
        })
    );
    assert_eq!(stats(&[]), None);
}

#[test]
fn slope_on_exact_lines() {
    let check = |points: &[(f64, f64)], expected: Option<f64>| {
        let got = slope_ms_per_100mb(points);
        match (got, expected) {
            (Some(got), Some(expected)) => assert!(
                (got - expected).abs() < 1e-9,
                "{points:?}: {got} ms/100 MB, expected {expected}"
            ),
            _ => assert_eq!(got, expected, "{points:?}"),
        }
    };
    // 1 s per 100 MB: 1000 ms.
    check(&[(0.0, 2.0), (100e6, 3.0)], Some(1000.0));
    check(&[(100e6, 3.0), (300e6, 5.0), (200e6, 4.0)], Some(1000.0));
    // 50 ms per 100 MB, from an intercept of 4 s.
    check(&[(50e6, 4.025), (150e6, 4.075), (450e6, 4.225)], Some(50.0));
    // Flat, and falling.
    check(&[(1e6, 7.0), (9e6, 7.0)], Some(0.0));
    check(&[(0.0, 10.0), (200e6, 6.0)], Some(-2000.0));
    // Least squares through points off a line: (0,0), (1,1), (2,1) -> slope 0.5 s/100 MB.
    check(&[(0.0, 0.0), (100e6, 1.0), (200e6, 1.0)], Some(500.0));
    // Fewer than 2 distinct sizes.
    check(&[], None);
    check(&[(5e6, 1.0)], None);
    check(&[(5e6, 1.0), (5e6, 2.0)], None);
}

#[test]
fn fitted_intercept() {
    let (slope, intercept) = fit_line(&[(100e6, 3.0), (300e6, 5.0)]).unwrap();
    assert!((slope - 1e-8).abs() < 1e-20);
    assert!((intercept - 2.0).abs() < 1e-12);
}

#[test]
fn crossover_cases() {
    let check = |a: (f64, f64), b: (f64, f64), expected: Option<f64>| {
        let got = crossover_bytes(a, b);
        match (got, expected) {
            (Some(got), Some(expected)) => {
                assert!(
                    (got - expected).abs() < 1e-3,
                    "{a:?} {b:?}: {got}, expected {expected}"
                )
            }
            _ => assert_eq!(got, expected, "{a:?} {b:?}"),
        }
    };
    // Classic 1 s + 30 ms/MB against initoverlayfs 3 s + 2 ms/MB: they meet at 2/0.028 MB.
    check((0.03e-6, 1.0), (0.002e-6, 3.0), Some(2.0 / 0.028e-6));
    // Symmetric in its arguments.
    check((0.002e-6, 3.0), (0.03e-6, 1.0), Some(2.0 / 0.028e-6));
    // y = x/1e8 and y = 2 - x/1e8 meet at 1e8.
    check((1e-8, 0.0), (-1e-8, 2.0), Some(1e8));
    // Meeting below zero is reported as such.
    check((2e-8, 3.0), (1e-8, 2.0), Some(-1e8));
    // Parallel, and the same line: no crossover.
    check((1e-8, 1.0), (1e-8, 2.0), None);
    check((1e-8, 1.0), (1e-8, 1.0), None);
    check((0.0, 1.0), (0.0, 5.0), None);
}

/// A profile of two chains on exact lines through the given sizes (MB).
fn lines(iofs: (f64, f64), classic: (f64, f64), sizes_mb: &[f64]) -> Vec<BootSample> {
    let mut out = Vec::new();
    for (chain, (slope_s_per_mb, intercept)) in
        [(Chain::Initoverlayfs, iofs), (Chain::ClassicGzip, classic)]
    {
        for (i, mb) in sizes_mb.iter().enumerate() {
            let mut s = samples().remove(0);
            s.chain = chain;
            s.size = format!("s{i}");
            s.content_bytes = (mb * 1e6) as u64;
            s.profile = "sd".into();
            s.guest.running_in_initrd = Some(intercept + slope_s_per_mb * mb);
            out.push(s);
        }
    }
    out
}

#[test]
fn crossover_sentences() {
    let check = |iofs, classic, sizes_mb: &[f64], expected: &str| {
        let sentence = crossover_sentence(
            &lines(iofs, classic, sizes_mb),
            "sd",
            Chain::Initoverlayfs,
            Chain::ClassicGzip,
        );
        assert_eq!(sentence, expected);
    };
    // Classic 1 s + 30 ms/MB against initoverlayfs 3 s + 2 ms/MB: they cross at 71 MB.
    check(
        (0.002, 3.0),
        (0.03, 1.0),
        &[50.0, 300.0],
        "classic-gzip is faster below 71 MB, initoverlayfs above it: the fitted lines cross inside \
the measured range (50–300 MB). The medians as measured: classic-gzip faster at 50 MB; \
initoverlayfs faster at 300 MB.",
    );
    check(
        (0.002, 3.0),
        (0.03, 1.0),
        &[100.0, 300.0],
        "initoverlayfs is faster at every measured size (100–300 MB); the fitted lines cross \
at 71 MB, below the smallest size measured (an extrapolation). The medians as measured: \
initoverlayfs faster at 100 and 300 MB.",
    );
    check(
        (0.002, 3.0),
        (0.004, 0.5),
        &[60.0, 200.0, 600.0],
        "classic-gzip is faster at every measured size (60–600 MB); the fitted lines would cross \
at 1250 MB, beyond the largest size measured: an extrapolation, not a measurement. The medians \
as measured: classic-gzip faster at 60, 200 and 600 MB.",
    );
    check(
        (0.001, 1.0),
        (0.002, 1.5),
        &[100.0, 300.0],
        "initoverlayfs is faster at every measured size (100–300 MB); the fitted lines cross \
at no positive size. The medians as measured: initoverlayfs faster at 100 and 300 MB.",
    );
    // initoverlayfs the steeper line: the sentence turns around.
    check(
        (0.03, 1.0),
        (0.002, 3.0),
        &[50.0, 100.0, 300.0],
        "initoverlayfs is faster below 71 MB, classic-gzip above it: the fitted lines cross inside \
the measured range (50–300 MB). The medians as measured: initoverlayfs faster at 50 MB; \
classic-gzip faster at 100 and 300 MB.",
    );
    check(
        (0.0, 2.0),
        (0.0, 1.0),
        &[100.0, 300.0],
        "classic-gzip is faster at every measured size (100–300 MB): the fitted lines are \
parallel. The medians as measured: classic-gzip faster at 100 and 300 MB.",
    );
    check(
        (0.0, 2.0),
        (0.0, 1.0),
        &[100.0],
        "not enough sizes measured for both chains to fit lines.",
    );
}

#[test]
fn progress_lines() {
    let all = samples();
    let passed = all
        .iter()
        .find(|s| {
            s.chain == Chain::ClassicGzip && s.profile == "sd" && s.size == "128M" && s.run == 2
        })
        .unwrap();
    assert_eq!(
        progress_line(7, 60, passed),
        "bench-boot: [7/60] sd 128M classic-gzip run 2: systemd 6.98 s (read 23.3 MiB in 130 requests), multi-user 13.40 s (read 69.8 MiB in 1352 requests)"
    );
    let failed = all.iter().find(|s| !s.passed).unwrap();
    assert_eq!(
        progress_line(36, 36, failed),
        "bench-boot: [36/36] sd 512M classic-gzip run 3: FAILED, reached systemd at 18.87 s (guest)"
    );
    let mut never = failed.clone();
    never.guest = Figures::default();
    never.host = Figures::default();
    assert_eq!(
        progress_line(1, 2, &never),
        "bench-boot: [1/2] sd 512M classic-gzip run 3: FAILED, reached nothing: the kernel never started"
    );
    let mut host_only = never.clone();
    host_only.host.kernel_start = Some(4.5);
    assert!(progress_line(1, 2, &host_only).ends_with("reached kernel start at 4.50 s (host)"));
}

#[test]
fn saved_run_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (info, samples) = (info("tcg"), samples());
    write_all(dir.path(), &info, &samples).unwrap();
    for name in ["boot.csv", "boot.md", "boot.svg", "samples.json"] {
        assert!(dir.path().join(name).is_file(), "{name}");
    }
    // serde_json (without its float_roundtrip feature) may read a float back one ulp off;
    // the reports, which round, come out the same.
    let saved = read_saved(&dir.path().join("samples.json")).unwrap();
    assert_eq!(saved.info, info);
    assert_eq!(saved.samples.len(), samples.len());
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    assert_eq!(read("boot.csv"), csv(&saved.samples));
    assert_eq!(read("boot.md"), markdown(&saved.info, &saved.samples));
    assert_eq!(read("boot.svg"), svg(&saved.info, &saved.samples));
}

/// A run saved before the throttles were: re-rendered, it states none rather than the
/// profiles of the code that renders it.
#[test]
fn an_older_saved_run_claims_no_throttle() {
    let mut json = serde_json::to_value(info("tcg")).unwrap();
    json.as_object_mut().unwrap().remove("throttles");
    let older: RunInfo = serde_json::from_value(json).unwrap();
    assert!(older.throttles.is_empty());
    let report = markdown(&older, &samples());
    assert!(!report.contains("requests/s"), "{report}");
    assert!(report.contains("## Storage profile `sd`\n"), "{report}");
    let current = markdown(&info("tcg"), &samples());
    assert!(
        current.contains("## Storage profile `sd` (≈ 25 MB/s and 1500 requests/s)\n"),
        "{current}"
    );
}

/// A run saved before there were five chains names the gzip initramfs `classic` and has none
/// of the newer figures: it still loads, as classic-gzip.
#[test]
fn an_older_saved_run_loads() {
    let mut json = serde_json::to_value(samples().remove(0)).unwrap();
    let object = json.as_object_mut().unwrap();
    object.insert("chain".into(), "classic".into());
    for newer in [
        "phases",
        "read_requests",
        "read_requests_to_systemd",
        "initramfs_freed_kib",
        "probe",
        "initrd_units",
        "failure",
        "host_other_cpus",
        "tcg",
    ] {
        object.remove(newer);
    }
    let older: BootSample = serde_json::from_value(json).unwrap();
    assert_eq!(older.chain, Chain::ClassicGzip);
    assert_eq!(older.probe, Probe::default());
    assert_eq!(older.phases, Phases::default());
}

#[test]
fn chains_by_name() {
    for chain in Chain::ALL {
        assert_eq!(chain.name().parse::<Chain>().unwrap(), chain);
        let json = serde_json::to_value(chain).unwrap();
        assert_eq!(
            json,
            chain.name(),
            "the CSV, the CLI and samples.json agree"
        );
    }
    let error = "classic".parse::<Chain>().unwrap_err().to_string();
    assert!(error.contains("classic-gzip, classic-zstd"), "{error}");
}

/// The baseline's ratios are 1; a chain that is not there leaves no row; the floor's gap is
/// initoverlayfs's median less the floor's.
#[test]
fn ratios_rows_and_the_floor() {
    let all = samples();
    let report = markdown(&info("tcg"), &all);
    let row = |size: &str, chain: &str| {
        let start = format!("| {size} | {chain} |");
        report
            .lines()
            .find(|l| l.starts_with(&start))
            .unwrap_or_else(|| panic!("no row {start} in\n{report}"))
            .to_owned()
    };
    let gzip = row("128M", "classic-gzip");
    let cells: Vec<&str> = gzip.split('|').map(str::trim).collect();
    assert_eq!(
        (cells[4], cells[6], cells[8]),
        ("1.00", "1.00", "1.00"),
        "{gzip}"
    );
    assert!(report.contains("| `sd` | dracut | "), "{report}");
    assert!(
        report.contains(" | +0.10 |"),
        "the floor 0.1 s ahead: {report}"
    );
    let without_floor: Vec<BootSample> = all
        .into_iter()
        .filter(|s| s.chain != Chain::Floor)
        .collect();
    let report = markdown(&info("tcg"), &without_floor);
    assert!(!report.contains("| floor |"), "{report}");
    assert!(!report.contains("against the floor"), "{report}");
}
