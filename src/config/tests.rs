use super::*;
use std::collections::HashMap;

fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::from_lookup(|k| map.get(k).cloned())
}

#[test]
fn defaults_need_nothing() {
    let c = config(&[]).unwrap();
    assert_eq!(c.server.port, 8080);
    assert_eq!(c.server.app_port, Some(3000));
    assert_eq!(c.server.explicit_ports, ExplicitPorts::default());
    let c = config(&[("BROADCAST_APP_PORT", "off"), ("BROADCAST_WEBSOCKET_PORT", "9000")]).unwrap();
    assert_eq!((c.server.app_port, c.server.port), (None, 9000));
    assert!(c.server.explicit_ports.websocket && c.server.explicit_ports.app);
    let c = config(&[]).unwrap();
    assert_eq!(c.server.host.to_string(), "127.0.0.1");
    assert_eq!(c.driver, Driver::Websocket);
    assert_eq!(c.websocket.max_message_size, 65536);
    assert!(c.server.cors_allowed_origins.is_empty(), "same origin only by default");
    assert!(c.validate_for_serving().is_ok());
    assert_eq!(c.server_url(), "http://127.0.0.1:8080");
}

#[test]
fn invalid_values_name_the_variable_and_value() {
    let cases = [
        ("BROADCAST_WEBSOCKET_PORT", "80x0"),
        ("BROADCAST_HOST", "localhost:80"),
        ("BROADCAST_WEBSOCKET_ENABLED", "maybe"),
        ("BROADCAST_PING_INTERVAL", "10 parsecs"),
        ("BROADCAST_PING_TIMEOUT", "0"),
        ("BROADCAST_SEND_QUEUE_SIZE", "0"),
        ("BROADCAST_MAX_MESSAGE_SIZE", "-1"),
        ("BROADCAST_DRIVER", "rabbit"),
        ("BROADCAST_APP_PORT", "thirty"),
    ];
    for (var, value) in cases {
        let err = config(&[(var, value)]).unwrap_err().to_string();
        assert!(err.contains(var) && err.contains(value), "{err}");
    }
}

#[test]
fn durations_accept_units() {
    assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
    assert_eq!(parse_duration("s"), None);
    assert_eq!(parse_duration("5h"), None);
}

#[test]
fn public_host_without_token_is_refused() {
    let c = config(&[("BROADCAST_HOST", "0.0.0.0")]).unwrap();
    assert!(c
        .validate_for_serving()
        .unwrap_err()
        .to_string()
        .contains("BROADCAST_API_TOKEN"));
    let c = config(&[("BROADCAST_HOST", "0.0.0.0"), ("BROADCAST_API_TOKEN", "s3cret")]).unwrap();
    let err = c.validate_for_serving().unwrap_err().to_string();
    assert!(err.contains("16") && err.contains("6 characters"), "{err}");
    let c = config(&[
        ("BROADCAST_HOST", "0.0.0.0"),
        ("BROADCAST_API_TOKEN", "0123456789abcdef"),
    ])
    .unwrap();
    assert!(c.validate_for_serving().is_ok());
    assert_eq!(c.server_url(), "http://127.0.0.1:8080");
}

#[test]
fn the_security_fingerprint_changes_with_keys_and_names_none() {
    let a = config(&[("JWT_SECRET", "first-key-0123456789")]).unwrap();
    let b = config(&[("JWT_SECRET", "other-key-0123456789")]).unwrap();
    let a2 = config(&[
        ("JWT_SECRET", "first-key-0123456789"),
        ("BROADCAST_PING_INTERVAL", "10s"),
    ])
    .unwrap();
    assert_eq!(
        a.security_fingerprint(),
        a2.security_fingerprint(),
        "other settings do not count"
    );
    assert_ne!(a.security_fingerprint(), b.security_fingerprint());
    assert_eq!(a.security_fingerprint().len(), 16);
    assert!(!a.security_fingerprint().contains("first"));
}

