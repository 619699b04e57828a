//! Port 53 next to systemd-resolved's stub (tests/port53.sh, in a network namespace
//! of its own): a wildcard listen fails naming the holder and the fix, `doctor` fails
//! that check, and the documented VM configurations start beside the stub.
//!
//! Where the machine does not allow it (not root, no namespaces) the script exits 77
//! and this test says SKIPPED with the reason (.ci/run repeats it in its summary).
mod common;

#[test]
fn port_53_next_to_systemd_resolveds_stub() {
    common::run_script(
        "port_53_next_to_systemd_resolveds_stub",
        "tests/port53.sh",
        &[],
    );
}
