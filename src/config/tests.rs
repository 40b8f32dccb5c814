//! Tests of the config module as a whole: defaults, every validation rule (with the position it reports), and the
//! example files (SPEC §2 and the root proxy.toml) loading as written.

use std::env::VarError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// The smallest valid file: a leader and a user. Rule tests append to it.
const MINIMAL: &str = r#"
[leader]
host = "db.internal"
port = 5432

[[users]]
name = "app"
password = "secret"
"#;

fn parse_with_env(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let lookup = |name: &str| {
        env.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_string())
            .ok_or(VarError::NotPresent)
    };
    Config::from_text(
        text,
        "conf/t.toml",
        Path::new("/etc/pgsplit"),
        &lookup,
        WorkerCount::available_cpus(),
    )
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    parse_with_env(text, &[])
}

fn minimal_plus(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

fn problems(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(errors) => errors.errors,
    }
}

/// Where an error about `snippet` should point: the value after `= ` for `key = value`, else the snippet itself
/// (a table header or an inline table).
fn position_of(text: &str, snippet: &str) -> (usize, usize) {
    let start = text.find(snippet).unwrap_or_else(|| panic!("{snippet:?} not in text"));
    let offset = match snippet.find("= ") {
        Some(eq) if !snippet.starts_with(['[', '{']) => start + eq + 2,
        _ => start,
    };
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// Asserts that some problem is reported at `snippet` and its message contains `needle`.
fn expect(text: &str, snippet: &str, needle: &str) {
    let (line, col) = position_of(text, snippet);
    let found = problems(text);
    assert!(
        found
            .iter()
            .any(|error| error.line == line && error.col == col && error.message.contains(needle)),
        "expected {line}:{col} containing {needle:?}, got:\n{}",
        ConfigErrors { errors: found.clone() }
    );
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn minimal_config_gets_every_default() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.proxy.listen, addr("127.0.0.1:6432"));
    assert_eq!(config.proxy.admin_listen, addr("127.0.0.1:9930"));
    assert_eq!(config.proxy.pool_mode, PoolMode::Transaction);
    assert_eq!(config.proxy.max_client_connections, 5000);
    assert_eq!(config.proxy.max_message_size, 64 * 1024 * 1024);
    assert_eq!(config.proxy.admin_token, None);
    assert_eq!(config.proxy.tls, None);
    assert_eq!(config.server.tls, ServerTlsMode::Prefer);
    assert_eq!(config.server.connect_timeout, Duration::from_secs(5));
    assert_eq!(config.server.checkout_timeout, Duration::from_secs(5));
    assert_eq!(
        config.users,
        vec![UserConfig {
            name: "app".into(),
            password: "secret".into(),
            auth: AuthMethod::ScramSha256
        }]
    );
    assert_eq!(
        config.leader,
        LeaderConfig {
            name: "leader".into(),
            host: "db.internal".into(),
            port: 5432,
            max_connections: 20
        }
    );
    assert!(config.follower_pools.is_empty());
    assert_eq!(
        config.routing,
        RoutingConfig {
            read_pool: None,
            read_your_writes: true,
            read_your_writes_wait: Duration::from_millis(50),
            fallback: Fallback::Leader,
            follow_promotions: true,
            write_functions: vec![],
            read_only_functions: vec![],
        }
    );
    assert_eq!(config.health.interval, Duration::from_millis(250));
    assert_eq!(config.health.timeout, Duration::from_secs(2));
}

#[test]
fn follower_pool_and_instance_defaults() {
    let config = parse(&minimal_plus(
        "[[follower_pools]]\nname = \"default\"\ninstances = [ { name = \"f1\", host = \"h\", port = 1 } ]\n",
    ))
    .unwrap();
    let pool = &config.follower_pools[0];
    assert_eq!(pool.listen, None);
    assert_eq!(pool.max_connections_per_instance, 20);
    assert_eq!(pool.max_lag_bytes, 16 * 1024 * 1024);
    assert_eq!(pool.max_lag_seconds, Duration::from_secs(5));
    assert_eq!(
        pool.instances,
        vec![FollowerConfig {
            name: "f1".into(),
            host: "h".into(),
            port: 1,
            weight: 1
        }]
    );
}

