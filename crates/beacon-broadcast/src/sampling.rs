//! Deterministic sampling: a session (or, without one, a request) is kept or dropped whole,
//! independently per destination.

use sha2::{Digest, Sha256};

/// Whether to export a completion to a destination sampling at `rate`.
///
/// The decision hashes `(destination, session_id or request_id)` to a number in `[0, 1)`,
/// so every completion of a session gets the same answer from one destination, and two
/// destinations with the same rate sample independently.
pub fn keep(rate: f64, destination: &str, session_id: Option<&str>, request_id: &str) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 {
        return false;
    }
    let key = session_id.unwrap_or(request_id);
    let mut h = Sha256::new();
    h.update(destination.as_bytes());
    h.update([0u8]);
    h.update(if session_id.is_some() { b"s" } else { b"r" });
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The top 53 bits as a uniform float in [0, 1).
    let unit = (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
    unit < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_kept_or_dropped_whole() {
        for s in 0..200 {
            let session = format!("session-{s}");
            let first = keep(0.3, "dest", Some(&session), "req-0");
            for r in 0..10 {
                assert_eq!(
                    keep(0.3, "dest", Some(&session), &format!("req-{r}")),
                    first
                );
            }
        }
    }

    #[test]
    fn rates_are_respected_and_destinations_independent() {
        let n = 20_000;
        let kept = (0..n)
            .filter(|i| keep(0.25, "a", None, &format!("req-{i}")))
            .count();
        let ratio = kept as f64 / n as f64;
        assert!((0.23..0.27).contains(&ratio), "{ratio}");
        let both = (0..n)
            .filter(|i| {
                keep(0.5, "a", None, &format!("r{i}")) && keep(0.5, "b", None, &format!("r{i}"))
            })
            .count();
        let ratio = both as f64 / n as f64;
        assert!((0.22..0.28).contains(&ratio), "not independent: {ratio}");
        assert!(keep(1.0, "a", None, "r"));
        assert!(!keep(0.0, "a", None, "r"));
    }
}
