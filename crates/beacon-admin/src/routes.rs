//! `/admin/v1` (SPEC §5): authenticate, match the route, check the caller's scope, act, and
//! answer JSON. Every change wakes this node's reload at once; other nodes see it within
//! their poll interval.

use std::time::{SystemTime, UNIX_EPOCH};

use beacon_broadcast::sink::SinkHealth;
use beacon_store::{ApiKey, Role, Tenant};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::auth::Principal;
use crate::destinations::{self, Listed};
use crate::error::AdminError;
use crate::Inner;
use beacon_proxy::body::ProxyBody;

/// Largest admin request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

type Reply = Result<(StatusCode, Value), AdminError>;

/// Serves one `/admin/…` request.
pub(crate) async fn handle(
    inner: &Inner,
    req: Request<Incoming>,
    request_id: &str,
) -> Response<ProxyBody> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let client = req
        .extensions()
        .get::<beacon_proxy::server::ClientAddr>()
        .map(|a| a.0);
    let result = async {
        let throttle = inner.auth.throttle();
        if let Some(addr) = client {
            if let Err(wait) = throttle.check(addr.ip()) {
                return Err(AdminError::Throttled(wait.as_secs().max(1)));
            }
        }
        let principal = match inner
            .auth
            .authenticate(
                inner.manager.store(),
                req.headers().get(http::header::AUTHORIZATION),
            )
            .await
        {
            Ok(p) => p,
            Err(e @ (AdminError::MissingToken | AdminError::InvalidToken)) => {
                let failures = client.map_or(0, |a| throttle.failed(a.ip()));
                let client = client.map(|a| a.to_string()).unwrap_or_default();
                tracing::warn!(request_id, %client, failures, %method, path, "admin: failed authentication ({e})");
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let segments = segments(&path).ok_or_else(|| unknown(&method, &path))?;
        route(inner, &principal, &method, &path, &segments, req).await
    }
    .await;
    match result {
        Ok((status, body)) => respond(status, Bytes::from(body.to_string()), request_id),
        Err(e) => {
            if e.status().is_server_error() {
                tracing::warn!(request_id, %method, path, status = e.status().as_u16(), "admin: {e}");
            } else {
                tracing::debug!(request_id, %method, path, status = e.status().as_u16(), "admin: {e}");
            }
            let mut resp = respond(e.status(), e.body(), request_id);
            if let AdminError::Throttled(secs) = e {
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
            }
            resp
        }
    }
}

fn respond(status: StatusCode, body: Bytes, request_id: &str) -> Response<ProxyBody> {
    let body = if status == StatusCode::NO_CONTENT {
        Bytes::new()
    } else {
        body
    };
    let mut resp = beacon_proxy::error::json_response(status, body, request_id);
    // Responses can carry a key's only plaintext: never cache them.
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

/// The decoded path segments after `/admin/v1/`.
fn segments(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix("/admin/v1/")?;
    rest.trim_end_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .ok()
                .map(|s| s.into_owned())
        })
        .collect()
}

fn unknown(method: &Method, path: &str) -> AdminError {
    AdminError::UnknownRoute {
        method: method.to_string(),
        path: path.to_string(),
    }
}

