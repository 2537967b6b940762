//! Property-based fuzzing of config parsing: any text, and TOML made of Beacon's own keys with
//! values of every type, gives a validated config or field-named errors — never a panic.
//! `PROPTEST_CASES` sets the number of cases.

use beacon_config::{Config, ConfigError};
use proptest::prelude::*;

const KEYS: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "listen",
            "max_body_bytes",
            "upstream_timeout_secs",
            "connect_timeout_secs",
            "shutdown_grace_secs",
            "workers",
            "header_read_timeout_secs",
            "body_read_timeout_secs",
            "idle_timeout_secs",
            "upstream_idle_timeout_secs",
            "max_connections",
            "drain_delay_secs",
        ],
    ),
    (
        "admin",
        &["token", "max_failed_auth", "failed_auth_window_secs"],
    ),
    ("store", &["url"]),
    (
        "broadcast",
        &[
            "allow_private_destinations",
            "queue_capacity",
            "queue_max_bytes",
            "destination_queue_max_bytes",
            "max_content_bytes",
            "max_metadata_value_bytes",
            "max_metadata_bytes",
            "max_metadata_keys",
            "flush_interval_secs",
            "export_timeout_secs",
            "shutdown_deadline_secs",
        ],
    ),
];

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-z0-9:/.${}_-]{0,30}".prop_map(|s| format!("{s:?}")),
        Just("[1, 2]".to_string()),
        Just("{ a = 1 }".to_string()),
    ]
}

fn beacon_toml() -> impl Strategy<Value = String> {
    let line = (0..KEYS.len(), any::<prop::sample::Index>(), toml_value());
    proptest::collection::vec(line, 0..20).prop_map(|lines| {
        let mut out = String::new();
        for (section, (table, keys)) in KEYS.iter().enumerate() {
            out.push_str(&format!("[{table}]\n"));
            for (s, key, value) in &lines {
                if *s == section {
                    out.push_str(&format!("{} = {value}\n", keys[key.index(keys.len())]));
                }
            }
        }
        out
    })
}

fn check(text: &str) {
    match Config::parse(text, "fuzz.toml", &|_| None) {
        Ok(c) => {
            assert!(c.server.max_body_bytes > 0 && c.broadcast.queue_max_bytes > 0);
            assert!(c.server.header_read_timeout.as_secs_f64() > 0.0);
        }
        Err(ConfigError::Invalid { errors, .. }) => {
            assert!(!errors.is_empty());
            for e in errors {
                assert!(!e.field.is_empty() && !e.message.is_empty(), "{e:?}");
            }
        }
        Err(ConfigError::Syntax { message, .. }) => assert!(!message.is_empty()),
        Err(ConfigError::Read { .. }) => unreachable!("no file is read"),
    }
}

proptest! {
    #[test]
    fn any_text_is_a_config_or_an_error(text in ".{0,400}") {
        check(&text);
    }

    #[test]
    fn beacons_keys_with_any_values_validate_or_name_the_field(text in beacon_toml()) {
        check(&text);
    }
}
