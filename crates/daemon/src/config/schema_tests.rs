//! The TypeScript rendering of [`schema`](super::schema), and the tests that hold the schema, the
//! serde types and `ts/generated/schema.ts` together.
//!
//! `UPDATE_SCHEMA=1 cargo test -p virtiofsd-daemon schema` rewrites the TypeScript module.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{json, Map, Value};

use super::schema::{
    EnumSchema, Field, FieldType, ObjectSchema, TaggedSchema, DEVICE_CONFIG, LIMITS, MAX_ID,
};
use super::{DaemonConfig, Identity};

/// Where the generated module is checked in, relative to this crate.
const TYPESCRIPT_MODULE: &str = "../../ts/generated/schema.ts";

/// Types the TypeScript module declares, collected depth-first so each is declared once.
#[derive(Default)]
struct Declarations<'a> {
    seen: HashSet<&'static str>,
    enums: Vec<&'a EnumSchema>,
    objects: Vec<Named<'a>>,
}

enum Named<'a> {
    Object(&'a ObjectSchema),
    Tagged(&'a TaggedSchema),
}

impl<'a> Declarations<'a> {
    fn visit(&mut self, ty: &'a FieldType) {
        match ty {
            FieldType::Enum(e) => {
                if self.seen.insert(e.type_name) {
                    self.enums.push(e);
                }
            }
            FieldType::Nullable(inner) | FieldType::List(inner) => self.visit(inner),
            FieldType::Object(o) => self.visit_object(o),
            FieldType::Tagged(t) => {
                if self.seen.insert(t.type_name) {
                    for variant in t.variants {
                        self.visit_fields(variant.fields);
                    }
                    self.objects.push(Named::Tagged(t));
                }
            }
            FieldType::Bool
            | FieldType::Integer { .. }
            | FieldType::Text { .. }
            | FieldType::Path { .. } => {}
        }
    }

    fn visit_object(&mut self, object: &'a ObjectSchema) {
        if self.seen.insert(object.type_name) {
            self.visit_fields(object.fields);
            self.objects.push(Named::Object(object));
        }
    }

    fn visit_fields(&mut self, fields: &'a [Field]) {
        for field in fields {
            self.visit(&field.ty);
        }
    }
}

fn ts_type(ty: &FieldType) -> String {
    match ty {
        FieldType::Bool => "boolean".into(),
        FieldType::Integer { .. } => "number".into(),
        FieldType::Text { .. } | FieldType::Path { .. } => "string".into(),
        FieldType::Enum(e) => e.type_name.into(),
        FieldType::Nullable(inner) => format!("{} | null", ts_type(inner)),
        FieldType::List(inner) => match **inner {
            FieldType::Nullable(_) => format!("({})[]", ts_type(inner)),
            _ => format!("{}[]", ts_type(inner)),
        },
        FieldType::Object(o) => o.type_name.into(),
        FieldType::Tagged(t) => t.type_name.into(),
    }
}

/// What a field's type allows beyond its TypeScript type, for its doc comment.
fn constraint(ty: &FieldType) -> Option<String> {
    match ty {
        FieldType::Integer {
            min,
            max,
            power_of_two,
        } => Some(format!(
            "An integer from {min} to {max}{}.",
            if *power_of_two {
                ", a power of two"
            } else {
                ""
            }
        )),
        FieldType::Text {
            min_bytes,
            max_bytes,
            no_nul,
        } => {
            let length = match (min_bytes, max_bytes) {
                (min, Some(max)) => Some(format!("{min} to {max} UTF-8 bytes")),
                (0, None) => None,
                (1, None) => Some("non-empty".to_string()),
                (min, None) => Some(format!("at least {min} bytes")),
            };
            let nul = no_nul.then(|| "no NUL".to_string());
            let parts: Vec<String> = length.into_iter().chain(nul).collect();
            (!parts.is_empty()).then(|| {
                let mut text = parts.join(", ");
                text[..1].make_ascii_uppercase();
                format!("{text}.")
            })
        }
        FieldType::Path { absolute: true } => Some("An absolute path.".into()),
        FieldType::Path { absolute: false } => Some("A non-empty path.".into()),
        FieldType::Nullable(inner) => constraint(inner),
        _ => None,
    }
}

fn doc_comment(out: &mut String, indent: &str, parts: &[&str]) {
    let text = parts
        .iter()
        .filter(|part| !part.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    if !text.is_empty() {
        writeln!(out, "{indent}/** {text} */").unwrap();
    }
}

fn render_fields(out: &mut String, indent: &str, fields: &[Field]) {
    for field in fields {
        let constraint = constraint(&field.ty).unwrap_or_default();
        doc_comment(out, indent, &[field.doc, &constraint]);
        writeln!(out, "{indent}{}: {};", field.name, ts_type(&field.ty)).unwrap();
    }
}

fn quoted_list(values: &[&str]) -> Vec<String> {
    values.iter().map(|value| format!("'{value}'")).collect()
}

/// The whole `ts/generated/schema.ts`.
pub fn typescript_module() -> String {
    let mut out = String::new();
    out.push_str(
        "// Generated from crates/daemon/src/config/schema.rs, the Rust configuration types: do not \
         edit.\n// `cargo test -p virtiofsd-daemon` fails while this file differs from the schema;\n\
         // `UPDATE_SCHEMA=1 cargo test -p virtiofsd-daemon schema` rewrites it.\n",
    );
    for limit in LIMITS {
        out.push('\n');
        doc_comment(&mut out, "", &[limit.doc]);
        writeln!(out, "export const {} = {};", limit.name, limit.value).unwrap();
    }

    let mut declarations = Declarations::default();
    declarations.visit_object(&DEVICE_CONFIG);
    for e in &declarations.enums {
        out.push('\n');
        doc_comment(&mut out, "", &[e.doc]);
        let values = quoted_list(e.values);
        let one_line = format!(
            "export const {} = [{}] as const;",
            e.values_name,
            values.join(", ")
        );
        if one_line.len() <= 100 {
            writeln!(out, "{one_line}").unwrap();
        } else {
            writeln!(out, "export const {} = [", e.values_name).unwrap();
            for value in &values {
                writeln!(out, "  {value},").unwrap();
            }
            writeln!(out, "] as const;").unwrap();
        }
        writeln!(
            out,
            "export type {} = (typeof {})[number];",
            e.type_name, e.values_name
        )
        .unwrap();
    }
    for named in &declarations.objects {
        out.push('\n');
        match named {
            Named::Object(o) => {
                doc_comment(&mut out, "", &[o.doc]);
                writeln!(out, "export interface {} {{", o.type_name).unwrap();
                render_fields(&mut out, "  ", o.fields);
                writeln!(out, "}}").unwrap();
            }
            Named::Tagged(t) => {
                doc_comment(&mut out, "", &[t.doc]);
                writeln!(out, "export type {} =", t.type_name).unwrap();
                for variant in t.variants {
                    doc_comment(&mut out, "  ", &[variant.doc]);
                    writeln!(out, "  | {{").unwrap();
                    writeln!(out, "      {}: '{}';", t.tag, variant.tag).unwrap();
                    render_fields(&mut out, "      ", variant.fields);
                    writeln!(out, "    }}").unwrap();
                }
                // The last variant ends the type.
                out.truncate(out.len() - 1);
                out.push_str(";\n");
            }
        }
    }
    out
}

fn typescript_module_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(TYPESCRIPT_MODULE)
}

#[test]
fn the_typescript_module_is_generated_from_the_schema() {
    let rendered = typescript_module();
    let path = typescript_module_path();
    if std::env::var_os("UPDATE_SCHEMA").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &rendered).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == rendered,
        "{} differs from the Rust schema; run `UPDATE_SCHEMA=1 cargo test -p virtiofsd-daemon \
         schema` and commit the result",
        path.display()
    );
}

