//! Real boots under QEMU. They need a kernel: set `TESTVM_KERNEL` (and optionally
//! `TESTVM_INITRD`), as `cargo xtask test` does; without it each test says why it did not run
//! and passes, except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::time::Duration;

use testvm::machine::{Accel, Board, Boot, GuestReboot, Io, Machine};
use testvm::run::{
    BootSpec, End, Event, Fatal, GuestFailureReason, InfraError, Milestone, Timings, VmError,
    artifact, boot, boot_with_events,
};

#[path = "../../storage-init/src/test_tools.rs"]
mod test_tools;

/// Generous for TCG on a loaded CI runner; a 6.12 kernel reaches userspace in ~3 s here.
const STEP_TIMEOUT: Duration = Duration::from_secs(90);

fn kernel() -> Option<PathBuf> {
    test_tools::provided("TESTVM_KERNEL").map(PathBuf::from)
}

fn machine(kernel: &Path, initrd: Option<PathBuf>) -> Machine {
    Machine {
        board: Board::Q35,
        accel: Accel::Tcg,
        memory_mib: 512,
        cpus: 1,
        boot: Boot::Direct {
            kernel: kernel.to_owned(),
            initrd,
            // panic=-1 reboots at once on a panic, which -no-reboot turns into QEMU exiting.
            cmdline: "console=ttyS0 panic=-1".into(),
        },
        dtb: None,
        disks: vec![],
        hotplug_ports: 0,
        empty_cdroms: 0,
        on_reboot: GuestReboot::ExitQemu,
        icount: None,
    }
}

/// The kernel and `TESTVM_INITRD` (busybox as /init), or None with the reason printed.
fn kernel_and_initrd() -> Option<(PathBuf, PathBuf)> {
    let kernel = kernel()?;
    let initrd = test_tools::provided("TESTVM_INITRD").map(PathBuf::from)?;
    Some((kernel, initrd))
}

fn milestone(name: &str, pattern: &str) -> Milestone {
    Milestone::new(name, pattern, STEP_TIMEOUT).unwrap()
}

fn read_timings(artifacts: &Path) -> Timings {
    let text = std::fs::read_to_string(artifacts.join(artifact::TIMINGS_JSON)).unwrap();
    println!("{text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn kernel_without_root_reaches_its_milestones_and_powers_off() {
    let Some(kernel) = kernel() else { return };
    let artifacts = tempfile::tempdir().unwrap();
    let spec = BootSpec {
        milestones: vec![
            milestone("linux", r"Linux version"),
            milestone("no-root", r"VFS: Unable to mount root"),
        ],
        fatal: vec![],
        end: End::GuestPowersOff {
            timeout: STEP_TIMEOUT,
        },
        hotplug: Vec::new(),
        read_sampling: None,
    };
    let mut events = Vec::new();
    let report = boot_with_events(&machine(&kernel, None), &spec, artifacts.path(), &mut |e| {
        events.push(e.clone());
    })
    .unwrap_or_else(|e| panic!("{}", e.detail()));

    let names: Vec<_> = report.milestones.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["linux", "no-root"]);
    let [linux, no_root] = &report.milestones[..] else {
        unreachable!()
    };
    assert!(linux.line.contains("Linux version"), "{linux:?}");
    assert_eq!(linux.guest_s, Some(0.0), "the banner is printed at time 0");
    assert!(no_root.guest_s.unwrap() > 0.0, "{no_root:?}");
    assert!(no_root.host_ms >= linux.host_ms);
    assert!(matches!(events.first(), Some(Event::QemuStarted { .. })));
    assert!(matches!(events.last(), Some(Event::Finished { outcome }) if outcome == "passed"));

    let timings = read_timings(artifacts.path());
    assert_eq!(timings.milestones, report.milestones);
    assert_eq!(timings.qmp_status.as_deref(), Some("running"));
    let console = std::fs::read_to_string(artifacts.path().join(artifact::CONSOLE_LOG)).unwrap();
    assert!(console.contains("VFS: Unable to mount root"));
    let cmdline = std::fs::read_to_string(artifacts.path().join(artifact::QEMU_CMDLINE)).unwrap();
    assert!(cmdline.contains("-serial mon:stdio"), "{cmdline}");
}

