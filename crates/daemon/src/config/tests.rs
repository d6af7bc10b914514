use super::*;

fn sample() -> serde_json::Value {
    serde_json::json!({
        "sharedDir": "/srv/share",
        "socket": { "kind": "path", "path": "/run/vfs.sock", "group": null },
        "tag": null,
        "maxRequestQueues": 1,
        "queueSize": 1024,
        "threadPoolSize": 0,
        "cache": "auto",
        "readonly": false,
        "readdirplus": true,
        "writeback": false,
        "allowDirectIo": false,
        "allowMmap": false,
        "announceSubmounts": true,
        "killprivV2": false,
        "xattr": false,
        "posixAcl": false,
        "securityLabel": false,
        "xattrMap": null,
        "inodeFileHandles": "never",
        "preserveNoatime": false,
        "posixLocks": true,
        "flock": true,
        "rlimitNofile": null,
        "logLevel": "info",
        "logTargets": [],
        "syslog": false,
        "sandbox": "none",
        "seccomp": "none",
        "uidMap": [],
        "gidMap": [],
        "translateUid": { "guestToHost": [], "hostToGuest": [] },
        "translateGid": { "guestToHost": [], "hostToGuest": [] },
        "modcaps": { "add": [], "drop": [] },
        "migrationMode": "find-paths",
        "migrationOnError": "abort",
        "migrationVerifyHandles": false,
        "migrationConfirmPaths": false,
        "reconnect": false
    })
}

#[test]
fn parses_the_typescript_contract() {
    let config = DaemonConfig::from_json(&sample().to_string()).unwrap();
    assert_eq!(config.shared_dir, PathBuf::from("/srv/share"));
    assert_eq!(
        config.socket,
        SocketConfig::Path {
            path: "/run/vfs.sock".into(),
            group: None
        }
    );
    assert_eq!(config.cache, CacheMode::Auto);
    assert_eq!(config.log_level, LogLevel::Info);
}

#[test]
fn parses_fd_socket() {
    let mut v = sample();
    v["socket"] = serde_json::json!({ "kind": "fd", "fd": 7 });
    let config = DaemonConfig::from_json(&v.to_string()).unwrap();
    assert_eq!(config.socket, SocketConfig::Fd { fd: 7 });
}

#[test]
fn rejects_unknown_fields() {
    let mut v = sample();
    v["posixAcls"] = serde_json::json!(true);
    let err = DaemonConfig::from_json(&v.to_string()).unwrap_err();
    assert!(
        err.to_string().contains("unknown field `posixAcls`"),
        "{err}"
    );
}

#[test]
fn id_maps_need_an_unprivileged_namespace_sandbox() {
    let range = serde_json::json!([{ "inside": 0, "outside": 300000, "count": 65536 }]);
    for field in ["uidMap", "gidMap"] {
        let mut v = sample();
        v["sandbox"] = serde_json::json!("namespace");
        v[field] = range.clone();
        let config: DaemonConfig = serde_json::from_value(v.clone()).unwrap();
        assert!(
            config.validate_as(&Identity::user(1000)).is_ok(),
            "{field} as a user"
        );
        let err = config
            .validate_as(&Identity::user(0))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(UID_MAP_NEEDS_UNPRIVILEGED_NAMESPACE),
            "{field} as root: {err}"
        );
        for sandbox in ["chroot", "none"] {
            v["sandbox"] = serde_json::json!(sandbox);
            let config: DaemonConfig = serde_json::from_value(v.clone()).unwrap();
            for euid in [0, 1000] {
                let err = config
                    .validate_as(&Identity::user(euid))
                    .unwrap_err()
                    .to_string();
                assert!(
                    err.contains(UID_MAP_NEEDS_UNPRIVILEGED_NAMESPACE),
                    "{field} with --sandbox={sandbox} as {euid}: {err}"
                );
            }
        }
    }
    // Through the public entry point, with this process's real identity.
    let mut v = sample();
    v["uidMap"] = range;
    assert!(DaemonConfig::from_json(&v.to_string()).is_err());
}