// --- the schema against serde and `validate` ---------------------------------------------------

/// A valid value of `ty`: lists hold one element, nullable values are present when `present`,
/// tagged objects take their `variant`-th variant (modulo their count).
fn sample(ty: &FieldType, variant: usize, present: bool) -> Value {
    match ty {
        FieldType::Bool => json!(true),
        FieldType::Integer {
            min, power_of_two, ..
        } => {
            if *power_of_two {
                json!(min.max(&1).next_power_of_two())
            } else {
                json!(min)
            }
        }
        FieldType::Text { min_bytes, .. } => json!("x".repeat((*min_bytes).max(1))),
        FieldType::Path { .. } => json!("/srv/share"),
        FieldType::Enum(e) => json!(e.values[0]),
        FieldType::Nullable(inner) if present => sample(inner, variant, present),
        FieldType::Nullable(_) => Value::Null,
        FieldType::List(inner) => json!([sample(inner, variant, present)]),
        FieldType::Object(o) => sample_fields(o.fields, variant, present),
        FieldType::Tagged(t) => {
            let chosen = &t.variants[variant % t.variants.len()];
            let mut object = sample_fields(chosen.fields, variant, present);
            object[t.tag] = json!(chosen.tag);
            object
        }
    }
}

fn sample_fields(fields: &[Field], variant: usize, present: bool) -> Value {
    let map: Map<String, Value> = fields
        .iter()
        .map(|field| (field.name.to_string(), sample(&field.ty, variant, present)))
        .collect();
    Value::Object(map)
}