/// SPEC.md's canonical example, kept in the repository (`tests/data/spec_example.toml`).
const SPEC_EXAMPLE: &str = include_str!("../../tests/data/spec_example.toml");

#[test]
fn spec_example_is_accepted_as_written() {
    let config = parse(SPEC_EXAMPLE).unwrap();
    assert_eq!(config.follower_pools.len(), 2);
    assert_eq!(config.follower_pools[0].instances[1].weight, 2);
    assert_eq!(config.follower_pools[1].listen, Some(addr("127.0.0.1:6433")));
    assert_eq!(config.routing.read_pool.as_deref(), Some("default"));
    assert_eq!(
        config.summary(),
        r#"leader "leader" at 127.0.0.1:15432, 2 follower pools, 3 follower instances, 1 user"#
    );
}

#[test]
fn root_proxy_toml_is_the_demo_cluster() {
    let config = Config::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml"))).unwrap();
    assert_eq!((config.leader.host.as_str(), config.leader.port), ("127.0.0.1", 15432));
    assert_eq!(config.follower_pools.len(), 1);
    let pool = &config.follower_pools[0];
    assert_eq!(pool.name, "default");
    let instances: Vec<(&str, u16, u32)> = pool
        .instances
        .iter()
        .map(|i| (i.name.as_str(), i.port, i.weight))
        .collect();
    assert_eq!(instances, vec![("f1", 15433, 1), ("f2", 15434, 1)]);
    assert_eq!(
        config.users,
        vec![UserConfig {
            name: "app".into(),
            password: "app".into(),
            auth: AuthMethod::ScramSha256
        }]
    );
    assert_eq!(config.routing.read_pool.as_deref(), Some("default"));
}

#[test]
fn unreadable_file_is_a_config_error_without_position() {
    let errors = Config::load(Path::new("/nonexistent/pgsplit/proxy.toml")).unwrap_err();
    assert_eq!(errors.errors.len(), 1);
    assert_eq!(errors.errors[0].line, 0);
    assert!(
        errors
            .to_string()
            .starts_with("/nonexistent/pgsplit/proxy.toml: cannot read"),
        "{errors}"
    );
}

#[test]
fn read_pool_resolves_to_named_then_default_then_first() {
    let pool = |name: &str, port: u16| {
        format!(
            "[[follower_pools]]\nname = \"{name}\"\ninstances = [ {{ name = \"{name}-1\", host = \"h\", port = {port} }} ]\n"
        )
    };
    let two = format!("{}{}", pool("analytics", 1), pool("default", 2));
    let resolved = |text: &str| parse(&minimal_plus(text)).unwrap().routing.read_pool;
    assert_eq!(resolved(&two), Some("default".into()));
    assert_eq!(
        resolved(&format!("{two}[routing]\nread_pool = \"analytics\"\n")),
        Some("analytics".into())
    );
    assert_eq!(
        resolved(&format!("{}{}", pool("reports", 1), pool("batch", 2))),
        Some("reports".into())
    );
    assert_eq!(resolved(""), None);
}

#[test]
fn unknown_read_pool_is_reported_with_the_known_ones() {
    let text = minimal_plus("[[follower_pools]]\nname = \"default\"\n\n[routing]\nread_pool = \"analytic\"\n");
    expect(&text, "read_pool = \"analytic\"", "defined pools: \"default\"");
    expect(
        &minimal_plus("[routing]\nread_pool = \"default\"\n"),
        "read_pool = ",
        "no follower pools are defined",
    );
}

