//! Replicas and on-prem DNS as separate hosts: bench/replicas.sh builds network
//! namespaces joined by veth pairs (a client, BIND as the on-prem server forwarding
//! the cloud zone to two zonefwd replicas, and a fake cloud resolver), streams client
//! queries at BIND, and stops, kills, cuts off and restarts replicas and cuts off the
//! cloud resolver. It checks the goals itself: no client query fails for a stopped,
//! killed, cut-off or restarted replica, and the cloud's names are answered stale
//! while it is away. Shorter phases here than the README's run.
//!
//! Where the machine does not allow it (not root, no namespaces, no BIND) the script
//! exits 77 and this test says SKIPPED with the reason on stderr (.ci/run repeats it
//! in its summary): skipped, not passed in silence.
mod common;

#[test]
fn replicas_behind_bind_across_network_namespaces() {
    common::run_script(
        "replicas_behind_bind_across_network_namespaces",
        "bench/replicas.sh",
        &[("PHASE", "3"), ("CLOUD_CUT", "8")],
    );
}
