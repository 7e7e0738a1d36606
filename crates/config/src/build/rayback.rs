//! The top-level `rayback` object, Rayback's own keys that V2Ray ignores:
//! the `/metrics` listen address and its `metricsAuth`, `noBridgeWait`,
//! `drainDelay`, `workers` and `limits`, each checked against its bounds.
//!
//! Only the object is read here, from the piece `build`'s `mod.rs` kept
//! after merging; the defaults are the model's `RaybackExtras`.

use std::time::Duration;

use crate::error::ConfigError;
use crate::model::*;
use crate::reader::Cx;

use super::Piece;

const LIMIT_KEYS: &[&str] = &[
    "streamsPerConnection",
    "connectionsPerBridge",
    "unauthenticatedPerSource",
    "streamStallTimeout",
    "streamBuffer",
];

/// The largest `rayback.drainDelay`, in milliseconds.
pub const MAX_DRAIN_DELAY_MS: i64 = 600_000;

pub(super) fn build_rayback(
    cx: &mut Cx<'_>,
    piece: &Piece<'_>,
) -> Result<RaybackExtras, ConfigError> {
    let object = cx.object(piece.node, &piece.path)?;
    object.warn_unknown(
        cx,
        &[
            "metrics",
            "metricsAuth",
            "noBridgeWait",
            "drainDelay",
            "workers",
            "limits",
        ],
    );
    let mut extras = RaybackExtras::default();
    if let Some(node) = object.get("metrics") {
        let path = object.at("metrics");
        let text = cx.string(node, &path)?;
        extras.metrics = Some(text.parse().map_err(|_| {
            cx.invalid(&path, format!("{text:?} is not an IP:port listen address"))
        })?);
    }
    if let Some(node) = object.get("metricsAuth") {
        let path = object.at("metricsAuth");
        let text = cx.string(node, &path)?;
        extras.metrics_auth = Some(text.parse().map_err(|message| cx.invalid(&path, message))?);
    }
    if let Some(node) = object.get("noBridgeWait") {
        extras.no_bridge_wait =
            Duration::from_millis(u64::from(cx.u32(node, &object.at("noBridgeWait"))?));
    }
    // At most ten minutes: a load balancer notices a failing health check
    // within seconds; a longer delay only keeps a stopping process around.
    if let Some(node) = object.get("drainDelay") {
        let millis = cx.integer(node, &object.at("drainDelay"), 0, MAX_DRAIN_DELAY_MS)?;
        extras.drain_delay = Duration::from_millis(millis as u64);
    }
    if let Some(node) = object.get("workers") {
        extras.workers = cx.integer(node, &object.at("workers"), 0, 1024)? as u32;
    }
    if let Some(node) = object.get("limits") {
        let path = object.at("limits");
        let limits = cx.object(node, &path)?;
        limits.warn_unknown(cx, LIMIT_KEYS);
        let value =
            |cx: &Cx<'_>, key: &str, min: i64, max: i64| -> Result<Option<u32>, ConfigError> {
                match limits.get(key) {
                    Some(node) => Ok(Some(cx.integer(node, &limits.at(key), min, max)? as u32)),
                    None => Ok(None),
                }
            };
        let target = &mut extras.limits;
        if let Some(count) = value(cx, "streamsPerConnection", 1, 65535)? {
            target.streams_per_connection = count;
        }
        if let Some(count) = value(cx, "connectionsPerBridge", 1, 65535)? {
            target.connections_per_bridge = count;
        }
        if let Some(count) = value(cx, "unauthenticatedPerSource", 1, i64::from(u32::MAX))? {
            target.unauthenticated_per_source = count;
        }
        // At most 60: a stall keeps the tunnel's TCP window shut, and the
        // tunnel sockets give up after 90 s of that (TCP_USER_TIMEOUT).
        if let Some(seconds) = value(cx, "streamStallTimeout", 1, 60)? {
            target.stream_stall_timeout = Duration::from_secs(u64::from(seconds));
        }
        if let Some(bytes) = value(cx, "streamBuffer", 1024, i64::from(u32::MAX))? {
            target.stream_buffer = bytes;
        }
    }
    Ok(extras)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    fn parse(rayback: &str) -> Result<crate::model::Config, String> {
        crate::parse_str("drain.json", &format!("{{\"rayback\": {rayback}}}"))
            .map(|parsed| parsed.config)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn drain_delay_defaults_to_zero_and_reads_milliseconds() {
        assert_eq!(parse("{}").unwrap().rayback.drain_delay, Duration::ZERO);
        for (text, millis) in [("0", 0), ("1500", 1500), ("600000", 600_000)] {
            let config = parse(&format!("{{\"drainDelay\": {text}}}")).unwrap();
            assert_eq!(config.rayback.drain_delay, Duration::from_millis(millis));
        }
    }

    #[test]
    fn drain_delay_out_of_bounds_names_the_field() {
        for bad in ["-1", "600001", "1.5", "\"5s\"", "true"] {
            let error = parse(&format!("{{\"drainDelay\": {bad}}}")).unwrap_err();
            assert!(
                error.contains("rayback.drainDelay"),
                "{bad}: the error does not name the field: {error}"
            );
        }
        let error = parse("{\"drainDelay\": 600001}").unwrap_err();
        assert!(error.contains("0..=600000"), "{error}");
    }

    #[test]
    fn metrics_auth_reads_user_and_password() {
        assert_eq!(parse("{}").unwrap().rayback.metrics_auth, None);
        let config = parse(r#"{"metricsAuth": "ops:s3:cr:et"}"#).unwrap();
        let auth = config.rayback.metrics_auth.unwrap();
        assert_eq!(
            (auth.user.as_str(), auth.password.as_str()),
            ("ops", "s3:cr:et")
        );
        assert!(
            !format!("{auth:?}").contains("s3:cr:et"),
            "the password prints masked"
        );
    }

    #[test]
    fn bad_metrics_auth_names_the_field_and_not_the_password() {
        for (bad, why) in [
            ("\"nocolon\"", "no colon"),
            ("\":secret\"", "the user is empty"),
            ("\"ops:\"", "the password is empty"),
            ("\"ops:a\\nb\"", "control characters"),
            ("42", "string"),
        ] {
            let error = parse(&format!("{{\"metricsAuth\": {bad}}}")).unwrap_err();
            assert!(error.contains("rayback.metricsAuth"), "{bad}: {error}");
            assert!(error.contains(why), "{bad}: {error}");
            assert!(!error.contains("secret"), "{bad}: {error}");
        }
    }

    #[test]
    fn metrics_auth_round_trips_through_print_config() {
        let config = parse(r#"{"metricsAuth": "ops:pw:1"}"#).unwrap();
        let printed = config.to_v2ray_json();
        assert_eq!(printed["rayback"]["metricsAuth"], "ops:pw:1");
        let again = crate::parse_str("printed.json", &printed.to_string())
            .unwrap()
            .config;
        assert_eq!(again.rayback.metrics_auth, config.rayback.metrics_auth);
    }

    #[test]
    fn drain_delay_round_trips_through_print_config() {
        let config = parse("{\"drainDelay\": 2500}").unwrap();
        let printed = config.to_v2ray_json();
        assert_eq!(printed["rayback"]["drainDelay"], 2500);
        let again = crate::parse_str("printed.json", &printed.to_string())
            .unwrap()
            .config;
        assert_eq!(again.rayback.drain_delay, Duration::from_millis(2500));
    }
}
