//! `zonefwd presets` and `zonefwd onprem-forwarders`: the real binary, and what it
//! prints checked by the parser of each DNS server where Debian has one
//! (named-checkconf, unbound-checkconf, dnsmasq --test).
mod common;

use std::process::Command;

use common::debian_tool as tool;
use common::zonefwd_cli as zonefwd;

fn config(dir: &tempfile::TempDir) -> String {
    let p = dir.path().join("z.toml");
    std::fs::write(
        &p,
        "[[route]]\nname = \"azure\"\npresets = [\"azure\"]\nzones = [\"corp-private.example\"]\nupstreams = [\"168.63.129.16\"]\n\
         [[route]]\nname = \"onprem\"\nzones = [\".\"]\nupstreams = [\"10.1.0.4\"]\n",
    )
    .unwrap();
    p.to_str().unwrap().to_string()
}

fn forwarders(cfg: &str, format: &str) -> String {
    let (code, out, err) = zonefwd(&[
        "onprem-forwarders",
        "-c",
        cfg,
        "--target",
        "10.50.0.4,10.50.0.5",
        "--format",
        format,
    ]);
    assert_eq!(code, 0, "{err}");
    out
}

#[test]
fn presets_lists_the_catalog_and_prints_one() {
    let (code, out, _) = zonefwd(&["presets"]);
    assert_eq!(code, 0);
    for p in ["azure ", "azure-government", "azure-china", "aws"] {
        assert!(out.contains(p), "{out}");
    }
    let (code, out, _) = zonefwd(&["presets", "azure"]);
    assert_eq!(code, 0);
    assert!(
        out.lines().any(|l| l.starts_with("blob.core.windows.net ")),
        "{out}"
    );
    assert!(out.contains("privatelink.blob.core.windows.net"));
    let (code, _, err) = zonefwd(&["presets", "gcp"]);
    assert_eq!(code, 2);
    assert!(err.contains("no preset \"gcp\""), "{err}");
}

#[test]
fn every_format_lists_every_cloud_zone_and_not_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir);
    let azure_zones = zonefwd::presets::find("azure").unwrap().zones.len();
    let windows = forwarders(&cfg, "windows");
    let lines: Vec<&str> = windows
        .lines()
        .filter(|l| l.starts_with("Add-DnsServerConditionalForwarderZone"))
        .collect();
    assert_eq!(lines.len(), azure_zones + 1);
    assert!(lines
        .iter()
        .all(|l| l.contains("-MasterServers 10.50.0.4,10.50.0.5")));
    assert!(windows.contains("-Name \"blob.core.windows.net\""));
    assert!(windows.contains("-Name \"corp-private.example\""));
    assert!(!windows.contains("-Name \".\"") && !windows.contains("-Name \"\""));
    let coredns = forwarders(&cfg, "coredns");
    assert!(coredns.contains("forward . 10.50.0.4 10.50.0.5"));
    assert!(coredns.contains(" azmk8s.io "));
}