// Hardening round two (issue 21, defect 1): every secret that guards data, not only
// the API token, must be long enough off loopback.
#[test]
fn every_guarding_secret_is_long_enough_on_a_public_host() {
    let long = "0123456789abcdef";
    for (var, short) in [
        ("BROADCAST_DASHBOARD_TOKEN", "a"),
        ("JWT_SECRET", "short-key"),
        ("PUSHER_APP_SECRET", "secret"),
    ] {
        let mut vars = vec![
            ("BROADCAST_HOST", "0.0.0.0"),
            ("BROADCAST_API_TOKEN", long),
            (var, short),
        ];
        if var == "PUSHER_APP_SECRET" {
            vars.extend([("PUSHER_APP_ID", "app"), ("PUSHER_APP_KEY", "key")]);
        }
        let err = config(&vars).unwrap().validate_for_serving().unwrap_err().to_string();
        let named = if var == "PUSHER_APP_SECRET" {
            "Pusher app app"
        } else {
            var
        };
        assert!(err.contains(named) && err.contains("16"), "{var}: {err}");
        let local: Vec<_> = vars.iter().filter(|(k, _)| *k != "BROADCAST_HOST").copied().collect();
        assert!(
            config(&local).unwrap().validate_for_serving().is_ok(),
            "loopback: {var}"
        );
    }
}