fn device_sample(variant: usize, present: bool) -> Value {
    let mut config = sample_fields(DEVICE_CONFIG.fields, variant, present);
    complete(&mut config);
    config
}

/// What one-element samples cannot say: an xattr map ends with catch-alls for both sides (the
/// schema's doc of `xattrMap` says so; the policy crate's tests refuse lists without).
fn complete(config: &mut Value) {
    let catch_all =
        json!({ "kind": "ok", "client": true, "server": true, "key": "", "prepend": "" });
    if let Some(rules) = config["xattrMap"].as_array_mut() {
        if rules.last() != Some(&catch_all) {
            rules.push(catch_all);
        }
    }
}

/// Every variant of every tagged type is reached by one of these.
fn variant_count() -> usize {
    let mut declarations = Declarations::default();
    declarations.visit_object(&DEVICE_CONFIG);
    declarations
        .objects
        .iter()
        .map(|named| match named {
            Named::Tagged(t) => t.variants.len(),
            Named::Object(_) => 1,
        })
        .max()
        .unwrap_or(1)
}

/// The leaf fields of a sample, as JSON pointers with their types.
fn leaves<'a>(
    fields: &'a [Field],
    value: &Value,
    prefix: &str,
    out: &mut Vec<(String, &'a FieldType)>,
) {
    for field in fields {
        let pointer = format!("{prefix}/{}", field.name);
        leaf(&field.ty, &value[field.name], &pointer, out);
    }
}

fn leaf<'a>(
    ty: &'a FieldType,
    value: &Value,
    pointer: &str,
    out: &mut Vec<(String, &'a FieldType)>,
) {
    match ty {
        FieldType::Object(o) => leaves(o.fields, value, pointer, out),
        FieldType::Tagged(t) => {
            let chosen = t
                .variants
                .iter()
                .find(|v| value[t.tag] == json!(v.tag))
                .expect("the sample names a variant");
            leaves(chosen.fields, value, pointer, out);
        }
        FieldType::List(inner) => leaf(inner, &value[0], &format!("{pointer}/0"), out),
        FieldType::Nullable(inner) => {
            out.push((pointer.to_string(), ty));
            leaf(inner, value, pointer, out);
        }
        _ => out.push((pointer.to_string(), ty)),
    }
}

/// Whether the device accepts `config`, as a process with an unprivileged effective UID (so the
/// ID ranges of the sample are allowed).
fn accepted(config: &Value) -> Result<(), String> {
    let parsed: DaemonConfig = serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
    parsed
        .validate_as(&Identity::user(1000))
        .map_err(|e| e.to_string())
}

fn with(base: &Value, pointer: &str, value: Value) -> Value {
    let mut changed = base.clone();
    *changed.pointer_mut(pointer).expect("the pointer exists") = value;
    let empty_tables = json!({ "guestToHost": [], "hostToGuest": [] });
    // The ID ranges of the sample need a namespace sandbox; another sandbox is tested without
    // (and without translation rules, whose host ids are those of the sample's ranges).
    if pointer == "/sandbox" && changed["sandbox"] != json!("namespace") {
        changed["uidMap"] = json!([]);
        changed["gidMap"] = json!([]);
        changed["translateUid"] = empty_tables.clone();
        changed["translateGid"] = empty_tables.clone();
    }
    // Translation rules may only name host ids inside the user namespace: changed ranges are
    // tested without rules, changed rules with ranges holding every id.
    if pointer.starts_with("/uidMap") || pointer.starts_with("/gidMap") {
        changed["translateUid"] = empty_tables.clone();
        changed["translateGid"] = empty_tables;
    }
    // The path checks of a migration (on in the sample) are refused with file handles.
    if pointer == "/migrationMode" && changed["migrationMode"] != json!("find-paths") {
        changed["migrationVerifyHandles"] = json!(false);
        changed["migrationConfirmPaths"] = json!(false);
    }
    if pointer.starts_with("/translate") {
        let every_id = json!([
            { "inside": 0, "outside": 0, "count": MAX_ID },
            { "inside": MAX_ID, "outside": MAX_ID, "count": 1 }
        ]);
        changed["uidMap"] = every_id.clone();
        changed["gidMap"] = every_id;
    }
    complete(&mut changed);
    changed
}

