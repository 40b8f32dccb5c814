//! Promotions written into config text (the root proxy.toml and both spellings of an instance list) and into a file.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;

const EXAMPLE: &str = include_str!("../../../proxy.toml");

/// A leader, two pools (`default` with two followers in `[[…]]` tables, `analytics` with one inline follower) and
/// reads on `analytics`.
const TWO_POOLS: &str = r#"# two pools
[leader]
host = "10.0.0.1"   # old leader
port = 5432

[[users]]
name = "app"
password = "secret"

# the main pool
[[follower_pools]]
name = "default"

# first replica
[[follower_pools.instances]]
name = "f1"
host = "10.0.0.2"   # rack A
port = 5433

# second replica
[[follower_pools.instances]]
name = "f2"
host = "10.0.0.3"   # rack B
port = 5434

# reporting
[[follower_pools]]
name = "analytics"
instances = [ { name = "a1", host = "10.0.0.4", port = 5435 } ]

[routing]
# reads go to the reporting pool
read_pool = "analytics"   # for now
fallback = "leader"
"#;

fn promote(text: &str, name: &str) -> String {
    promote_in_text(text, "proxy.toml", name).unwrap_or_else(|error| panic!("promoting {name}: {error}"))
}

fn parse(text: &str) -> Config {
    Config::parse(text, "proxy.toml").unwrap_or_else(|errors| panic!("{errors}\n---\n{text}"))
}

fn instance_names(config: &Config) -> Vec<(&str, Vec<&str>)> {
    config
        .follower_pools
        .iter()
        .map(|pool| {
            let instances = pool.instances.iter().map(|instance| instance.name.as_str()).collect();
            (pool.name.as_str(), instances)
        })
        .collect()
}

/// The text inside `instances = [ … ]` after promoting `promoted` in a file whose default pool lists `instances`.
fn instances_after_promoting(instances: &str, promoted: &str) -> String {
    let text = format!(
        "[leader]\nhost = \"db\"\nport = 5432\n\n[[users]]\nname = \"app\"\npassword = \"x\"\n\n\
         [[follower_pools]]\nname = \"default\"\ninstances = [{instances}]\n"
    );
    let rewritten = promote(&text, promoted);
    let start = rewritten.find("instances = [").expect("the pool stays") + "instances = [".len();
    let end = rewritten.rfind(']').unwrap();
    rewritten[start..end].to_owned()
}

#[test]
fn promoting_f1_in_the_example_makes_it_the_leader() {
    let config = parse(&promote(EXAMPLE, "f1"));
    assert_eq!(config.leader.name, "f1");
    assert_eq!((config.leader.host.as_str(), config.leader.port), ("127.0.0.1", 15433));
    assert_eq!(config.leader.max_connections, 20);
    assert_eq!(instance_names(&config), [("default", vec!["f2"])]);
    assert_eq!(config.routing.read_pool.as_deref(), Some("default"));
}