#[test]
fn jwt_settings() {
    assert!(config(&[]).unwrap().auth.jwt.is_none());
    let c = config(&[("JWT_SECRET", "k"), ("JWT_LEEWAY", "0")]).unwrap();
    let jwt = c.auth.jwt.unwrap();
    assert_eq!(jwt.algorithm, Algorithm::HS256);
    assert_eq!(jwt.audience, "websocket");
    assert_eq!(jwt.leeway, Duration::ZERO);
    assert!(!format!("{jwt:?}").contains("\"k\""), "secret is redacted");
    let err = config(&[("JWT_SECRET", "k"), ("JWT_ALGORITHM", "none")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("JWT_ALGORITHM") && err.contains("none"), "{err}");
    let c = config(&[("BROADCAST_PUBLIC_CHANNELS", "lobby, kiosk.*")]).unwrap();
    assert_eq!(c.auth.public_channels, vec!["lobby", "kiosk.*"]);
}

#[test]
fn redis_enabled_agrees_with_the_driver_or_is_refused() {
    let driver = |vars: &[(&str, &str)]| config(vars).map(|c| c.driver).map_err(|e| e.to_string());
    assert_eq!(driver(&[("BROADCAST_REDIS_ENABLED", "true")]), Ok(Driver::Redis));
    assert_eq!(driver(&[("BROADCAST_REDIS_ENABLED", "false")]), Ok(Driver::Websocket));
    let doc_env = [("BROADCAST_DRIVER", "websocket"), ("BROADCAST_REDIS_ENABLED", "false")];
    assert_eq!(driver(&doc_env), Ok(Driver::Websocket), "the document's .env");
    assert_eq!(
        driver(&[("BROADCAST_DRIVER", "redis"), ("BROADCAST_REDIS_ENABLED", "true")]),
        Ok(Driver::Redis)
    );
    for bad in [
        [("BROADCAST_DRIVER", "websocket"), ("BROADCAST_REDIS_ENABLED", "true")],
        [("BROADCAST_DRIVER", "redis"), ("BROADCAST_REDIS_ENABLED", "false")],
    ] {
        let err = driver(&bad).unwrap_err();
        assert!(
            err.contains("BROADCAST_REDIS_ENABLED") && err.contains("BROADCAST_DRIVER"),
            "{err}"
        );
    }
}

#[test]
fn driver_names() {
    for (value, driver) in [
        ("local", Driver::Websocket),
        ("REDIS", Driver::Redis),
        ("null", Driver::Null),
    ] {
        assert_eq!(config(&[("BROADCAST_DRIVER", value)]).unwrap().driver, driver);
    }
}

#[test]
fn redis_url_from_parts() {
    let c = config(&[("BROADCAST_REDIS_PASSWORD", "pw"), ("BROADCAST_REDIS_DATABASE", "3")]).unwrap();
    assert_eq!(c.redis.connection_url(), "redis://:pw@127.0.0.1:6379/3");
}

#[test]
fn redis_cluster_and_sentinel_settings() {
    let c = config(&[
        ("REDIS_CLUSTER_NODES", "10.0.0.1:6379, redis://10.0.0.2:6379"),
        ("BROADCAST_REDIS_PASSWORD", "pw"),
    ])
    .unwrap();
    assert_eq!(c.redis.topology(), RedisTopology::Cluster);
    assert_eq!(c.redis.cluster_shards, 16);
    let urls: Vec<String> = c.redis.cluster_nodes.iter().map(|n| c.redis.node_url(n)).collect();
    assert_eq!(urls, ["redis://:pw@10.0.0.1:6379", "redis://10.0.0.2:6379"]);
    let c = config(&[("REDIS_SENTINELS", "10.0.0.1:26379")]).unwrap();
    assert_eq!(
        (c.redis.topology(), c.redis.sentinel_master.as_str()),
        (RedisTopology::Sentinel, "mymaster")
    );
    assert_eq!(config(&[]).unwrap().redis.topology(), RedisTopology::Single);
    let refused = |vars: &[(&str, &str)]| match config(vars) {
        Err(ConfigError::Invalid { var, .. }) => var,
        other => panic!("{vars:?} accepted: {other:?}"),
    };
    assert_eq!(
        refused(&[("REDIS_CLUSTER_NODES", "a:1"), ("REDIS_SENTINELS", "b:2")]),
        "REDIS_SENTINELS"
    );
    assert_eq!(refused(&[("REDIS_CLUSTER_SHARDS", "0")]), "REDIS_CLUSTER_SHARDS");
    assert_eq!(refused(&[("REDIS_CLUSTER_SHARDS", "1025")]), "REDIS_CLUSTER_SHARDS");
    assert_eq!(
        refused(&[("REDIS_CLUSTER_NODES", "a:1"), ("BROADCAST_CHANNELS_PREFIX", "app{x}_")]),
        "BROADCAST_CHANNELS_PREFIX"
    );
    assert!(
        config(&[("BROADCAST_CHANNELS_PREFIX", "app{x}_")]).is_ok(),
        "braces are fine on one Redis"
    );
}

fn with_file(vars: &[(&str, &str)], text: &str) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let file = ConfigFile::parse(Path::new("emit_hub.toml"), text)?;
    Config::from_parts(&|k| map.get(k).cloned(), Some(file))
}