#[test]
fn schema_samples_round_trip_through_the_serde_types() {
    // Deserialising proves every schema field exists (unknown fields are refused) and every
    // required struct field is described; serialising back proves no optional one is missing.
    for variant in 0..variant_count() {
        for present in [false, true] {
            let sample = device_sample(variant, present);
            accepted(&sample).unwrap_or_else(|e| panic!("{sample}: {e}"));
            let parsed: DaemonConfig = serde_json::from_value(sample.clone()).unwrap();
            assert_eq!(serde_json::to_value(&parsed).unwrap(), sample);
        }
    }
}

#[test]
fn schema_enums_list_exactly_the_accepted_values() {
    for variant in 0..variant_count() {
        let base = device_sample(variant, true);
        let mut fields = Vec::new();
        leaves(DEVICE_CONFIG.fields, &base, "", &mut fields);
        for (pointer, ty) in fields {
            let FieldType::Enum(e) = ty else { continue };
            for value in e.values {
                let config = with(&base, &pointer, json!(value));
                assert!(accepted(&config).is_ok(), "{pointer} = {value:?} refused");
            }
            let config = with(&base, &pointer, json!("not-a-value"));
            assert!(
                accepted(&config).is_err(),
                "{pointer}: an unlisted value accepted"
            );
        }
    }
}

#[test]
fn schema_limits_are_what_the_device_enforces() {
    let mut checked = 0;
    for variant in 0..variant_count() {
        let base = device_sample(variant, true);
        let mut fields = Vec::new();
        leaves(DEVICE_CONFIG.fields, &base, "", &mut fields);
        for (pointer, ty) in fields {
            let ok = |value: Value| {
                let config = with(&base, &pointer, value.clone());
                assert!(accepted(&config).is_ok(), "{pointer} = {value} refused");
            };
            let refused = |value: Value| {
                let config = with(&base, &pointer, value.clone());
                assert!(accepted(&config).is_err(), "{pointer} = {value} accepted");
            };
            checked += 1;
            match ty {
                FieldType::Integer {
                    min,
                    max,
                    power_of_two,
                } => {
                    let (lowest, highest) = if *power_of_two {
                        (min.max(&1).next_power_of_two(), 1u64 << max.ilog2())
                    } else {
                        (*min, *max)
                    };
                    ok(json!(lowest));
                    ok(json!(highest));
                    refused(json!(max + 1));
                    refused(if *min == 0 { json!(-1) } else { json!(min - 1) });
                    if *power_of_two && highest > 2 {
                        refused(json!(highest - 1));
                    }
                }
                FieldType::Text {
                    min_bytes,
                    max_bytes,
                    no_nul,
                } => {
                    ok(json!("x".repeat((*min_bytes).max(1))));
                    if let Some(max) = max_bytes {
                        ok(json!("x".repeat(*max)));
                        refused(json!("x".repeat(max + 1)));
                        // Bytes, not characters: é is two.
                        refused(json!("é".repeat(max / 2 + 1)));
                    }
                    if *min_bytes > 0 {
                        refused(json!("x".repeat(min_bytes - 1)));
                    }
                    if *no_nul {
                        refused(json!("a\0b"));
                    }
                }
                FieldType::Path { absolute } => {
                    refused(json!(""));
                    if *absolute {
                        refused(json!("relative/dir"));
                    } else {
                        ok(json!("relative.sock"));
                    }
                }
                FieldType::Nullable(_) => ok(Value::Null),
                FieldType::Bool => {
                    ok(json!(false));
                    refused(json!(0));
                }
                FieldType::Enum(_) => refused(json!(1)),
                FieldType::List(_) | FieldType::Object(_) | FieldType::Tagged(_) => {
                    unreachable!("leaves are scalar")
                }
            }
        }
    }
    assert!(checked > 30, "only {checked} fields checked");
}