#[test]
fn parses_sandbox_options() {
    let mut v = sample();
    v["sandbox"] = serde_json::json!("namespace");
    v["seccomp"] = serde_json::json!("kill");
    v["uidMap"] = serde_json::json!([{ "inside": 0, "outside": 100000, "count": 65536 }]);
    v["modcaps"] = serde_json::json!({ "add": ["sys_admin"], "drop": ["mknod"] });
    // ID ranges are for an unprivileged device only, whoever runs the tests.
    let config: DaemonConfig = serde_json::from_value(v).unwrap();
    config.validate_as(&Identity::user(1000)).unwrap();
    assert_eq!(config.sandbox, SandboxMode::Namespace);
    assert_eq!(config.seccomp, SeccompMode::Kill);
    assert_eq!(config.uid_map[0].count, 65536);
    assert_eq!(config.modcaps.drop, vec!["mknod".to_string()]);
}

#[test]
fn rejects_bad_values() {
    for (field, value) in [
        ("sharedDir", serde_json::json!("relative/dir")),
        ("tag", serde_json::json!("x".repeat(37))),
        ("tag", serde_json::json!("")),
        ("maxRequestQueues", serde_json::json!(0)),
        ("queueSize", serde_json::json!(1000)),
        ("cache", serde_json::json!("sometimes")),
        ("inodeFileHandles", serde_json::json!("fallback")),
        ("sandbox", serde_json::json!("jail")),
        ("seccomp", serde_json::json!("allow")),
        (
            "modcaps",
            serde_json::json!({ "add": ["sys_everything"], "drop": [] }),
        ),
        ("modcaps", serde_json::json!({ "add": [] })),
        (
            "uidMap",
            serde_json::json!([{ "inside": 0, "outside": 0, "count": 0 }]),
        ),
        (
            "gidMap",
            serde_json::json!([{ "inside": 4294967295u32, "outside": 0, "count": 2 }]),
        ),
    ] {
        let mut v = sample();
        v[field] = value;
        assert!(
            DaemonConfig::from_json(&v.to_string()).is_err(),
            "{field} accepted"
        );
    }
}

fn policies() -> serde_json::Value {
    let mut v = sample();
    v["xattr"] = serde_json::json!(true);
    v["posixAcl"] = serde_json::json!(true);
    v["securityLabel"] = serde_json::json!(true);
    v["xattrMap"] = serde_json::json!([
        { "kind": "prefix", "client": true, "server": true, "key": "trusted.", "prepend": "user.virtiofs." },
        { "kind": "bad", "client": true, "server": true, "key": "user.virtiofs.", "prepend": "trusted." },
        { "kind": "ok", "client": true, "server": true, "key": "", "prepend": "" }
    ]);
    v["translateUid"] = serde_json::json!({
        "guestToHost": [
            { "first": 0, "count": 1, "kind": "squash", "target": 65534 },
            { "first": 1000, "count": 1000, "kind": "range", "target": 101000 },
            { "first": 5000, "count": 10, "kind": "fail", "target": 0 }
        ],
        "hostToGuest": [{ "first": 101000, "count": 1000, "kind": "range", "target": 1000 }]
    });
    v["translateGid"] = serde_json::json!({
        "guestToHost": [],
        "hostToGuest": [{ "first": 0, "count": 100, "kind": "squash", "target": 100 }]
    });
    v
}