#[test]
fn the_emithub_names_set_the_same_settings() {
    let c = config(&[
        ("EMIT_HUB_HOST", "0.0.0.0"),
        ("EMIT_HUB_PORT", "3001"),
        ("EMIT_HUB_LOG_LEVEL", "debug"),
        ("EMIT_HUB_MESSAGE_SIZE_LIMIT", "2097152"),
        ("EMIT_HUB_WS_TIMEOUT", "60"),
        ("EMIT_HUB_WS_PING_INTERVAL", "45"),
        ("EMIT_HUB_CORS_ORIGINS", "*"),
    ])
    .unwrap();
    assert_eq!(c.server.host.to_string(), "0.0.0.0");
    assert_eq!(c.server.port, 3001);
    assert!(c.server.explicit_ports.websocket);
    assert_eq!(c.log.filter, "debug");
    assert_eq!(c.server.max_payload_size, 2 * 1024 * 1024);
    assert_eq!(c.websocket.connection_timeout, Some(Duration::from_secs(60)));
    assert_eq!(c.websocket.ping_interval, Duration::from_secs(45));
    assert_eq!(c.server.cors_allowed_origins, ["*"]);
    // The same value twice is fine; two different values are a mistake.
    assert!(config(&[("EMIT_HUB_PORT", "3001"), ("BROADCAST_WEBSOCKET_PORT", "3001")]).is_ok());
    let err = config(&[("EMIT_HUB_PORT", "3001"), ("BROADCAST_WEBSOCKET_PORT", "8080")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("EMIT_HUB_PORT") && err.contains("BROADCAST_WEBSOCKET_PORT"),
        "{err}"
    );
    let err = config(&[("LOG_FORMAT", "xml")]).unwrap_err().to_string();
    assert!(err.contains("LOG_FORMAT") && err.contains("xml"), "{err}");
    assert_eq!(config(&[("LOG_FORMAT", "JSON")]).unwrap().log.format, LogFormat::Json);
}

#[test]
fn the_file_sets_what_the_environment_leaves_unset() {
    let text = "port = 3000\nlog_level = \"debug\"\n[websocket]\nping_interval = 45\npong_timeout = 15\n\
                [cors]\nallowed_origins = [\"https://a.example\", \"https://b.example\"]\nmax_age = 7200\n\
                [persistence]\nbackup_interval_hours = 0.5\n[env]\nBROADCAST_API_TOKEN = \"from-the-file-0123456789\"\n";
    let c = with_file(&[("BROADCAST_WEBSOCKET_PORT", "9000")], text).unwrap();
    assert_eq!(c.server.port, 9000, "the environment wins");
    assert_eq!(c.log.filter, "debug");
    assert_eq!(
        (c.websocket.ping_interval, c.websocket.ping_timeout),
        (Duration::from_secs(45), Duration::from_secs(15))
    );
    assert_eq!(
        c.server.cors_allowed_origins,
        ["https://a.example", "https://b.example"]
    );
    assert_eq!(c.server.cors_max_age, Duration::from_secs(7200));
    assert_eq!(c.emithub.backup_interval_hours, 0.5);
    assert_eq!(c.server.api_token.as_deref(), Some("from-the-file-0123456789"));
    // A bad value in the file names the file and its key.
    let err = with_file(&[], "[websocket]\nping_interval = \"soon\"")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("emit_hub.toml") && err.contains("websocket.ping_interval") && err.contains("soon"),
        "{err}"
    );
    let err = with_file(&[], "[cors]\nallowed_methods = [\"G E T\"]")
        .unwrap_err()
        .to_string();
    assert!(err.contains("cors.allowed_methods"), "{err}");
}

#[test]
fn a_generated_file_loads_back_unchanged() {
    let c = config(&[
        ("BROADCAST_WEBSOCKET_PORT", "9001"),
        ("CORS_ALLOWED_ORIGINS", "https://a.example,https://b.example"),
        ("BROADCAST_PING_INTERVAL", "500ms"),
        ("EMIT_HUB_BACKUP_INTERVAL_HOURS", "1.5"),
        ("EMIT_HUB_AUTO_BACKUP", "yes"),
        ("BROADCAST_APP_PORT", "off"),
        ("JWT_SECRET", "a-secret-that-must-not-be-printed"),
        ("RUST_LOG", "rustaxum=debug,info"),
    ])
    .unwrap();
    let text = c.sources.to_toml();
    assert!(!text.contains("a-secret-that-must-not-be-printed"));
    let back = with_file(&[("JWT_SECRET", "a-secret-that-must-not-be-printed")], &text).unwrap();
    assert_eq!(back.sources.to_toml(), text);
    assert_eq!(format!("{:?}", back.server), format!("{:?}", c.server));
    assert_eq!(format!("{:?}", back.websocket), format!("{:?}", c.websocket));
    assert_eq!(back.emithub, c.emithub);
    assert_eq!(back.log, c.log);
    assert_eq!(format!("{:?}", back.auth), format!("{:?}", c.auth));
    // Defaults too: every documented key is there.
    let defaults = Config::from_lookup(|_| None).unwrap().sources.to_toml();
    for var in vars::VARIABLES {
        assert!(defaults.contains(&format!("{} =", var.field())), "{} missing", var.key);
    }
    let back = with_file(&[], &defaults).unwrap();
    assert_eq!(back.sources.to_toml(), defaults);
}

