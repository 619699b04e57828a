//! Port 53 next to systemd-resolved's stub (tests/port53.sh, in a network namespace
//! of its own): a wildcard listen fails naming the holder and the fix, `doctor` fails
//! that check, and the documented VM configurations start beside the stub.
//!
//! Where the machine does not allow it (not root, no namespaces) the script exits 77
//! and this test says SKIPPED with the reason (.ci/run repeats it in its summary).
use std::process::Command;

#[test]
fn port_53_next_to_systemd_resolveds_stub() {
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/port53.sh"))
        .env("ZONEFWD", env!("CARGO_BIN_EXE_zonefwd"))
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => println!("{stdout}"),
        Some(77) => eprintln!(
            "SKIPPED port_53_next_to_systemd_resolveds_stub: {}",
            stderr.trim()
        ),
        code => panic!("tests/port53.sh exited {code:?}\n{stdout}\n{stderr}"),
    }
}
