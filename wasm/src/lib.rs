//! wasm-bindgen glue over `roomshard-verify`: the same streaming verifier, driven from JavaScript.
//!
//! ```js
//! const v = new WasmVerifier(trustedKeysJson, JSON.stringify({ hash_archive: true }));
//! // or judge key validity today: { key_validity_at: new Date().toISOString().slice(0, 19) + "Z" }
//! for await (const chunk of stream) if (!v.update(chunk)) break; // false once refused
//! const report = JSON.parse(v.finish());                        // report.valid, report.error.reason
//! ```
//!
//! Nothing here decides anything: every verdict comes from `roomshard_verify`. A verification
//! failure never throws (the report says why); only caller mistakes do (a trusted key set or an
//! options object that does not parse).
#![forbid(unsafe_code)]

use roomshard_verify::{Report, TrustedKeys, Verifier, VerifyOptions};
use wasm_bindgen::prelude::*;

/// What the options JSON sets: the verifier's options, and the time to judge key validity at.
#[derive(Debug, Default, PartialEq)]
struct Options {
    verify: VerifyOptions,
    /// `key_validity_at`: judge keys' not_before/not_after at this time (`TrustedKeys::judged_at`,
    /// e.g. the current time) instead of at the bundle's own created_at.
    key_validity_at: Option<String>,
}

/// Options as JSON: `{"hash_archive": true, "max_entries": 10, "key_validity_at":
/// "2026-12-01T00:00:00Z", ...}`. Every field is optional; limits (named as in
/// `VerifyLimits::NAMES`) default to `VerifyLimits::default()`. Unknown fields are refused so
/// typos do not pass silently.
fn parse_options(json: Option<&str>) -> Result<Options, String> {
    let mut options = Options::default();
    let text = match json.map(str::trim) {
        None | Some("") | Some("null") => return Ok(options),
        Some(t) => t,
    };
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| format!("options: {e}"))?;
    for (name, value) in fields {
        if name == "hash_archive" {
            options.verify.hash_archive = value
                .as_bool()
                .ok_or("options: hash_archive must be true or false")?;
            continue;
        }
        if name == "key_validity_at" {
            let at = value
                .as_str()
                .ok_or("options: key_validity_at must be a YYYY-MM-DDTHH:MM:SSZ string")?;
            options.key_validity_at = Some(at.to_string());
            continue;
        }
        let n = value
            .as_u64()
            .ok_or_else(|| format!("options: {name} must be a non-negative integer"))?;
        options
            .verify
            .limits
            .set(&name, n)
            .map_err(|e| format!("options: {e}"))?;
    }
    Ok(options)
}

fn parse_keys(json: &str) -> Result<TrustedKeys, String> {
    TrustedKeys::from_json(json.as_bytes()).map_err(|e| e.to_string())
}

/// The one place errors cross into JavaScript: a JS `Error` whose message is the text given
/// (for key-set problems `"key_set_invalid: <detail>"`, the reason code first).
fn js_err(message: String) -> JsError {
    JsError::new(&message)
}

/// The report as JSON, with a `sidecar` member added when a sidecar was checked:
/// `{"valid": true, "key_id": …, "subject_name": …}` or `{"valid": false, "error": {reason, detail}}`.
/// The sidecar's verdict does not change the archive's `valid`.
fn report_json(report: &Report, sidecar: Option<serde_json::Value>) -> String {
    match sidecar {
        None => report.to_json(),
        Some(s) => {
            let mut v = serde_json::to_value(report).expect("a report always serialises");
            if let serde_json::Value::Object(m) = &mut v {
                m.insert("sidecar".to_string(), s);
            }
            serde_json::to_string_pretty(&v).expect("a report always serialises")
        }
    }
}

fn check_sidecar(sidecar_json: &str, report: &Report, keys: &TrustedKeys) -> serde_json::Value {
    match roomshard_verify::verify_sidecar(sidecar_json.as_bytes(), report, keys) {
        Ok(info) => serde_json::json!({
            "valid": true,
            "key_id": info.key_id,
            "subject_name": info.subject_name,
        }),
        Err(e) => serde_json::json!({
            "valid": false,
            "error": { "reason": e.reason.as_str(), "detail": e.detail },
        }),
    }
}