#[test]
fn a_reload_applies_live_settings_and_keeps_the_others() {
    let before = with_file(&[], "port = 9000\n[cors]\nallowed_origins = [\"https://a.example\"]").unwrap();
    let after = with_file(
        &[],
        "port = 9100\nlog_level = \"debug\"\n[cors]\nallowed_origins = [\"https://b.example\"]",
    )
    .unwrap();
    let (merged, applied, restart) = before.reloaded(&after).unwrap();
    let names = |v: &[&vars::Variable]| v.iter().map(|v| v.name).collect::<Vec<_>>();
    assert_eq!(names(&applied), ["RUST_LOG", "CORS_ALLOWED_ORIGINS"]);
    assert_eq!(names(&restart), ["BROADCAST_WEBSOCKET_PORT"]);
    assert_eq!(merged.server.port, 9000, "kept until a restart");
    assert_eq!(merged.server.cors_allowed_origins, ["https://b.example"]);
    assert_eq!(merged.log.filter, "debug");
    let (_, applied, restart) = merged.reloaded(&after).unwrap();
    assert!(applied.is_empty());
    assert_eq!(names(&restart), ["BROADCAST_WEBSOCKET_PORT"], "still pending");
}

// Issue 24: a Laravel project's .env never stops start-up, and its apps are served.
#[test]
fn laravel_broadcaster_values_never_stop_start_up_and_are_explained() {
    for (var, value, warn) in [
        ("BROADCAST_DRIVER", "pusher", false),
        ("BROADCAST_DRIVER", "reverb", false),
        ("BROADCAST_DRIVER", "ably", true),
        ("BROADCAST_CONNECTION", "log", true),
        ("BROADCAST_CONNECTION", "null", true),
        ("BROADCAST_CONNECTION", "redis", false),
        ("BROADCAST_CONNECTION", "reverb", false),
    ] {
        let c = config(&[(var, value)]).unwrap_or_else(|e| panic!("{var}={value}: {e}"));
        // Laravel 11 publishing into Redis: the server listens there.
        let expected = if value == "redis" {
            Driver::Redis
        } else {
            Driver::Websocket
        };
        assert_eq!(c.driver, expected, "{var}={value}");
        let note = c.notes.iter().find(|n| n.text.starts_with(&format!("{var}={value}")));
        assert_eq!(note.map(|n| n.warn), Some(warn), "{var}={value}: {:?}", c.notes);
    }
    // Laravel 10's default: rustaxum's `log` too, explained.
    let c = config(&[("BROADCAST_DRIVER", "log")]).unwrap();
    assert_eq!(c.driver, Driver::Log);
    assert!(
        c.notes[0].text.contains("Laravel then sends nothing here"),
        "{:?}",
        c.notes
    );
    assert!(config(&[("BROADCAST_DRIVER", "carrier-pigeon")]).is_err());
}