#[test]
fn bare_integer_duration_names_the_allowed_units() {
    let text = minimal_plus("[health]\ninterval = 250\n");
    expect(&text, "interval = 250", "us, ms, s, min, h, d");
}

#[test]
fn read_your_writes_wait_is_a_duration_that_may_be_zero() {
    let config = parse(&minimal_plus("[routing]\nread_your_writes_wait = \"0s\"\n")).unwrap();
    assert_eq!(config.routing.read_your_writes_wait, Duration::ZERO);
    let text = minimal_plus("[routing]\nread_your_writes_wait = 50\n");
    expect(&text, "read_your_writes_wait = 50", "us, ms, s, min, h, d");
}

#[test]
fn durations_and_sizes_accept_postgres_units() {
    let config = parse(&minimal_plus(
        "[server]\nconnect_timeout = \"1min\"\ncheckout_timeout = \"0s\"\n\n[health]\ninterval = \"100 ms\"\n\
         timeout = \"2s\"\n\n[proxy]\nmax_message_size = 2048\n",
    ))
    .unwrap();
    assert_eq!(config.server.connect_timeout, Duration::from_secs(60));
    assert_eq!(config.server.checkout_timeout, Duration::ZERO);
    assert_eq!(config.health.interval, Duration::from_millis(100));
    assert_eq!(config.proxy.max_message_size, 2048);
}

#[test]
fn bad_units_are_reported_at_the_value() {
    expect(
        &minimal_plus("[health]\ntimeout = \"2sec\"\n"),
        "timeout = ",
        "unknown duration unit \"sec\"",
    );
    expect(
        &minimal_plus("[proxy]\nmax_message_size = \"64mb\"\n"),
        "max_message_size = ",
        "unknown size unit",
    );
    expect(
        &minimal_plus("[proxy]\nmax_message_size = -1\n"),
        "max_message_size = ",
        "negative",
    );
}

#[test]
fn zero_health_durations_are_rejected() {
    expect(
        &minimal_plus("[health]\ninterval = \"0ms\"\n"),
        "interval = ",
        "greater than zero",
    );
    expect(
        &minimal_plus("[health]\ntimeout = \"0s\"\n"),
        "timeout = ",
        "greater than zero",
    );
}

#[test]
fn workers_default_to_half_the_cpus_this_machine_gives() {
    let expected = WorkerCount::auto(WorkerCount::available_cpus());
    assert_eq!(parse(MINIMAL).expect("minimal config").proxy.workers, expected);
    let auto = parse(&minimal_plus("[proxy]\nworkers = \"auto\"\n")).expect("auto");
    assert_eq!(auto.proxy.workers, expected, "\"auto\" is the same as no key");
    assert_eq!(expected.from_cpus, Some(WorkerCount::available_cpus()));
}

#[test]
fn automatic_workers_are_half_the_cpus_at_least_one_at_most_256() {
    let threads = |cpus| WorkerCount::auto(cpus).threads;
    assert_eq!(
        [1, 2, 3, 4, 16, 17, 512, 4096].map(threads),
        [1, 1, 1, 2, 8, 8, 256, 256]
    );
    let no_env = |_: &str| Err(VarError::NotPresent);
    let sixteen = Config::from_text(MINIMAL, "t.toml", Path::new("/etc"), &no_env, 16).expect("16 CPUs");
    assert_eq!(
        sixteen.proxy.workers,
        WorkerCount {
            threads: 8,
            from_cpus: Some(16)
        }
    );
}

#[test]
fn workers_written_as_a_number_are_bounded() {
    let four = parse(&minimal_plus("[proxy]\nworkers = 4\n")).expect("4 workers");
    assert_eq!(
        four.proxy.workers,
        WorkerCount {
            threads: 4,
            from_cpus: None
        }
    );
    expect(
        &minimal_plus("[proxy]\nworkers = 0\n"),
        "workers = 0",
        "at least 1, got 0",
    );
    expect(
        &minimal_plus("[proxy]\nworkers = 300\n"),
        "workers = 300",
        "at most 256, got 300",
    );
    expect(
        &minimal_plus("[proxy]\nworkers = \"many\"\n"),
        "workers = ",
        "proxy.workers must be a number of threads or \"auto\", got \"many\"",
    );
    expect(
        &minimal_plus("[proxy]\nworkers = 1.5\n"),
        "workers = ",
        "expected a number of threads, or \"auto\"",
    );
}