/// A push-style verifier: `update` with each chunk of the compressed archive, then `finish`.
#[wasm_bindgen]
pub struct WasmVerifier {
    inner: Verifier,
    /// Kept for `finish_with_sidecar` (the verifier owns its own copy).
    keys: TrustedKeys,
    failed: bool,
}

#[wasm_bindgen]
impl WasmVerifier {
    /// A verifier trusting the key set `trusted_keys_json` (`{"keys":[…]}`), with optional options
    /// JSON (`hash_archive` and limit overrides). Throws if either does not parse.
    #[wasm_bindgen(constructor)]
    pub fn new(
        trusted_keys_json: &str,
        options_json: Option<String>,
    ) -> Result<WasmVerifier, JsError> {
        let keys = parse_keys(trusted_keys_json).map_err(js_err)?;
        let options = parse_options(options_json.as_deref()).map_err(js_err)?;
        let keys = match &options.key_validity_at {
            Some(at) => keys.judged_at(at).map_err(|e| js_err(e.to_string()))?,
            None => keys,
        };
        Ok(WasmVerifier {
            inner: Verifier::new(keys.clone(), options.verify),
            keys,
            failed: false,
        })
    }

    /// Feeds the next chunk (any size). Returns false once the archive has been refused; further
    /// chunks are then ignored and `finish` gives the report with the reason. Never throws.
    pub fn update(&mut self, chunk: &[u8]) -> bool {
        if !self.failed && self.inner.update(chunk).is_err() {
            self.failed = true;
        }
        !self.failed
    }

    /// Ends the input and returns the report as JSON. Consumes the verifier.
    pub fn finish(self) -> String {
        report_json(&self.inner.finish(), None)
    }

    /// Like `finish`, and also checks the Sigstore sidecar (`<archive>.sigstore.json`) against the
    /// report; the result is the report's `sidecar` member. The verifier must have been created
    /// with `hash_archive: true` (otherwise the sidecar check fails with `sidecar_invalid`).
    #[wasm_bindgen(js_name = finishWithSidecar)]
    pub fn finish_with_sidecar(self, sidecar_json: &str) -> String {
        let report = self.inner.finish();
        let sidecar = check_sidecar(sidecar_json, &report, &self.keys);
        report_json(&report, Some(sidecar))
    }
}

/// One-shot: verifies a whole archive held in memory and returns the report JSON. Throws only if
/// the key set or the options do not parse; a refused archive is a report with `valid: false`.
#[wasm_bindgen]
pub fn verify(
    archive: &[u8],
    trusted_keys_json: &str,
    options_json: Option<String>,
) -> Result<String, JsError> {
    let mut v = WasmVerifier::new(trusted_keys_json, options_json)?;
    v.update(archive);
    Ok(v.finish())
}

/// The `roomshard-verify-wasm` version (same as the crate).
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_default_when_absent() {
        for t in [None, Some(""), Some(" null ")] {
            assert_eq!(parse_options(t).unwrap(), Options::default());
        }
    }

    #[test]
    fn options_override_limits() {
        let o = parse_options(Some(
            r#"{"hash_archive":true,"max_entries":10,"max_window_log":20,"key_validity_at":"2026-12-01T00:00:00Z"}"#,
        ))
        .unwrap();
        assert_eq!(o.key_validity_at.as_deref(), Some("2026-12-01T00:00:00Z"));
        let o = o.verify;
        assert!(o.hash_archive);
        assert_eq!(o.limits.max_entries, 10);
        assert_eq!(o.limits.max_window_log, 20);
        assert_eq!(o.limits.max_ratio, VerifyOptions::default().limits.max_ratio);
    }

    #[test]
    fn options_refuse_unknown_fields() {
        assert!(parse_options(Some(r#"{"max_entrie":10}"#)).is_err());
        assert!(parse_options(Some("[1]")).is_err());
        assert!(parse_options(Some(r#"{"key_validity_at":1}"#)).is_err());
    }

    #[test]
    fn bad_key_set_names_its_reason() {
        assert!(parse_keys("{").unwrap_err().starts_with("key_set_invalid: "));
    }
}
