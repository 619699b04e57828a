//! Configuration fragments (`include = ["conf.d/*.toml"]`): each team owns a file of
//! `[[route]]` tables. Patterns are relative to the including file and expanded in
//! sorted order; every error names the fragment's own file, line and column; a reload
//! reads the fragments again.
mod common;

use std::path::{Path, PathBuf};

use common::*;
use zonefwd::{Config, LoadEnv};

/// A directory with `main.toml` (listening on 127.0.0.1:0, including conf.d/*.toml,
/// with a "." route to 192.0.2.1) and the given fragments in conf.d.
fn tree(fragments: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    let main = dir.path().join("main.toml");
    std::fs::write(
        &main,
        "include = [\"conf.d/*.toml\"]\n[server]\nlisten = [\"127.0.0.1:0\"]\nloop_detection = false\n\
         [[route]]\nname = \"default\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\n",
    )
    .unwrap();
    for (name, text) in fragments {
        std::fs::write(dir.path().join("conf.d").join(name), text).unwrap();
    }
    (dir, main)
}

fn route(name: &str, zone: &str, upstream: &str) -> String {
    format!("[[route]]\nname = \"{name}\"\nzones = [\"{zone}\"]\nupstreams = [\"{upstream}\"]\n")
}

fn load(main: &Path) -> Result<Config, String> {
    Config::load(main, &LoadEnv::default()).map_err(|e| e.to_string())
}

#[test]
fn fragments_add_their_routes_in_sorted_order_and_say_where_each_came_from() {
    let (dir, main) = tree(&[
        (
            "b-team.toml",
            &route("team-b", "b.corp.example", "192.0.2.11"),
        ),
        (
            "a-team.toml",
            &route("team-a", "a.corp.example", "192.0.2.10"),
        ),
        ("notes.txt", "not toml, and not matched"),
    ]);
    let c = load(&main).unwrap();
    let names: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["default", "team-a", "team-b"]);
    let conf_d = dir.path().join("conf.d");
    assert_eq!(c.routes[0].source, main.display().to_string());
    assert_eq!(
        c.routes[1].source,
        conf_d.join("a-team.toml").display().to_string()
    );
    // `check` lists the file of every route that came from a fragment.
    let (code, out, _) = zonefwd_cli(&["check", "-c", main.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let b = conf_d.join("b-team.toml").display().to_string();
    assert!(
        out.lines()
            .any(|l| l.starts_with("route team-b:") && l.ends_with(&format!("from {b}"))),
        "{out}"
    );
}

/// (what, fragments, the error's start after the directory, what it must say)
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
);

const ERRORS: &[Case] = &[
    (
        "a [server] table in a fragment",
        &[("a.toml", "[server]\nlisten = [\"127.0.0.1:53\"]\n")],
        "conf.d/a.toml:1:1: server:",
        "a fragment holds [[route]] tables only",
    ),
    (
        "an [acl] table in a fragment",
        &[("a.toml", "[acl]\nallow = [\"10.0.0.0/8\"]\n")],
        "conf.d/a.toml:1:1: acl:",
        "belongs in the main configuration file",
    ),
    (
        "a fragment that includes others",
        &[("a.toml", "include = [\"more/*.toml\"]\n")],
        "conf.d/a.toml:1:11: include:",
        "a fragment holds [[route]] tables only",
    ),
    (
        "a bad value in a fragment's route",
        &[("a.toml", "[[route]]\nname = \"a\"\nzones = [\"a.example\"]\nupstreams = [\"192.0.2.1\"]\ntimeout = \"5 parsecs\"\n")],
        "conf.d/a.toml:5:11: route[0].timeout:",
        "expected a duration",
    ),
    (
        "a zone routed in two files",
        &[
            ("a.toml", "[[route]]\nname = \"a\"\nzones = [\"x.example\"]\nupstreams = [\"192.0.2.1\"]\n"),
            ("b.toml", "[[route]]\nname = \"b\"\nzones = [\"X.example.\"]\nupstreams = [\"192.0.2.2\"]\n"),
        ],
        "conf.d/b.toml:3:10: route[0].zones:",
        "already routed by route \"a\" (DIR/conf.d/a.toml:3)",
    ),
    (
        "a route name used in two files",
        &[
            ("a.toml", "[[route]]\nname = \"team\"\nzones = [\"x.example\"]\nupstreams = [\"192.0.2.1\"]\n"),
            ("b.toml", "[[route]]\nname = \"team\"\nzones = [\"y.example\"]\nupstreams = [\"192.0.2.2\"]\n"),
        ],
        "conf.d/b.toml:2:8: route[0].name:",
        "used twice (first in DIR/conf.d/a.toml)",
    ),
    (
        "a hosts file in a fragment",
        &[("a.toml", "[local]\nhosts = [\"/etc/hosts\"]\n")],
        "conf.d/a.toml:2:9: local.hosts:",
        "a fragment may hold [local] records, not hosts files",
    ),
    (
        "the main file's zone again in a fragment",
        &[("a.toml", "[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\n")],
        "conf.d/a.toml:3:10: route[0].zones:",
        "already routed by route \"default\" (DIR/main.toml:7)",
    ),
];