#[test]
fn parses_the_policies() {
    let config: DaemonConfig = serde_json::from_value(policies()).unwrap();
    config.validate_as(&Identity::user(0)).unwrap();
    assert!(config.posix_acl && config.security_label);
    assert_eq!(config.translate_uid.to_host(1005), Ok(101005));
    assert_eq!(config.translate_uid.to_host(0), Ok(65534));
    assert!(config.translate_uid.to_host(5003).is_err());
    assert_eq!(config.translate_uid.to_guest(101999), 1999);
    assert_eq!(config.translate_gid.to_guest(42), 100);
    assert_eq!(config.translate_gid.to_host(42), Ok(42));
    let map = config.xattr_map.as_ref().unwrap();
    assert_eq!(map.rules().len(), 3);
    assert_eq!(
        map.to_guest(b"user.virtiofs.trusted.x"),
        Some(&b"trusted.x"[..])
    );
    // The defaults: no policy at all.
    let plain: DaemonConfig = serde_json::from_value(sample()).unwrap();
    assert!(plain.translate_uid.is_identity() && plain.translate_gid.is_identity());
    assert_eq!(plain.xattr_map, None);
}

#[test]
fn rejects_bad_policy_tables() {
    for (field, value, why) in [
        (
            "translateUid",
            serde_json::json!({ "guestToHost": [
                { "first": 10, "count": 5, "kind": "range", "target": 0 },
                { "first": 12, "count": 1, "kind": "squash", "target": 0 }
            ], "hostToGuest": [] }),
            "overlaps",
        ),
        (
            "translateUid",
            serde_json::json!({ "guestToHost": [
                { "first": 10, "count": 1, "kind": "range", "target": 0 },
                { "first": 5, "count": 1, "kind": "range", "target": 0 }
            ], "hostToGuest": [] }),
            "ascending",
        ),
        (
            "translateGid",
            serde_json::json!({ "guestToHost": [], "hostToGuest": [
                { "first": 1, "count": 1, "kind": "fail", "target": 0 }
            ] }),
            "cannot refuse",
        ),
        (
            "translateGid",
            serde_json::json!({ "guestToHost": [
                { "first": 4294967295u32, "count": 2, "kind": "range", "target": 0 }
            ], "hostToGuest": [] }),
            "passes the largest id",
        ),
        (
            "translateGid",
            serde_json::json!({ "guestToHost": [
                { "first": 0, "count": 2, "kind": "range", "target": 4294967295u32 }
            ], "hostToGuest": [] }),
            "passes the largest id",
        ),
        (
            "translateUid",
            serde_json::json!({ "guestToHost": [] }),
            "missing field `hostToGuest`",
        ),
        ("xattrMap", serde_json::json!([]), "empty"),
        (
            "xattrMap",
            serde_json::json!([{ "kind": "ok", "client": true, "server": false, "key": "", "prepend": "" }]),
            "catch-all",
        ),
        (
            "xattrMap",
            serde_json::json!([{ "kind": "ok", "client": true, "server": true, "key": "a\u{0}", "prepend": "" },
                               { "kind": "ok", "client": true, "server": true, "key": "", "prepend": "" }]),
            "NUL",
        ),
        (
            "xattrMap",
            serde_json::json!([{ "kind": "map", "client": true, "server": true, "key": "", "prepend": "" }]),
            "unknown variant `map`",
        ),
    ] {
        let mut v = sample();
        v[field] = value;
        let err = DaemonConfig::from_json(&v.to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{field}: {err}");
    }
}

#[test]
fn translation_targets_must_be_ids_the_device_can_act_as() {
    let with_rules = |sandbox: &str, uid_map: serde_json::Value, guest_to_host, host_to_guest| {
        let mut v = sample();
        v["sandbox"] = serde_json::json!(sandbox);
        v["uidMap"] = uid_map;
        v["translateUid"] =
            serde_json::json!({ "guestToHost": guest_to_host, "hostToGuest": host_to_guest });
        serde_json::from_value::<DaemonConfig>(v).unwrap()
    };
    let squash_to = |target: u32| serde_json::json!([{ "first": 0, "count": 100, "kind": "squash", "target": target }]);
    let none = serde_json::json!([]);
    let user = Identity::user(1000);
    // Root acts as anyone.
    with_rules("none", none.clone(), squash_to(2000), none.clone())
        .validate_as(&Identity::user(0))
        .unwrap();
    // Unprivileged without a user namespace: only its own uid.
    with_rules("none", none.clone(), squash_to(1000), none.clone())
        .validate_as(&user)
        .unwrap();
    let err = with_rules("none", none.clone(), squash_to(2000), none.clone())
        .validate_as(&user)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("host uid 2000, which the device cannot act as")
            && err.contains("own uid 1000"),
        "{err}"
    );
    // A user namespace of its own uid only: that is 0 inside.
    with_rules("namespace", none.clone(), squash_to(0), none.clone())
        .validate_as(&user)
        .unwrap();
    let err = with_rules("namespace", none.clone(), squash_to(1000), none.clone())
        .validate_as(&user)
        .unwrap_err()
        .to_string();
    assert!(err.contains("only uid 0 (your own uid 1000"), "{err}");
    // Ranges: every target must be inside one of them.
    let ranges = serde_json::json!([
        { "inside": 0, "outside": 1000, "count": 1 },
        { "inside": 1, "outside": 100000, "count": 65535 }
    ]);
    let range = |first: u32, count: u32, target: u32| serde_json::json!([{ "first": first, "count": count, "kind": "range", "target": target }]);
    with_rules(
        "namespace",
        ranges.clone(),
        range(0, 65536, 0),
        none.clone(),
    )
    .validate_as(&user)
    .unwrap();
    let err = with_rules(
        "namespace",
        ranges.clone(),
        range(0, 10, 65530),
        none.clone(),
    )
    .validate_as(&user)
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("host uid 65536") && err.contains("uidMap ranges"),
        "{err}"
    );
    // Forbidding needs no target.
    let fail = serde_json::json!([{ "first": 0, "count": 10, "kind": "fail", "target": 0 }]);
    with_rules("namespace", ranges.clone(), fail, none.clone())
        .validate_as(&user)
        .unwrap();
    // Host-to-guest rules over ids the namespace never shows can never match...
    let err = with_rules(
        "namespace",
        ranges.clone(),
        none.clone(),
        range(100000, 10, 0),
    )
    .validate_as(&user)
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("host-to-guest rule 0 covers host uids the device never sees"),
        "{err}"
    );
    // ... unless they cover the overflow id, which unmapped owners appear as.
    let overflow =
        serde_json::json!([{ "first": 65534, "count": 1, "kind": "squash", "target": 5 }]);
    with_rules("namespace", none.clone(), none.clone(), overflow)
        .validate_as(&user)
        .unwrap();
    // Without a user namespace every host id can be seen.
    with_rules("none", none.clone(), none.clone(), range(100000, 10, 0))
        .validate_as(&user)
        .unwrap();
}