#[test]
fn bind_output_passes_named_checkconf() {
    let Some(check) = tool("named-checkconf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = forwarders(&config(&dir), "bind");
    let conf = dir.path().join("named.conf");
    std::fs::write(
        &conf,
        format!(
            "options {{ directory \"{}\"; }};\n{out}",
            dir.path().display()
        ),
    )
    .unwrap();
    let r = Command::new(check).arg(&conf).output().unwrap();
    assert!(
        r.status.success(),
        "{}\n{out}",
        String::from_utf8_lossy(&r.stdout)
    );
    assert!(out.contains(
        "zone \"azmk8s.io\" { type forward; forward only; forwarders { 10.50.0.4; 10.50.0.5; }; };"
    ));
}

#[test]
fn unbound_output_passes_unbound_checkconf() {
    let Some(check) = tool("unbound-checkconf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = forwarders(&config(&dir), "unbound");
    let conf = dir.path().join("unbound.conf");
    std::fs::write(
        &conf,
        format!(
            "server:\n  chroot: \"\"\n  username: \"\"\n  directory: \"{}\"\n{out}",
            dir.path().display()
        ),
    )
    .unwrap();
    let r = Command::new(check).arg(&conf).output().unwrap();
    assert!(
        r.status.success(),
        "{}{}\n{out}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(
        out.matches("forward-zone:").count(),
        zonefwd::presets::find("azure").unwrap().zones.len() + 1
    );
}

#[test]
fn dnsmasq_output_passes_dnsmasq_test() {
    let Some(check) = tool("dnsmasq") else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = forwarders(&config(&dir), "dnsmasq");
    let conf = dir.path().join("dnsmasq.conf");
    std::fs::write(&conf, &out).unwrap();
    let r = Command::new(check)
        .arg("--test")
        .arg("-C")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        r.status.success(),
        "{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(out.contains("server=/blob.core.windows.net/10.50.0.5"));
}

/// The shipped azure overlay with the team fragment beside it, laid out as the
/// Deployment mounts them.
fn overlay_with_fragment(dir: &tempfile::TempDir) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let etc = dir.path().join("zonefwd");
    let team = dir.path().join("zonefwd-fragments/team-example");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&team).unwrap();
    std::fs::copy(
        format!("{root}/deploy/kubernetes/overlays/azure/zonefwd.toml"),
        etc.join("zonefwd.toml"),
    )
    .unwrap();
    std::fs::copy(
        format!("{root}/deploy/kubernetes/base/fragments/team-example.toml"),
        team.join("team-example.toml"),
    )
    .unwrap();
    etc.join("zonefwd.toml").to_str().unwrap().to_string()
}

/// A team's route to on-prem servers is never printed: applied on those servers it
/// would forward the zone to zonefwd and back. Each route left out is a comment
/// saying why; the cloud route's zones are all there.
#[test]
fn onprem_forwarders_leaves_out_routes_that_go_back_on_prem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = overlay_with_fragment(&dir);
    // (extra arguments, why the team route is left out)
    let cases: [(&[&str], &str); 2] = [
        (&[], "not a cloud resolver"),
        (
            &["--onprem", "10.2.0.4,10.2.0.5"],
            "its upstream 10.2.0.4 is an on-prem server",
        ),
    ];
    for (extra, why) in cases {
        let mut args = vec![
            "onprem-forwarders",
            "-c",
            &cfg,
            "--target",
            "10.50.0.4",
            "--format",
            "bind",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = zonefwd(&args);
        assert_eq!(code, 0, "{err}");
        assert!(!out.contains("zone \"apps.corp.example\""), "{out}");
        assert!(
            out.contains("// route team-example left out: ") && out.contains(why),
            "{out}"
        );
        assert!(out.contains("zone \"blob.core.windows.net\""), "{out}");
        assert!(out.contains("zone \"azmk8s.io\""), "{out}");
    }
}

/// Nothing to forward is an error that says why for each route left out: a catch-all
/// alone, or a route to the catch-all's own servers (on-prem DNS), which would loop.
#[test]
fn nothing_to_forward_is_an_error_that_says_why() {
    // (configuration, what the error says)
    let cases = [
        (
            "[[route]]\nname = \"all\"\nzones = [\".\"]\nupstreams = [\"10.1.0.4\"]\n",
            "nothing to forward",
        ),
        (
            "[[route]]\nname = \"corp\"\nzones = [\"corp.example\"]\nupstreams = [\"10.1.0.4\"]\n\
             [[route]]\nname = \"onprem\"\nzones = [\".\"]\nupstreams = [\"10.1.0.4\"]\n",
            "route corp left out: its upstream 10.1.0.4 is an on-prem server",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("z.toml");
    for (text, says) in cases {
        std::fs::write(&p, text).unwrap();
        let (code, _, err) = zonefwd(&[
            "onprem-forwarders",
            "-c",
            p.to_str().unwrap(),
            "--target",
            "10.50.0.4",
            "--format",
            "bind",
        ]);
        assert_eq!(code, 2, "{text}");
        assert!(
            err.contains("no route goes to the cloud") && err.contains(says),
            "{err}"
        );
    }
}