#[test]
fn max_message_size_must_be_at_least_1kb() {
    expect(
        &minimal_plus("[proxy]\nmax_message_size = \"1023B\"\n"),
        "max_message_size = ",
        "at least 1kB",
    );
    assert!(parse(&minimal_plus("[proxy]\nmax_message_size = \"1kB\"\n")).is_ok());
}

#[test]
fn follower_pool_names_follow_the_naming_rule() {
    let with_name = |name: &str| minimal_plus(&format!("[[follower_pools]]\nname = \"{name}\"\n"));
    for good in ["abc", "read-replicas-2", "A1b", &"a".repeat(32)] {
        assert!(parse(&with_name(good)).is_ok(), "{good:?} should be accepted");
    }
    for (bad, why) in [
        ("ab", "3 to 32 characters"),
        (&"a".repeat(33), "3 to 32 characters"),
        ("1abc", "start with a letter"),
        ("-abc", "start with a letter"),
        ("ab_c", "letters, digits and hyphens"),
        ("abé", "letters, digits and hyphens"),
        ("abc-", "end with a hyphen"),
        ("ab--c", "doubled"),
    ] {
        let text = with_name(bad);
        expect(&text, &format!("name = \"{bad}\""), why);
    }
}

#[test]
fn at_most_five_follower_pools() {
    let mut text = MINIMAL.to_owned();
    for name in ["one", "two", "three", "four", "five", "six"] {
        text.push_str(&format!("\n[[follower_pools]] # {name}\nname = \"{name}\"\n"));
    }
    expect(&text, "[[follower_pools]] # six", "at most 5");
    assert_eq!(problems(&text).len(), 1);
}

#[test]
fn at_most_thirteen_follower_instances_in_all() {
    let instances = |from: usize, to: usize| {
        (from..to)
            .map(|i| format!("  {{ name = \"f{i}\", host = \"h\", port = {} }},\n", 6000 + i))
            .collect::<String>()
    };
    let text = minimal_plus(&format!(
        "[[follower_pools]]\nname = \"one\"\ninstances = [\n{}]\n[[follower_pools]]\nname = \"two\"\ninstances = [\n{}]\n",
        instances(0, 7),
        instances(7, 14)
    ));
    expect(&text, "{ name = \"f13\"", "14 in all, at most 13");
    assert_eq!(problems(&text).len(), 1);
}

#[test]
fn instance_names_are_unique_across_leader_and_followers() {
    let text = minimal_plus(
        "[[follower_pools]]\nname = \"default\"\ninstances = [ { name = \"leader\", host = \"h\", port = 1 } ]\n\
         [[follower_pools]]\nname = \"other\"\ninstances = [\n  { name = \"f1\", host = \"h\", port = 2 },\n  \
         { name = \"f1\", host = \"h\", port = 3 },\n]\n",
    );
    expect(&text, "name = \"leader\"", "already used by the leader");
    expect(
        &text,
        "name = \"f1\", host = \"h\", port = 3",
        "\"f1\" is already used by follower pool \"other\"",
    );
    assert_eq!(problems(&text).len(), 2);
}

#[test]
fn empty_instance_names_are_rejected() {
    let text = minimal_plus(
        "[[follower_pools]]\nname = \"default\"\ninstances = [ { name = \"\", host = \"h\", port = 1 } ]\n",
    );
    expect(&text, "name = \"\"", "must not be empty");
    assert_eq!(problems(&text).len(), 1);
    expect(
        &MINIMAL.replace("[leader]\n", "[leader]\nname = \"\"\n"),
        "name = \"\"",
        "must not be empty",
    );
}