#[test]
fn promoting_f1_in_the_example_changes_only_its_lines() {
    let rewritten = promote(EXAMPLE, "f1");
    let kept: Vec<&str> = EXAMPLE
        .lines()
        .filter(|line| !line.contains(r#"name = "f1""#))
        .collect();
    let lines: Vec<&str> = rewritten.lines().collect();
    assert_eq!(lines.len(), kept.len(), "only f1's line goes:\n{rewritten}");
    let changed: Vec<(&str, &str)> = kept
        .iter()
        .zip(&lines)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| (*a, *b))
        .collect();
    // The leader's name and port change value; their comments stay in the same column.
    assert_eq!(changed.len(), 2, "{changed:#?}");
    for (before, after) in changed {
        assert!(
            after.starts_with(r#"name = "f1" "#) || after.starts_with("port = 15433 "),
            "{after}"
        );
        assert_eq!(before.find('#'), after.find('#'), "comment column of {after:?}");
        assert_eq!(before[before.find('#').unwrap()..], after[after.find('#').unwrap()..]);
    }
    assert!(rewritten.ends_with('\n'));
}

#[test]
fn the_promoted_entry_leaves_an_array_of_tables() {
    let rewritten = promote(TWO_POOLS, "f1");
    let config = parse(&rewritten);
    assert_eq!(
        (config.leader.name.as_str(), config.leader.host.as_str()),
        ("f1", "10.0.0.2")
    );
    assert_eq!(config.leader.port, 5433);
    assert_eq!(
        instance_names(&config),
        [("default", vec!["f2"]), ("analytics", vec!["a1"])]
    );
    assert_eq!(rewritten.matches("[[follower_pools.instances]]").count(), 1);
    // The header comment above f1's table leaves with it; every other comment stays.
    assert!(!rewritten.contains("# first replica"));
    for comment in [
        "# two pools",
        "# the main pool",
        "# second replica",
        "# rack B",
        "# reporting",
        "# for now",
    ] {
        assert!(rewritten.contains(comment), "{comment} lost:\n{rewritten}");
    }
    // The new leader's host keeps the old leader's trailing comment, in its column.
    assert!(
        rewritten.contains("host = \"10.0.0.2\"   # old leader\n"),
        "{rewritten}"
    );
}

#[test]
fn promoting_the_only_follower_of_a_pool_removes_the_pool_and_read_pool() {
    let rewritten = promote(TWO_POOLS, "a1");
    let config = parse(&rewritten);
    assert_eq!(config.leader.name, "a1");
    assert_eq!(instance_names(&config), [("default", vec!["f1", "f2"])]);
    assert!(
        !rewritten.contains("analytics") && !rewritten.contains("read_pool"),
        "{rewritten}"
    );
    // The comment line above `read_pool` was about it and leaves with it.
    assert!(rewritten.contains("[routing]\nfallback = \"leader\"\n"), "{rewritten}");
    assert_eq!(config.routing.read_pool.as_deref(), Some("default"));
}

#[test]
fn promoting_the_last_follower_leaves_no_pools() {
    let text = "[leader]\nhost = \"db\"\nport = 5432\n\n[[users]]\nname = \"app\"\npassword = \"x\"\n\n\
                [[follower_pools]]\nname = \"solo\"\ninstances = [{ name = \"s1\", host = \"db2\", port = 5433 }]\n\n\
                [routing]\nread_pool = \"solo\"\n";
    let rewritten = promote(text, "s1");
    let config = parse(&rewritten);
    assert!(config.follower_pools.is_empty());
    assert_eq!(config.routing.read_pool, None);
    assert!(!rewritten.contains("follower_pools"), "{rewritten}");
}

#[test]
fn a_leader_without_a_name_gets_one() {
    let text = "[leader]\nhost = \"db\"\nport = 5432\n\n[[users]]\nname = \"app\"\npassword = \"x\"\n\n\
                [[follower_pools]]\nname = \"default\"\ninstances = [{ name = \"f1\", host = \"db2\", port = 5433 }, \
                { name = \"f2\", host = \"db3\", port = 5434 }]\n";
    let rewritten = promote(text, "f2");
    assert!(
        rewritten.starts_with("[leader]\nhost = \"db3\"\nport = 5434\nname = \"f2\"\n"),
        "{rewritten}"
    );
    assert_eq!(parse(&rewritten).leader.name, "f2");
}

#[test]
fn inline_entries_keep_the_lines_around_them() {
    // A comment on the line before the entries stays; the entry's own comment lines go.
    let canonical = "\n  { name = \"f1\", host = \"a\", port = 1 },  # f1's line\n  # about f2\n  \
                     { name = \"f2\", host = \"b\", port = 2 },\n  # about f3\n  { name = \"f3\", host = \"c\", port = 3 },\n";
    assert_eq!(
        instances_after_promoting(&format!("  # the replicas{canonical}"), "f1"),
        "  # the replicas\n  # about f2\n  { name = \"f2\", host = \"b\", port = 2 },\n  \
         # about f3\n  { name = \"f3\", host = \"c\", port = 3 },\n"
    );
    assert_eq!(
        instances_after_promoting(canonical, "f2"),
        "\n  { name = \"f1\", host = \"a\", port = 1 },  # f1's line\n  # about f3\n  \
         { name = \"f3\", host = \"c\", port = 3 },\n"
    );
    assert_eq!(
        instances_after_promoting(canonical, "f3"),
        "\n  { name = \"f1\", host = \"a\", port = 1 },  # f1's line\n  # about f2\n  \
         { name = \"f2\", host = \"b\", port = 2 },\n"
    );
    // Without a trailing comma the last entry's comma goes, not the comment after the new last entry.
    let no_trailing_comma = "\n  { name = \"f1\", host = \"a\", port = 1 },  # f1's line\n  \
                             { name = \"f2\", host = \"b\", port = 2 }  # f2's line\n  # end\n";
    assert_eq!(
        instances_after_promoting(no_trailing_comma, "f2"),
        "\n  { name = \"f1\", host = \"a\", port = 1 }  # f1's line\n  # end\n"
    );
    // All on one line.
    let one_line = " { name = \"f1\", host = \"a\", port = 1 }, { name = \"f2\", host = \"b\", port = 2 } ";
    assert_eq!(
        instances_after_promoting(one_line, "f1"),
        " { name = \"f2\", host = \"b\", port = 2 } "
    );
    assert_eq!(
        instances_after_promoting(one_line, "f2"),
        " { name = \"f1\", host = \"a\", port = 1 } "
    );
}

#[test]
fn an_unknown_follower_is_an_error() {
    for name in ["f9", "leader", "default"] {
        let error = promote_in_text(EXAMPLE, "proxy.toml", name).unwrap_err();
        assert!(
            matches!(&error, RewriteError::NoSuchFollower { name: n, .. } if n == name),
            "{error}"
        );
    }
}

#[test]
fn promoting_twice_finds_no_such_follower() {
    let once = promote(EXAMPLE, "f1");
    let error = promote_in_text(&once, "proxy.toml", "f1").unwrap_err();
    assert!(matches!(error, RewriteError::NoSuchFollower { .. }), "{error}");
}

#[test]
fn text_that_is_not_toml_is_an_error() {
    let error = promote_in_text("[leader\nhost = 1", "proxy.toml", "f1").unwrap_err();
    assert!(matches!(error, RewriteError::NotToml { .. }), "{error}");
    assert!(error.to_string().starts_with("proxy.toml: not valid TOML"), "{error}");
}

#[test]
fn a_follower_without_a_port_is_an_error() {
    let text = EXAMPLE.replace(", port = 15433", "");
    let error = promote_in_text(&text, "proxy.toml", "f1").unwrap_err();
    assert!(
        matches!(error, RewriteError::IncompleteFollower { key: "port", .. }),
        "{error}"
    );
}

#[test]
fn a_result_config_parse_refuses_is_an_error() {
    let text = EXAMPLE.replace("max_connections = 20 ", "max_connectons = 20  ");
    let error = promote_in_text(&text, "proxy.toml", "f1").unwrap_err();
    assert!(matches!(error, RewriteError::Invalid { .. }), "{error}");
    assert!(
        error.to_string().contains("proxy.toml:") && error.to_string().contains("max_connectons"),
        "{error}"
    );
}

/// A fresh directory under the system temp dir, removed when dropped (also when a test fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pgsplit-rewrite-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn write_promotion_replaces_the_file_and_keeps_its_mode() {
    let scratch = Scratch::new("write");
    let path = scratch.path().join("proxy.toml");
    fs::write(&path, EXAMPLE).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();

    write_promotion(&path, "f1").unwrap();
    let written = fs::read_to_string(&path).unwrap();
    assert_eq!(written, promote(EXAMPLE, "f1"));
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
    assert_eq!(
        dir_entries(scratch.path()),
        ["proxy.toml"],
        "no temp file is left behind"
    );

    // A second promotion of the same name fails and leaves the file as it was.
    let error = write_promotion(&path, "f1").unwrap_err();
    assert!(matches!(error, RewriteError::NoSuchFollower { .. }), "{error}");
    assert_eq!(fs::read_to_string(&path).unwrap(), written);
    assert_eq!(dir_entries(scratch.path()), ["proxy.toml"]);
}

#[test]
fn write_promotion_of_a_missing_file_names_it() {
    let scratch = Scratch::new("missing");
    let path = scratch.path().join("absent.toml");
    let error = write_promotion(&path, "f1").unwrap_err();
    assert!(matches!(error, RewriteError::Io { .. }), "{error}");
    assert!(error.to_string().contains("absent.toml"), "{error}");
}