#[test]
fn fatal_pattern_fails_the_boot_with_its_line() {
    let Some(kernel) = kernel() else { return };
    let artifacts = tempfile::tempdir().unwrap();
    let spec = BootSpec {
        milestones: vec![milestone("never", r"this line is never printed")],
        fatal: vec![Fatal::new("kernel panic", r"Kernel panic").unwrap()],
        end: End::Quit,
        hotplug: Vec::new(),
        read_sampling: None,
    };
    let error = boot(&machine(&kernel, None), &spec, artifacts.path()).unwrap_err();
    println!("{}", error.detail());
    let VmError::Guest(failure) = &error else {
        panic!("expected a guest failure: {error}")
    };
    assert_eq!(failure.milestone, "never");
    let GuestFailureReason::Fatal { name, line } = &failure.reason else {
        panic!("expected a fatal pattern: {error}")
    };
    assert_eq!(name, "kernel panic");
    assert!(line.contains("Kernel panic - not syncing"), "{line}");
    assert!(failure.console_tail.lines().count() > 1);
    let timings = read_timings(artifacts.path());
    assert!(
        timings
            .outcome
            .starts_with("failed: guest: never: kernel panic")
    );
}

#[test]
fn initrd_reaches_init_and_quits_over_qmp() {
    let Some((kernel, initrd)) = kernel_and_initrd() else {
        return;
    };
    let artifacts = tempfile::tempdir().unwrap();
    let spec = to_init(None);
    let report = boot(&machine(&kernel, Some(initrd)), &spec, artifacts.path())
        .unwrap_or_else(|e| panic!("{}", e.detail()));
    let init = &report.milestones[1];
    assert!(init.guest_s.unwrap() > 0.0, "{init:?}");
    read_timings(artifacts.path());
}

