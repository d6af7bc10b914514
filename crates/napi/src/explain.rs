//! `explainPolicy`: what the device's own policy code does with one id or extended-attribute
//! name, for orchestrators that want to check a configuration before starting a device. The
//! TypeScript layer compiles the options (as for a device) and maps the rule indexes answered
//! here back to the rules the user wrote.

use serde::Deserialize;
use serde_json::{json, Value};
use virtiofsd_policy::acl::is_acl_name;
use virtiofsd_policy::{GuestName, IdMapping, IdRule, IdTable, XattrMap};

/// The compiled policy tables of a device configuration (the fields of the same names).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Tables {
    translate_uid: IdMapping,
    translate_gid: IdMapping,
    xattr_map: Option<XattrMap>,
    /// Without POSIX ACLs the device refuses the ACL names from the guest and hides them from
    /// its listings (the guest kernel would not apply them).
    posix_acl: bool,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
enum Side {
    Guest,
    Host,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
enum Query {
    Uid { from: Side, id: u32 },
    Gid { from: Side, id: u32 },
    Xattr { from: Side, name: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("invalid policy tables: {0}")]
    Tables(#[source] serde_json::Error),
    #[error("invalid query: {0}")]
    Query(#[source] serde_json::Error),
}

/// Answers `query_json` against `tables_json`; the answer is JSON (see [`explain`]).
pub fn explain_json(tables_json: &str, query_json: &str) -> Result<String, ExplainError> {
    let tables: Tables = serde_json::from_str(tables_json).map_err(ExplainError::Tables)?;
    let query: Query = serde_json::from_str(query_json).map_err(ExplainError::Query)?;
    Ok(explain(&tables, &query).to_string())
}

/// The index in `table` of the rule covering `id`.
fn rule_index(table: &IdTable, id: u32) -> Option<usize> {
    let rule: &IdRule = table.rule_for(id)?;
    table.rules().iter().position(|r| std::ptr::eq(r, rule))
}

/// One step of an id: the id on the other side (`null` when refused) and the rule that decided.
fn id_step(mapping: &IdMapping, from: Side, id: u32) -> (Option<u32>, Option<usize>) {
    match from {
        Side::Guest => (
            mapping.to_host(id).ok(),
            rule_index(mapping.guest_to_host(), id),
        ),
        Side::Host => (
            Some(mapping.to_guest(id)),
            rule_index(mapping.host_to_guest(), id),
        ),
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Guest => Side::Host,
        Side::Host => Side::Guest,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A name's step: `{outcome, name, rule, aclOff}`. From the guest the outcome is `renamed`,
/// `unchanged`, `denied` or `unsupported`; from the host (LISTXATTR) `renamed`, `unchanged` or
/// `hidden`. Without a map names are `unchanged` and `rule` is null. `aclOff` says that the
/// outcome is the refusal of the ACL names without `posixAcl` (after the map, for host names).
fn name_step(tables: &Tables, from: Side, name: &[u8]) -> Value {
    let acl_off = |guest_name: &[u8]| !tables.posix_acl && is_acl_name(guest_name);
    if from == Side::Guest && acl_off(name) {
        return json!({ "outcome": "unsupported", "name": null, "rule": null, "aclOff": true });
    }
    let Some(map) = tables.xattr_map.as_ref() else {
        if acl_off(name) {
            return json!({ "outcome": "hidden", "name": null, "rule": null, "aclOff": true });
        }
        return json!({ "outcome": "unchanged", "name": text(name), "rule": null, "aclOff": false });
    };
    match from {
        Side::Guest => {
            let rule = map.guest_rule(name);
            let (outcome, host) = match map.to_host(name) {
                GuestName::Host(host) if *host == *name => ("unchanged", Some(text(&host))),
                GuestName::Host(host) => ("renamed", Some(text(&host))),
                GuestName::Denied => ("denied", None),
                GuestName::Unsupported => ("unsupported", None),
            };
            json!({ "outcome": outcome, "name": host, "rule": rule, "aclOff": false })
        }
        Side::Host => {
            let rule = map.host_rule(name);
            // As a LISTXATTR answer: a name the rules strip to nothing is dropped too.
            let listed = map.list_to_guest(&[name, b"\0"].concat());
            let guest = listed.strip_suffix(b"\0").map(text);
            if guest
                .as_deref()
                .is_some_and(|guest| acl_off(guest.as_bytes()))
            {
                return json!({ "outcome": "hidden", "name": null, "rule": rule, "aclOff": true });
            }
            let outcome = match &guest {
                None => "hidden",
                Some(guest) if guest.as_bytes() == name => "unchanged",
                Some(_) => "renamed",
            };
            json!({ "outcome": outcome, "name": guest, "rule": rule, "aclOff": false })
        }
    }
}

/// `{ result, rule, back: { result, rule } | null }`, rule indexes into the compiled tables of
/// the direction taken (for ids `guestToHost` or `hostToGuest`; for names the xattr map).
fn explain(tables: &Tables, query: &Query) -> Value {
    match query {
        Query::Uid { from, id } | Query::Gid { from, id } => {
            let mapping = match query {
                Query::Uid { .. } => &tables.translate_uid,
                _ => &tables.translate_gid,
            };
            let (result, rule) = id_step(mapping, *from, *id);
            let back = result.map(|there| {
                let (result, rule) = id_step(mapping, other(*from), there);
                json!({ "result": result, "rule": rule })
            });
            json!({ "result": result, "rule": rule, "back": back })
        }
        Query::Xattr { from, name } => {
            let step = name_step(tables, *from, name.as_bytes());
            let back = step["name"]
                .as_str()
                .map(|there| name_step(tables, other(*from), there.as_bytes()));
            json!({ "result": step, "back": back })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLES: &str = r#"{
        "translateUid": {
            "guestToHost": [
                {"first": 0, "count": 1, "kind": "squash", "target": 65534},
                {"first": 1000, "count": 1000, "kind": "range", "target": 101000},
                {"first": 5000, "count": 10, "kind": "fail", "target": 0}
            ],
            "hostToGuest": [{"first": 101000, "count": 1000, "kind": "range", "target": 1000}]
        },
        "translateGid": {"guestToHost": [], "hostToGuest": []},
        "xattrMap": [
            {"kind": "prefix", "client": true, "server": true, "key": "trusted.", "prepend": "user.virtiofs."},
            {"kind": "bad", "client": true, "server": true, "key": "user.virtiofs.", "prepend": "trusted."},
            {"kind": "ok", "client": true, "server": true, "key": "", "prepend": ""}
        ],
        "posixAcl": true
    }"#;

    fn ask(query: Value) -> Value {
        serde_json::from_str(&explain_json(TABLES, &query.to_string()).unwrap()).unwrap()
    }

    #[test]
    fn ids_there_and_back() {
        assert_eq!(
            ask(json!({"kind": "uid", "from": "guest", "id": 1005})),
            json!({"result": 101005, "rule": 1, "back": {"result": 1005, "rule": 0}})
        );
        // Squashed: the way back does not return to 0.
        assert_eq!(
            ask(json!({"kind": "uid", "from": "guest", "id": 0})),
            json!({"result": 65534, "rule": 0, "back": {"result": 65534, "rule": null}})
        );
        assert_eq!(
            ask(json!({"kind": "uid", "from": "guest", "id": 5001})),
            json!({"result": null, "rule": 2, "back": null})
        );
        assert_eq!(
            ask(json!({"kind": "uid", "from": "host", "id": 101999})),
            json!({"result": 1999, "rule": 0, "back": {"result": 101999, "rule": 1}})
        );
        assert_eq!(
            ask(json!({"kind": "gid", "from": "host", "id": 7})),
            json!({"result": 7, "rule": null, "back": {"result": 7, "rule": null}})
        );
    }

    #[test]
    fn names_there_and_back() {
        assert_eq!(
            ask(json!({"kind": "xattr", "from": "guest", "name": "trusted.x"})),
            json!({
                "result": {"outcome": "renamed", "name": "user.virtiofs.trusted.x", "rule": 0, "aclOff": false},
                "back": {"outcome": "renamed", "name": "trusted.x", "rule": 0, "aclOff": false}
            })
        );
        assert_eq!(
            ask(json!({"kind": "xattr", "from": "guest", "name": "user.virtiofs.x"})),
            json!({"result": {"outcome": "denied", "name": null, "rule": 1, "aclOff": false}, "back": null})
        );
        assert_eq!(
            ask(json!({"kind": "xattr", "from": "host", "name": "trusted.y"})),
            json!({"result": {"outcome": "hidden", "name": null, "rule": 1, "aclOff": false}, "back": null})
        );
        assert_eq!(
            ask(json!({"kind": "xattr", "from": "host", "name": "user.a"})),
            json!({
                "result": {"outcome": "unchanged", "name": "user.a", "rule": 2, "aclOff": false},
                "back": {"outcome": "unchanged", "name": "user.a", "rule": 2, "aclOff": false}
            })
        );
        // A host name the prefix rule strips to nothing is not listed.
        assert_eq!(
            ask(json!({"kind": "xattr", "from": "host", "name": "user.virtiofs."}))["result"],
            json!({"outcome": "hidden", "name": null, "rule": 0, "aclOff": false})
        );
    }

    #[test]
    fn without_a_map_names_pass_but_acl_names_need_acls() {
        let tables = r#"{"translateUid": {"guestToHost": [], "hostToGuest": []},
                         "translateGid": {"guestToHost": [], "hostToGuest": []}, "xattrMap": null,
                         "posixAcl": false}"#;
        let ask = |query: &str| -> Value {
            serde_json::from_str(&explain_json(tables, query).unwrap()).unwrap()
        };
        assert_eq!(
            ask(r#"{"kind":"xattr","from":"guest","name":"system.posix_acl_access"}"#),
            json!({"result": {"outcome": "unsupported", "name": null, "rule": null, "aclOff": true}, "back": null})
        );
        assert_eq!(
            ask(r#"{"kind":"xattr","from":"host","name":"system.posix_acl_default"}"#)["result"],
            json!({"outcome": "hidden", "name": null, "rule": null, "aclOff": true})
        );
        // Renamed on the host, the ACL name is still the guest's: hidden after the map.
        let mapped = TABLES.replace(r#""posixAcl": true"#, r#""posixAcl": false"#);
        let answer: Value = serde_json::from_str(
            &explain_json(
                &mapped,
                r#"{"kind":"xattr","from":"host","name":"user.virtiofs.system.posix_acl_access"}"#,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            answer["result"],
            json!({"outcome": "hidden", "name": null, "rule": 0, "aclOff": true})
        );
        let answer = explain_json(
            tables,
            r#"{"kind":"xattr","from":"guest","name":"security.selinux"}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&answer).unwrap(),
            json!({
                "result": {"outcome": "unchanged", "name": "security.selinux", "rule": null, "aclOff": false},
                "back": {"outcome": "unchanged", "name": "security.selinux", "rule": null, "aclOff": false}
            })
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(explain_json("{}", "{}")
            .unwrap_err()
            .to_string()
            .starts_with("invalid policy tables"));
        let err = explain_json(TABLES, r#"{"kind":"uid","from":"guest","id":-1}"#).unwrap_err();
        assert!(err.to_string().starts_with("invalid query"), "{err}");
        let unterminated = TABLES.replace(
            r#"{"kind": "ok", "client": true, "server": true, "key": "", "prepend": ""}"#,
            r#"{"kind": "ok", "client": true, "server": true, "key": "a", "prepend": "a"}"#,
        );
        assert!(explain_json(&unterminated, r#"{"kind":"uid","from":"guest","id":1}"#).is_err());
    }
}