#[test]
fn no_rule_translates_to_the_id_that_is_none() {
    for (table, rule) in [
        (
            "guestToHost",
            serde_json::json!({ "first": 0, "count": 10, "kind": "squash", "target": 4294967295u32 }),
        ),
        (
            "guestToHost",
            serde_json::json!({ "first": 0, "count": 2, "kind": "range", "target": 4294967294u32 }),
        ),
        (
            "hostToGuest",
            serde_json::json!({ "first": 5, "count": 1, "kind": "range", "target": 4294967295u32 }),
        ),
    ] {
        let mut v = sample();
        v["translateGid"] = serde_json::json!({ "guestToHost": [], "hostToGuest": [] });
        v["translateGid"][table] = serde_json::json!([rule]);
        let config: DaemonConfig = serde_json::from_value(v).unwrap();
        let err = config
            .validate_as(&Identity::user(0))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("translates gids to 4294967295, which is no gid"),
            "{err}"
        );
    }
}

#[test]
fn posix_acls_need_their_names_through_the_xattr_map() {
    let mut v = policies();
    v["xattrMap"] = serde_json::json!([
        { "kind": "bad", "client": true, "server": true, "key": "system.", "prepend": "system." },
        { "kind": "ok", "client": true, "server": true, "key": "", "prepend": "" }
    ]);
    let config: DaemonConfig = serde_json::from_value(v.clone()).unwrap();
    let err = config
        .validate_as(&Identity::user(0))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "posixAcl cannot work: rule 1 of the compiled xattr map (Bad all, key \"system.\""
        ) && err.contains("refuses or renames system.posix_acl_access"),
        "{err}"
    );
    // Renamed is as bad as refused: the host would keep a user xattr, never apply it.
    let mut renamed = v.clone();
    renamed["xattrMap"] = serde_json::json!([
        { "kind": "prefix", "client": true, "server": true, "key": "", "prepend": "user.v." },
        { "kind": "bad", "client": true, "server": true, "key": "", "prepend": "" }
    ]);
    let config: DaemonConfig = serde_json::from_value(renamed).unwrap();
    let err = config
        .validate_as(&Identity::user(0))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("(Prefix all, key \"\", prepend \"user.v.\")"),
        "{err}"
    );
    v["posixAcl"] = serde_json::json!(false);
    let config: DaemonConfig = serde_json::from_value(v).unwrap();
    config.validate_as(&Identity::user(0)).unwrap();
}