#[test]
fn pool_names_are_unique() {
    let text = minimal_plus("[[follower_pools]]\nname = \"default\"\n[[follower_pools]]\nname = \"default\" # again\n");
    expect(&text, "name = \"default\" # again", "defined twice");
}

#[test]
fn user_names_are_unique_and_one_user_is_required() {
    let text = minimal_plus("[[users]]\nname = \"app\" # again\npassword = \"x\"\n");
    expect(&text, "name = \"app\" # again", "defined twice");
    let no_users = "[leader]\nhost = \"h\"\nport = 1\n";
    let errors = parse(no_users).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "conf/t.toml: no users: add at least one [[users]] table with a `name` and a `password` (or `password_env`)"
    );
}

#[test]
fn missing_leader_and_its_address_are_reported() {
    let errors = parse("[[users]]\nname = \"app\"\npassword = \"x\"\n").unwrap_err();
    assert!(
        errors.to_string().starts_with("conf/t.toml: missing [leader] table"),
        "{errors}"
    );
    let text = "[leader]\nname = \"primary\"\n\n[[users]]\nname = \"a\"\npassword = \"x\"\n";
    expect(text, "[leader]", "missing `host` in the leader");
    expect(text, "[leader]", "missing `port` in the leader");
}

#[test]
fn counts_and_weights_must_be_at_least_one() {
    let text = minimal_plus(
        "[proxy]\nmax_client_connections = 0\n\n[[follower_pools]]\nname = \"default\"\n\
         max_connections_per_instance = 0\ninstances = [ { name = \"f1\", host = \"h\", port = 1, weight = 0 } ]\n",
    );
    expect(&text, "max_client_connections = 0", "at least 1, got 0");
    expect(&text, "max_connections_per_instance = 0", "at least 1, got 0");
    expect(&text, "weight = 0", "weight must be at least 1");
    let leader = MINIMAL.replace("port = 5432\n", "port = 5432\nmax_connections = -3\n");
    expect(&leader, "max_connections = -3", "at least 1, got -3");
    let huge_weight = "instances = [ { name = \"f1\", host = \"h\", port = 1, weight = 5000000000 } ]\n";
    expect(
        &minimal_plus(&format!("[[follower_pools]]\nname = \"big\"\n{huge_weight}")),
        "weight = ",
        "too large",
    );
}

#[test]
fn ports_must_be_in_range_and_hosts_present() {
    let text = minimal_plus(
        "[[follower_pools]]\nname = \"default\"\ninstances = [\n  { name = \"f1\", host = \"h\", port = 0 },\n  \
         { name = \"f2\", host = \"h\", port = 70000 },\n  { name = \"f3\", port = 3 },\n  { name = \"f4\", host = \"\", port = 4 },\n]\n",
    );
    expect(&text, "port = 0", "from 1 to 65535, got 0");
    expect(&text, "port = 70000", "from 1 to 65535, got 70000");
    expect(&text, "{ name = \"f3\"", "missing `host` in follower \"f3\"");
    expect(&text, "host = \"\"", "must not be empty");
}

#[test]
fn listen_addresses_must_be_distinct() {
    let text = minimal_plus(
        "[proxy]\nadmin_listen = \"0.0.0.0:9000\"\nadmin_token = \"t\"\n\n[[follower_pools]]\nname = \"one\"\nlisten = \"127.0.0.1:6432\"\n\
         [[follower_pools]]\nname = \"two\"\nlisten = \"127.0.0.1:9000\"\n[[follower_pools]]\nname = \"three\"\n\
         listen = \"127.0.0.1:7000\"\n[[follower_pools]]\nname = \"four\"\nlisten = \"127.0.0.1:7000\" # again\n",
    );
    expect(
        &text,
        "listen = \"127.0.0.1:6432\"",
        "collides with proxy.listen 127.0.0.1:6432",
    );
    expect(
        &text,
        "listen = \"127.0.0.1:9000\"",
        "collides with proxy.admin_listen 0.0.0.0:9000",
    );
    expect(
        &text,
        "listen = \"127.0.0.1:7000\" # again",
        "collides with follower pool \"three\" listen",
    );
    assert_eq!(problems(&text).len(), 3);
}