#[test]
fn fragment_errors_name_the_fragment_its_line_and_column() {
    for &(what, fragments, at, says) in ERRORS {
        let (dir, main) = tree(fragments);
        let d = dir.path().display().to_string();
        let e = load(&main).expect_err(what);
        assert!(e.starts_with(&format!("{d}/{at}")), "{what}: {e}");
        assert!(e.contains(&says.replace("DIR", &d)), "{what}: {e}");
    }
}

#[test]
fn a_named_fragment_must_exist_a_pattern_may_match_none() {
    let (dir, main) = tree(&[]);
    assert!(load(&main).is_ok(), "an empty conf.d");
    let text = std::fs::read_to_string(&main)
        .unwrap()
        .replace("conf.d/*.toml", "conf.d/team.toml");
    std::fs::write(&main, text).unwrap();
    let e = load(&main).unwrap_err();
    let d = dir.path().display();
    assert!(
        e.starts_with(&format!(
            "{d}/main.toml:1:12: include[0]: {d}/conf.d/team.toml: no such file"
        )),
        "{e}"
    );
}

#[tokio::test]
async fn a_reload_reads_the_fragments_again() {
    let a = Fake::answering(|q| reply_a(q, [192, 0, 2, 1], 60)).await;
    let b = Fake::answering(|q| reply_a(q, [192, 0, 2, 2], 60)).await;
    let (dir, main) = tree(&[(
        "team.toml",
        &route("team", "team.test", &a.addr.to_string()),
    )]);
    let z = Zonefwd::start_config(load(&main).unwrap()).await;
    let answered_by = |r: &hickory_proto::op::Message| match &r.answers[0].data {
        hickory_proto::rr::RData::A(ip) => ip.octets()[3],
        other => panic!("{other:?}"),
    };
    assert_eq!(answered_by(&ask_a(z.udp, "one.team.test.").await), 1);
    let fragment = dir.path().join("conf.d/team.toml");
    std::fs::write(&fragment, route("team", "team.test", &b.addr.to_string())).unwrap();
    z.reload_config(load(&main).unwrap());
    let mut switched = false;
    for i in 0..500 {
        if answered_by(&ask_a(z.udp, &format!("n{i}.team.test.")).await) == 2 {
            switched = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        switched,
        "the changed fragment is in force after the reload"
    );
    z.stop().await.unwrap();
}

#[test]
fn a_fragment_may_hold_local_records() {
    let (_dir, main) = tree(&[(
        "team.toml",
        "[local]\nrecords = [\"pinned.team.example. 60 IN A 10.3.0.9\"]\n",
    )]);
    let c = load(&main).unwrap();
    assert_eq!(c.local.len(), 1);
    assert_eq!(
        c.local[0].record.to_string(),
        "pinned.team.example. 60 IN A 10.3.0.9"
    );
}
