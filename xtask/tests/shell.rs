//! `cargo xtask vm-test --cell X --shell` on a deliberately broken cell: the cell whose config
//! names an image /boot does not have is built as its test builds it, booted with its console
//! on a terminal (a pty here, driven with rexpect), and its FATAL line ends in a shell that
//! runs what is typed.

use std::process::Command;

use xshell::Shell;

/// A smoke-tier fault cell: storage-init fails at once, on the image it cannot find.
const BROKEN_CELL: &str = "x86_64-q35-virtio-blk-debian12-6.12-fault-image-missing";

#[test]
fn a_broken_cell_ends_in_a_shell() {
    let root = xtask::vm_test::project_root();
    let sh = Shell::new().unwrap();
    sh.change_dir(&root);
    xtask::provision::ensure(&sh).unwrap();
    let cell = xtask::cells::read_cells(&root)
        .unwrap()
        .into_iter()
        .find(|c| c.name == BROKEN_CELL)
        .expect("the broken cell is in fixtures/cells.toml");
    let accel = xtask::accel::AccelChoice::from_env().unwrap();
    let argv = xtask::vm_test::shell_argv(&sh, &root, &cell, accel).unwrap();
    assert!(argv.iter().any(|a| a == "mon:stdio"), "{argv:?}");

    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    // Generous: TCG on a loaded host; the milestones of this cell allow 60 s to the kernel.
    let mut guest = rexpect::session::spawn_command(command, Some(180_000)).unwrap();
    guest
        .exp_string("storage-init: FATAL: opening the image /boot/no-such-image.img")
        .unwrap();
    // The arithmetic is the shell's: the echoed command line cannot match the answer.
    guest.send_line("echo shell-$((6*7))").unwrap();
    guest.exp_string("shell-42").unwrap();
    guest.send_line("poweroff -f").unwrap();
    guest.exp_eof().unwrap();
}