#[test]
fn ephemeral_listen_ports_never_collide() {
    let text = minimal_plus(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[[follower_pools]]\nname = \"one\"\n\
         listen = \"127.0.0.1:0\"\n",
    );
    assert!(parse(&text).is_ok());
}

#[test]
fn listen_must_be_ip_and_port() {
    expect(
        &minimal_plus("[proxy]\nlisten = \"localhost:6432\"\n"),
        "listen = ",
        "not an IP address and port",
    );
}

#[test]
fn function_lists_reject_empty_names_and_overlap() {
    let text = minimal_plus(
        "[routing]\nwrite_functions = [\"audit_log\", \"\"]\nread_only_functions = [\"report\", \"Audit_Log\"]\n",
    );
    let found = problems(&text);
    assert_eq!(found.len(), 2, "{}", ConfigErrors { errors: found.clone() });
    let (line, _) = position_of(&text, "write_functions = ");
    assert!(
        found
            .iter()
            .any(|e| e.line == line && e.message.contains("must not be empty"))
    );
    let (line, col) = position_of(&text, "\"Audit_Log\"");
    assert!(
        found
            .iter()
            .any(|e| (e.line, e.col) == (line, col) && e.message.contains("in both"))
    );
}

#[test]
fn passwords_come_from_exactly_one_place() {
    let user = |fields: &str| format!("[leader]\nhost = \"h\"\nport = 1\n\n[[users]]\nname = \"app\"\n{fields}");
    let both = user("password = \"x\"\npassword_env = \"APP_PW\"\n");
    expect(&both, "password_env = ", "not both");
    expect(&user(""), "[[users]]", "has no password");
    let from_env = parse_with_env(&user("password_env = \"APP_PW\"\n"), &[("APP_PW", "hunter2")]).unwrap();
    assert_eq!(from_env.users[0].password.expose(), "hunter2");
    expect(
        &user("password_env = \"APP_PW\"\n"),
        "password_env = ",
        "APP_PW is not set",
    );
    expect(
        &user("password_env = \"A=B\"\n"),
        "password_env = ",
        "not an environment variable name",
    );
    let empty = parse_with_env(&user("password_env = \"APP_PW\"\n"), &[("APP_PW", "")]).unwrap_err();
    assert!(empty.to_string().contains("set but empty"), "{empty}");
}

#[test]
fn auth_methods_parse_and_unknown_ones_are_serde_errors() {
    let with_auth = |auth: &str| {
        MINIMAL.replace(
            "password = \"secret\"\n",
            &format!("password = \"s\"\nauth = \"{auth}\"\n"),
        )
    };
    assert_eq!(parse(&with_auth("md5")).unwrap().users[0].auth, AuthMethod::Md5);
    assert_eq!(parse(&with_auth("trust")).unwrap().users[0].auth, AuthMethod::Trust);
    assert_eq!(
        parse(&with_auth("scram-sha-256")).unwrap().users[0].auth,
        AuthMethod::ScramSha256
    );
    let text = with_auth("password");
    expect(&text, "auth = ", "unknown variant `password`");
}

#[test]
fn client_tls_needs_cert_and_key_unless_disabled() {
    let tls = |body: &str| minimal_plus(&format!("[proxy.tls]\n{body}"));
    expect(
        &tls(""),
        "[proxy.tls]",
        "mode \"prefer\" needs both `cert` and `key` (missing: cert, key)",
    );
    expect(
        &tls("mode = \"require\"\ncert = \"a.crt\"\n"),
        "mode = ",
        "(missing: key)",
    );
    let disabled = parse(&tls("mode = \"disable\"\n")).unwrap();
    assert_eq!(
        disabled.proxy.tls,
        Some(ClientTlsConfig {
            mode: ClientTlsMode::Disable,
            cert: None,
            key: None
        })
    );
}