/// busybox's init has no acpid: it ignores the power button, and a guest that does not shut
/// down when asked fails at the end, with the press in qmp.log.
#[test]
fn a_guest_that_ignores_the_power_button_fails() {
    let Some((kernel, initrd)) = kernel_and_initrd() else {
        return;
    };
    let artifacts = tempfile::tempdir().unwrap();
    let spec = BootSpec {
        milestones: vec![milestone("init", r"Run /init as init process")],
        fatal: vec![Fatal::new("kernel panic", r"Kernel panic").unwrap()],
        end: End::PowerButton {
            timeout: Duration::from_secs(5),
        },
        hotplug: Vec::new(),
        read_sampling: None,
    };
    let error = boot(&machine(&kernel, Some(initrd)), &spec, artifacts.path()).unwrap_err();
    let VmError::Guest(failure) = &error else {
        panic!("expected a guest failure: {}", error.detail())
    };
    assert_eq!(
        failure.milestone,
        testvm::run::END_MILESTONE,
        "{}",
        error.detail()
    );
    let qmp = std::fs::read_to_string(artifacts.path().join(artifact::QMP_LOG)).unwrap();
    assert!(qmp.contains(r#"-> {"execute":"system_powerdown""#), "{qmp}");
}

#[test]
fn qemu_failing_at_start_is_an_infra_error_quoting_its_stderr() {
    let qemu = Board::Q35.qemu_binary();
    if !test_tools::have_tool(qemu, "cargo xtask provision installs it") {
        return;
    }
    let artifacts = tempfile::tempdir().unwrap();
    let missing = artifacts.path().join("no-such-kernel");
    let spec = BootSpec {
        milestones: vec![milestone("linux", r"Linux version")],
        fatal: vec![],
        end: End::Quit,
        hotplug: Vec::new(),
        read_sampling: None,
    };
    let error = boot(&machine(&missing, None), &spec, artifacts.path()).unwrap_err();
    let VmError::Infra(InfraError::QemuExitedAtStart { stderr, .. }) = &error else {
        panic!("expected QEMU to fail at start: {error}")
    };
    assert!(stderr.contains("no-such-kernel"), "{stderr}");
    assert!(
        read_timings(artifacts.path())
            .outcome
            .starts_with("failed: infra:")
    );
    // The interactive rendering needs no sockets.
    assert!(
        !machine(&missing, None)
            .qemu_args(&Io::Interactive)
            .unwrap()
            .iter()
            .any(|a| a.contains("sock"))
    );
}

/// The kernel's banner, then /init, raced against a kernel panic; QEMU quit over QMP after.
fn to_init(read_sampling: Option<Duration>) -> BootSpec {
    BootSpec {
        milestones: vec![
            milestone("linux", r"Linux version"),
            milestone("init", r"Run /init as init process"),
        ],
        fatal: vec![Fatal::new("kernel panic", r"Kernel panic").unwrap()],
        end: End::Quit,
        hotplug: Vec::new(),
        read_sampling,
    }
}

/// Host milliseconds to the boot's last milestone.
fn last_ms(report: &testvm::run::BootReport) -> u64 {
    report.milestones.last().map_or(0, |m| m.host_ms)
}

/// Reads sampled over the whole boot: the series is recorded in timings.json, in order, next
/// to the milestones' own figures. (This kernel has its disk drivers as modules and the
/// busybox initrd loads none, so the counters stay where the firmware left them; what is
/// checked here is the sampling itself: its thread, its share of the QMP connection with the
/// milestones and `quit`, and the artifact.)
#[test]
fn read_sampling_records_a_series_over_the_boot() {
    let Some((kernel, initrd)) = kernel_and_initrd() else {
        return;
    };
    let artifacts = tempfile::tempdir().unwrap();
    let interval = Duration::from_millis(100);
    let spec = to_init(Some(interval));
    let report = boot(&machine(&kernel, Some(initrd)), &spec, artifacts.path())
        .unwrap_or_else(|e| panic!("{}", e.detail()));
    let timings = read_timings(artifacts.path());
    for reached in &timings.milestones {
        assert!(reached.read_requests.is_some(), "{reached:?}");
        assert!(reached.bytes_read.is_some(), "{reached:?}");
    }
    // The host's load was read at the last milestone, with QEMU busy booting until then.
    let load = timings
        .host_load
        .expect("the host's load at the last milestone");
    assert!(
        load.qemu_cpu_ms > 0 && load.host_busy_ms >= load.qemu_cpu_ms / 2,
        "{load:?}"
    );
    assert!(load.wall_ms <= last_ms(&report) + 1000, "{load:?}");
    // And TCG's counters: a kernel booted, so code was translated.
    let tcg = timings.tcg.expect("TCG's counters at the last milestone");
    assert!(tcg.tb_count > 0 && tcg.code_bytes > 0, "{tcg:?}");
    let sampling = timings.read_sampling.expect("sampling was asked for");
    assert_eq!(sampling.interval_ms, 100);
    assert_eq!(sampling.failures, 0, "{:?}", sampling.first_failure);
    // From the handshake to `quit`: at least one sample per interval of the boot's second
    // half (TCG takes seconds to reach /init; a loaded host may delay a few ticks).
    let last_milestone_ms = report.milestones.last().unwrap().host_ms;
    let expected = last_milestone_ms / 100 / 2;
    assert!(
        sampling.samples.len() as u64 >= expected.max(2),
        "{} samples over {last_milestone_ms} ms",
        sampling.samples.len()
    );
    for pair in sampling.samples.windows(2) {
        let [a, b] = pair else { unreachable!() };
        assert!(b.host_ms > a.host_ms, "{a:?} then {b:?}");
        assert!(b.bytes_read >= a.bytes_read, "{a:?} then {b:?}");
        assert!(b.read_requests >= a.read_requests, "{a:?} then {b:?}");
    }
    // The samples' own queries stay out of qmp.log: only the milestones' are there.
    let qmp = std::fs::read_to_string(artifacts.path().join(artifact::QMP_LOG)).unwrap();
    let queries = qmp.matches(r#""execute":"query-blockstats""#).count();
    assert_eq!(queries, report.milestones.len(), "{qmp}");
    // Without sampling, nothing of it is written.
    let quiet = tempfile::tempdir().unwrap();
    let spec = BootSpec {
        read_sampling: None,
        milestones: vec![milestone("linux", r"Linux version")],
        ..spec
    };
    boot(&machine(&kernel, None), &spec, quiet.path()).unwrap_or_else(|e| panic!("{}", e.detail()));
    let text = std::fs::read_to_string(quiet.path().join(artifact::TIMINGS_JSON)).unwrap();
    assert!(!text.contains("read_sampling"), "{text}");
    assert!(text.contains("read_requests"), "{text}");
}
