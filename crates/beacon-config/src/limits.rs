//! Limits on a key or a tenant (SPEC §5.1): requests and tokens per minute, concurrent
//! requests, and spend in USD per UTC day and month. The same shape in the config file
//! (`[tenants.limits]`, `[tenants.key_limits."key_…"]`), the admin API (`PUT …/limits`) and
//! the store (JSON), read by one parser with field-named errors.

use serde::{Deserialize, Serialize};

use crate::FieldError;

/// Largest limit accepted for a count (requests, tokens, concurrency).
pub const MAX_COUNT: u64 = 1_000_000_000_000;
/// Largest budget accepted, in USD.
pub const MAX_USD: f64 = 1.0e9;

/// Limits as written: every field optional, unknown fields refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// Prompt plus completion tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_requests: Option<u64>,
    /// USD per UTC calendar day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_day: Option<f64>,
    /// USD per UTC calendar month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_month: Option<f64>,
}

/// Validated limits; `None` is unlimited. Money is kept in micro-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Requests per minute.
    pub requests_per_minute: Option<u64>,
    /// Prompt plus completion tokens per minute.
    pub tokens_per_minute: Option<u64>,
    /// Requests in flight at once.
    pub concurrent_requests: Option<u64>,
    /// Spend per UTC day, in millionths of a USD.
    pub usd_per_day_micros: Option<u64>,
    /// Spend per UTC month, in millionths of a USD.
    pub usd_per_month_micros: Option<u64>,
}

impl Limits {
    /// True when nothing is limited.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Validates `raw`; errors name `prefix.<field>`.
    pub fn from_raw(raw: &RawLimits, prefix: &str) -> Result<Self, Vec<FieldError>> {
        let mut errs = Vec::new();
        let field = |name: &str| {
            if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}.{name}")
            }
        };
        let count = |v: Option<u64>, name: &str, errs: &mut Vec<FieldError>| match v {
            Some(n) if n > MAX_COUNT => {
                errs.push(FieldError::new(
                    field(name),
                    format!("must be at most {MAX_COUNT}"),
                ));
                None
            }
            v => v,
        };
        let usd = |v: Option<f64>, name: &str, errs: &mut Vec<FieldError>| match v {
            Some(x) if !x.is_finite() || !(0.0..=MAX_USD).contains(&x) => {
                errs.push(FieldError::new(
                    field(name),
                    format!("must be a number of USD from 0 to {MAX_USD}"),
                ));
                None
            }
            Some(x) => Some((x * 1_000_000.0).round() as u64),
            None => None,
        };
        let limits = Self {
            requests_per_minute: count(raw.requests_per_minute, "requests_per_minute", &mut errs),
            tokens_per_minute: count(raw.tokens_per_minute, "tokens_per_minute", &mut errs),
            concurrent_requests: count(raw.concurrent_requests, "concurrent_requests", &mut errs),
            usd_per_day_micros: usd(raw.usd_per_day, "usd_per_day", &mut errs),
            usd_per_month_micros: usd(raw.usd_per_month, "usd_per_month", &mut errs),
        };
        if errs.is_empty() {
            Ok(limits)
        } else {
            Err(errs)
        }
    }

    /// Parses limits from JSON (the admin API's body, the store's column); errors name the
    /// field. An empty or null value is no limit.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, Vec<FieldError>> {
        if value.is_null() {
            return Ok(Self::default());
        }
        if !value.is_object() {
            return Err(vec![FieldError::new(
                "limits",
                "must be an object, e.g. {\"requests_per_minute\": 60}",
            )]);
        }
        let raw: RawLimits = serde_json::from_value(value.clone()).map_err(|e| {
            // serde names the field in its message ("unknown field `x`", "invalid type …").
            vec![FieldError::new("limits", e.to_string())]
        })?;
        Self::from_raw(&raw, "")
    }

    /// Back to the written form (USD as numbers).
    pub fn to_raw(&self) -> RawLimits {
        let usd = |m: Option<u64>| m.map(|m| m as f64 / 1_000_000.0);
        RawLimits {
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            concurrent_requests: self.concurrent_requests,
            usd_per_day: usd(self.usd_per_day_micros),
            usd_per_month: usd(self.usd_per_month_micros),
        }
    }

    /// As JSON (`{}` when nothing is limited).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.to_raw()).unwrap_or_else(|_| serde_json::json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_parse_with_field_named_errors_and_round_trip() {
        let l = Limits::from_json(&json!({"requests_per_minute": 5, "usd_per_day": 1.25})).unwrap();
        assert_eq!(l.requests_per_minute, Some(5));
        assert_eq!(l.usd_per_day_micros, Some(1_250_000));
        assert_eq!(Limits::from_json(&l.to_json()).unwrap(), l);
        assert!(Limits::from_json(&json!({})).unwrap().is_empty());
        assert!(Limits::from_json(&serde_json::Value::Null)
            .unwrap()
            .is_empty());

        let e = Limits::from_json(&json!({"requests_per_minit": 5})).unwrap_err();
        assert!(e[0].message.contains("requests_per_minit"), "{e:?}");
        let e = Limits::from_json(&json!({"requests_per_minute": -1})).unwrap_err();
        assert!(e[0].message.contains("invalid value"), "{e:?}");
        let e = Limits::from_json(&json!({"usd_per_month": -2.0})).unwrap_err();
        assert_eq!(e[0].field, "usd_per_month");
        let e = Limits::from_json(&json!({"tokens_per_minute": "many"})).unwrap_err();
        assert!(e[0].message.contains("invalid type"), "{e:?}");
        let e = Limits::from_raw(
            &RawLimits {
                concurrent_requests: Some(MAX_COUNT + 1),
                ..Default::default()
            },
            "tenants[0].limits",
        )
        .unwrap_err();
        assert_eq!(e[0].field, "tenants[0].limits.concurrent_requests");
        assert!(Limits::from_json(&json!([1])).is_err());
    }

    #[test]
    fn the_config_file_declares_tenant_and_key_limits() {
        let ok = crate::Config::parse(
            "[[tenants]]\nid = \"acme\"\n[tenants.limits]\nrequests_per_minute = 60\n[tenants.key_limits.\"key_0123456789ab\"]\nusd_per_month = 20.5\n",
            "t",
            &|_| None,
        )
        .unwrap();
        assert_eq!(ok.tenants[0].limits.requests_per_minute, Some(60));
        assert_eq!(
            ok.tenants[0].key_limits["key_0123456789ab"].usd_per_month_micros,
            Some(20_500_000)
        );
        let err = crate::Config::parse(
            "[[tenants]]\nid = \"acme\"\n[tenants.limits]\nusd_per_day = -1.0\n[tenants.key_limits.\"bk-plaintext\"]\nrequests_per_minute = 1\n",
            "t",
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("tenants[0].limits.usd_per_day"), "{err}");
        assert!(
            err.contains("tenants[0].key_limits.\"bk-plaintext\""),
            "{err}"
        );
    }
}