#[test]
fn tls_paths_are_resolved_against_the_config_directory() {
    let text = minimal_plus("[proxy.tls]\nmode = \"require\"\ncert = \"tls/server.crt\"\nkey = \"/abs/server.key\"\n");
    let tls = parse(&text).unwrap().proxy.tls.unwrap();
    assert_eq!(tls.cert, Some(PathBuf::from("/etc/pgsplit/tls/server.crt")));
    assert_eq!(tls.key, Some(PathBuf::from("/abs/server.key")));
    let via_parse = Config::parse(&text, "/srv/pg/proxy.toml").unwrap().proxy.tls.unwrap();
    assert_eq!(via_parse.cert, Some(PathBuf::from("/srv/pg/tls/server.crt")));
}

#[test]
fn admin_token_must_not_be_empty() {
    expect(
        &minimal_plus("[proxy]\nadmin_token = \"\"\n"),
        "admin_token = ",
        "must not be empty",
    );
}

#[test]
fn unknown_keys_and_syntax_errors_carry_positions() {
    let unknown = minimal_plus("[health]\ninterval = \"1s\"\nintervall = \"2s\"\n");
    expect(&unknown, "intervall =", "unknown field `intervall`");
    let syntax = "[leader\nhost = \"h\"\n";
    let error = &problems(syntax)[0];
    assert_eq!((error.line, error.col), (1, 8));
    assert!(!error.message.contains('\n'));
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = "[proxy]\nmax_client_connections = 0\n\n[leader]\nhost = \"h\"\nport = 0\n\n[[follower_pools]]\n\
                name = \"x\"\n\n[health]\ninterval = 5\n";
    let errors = parse(text).unwrap_err();
    let lines: Vec<String> = errors.errors.iter().map(|e| format!("{}:{}", e.line, e.col)).collect();
    assert_eq!(lines, vec!["0:0", "2:26", "6:8", "9:8", "12:12"], "{errors}");
}

#[test]
fn debug_output_never_shows_passwords() {
    let config = Config::parse(
        "[[users]]\nname = \"app\"\npassword = \"s3cret\"\n[leader]\nhost = \"h\"\nport = 1\n",
        "t.toml",
    )
    .unwrap();
    let printed = format!("{config:?}");
    assert!(printed.contains("app") && !printed.contains("s3cret"), "{printed}");
}

#[test]
fn login_limits_and_keepalives_have_defaults_and_are_checked() {
    let config = parse(MINIMAL).expect("minimal config");
    assert_eq!(config.proxy.login_timeout, Duration::from_secs(60));
    assert_eq!(config.proxy.max_pending_logins, 1000);
    assert_eq!(config.proxy.max_prepared_statements, 1000);
    assert_eq!(config.tcp.keepalive_idle, Duration::from_secs(60));
    assert_eq!(config.tcp.keepalive_interval, Duration::from_secs(10));
    assert_eq!(config.tcp.keepalive_count, 6);
    assert_eq!(config.tcp.user_timeout, Duration::from_secs(60));
    let set = parse(&minimal_plus(
        "[proxy]\nlogin_timeout = \"5s\"\nmax_pending_logins = 10\nmax_prepared_statements = 7\n\n\
         [tcp]\nkeepalive_idle = \"1s\"\nkeepalive_interval = \"2s\"\nkeepalive_count = 3\nuser_timeout = \"4s\"\n",
    ))
    .expect("valid");
    assert_eq!(set.proxy.login_timeout, Duration::from_secs(5));
    assert_eq!(
        (set.proxy.max_pending_logins, set.proxy.max_prepared_statements),
        (10, 7)
    );
    assert_eq!(
        (
            set.tcp.keepalive_idle,
            set.tcp.keepalive_interval,
            set.tcp.keepalive_count,
            set.tcp.user_timeout
        ),
        (
            Duration::from_secs(1),
            Duration::from_secs(2),
            3,
            Duration::from_secs(4)
        )
    );
    expect(
        &minimal_plus("[proxy]\nlogin_timeout = \"0s\"\n"),
        "login_timeout = ",
        "greater than zero",
    );
    expect(
        &minimal_plus("[tcp]\nkeepalive_count = 0\n"),
        "keepalive_count = 0",
        "at least 1",
    );
    expect(&minimal_plus("[tcp]\nkeepalives = 1\n"), "keepalives", "unknown field");
}