#[test]
fn reverb_and_pusher_apps_from_the_env_with_the_named_one_first() {
    let pusher = [
        ("PUSHER_APP_ID", "p"),
        ("PUSHER_APP_KEY", "pk"),
        ("PUSHER_APP_SECRET", "ps"),
    ];
    let reverb = [
        ("REVERB_APP_ID", "r"),
        ("REVERB_APP_KEY", "rk"),
        ("REVERB_APP_SECRET", "rs"),
    ];
    let ids = |c: &Config| c.pusher.apps.iter().map(|a| a.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&config(&reverb).unwrap()), ["r"]);
    let both: Vec<_> = pusher.iter().chain(&reverb).copied().collect();
    assert_eq!(ids(&config(&both).unwrap()), ["p", "r"]);
    let mut named = both.clone();
    named.push(("BROADCAST_CONNECTION", "reverb"));
    let c = config(&named).unwrap();
    assert_eq!(ids(&c), ["r", "p"]);
    assert_eq!(c.pusher.apps.default_app().unwrap().key, "rk");
    // The same app under both names is served once.
    let same: Vec<_> = pusher
        .iter()
        .copied()
        .chain([
            ("REVERB_APP_ID", "p"),
            ("REVERB_APP_KEY", "pk"),
            ("REVERB_APP_SECRET", "ps"),
        ])
        .collect();
    assert_eq!(ids(&config(&same).unwrap()), ["p"]);
    // Half an app is a clear error naming the variables.
    let err = config(&[("REVERB_APP_KEY", "rk")]).unwrap_err().to_string();
    assert!(err.contains("REVERB_APP_ID"), "{err}");
    // Reverb's server port is where rustaxum listens, unless BROADCAST_WEBSOCKET_PORT says.
    assert_eq!(config(&[("REVERB_SERVER_PORT", "6001")]).unwrap().server.port, 6001);
    let c = config(&[("REVERB_SERVER_PORT", "6001"), ("BROADCAST_WEBSOCKET_PORT", "7001")]).unwrap();
    assert_eq!(c.server.port, 7001);
}

// Issue 33: Laravel's Redis settings, Reverb's scaling switch, Laravel's Redis prefix and
// the port a Laravel .env points Echo at.
#[test]
fn laravel_redis_settings_are_used_unless_rustaxum_s_own_are_set() {
    let laravel = [
        ("REDIS_HOST", "10.0.0.5"),
        ("REDIS_PORT", "6380"),
        ("REDIS_USERNAME", "app"),
        ("REDIS_PASSWORD", "s3cret"),
        ("REDIS_DB", "2"),
        ("BROADCAST_DRIVER", "redis"),
    ];
    let c = config(&laravel).unwrap();
    let r = &c.redis;
    assert_eq!(
        (
            r.host.as_str(),
            r.port,
            r.username.as_deref(),
            r.password.as_deref(),
            r.database
        ),
        ("10.0.0.5", 6380, Some("app"), Some("s3cret"), 2)
    );
    let summary = c.redis_summary().unwrap();
    assert!(summary.contains("redis://app@10.0.0.5:6380/2"), "{summary}");
    assert!(
        summary.contains("host 10.0.0.5 from REDIS_HOST") && summary.contains("the password from REDIS_PASSWORD"),
        "{summary}"
    );
    assert!(!summary.contains("s3cret"), "never the password: {summary}");
    // rustaxum's own win, and are not listed as implicit.
    let mut own = laravel.to_vec();
    own.extend([
        ("BROADCAST_REDIS_HOST", "10.9.9.9"),
        ("BROADCAST_REDIS_PASSWORD", "other"),
    ]);
    let c = config(&own).unwrap();
    assert_eq!(
        (c.redis.host.as_str(), c.redis.password.as_deref()),
        ("10.9.9.9", Some("other"))
    );
    assert!(!c.redis_summary().unwrap().contains("host 10.9.9.9"));
    // Laravel's null is no password; nothing set: defaults, named as such.
    let c = config(&[("REDIS_PASSWORD", "null"), ("BROADCAST_DRIVER", "redis")]).unwrap();
    assert_eq!(c.redis.password, None);
    let summary = c.redis_summary().unwrap();
    assert!(
        summary.contains("host 127.0.0.1 by default, port 6379 by default"),
        "{summary}"
    );
    assert_eq!(
        config(&[("REDIS_PASSWORD", "x")]).unwrap().redis_summary(),
        None,
        "not using Redis: nothing to say"
    );
}