async fn route(
    inner: &Inner,
    who: &Principal,
    method: &Method,
    path: &str,
    segments: &[String],
    req: Request<Incoming>,
) -> Reply {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let not_allowed = || Err(AdminError::MethodNotAllowed(method.to_string()));
    match s.as_slice() {
        ["session"] => match *method {
            Method::GET => Ok((StatusCode::OK, session(who))),
            _ => not_allowed(),
        },
        // Every destination type and its fields: the console draws its forms from this.
        ["destination-types"] => match *method {
            Method::GET => Ok((
                StatusCode::OK,
                json!({ "object": "list", "data": beacon_broadcast::destination::describe() }),
            )),
            _ => not_allowed(),
        },
        ["tenants"] => match *method {
            Method::GET => list_tenants(inner, who).await,
            Method::POST => {
                who.check_operator()?;
                create_tenant(inner, read_json(req).await?).await
            }
            _ => not_allowed(),
        },
        ["tenants", t, rest @ ..] => {
            who.check_tenant(t)?;
            let tenant = inner.manager.store().get_tenant(t).await?;
            match (rest, method) {
                ([], &Method::GET) => Ok((StatusCode::OK, tenant_view(&tenant))),
                (["keys"], &Method::GET) => {
                    let keys = inner.manager.store().list_keys(t).await?;
                    Ok((StatusCode::OK, list(keys.iter().map(key_view))))
                }
                (["keys"], &Method::POST) => create_key(inner, t, read_json(req).await?).await,
                (["keys", id], &Method::DELETE) => {
                    if let Principal::Tenant { key_id, .. } = who {
                        if key_id == id {
                            return Err(AdminError::Conflict(
                                "A management key cannot revoke itself: sign in with another key or the operator token.".into(),
                            ));
                        }
                    }
                    inner.manager.store().revoke_key(t, id).await?;
                    tracing::info!(tenant = %t, key = %id, "key revoked");
                    inner.changed().await;
                    Ok((StatusCode::NO_CONTENT, Value::Null))
                }
                (["broadcast"], &Method::GET) => Ok((StatusCode::OK, broadcast_view(&tenant))),
                (["broadcast"], &Method::PUT) => {
                    let enabled = read_json(req)
                        .await?
                        .as_object()
                        .and_then(|o| o.get("enabled"))
                        .and_then(Value::as_bool)
                        .ok_or_else(|| AdminError::field("enabled", "must be true or false"))?;
                    inner.manager.store().set_broadcast(t, enabled).await?;
                    tracing::info!(tenant = %t, enabled, "broadcast switched");
                    inner.changed().await;
                    Ok((StatusCode::OK, json!({ "enabled": enabled })))
                }
                (["destinations"], &Method::GET) => {
                    let all = inner.manager.list(t).await?;
                    Ok((
                        StatusCode::OK,
                        list(all.iter().map(|d| destination_view(inner, t, d))),
                    ))
                }
                (["destinations"], &Method::POST) => {
                    let (stored, report) = inner.manager.create(t, read_json(req).await?).await?;
                    inner.changed().await;
                    let mut v = destination_view(inner, t, &stored.into());
                    v["test"] = serde_json::to_value(report).unwrap_or_default();
                    Ok((StatusCode::CREATED, v))
                }
                (["destinations", "test"], &Method::POST) => {
                    let config = destinations::parse(read_json(req).await?)?;
                    let report = inner.manager.test(t, &config).await?;
                    Ok((
                        StatusCode::OK,
                        serde_json::to_value(report).unwrap_or_default(),
                    ))
                }
                (["destinations", id, "test"], &Method::POST) => {
                    let report = inner
                        .manager
                        .test_patched(t, id, read_json(req).await?)
                        .await?;
                    Ok((
                        StatusCode::OK,
                        serde_json::to_value(report).unwrap_or_default(),
                    ))
                }
                (["destinations", id], &Method::GET) => {
                    let d = inner.manager.get(t, id).await?;
                    Ok((StatusCode::OK, destination_view(inner, t, &d)))
                }
                (["destinations", id], &Method::PATCH) => {
                    let (stored, report) =
                        inner.manager.update(t, id, read_json(req).await?).await?;
                    inner.changed().await;
                    let mut v = destination_view(inner, t, &stored.into());
                    v["test"] =
                        report.map_or(Value::Null, |r| serde_json::to_value(r).unwrap_or_default());
                    Ok((StatusCode::OK, v))
                }
                (["destinations", id], &Method::DELETE) => {
                    inner.manager.delete(t, id).await?;
                    inner.changed().await;
                    Ok((StatusCode::NO_CONTENT, Value::Null))
                }
                (["destinations", id, "stats"], &Method::GET) => {
                    let d = inner.manager.get(t, id).await?;
                    let mut v = stats_view(inner.health(t, &d.id).as_deref());
                    v["id"] = d.id.into();
                    Ok((StatusCode::OK, v))
                }
                (["usage"], &Method::GET) => {
                    let q = UsageQuery::parse(req.uri().query().unwrap_or(""))?;
                    let rows = inner
                        .manager
                        .store()
                        .usage(t, q.from.div_euclid(60), q.to.div_euclid(60), q.group)
                        .await?;
                    Ok((StatusCode::OK, usage_view(&q, &rows)))
                }
                (["limits"], &Method::GET) => {
                    let (own, keys) = inner.manager.store().limits(t).await?;
                    Ok((StatusCode::OK, limits_view(&own, &keys)))
                }
                (["limits"], &Method::PUT) => {
                    // A tenant's own ceiling is the operator's to set, not its management key's.
                    who.check_operator()?;
                    let limits = beacon_config::Limits::from_json(&read_json(req).await?)
                        .map_err(AdminError::Invalid)?;
                    inner.manager.store().set_tenant_limits(t, &limits).await?;
                    tracing::info!(tenant = %t, limits = %limits.to_json(), "tenant limits set");
                    inner.changed().await;
                    Ok((StatusCode::OK, limits.to_json()))
                }
                (["keys", id, "limits"], &Method::PUT) => {
                    let limits = beacon_config::Limits::from_json(&read_json(req).await?)
                        .map_err(AdminError::Invalid)?;
                    inner.manager.store().set_key_limits(t, id, &limits).await?;
                    tracing::info!(tenant = %t, key = %id, limits = %limits.to_json(), "key limits set");
                    inner.changed().await;
                    Ok((StatusCode::OK, limits.to_json()))
                }
                (["recent"], &Method::GET) => Ok((
                    StatusCode::OK,
                    json!({ "data": inner.pipeline.recent().list(t), "node_capacity": beacon_broadcast::recent::CAPACITY }),
                )),
                (["recent", id], &Method::GET) => inner
                    .pipeline
                    .recent()
                    .get(t, id)
                    .map(|v| (StatusCode::OK, v))
                    .ok_or_else(|| {
                        AdminError::NotFound(format!(
                            "No recent completion `{id}` on this node: it keeps its last {} records.",
                            beacon_broadcast::recent::CAPACITY
                        ))
                    }),
                ([] | ["keys" | "broadcast" | "destinations" | "recent" | "limits" | "usage"], _)
                | (["keys", _] | ["destinations", _] | ["destinations", _, "stats" | "test"] | ["recent", _] | ["keys", _, "limits"], _) => {
                    not_allowed()
                }
                _ => Err(unknown(method, path)),
            }
        }
        _ => Err(unknown(method, path)),
    }
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`].
async fn read_json(req: Request<Incoming>) -> Result<Value, AdminError> {
    let bytes = Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                AdminError::BodyTooLarge(MAX_BODY_BYTES)
            } else {
                AdminError::InvalidJson(format!("could not read the body: {e}"))
            }
        })?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AdminError::InvalidJson("the body is empty".into()));
    }
    serde_json::from_slice(&bytes).map_err(|e| AdminError::InvalidJson(e.to_string()))
}

fn list(items: impl Iterator<Item = Value>) -> Value {
    json!({ "object": "list", "data": items.collect::<Vec<_>>() })
}

fn session(who: &Principal) -> Value {
    match who {
        Principal::Operator => json!({ "role": "operator", "tenant": null }),
        Principal::Tenant { tenant, key_id } => {
            json!({ "role": "management", "tenant": tenant, "key_id": key_id })
        }
    }
}

async fn list_tenants(inner: &Inner, who: &Principal) -> Reply {
    let tenants = inner.manager.store().list_tenants().await?;
    let visible = tenants.iter().filter(|t| who.check_tenant(&t.id).is_ok());
    Ok((StatusCode::OK, list(visible.map(tenant_view))))
}

async fn create_tenant(inner: &Inner, body: Value) -> Reply {
    let id = body
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| valid_tenant_id(id))
        .ok_or_else(|| {
            AdminError::field(
                "id",
                "must be 1 to 64 lowercase letters, digits, `-`, `_` or `.`",
            )
        })?;
    let name = match body.get("name") {
        None | Some(Value::Null) => id,
        Some(Value::String(n)) if !n.trim().is_empty() && n.chars().count() <= 100 => n,
        Some(_) => return Err(AdminError::field("name", "must be 1 to 100 characters")),
    };
    let tenant = inner.manager.store().create_tenant(id, name).await?;
    tracing::info!(tenant = %tenant.id, "tenant created");
    inner.changed().await;
    Ok((StatusCode::CREATED, tenant_view(&tenant)))
}

/// Tenant ids: what the CLI and the admin API accept.
pub fn valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

async fn create_key(inner: &Inner, tenant: &str, body: Value) -> Reply {
    let name = match body.get("name") {
        Some(Value::String(n)) if !n.trim().is_empty() && n.chars().count() <= 100 => n.as_str(),
        _ => return Err(AdminError::field("name", "must be 1 to 100 characters")),
    };
    let role = match body.get("role") {
        None | Some(Value::Null) => Role::Client,
        Some(Value::String(r)) if r == "client" => Role::Client,
        Some(Value::String(r)) if r == "management" => Role::Management,
        Some(_) => return Err(AdminError::field(
            "role",
            "must be `client` (completions) or `management` (this tenant's admin API and console)",
        )),
    };
    let (key, plaintext) = inner.manager.store().create_key(tenant, name, role).await?;
    tracing::info!(tenant, key = %key.id, role = role.as_str(), "key created");
    inner.changed().await;
    let mut v = key_view(&key);
    v["key"] = plaintext.into();
    Ok((StatusCode::CREATED, v))
}

fn tenant_view(t: &Tenant) -> Value {
    json!({ "id": t.id, "name": t.name, "broadcast": { "enabled": t.broadcast_enabled } })
}

fn broadcast_view(t: &Tenant) -> Value {
    json!({ "enabled": t.broadcast_enabled })
}

/// `?from&to&group_by` of a usage report: times as Unix seconds or `YYYY-MM-DD` (UTC
/// midnight); `to` defaults to now, `from` to 30 days before `to`, `group_by` to `day`.
struct UsageQuery {
    from: i64,
    to: i64,
    group: beacon_store::UsageGroup,
}

impl UsageQuery {
    fn parse(query: &str) -> Result<Self, AdminError> {
        let mut from = None;
        let mut to = None;
        let mut group = beacon_store::UsageGroup::Day;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .map_err(|_| AdminError::field(k.to_string(), "must be UTF-8"))?;
            match k {
                "from" => from = Some(time_param("from", &v)?),
                "to" => to = Some(time_param("to", &v)?),
                "group_by" => {
                    group = match v.as_ref() {
                        "key" => beacon_store::UsageGroup::Key,
                        "model" => beacon_store::UsageGroup::Model,
                        "day" => beacon_store::UsageGroup::Day,
                        _ => {
                            return Err(AdminError::field(
                                "group_by",
                                "must be `key`, `model` or `day`",
                            ))
                        }
                    }
                }
                other => {
                    return Err(AdminError::field(
                        other.to_string(),
                        "unknown parameter: use from, to and group_by",
                    ))
                }
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let to = to.unwrap_or(now + 60);
        let from = from.unwrap_or(to - 30 * 86_400);
        if from > to {
            return Err(AdminError::field("from", "must not be after `to`"));
        }
        Ok(Self { from, to, group })
    }
}

/// Unix seconds, or a `YYYY-MM-DD` date (its UTC midnight).
fn time_param(name: &str, v: &str) -> Result<i64, AdminError> {
    if let Ok(secs) = v.parse::<i64>() {
        if (0..=253_402_300_799).contains(&secs) {
            return Ok(secs);
        }
    }
    let date = || -> Option<i64> {
        let mut it = v.splitn(3, '-');
        let y: i64 = it.next()?.parse().ok()?;
        let m: i64 = it.next()?.parse().ok()?;
        let d: i64 = it.next()?.parse().ok()?;
        if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
            return None;
        }
        Some(beacon_config::calendar::days_from_civil(y, m as u32, d as u32) * 86_400)
    };
    date().ok_or_else(|| {
        AdminError::field(
            name.to_string(),
            "must be Unix seconds or a date as YYYY-MM-DD (UTC)",
        )
    })
}

fn usage_view(q: &UsageQuery, rows: &[(String, beacon_store::UsageCounts)]) -> Value {
    let counts = |c: &beacon_store::UsageCounts| {
        json!({
            "requests": c.requests,
            "input_tokens": c.input_tokens,
            "output_tokens": c.output_tokens,
            "cached_tokens": c.cached_tokens,
            "reasoning_tokens": c.reasoning_tokens,
            "cost_usd": c.cost_nanos as f64 / 1e9,
            "cost_nanos": c.cost_nanos,
            "errors": c.errors,
        })
    };
    let mut total = beacon_store::UsageCounts::default();
    let data: Vec<Value> = rows
        .iter()
        .map(|(group, c)| {
            total.requests += c.requests;
            total.input_tokens += c.input_tokens;
            total.output_tokens += c.output_tokens;
            total.cached_tokens += c.cached_tokens;
            total.reasoning_tokens += c.reasoning_tokens;
            total.cost_nanos += c.cost_nanos;
            total.errors += c.errors;
            let mut v = counts(c);
            v["group"] = group.clone().into();
            v
        })
        .collect();
    let group_by = match q.group {
        beacon_store::UsageGroup::Key => "key",
        beacon_store::UsageGroup::Model => "model",
        beacon_store::UsageGroup::Day => "day",
    };
    json!({ "from": q.from, "to": q.to, "group_by": group_by, "data": data, "total": counts(&total) })
}

fn limits_view(
    own: &beacon_config::Limits,
    keys: &std::collections::BTreeMap<String, beacon_config::Limits>,
) -> Value {
    let keys: serde_json::Map<String, Value> =
        keys.iter().map(|(k, l)| (k.clone(), l.to_json())).collect();
    json!({ "tenant": own.to_json(), "keys": keys })
}

fn key_view(k: &ApiKey) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "role": k.role.as_str(),
        "created_at": k.created_at,
        "revoked_at": k.revoked_at,
    })
}

fn destination_view(inner: &Inner, tenant: &str, d: &Listed) -> Value {
    let mut v = destinations::view(d);
    v.insert(
        "stats".into(),
        stats_view(inner.health(tenant, &d.id).as_deref()),
    );
    Value::Object(v)
}

fn unix(t: SystemTime) -> Value {
    t.duration_since(UNIX_EPOCH)
        .map_or(Value::Null, |d| d.as_secs().into())
}

/// Export health on this node (counters start at zero when the node starts).
fn stats_view(health: Option<&SinkHealth>) -> Value {
    let Some(h) = health else {
        return json!({
            "active": false,
            "exported": 0,
            "dropped": 0,
            "dropped_by_reason": {},
            "last_error": null,
            "last_error_at": null,
            "last_success_at": null,
        });
    };
    let by_reason: serde_json::Map<String, Value> = h
        .dropped_by_reason()
        .into_iter()
        .map(|(r, n)| (r.as_str().to_string(), n.into()))
        .collect();
    let (last_error, last_error_at) = match h.last_error() {
        Some((e, at)) => (Value::String(e), unix(at)),
        None => (Value::Null, Value::Null),
    };
    json!({
        "active": true,
        "exported": h.exported(),
        "dropped": h.dropped(),
        "dropped_by_reason": by_reason,
        "last_error": last_error,
        "last_error_at": last_error_at,
        "last_success_at": h.last_success().map_or(Value::Null, unix),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_split_and_decoded() {
        assert_eq!(
            segments("/admin/v1/tenants/acme/destinations/config%3ASentry%20prod/").unwrap(),
            vec!["tenants", "acme", "destinations", "config:Sentry prod"]
        );
        assert!(segments("/admin/v2/tenants").is_none());
        assert!(segments("/admin/v1/tenants/%FF").is_none());
    }

    #[test]
    fn tenant_ids() {
        assert!(valid_tenant_id("acme-prod_1.eu"));
        assert!(!valid_tenant_id("Acme"));
        assert!(!valid_tenant_id(""));
        assert!(!valid_tenant_id("a/b"));
    }
}