#[test]
fn server_tls_keys_have_an_effect_or_are_refused() {
    let config = parse(&minimal_plus(
        "[server]\ntls = \"verify-ca\"\ntls_ca = \"ca.crt\"\ntls_cert = \"c.crt\"\ntls_key = \"c.key\"\n\
         auth_methods = [\"scram-sha-256\", \"md5\"]\n",
    ))
    .unwrap();
    assert_eq!(config.server.tls, ServerTlsMode::VerifyCa);
    assert_eq!(config.server.tls_ca, Some(PathBuf::from("/etc/pgsplit/ca.crt")));
    assert_eq!(
        config.server.auth_methods,
        [ServerAuthMethod::ScramSha256, ServerAuthMethod::Md5]
    );
    assert_eq!(
        parse(MINIMAL).unwrap().server.auth_methods,
        [ServerAuthMethod::ScramSha256]
    );
    let text = minimal_plus("[server]\ntls = \"require\"\ntls_ca = \"ca.crt\"\n");
    expect(&text, "tls_ca = ", "used only with tls = \"verify-ca\"");
    let text = minimal_plus("[server]\ntls_cert = \"c.crt\"\n");
    expect(&text, "tls_cert = ", "go together");
    let text = minimal_plus("[server]\nauth_methods = []\n");
    expect(&text, "auth_methods = ", "at least one");
    assert!(!problems(&minimal_plus("[server]\nauth_methods = [\"kerberos\"]\n")).is_empty());
}

#[test]
fn the_control_role_is_its_own_and_falls_back_to_the_first_user() {
    let config = parse_with_env(
        &minimal_plus("[control]\nuser = \"steer\"\npassword_env = \"STEER_PW\"\n"),
        &[("STEER_PW", "s3cret")],
    )
    .unwrap();
    let (user, password) = config.control_login();
    assert_eq!((user, password.expose()), ("steer", "s3cret"));
    let minimal = parse(MINIMAL).unwrap();
    assert_eq!(minimal.control_login().0, "app");
    let text = minimal_plus("[control]\nuser = \"app\"\npassword = \"x\"\n");
    expect(&text, "user = \"app\"\npassword = \"x\"", "must not be a login clients");
    let text = minimal_plus("[control]\nuser = \"steer\"\n");
    expect(&text, "[control]", "[control] has no password");
}

#[test]
fn admin_token_rules() {
    let text = minimal_plus("[proxy]\nadmin_listen = \"[::]:9930\"\n");
    expect(&text, "admin_listen = ", "no proxy.admin_token");
    let text = minimal_plus("[proxy]\nadmin_token_for_reads = true\n");
    expect(&text, "admin_token_for_reads = ", "needs proxy.admin_token");
    let config = parse(&minimal_plus(
        "[proxy]\nadmin_listen = \"0.0.0.0:9930\"\nadmin_token = \"t0k\"\nadmin_token_for_reads = true\n",
    ))
    .unwrap();
    assert!(config.proxy.admin_token_for_reads);
    assert!(!format!("{config:?}").contains("t0k"));
}