#[test]
fn reverb_scaling_makes_the_servers_share_redis_while_laravel_keeps_its_broadcaster() {
    let c = config(&[("BROADCAST_CONNECTION", "reverb"), ("REVERB_SCALING_ENABLED", "true")]).unwrap();
    assert_eq!(c.driver, Driver::Redis);
    assert!(
        c.notes
            .iter()
            .any(|n| n.text.contains("rustaxum's own driver is redis")),
        "{:?}",
        c.notes
    );
    let c = config(&[
        ("BROADCAST_DRIVER", "pusher"),
        ("REVERB_SCALING_ENABLED", "true"),
        ("REVERB_SCALING_CHANNEL", "shop"),
    ])
    .unwrap();
    assert_eq!((c.driver, c.redis.channels_prefix.as_str()), (Driver::Redis, "shop:"));
    // Both present: which wins is said.
    let c = config(&[("BROADCAST_DRIVER", "websocket"), ("REVERB_SCALING_ENABLED", "true")]).unwrap();
    assert_eq!(c.driver, Driver::Redis);
    assert!(c.notes.iter().any(|n| n.warn
        && n.text
            .contains("REVERB_SCALING_ENABLED=true wins over BROADCAST_DRIVER=websocket")));
    let c = config(&[("BROADCAST_DRIVER", "pusher"), ("REVERB_SCALING_ENABLED", "false")]).unwrap();
    assert_eq!(c.driver, Driver::Websocket);
}

#[test]
fn laravel_s_redis_prefix_is_derived_as_laravel_derives_it() {
    let prefix = |vars: &[(&str, &str)]| config(vars).unwrap().redis.channels_prefix;
    assert_eq!(prefix(&[("APP_NAME", "Laravel")]), "laravel_database_");
    assert_eq!(prefix(&[("APP_NAME", "My Shop")]), "my_shop_database_");
    assert_eq!(prefix(&[("APP_NAME", "Laravel"), ("REDIS_PREFIX", "shop:")]), "shop:");
    assert_eq!(
        prefix(&[("APP_NAME", "Laravel"), ("BROADCAST_CHANNELS_PREFIX", "x_")]),
        "x_"
    );
    assert_eq!(prefix(&[]), "", "not a Laravel .env");
    let c = config(&[("APP_NAME", "Laravel"), ("BROADCAST_DRIVER", "redis")]).unwrap();
    assert!(c.redis_summary().unwrap().contains("laravel_database_<channel>"));
}

#[test]
fn a_laravel_env_pointing_echo_at_this_machine_is_where_the_server_listens() {
    let c = config(&[("PUSHER_HOST", "127.0.0.1"), ("PUSHER_PORT", "6001")]).unwrap();
    assert_eq!((c.server.port, c.server.explicit_ports.websocket), (6001, true));
    assert!(c
        .notes
        .iter()
        .any(|n| n.text.starts_with("listening on PUSHER_PORT=6001")));
    // Behind nginx Echo talks to the public host: not this machine's port.
    let c = config(&[("PUSHER_HOST", "ws.example.com"), ("PUSHER_PORT", "443")]).unwrap();
    assert_eq!((c.server.port, c.server.explicit_ports.websocket), (8080, false));
    // The server's own variable and Reverb's win.
    let c = config(&[
        ("PUSHER_HOST", "localhost"),
        ("PUSHER_PORT", "6001"),
        ("BROADCAST_WEBSOCKET_PORT", "7000"),
    ])
    .unwrap();
    assert_eq!(c.server.port, 7000);
    let c = config(&[
        ("PUSHER_HOST", "localhost"),
        ("PUSHER_PORT", "6001"),
        ("REVERB_SERVER_PORT", "7001"),
    ])
    .unwrap();
    assert_eq!(c.server.port, 7001);
    assert!(config(&[("PUSHER_HOST", "localhost"), ("PUSHER_PORT", "http")]).is_err());
}