#[test]
fn parses_the_migration_and_reconnect_options() {
    let mut v = sample();
    v["migrationMode"] = serde_json::json!("file-handles");
    v["migrationOnError"] = serde_json::json!("guest-error");
    v["reconnect"] = serde_json::json!(true);
    let config = DaemonConfig::from_json(&v.to_string()).unwrap();
    assert_eq!(config.migration_mode, MigrationMode::FileHandles);
    assert_eq!(config.migration_on_error, MigrationOnError::GuestError);
    assert!(config.reconnect);

    let mut v = sample();
    v["migrationVerifyHandles"] = serde_json::json!(true);
    v["migrationConfirmPaths"] = serde_json::json!(true);
    let config = DaemonConfig::from_json(&v.to_string()).unwrap();
    assert!(config.migration_verify_handles && config.migration_confirm_paths);
    assert_eq!(config.migration_mode, MigrationMode::FindPaths);

    for value in ["find_paths", "FindPaths", "handles"] {
        let mut v = sample();
        v["migrationMode"] = serde_json::json!(value);
        assert!(DaemonConfig::from_json(&v.to_string()).is_err(), "{value}");
    }
}

#[test]
fn path_checks_are_refused_with_file_handle_migration() {
    for field in ["migrationVerifyHandles", "migrationConfirmPaths"] {
        let mut v = sample();
        v["migrationMode"] = serde_json::json!("file-handles");
        v[field] = serde_json::json!(true);
        let err = DaemonConfig::from_json(&v.to_string()).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("{field} only applies to migrationMode find-paths")),
            "{err}"
        );
    }
}

#[test]
fn file_handles_keep_dac_read_search() {
    let mut v = sample();
    v["modcaps"] = serde_json::json!({ "add": [], "drop": ["dac_read_search"] });
    assert!(DaemonConfig::from_json(&v.to_string()).is_ok());
    // `prefer` without the capability falls back to descriptors at start-up.
    let mut prefer = v.clone();
    prefer["inodeFileHandles"] = serde_json::json!("prefer");
    let config = DaemonConfig::from_json(&prefer.to_string()).unwrap();
    assert!(config.opens_file_handles() && !config.requires_file_handles());
    for (field, value) in [
        ("inodeFileHandles", "mandatory"),
        ("migrationMode", "file-handles"),
    ] {
        let mut with = v.clone();
        with[field] = serde_json::json!(value);
        let err = DaemonConfig::from_json(&with.to_string()).unwrap_err();
        assert!(
            err.to_string().contains("cannot drop dac_read_search"),
            "{err}"
        );
        let config: DaemonConfig = serde_json::from_value(sample()).unwrap();
        assert!(!config.opens_file_handles() && !config.requires_file_handles());
        let mut keep = sample();
        keep[field] = serde_json::json!(value);
        let config: DaemonConfig = serde_json::from_value(keep).unwrap();
        assert!(config.opens_file_handles(), "{field}");
        assert!(config.requires_file_handles(), "{field}");
    }
}
