//! Which targets a request may use, in order, and which one each attempt takes (SPEC §2.2).
//!
//! A request's [`Plan`] lists candidate targets in groups: a model alias's weighted targets
//! form one group, each fallback its own group(s) after it, and the request body's `models`
//! list adds groups in its order. An attempt takes the first group with a target not yet
//! tried, picking by weight among those not cooling down (a cooling target is used only when
//! nothing else is left). [`Health`] counts consecutive failures per target, shared by
//! every proxy thread of the node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Route;

/// One candidate.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Where it goes.
    pub route: Route,
    /// Its share within its group.
    pub weight: f64,
    /// Its group: lower groups are tried first.
    pub group: u32,
}

/// The candidates of one request, in group order.
#[derive(Debug, Default)]
pub struct Plan {
    /// Candidates, grouped (ascending `group`).
    pub candidates: Vec<Candidate>,
}

/// Candidates considered per request; a longer list (aliases chained through many
/// fallbacks) is cut here.
pub const MAX_CANDIDATES: usize = 64;

/// The attempts made so far on a [`Plan`].
#[derive(Debug, Default)]
pub struct Attempts {
    /// Candidates tried, one bit each.
    tried: u64,
    /// Attempts started.
    pub count: u32,
}

impl Plan {
    /// A plan of one target.
    pub fn single(route: Route) -> Self {
        Self {
            candidates: vec![Candidate {
                route,
                weight: 1.0,
                group: 0,
            }],
        }
    }

    fn len(&self) -> usize {
        self.candidates.len().min(MAX_CANDIDATES)
    }

    /// The next candidate to try: in the first group with untried candidates, a weighted pick
    /// among those not cooling down (`roll` in [0, 1) is drawn only when there is a choice);
    /// cooling ones only when every untried one is cooling. `None` when every candidate was
    /// tried. Allocates nothing.
    pub fn next(
        &self,
        attempts: &mut Attempts,
        health: &Health,
        roll: impl FnOnce() -> f64,
    ) -> Option<usize> {
        let n = self.len();
        let tried = attempts.tried;
        let open = |i: &usize| tried & (1u64 << i) == 0;
        let cooling = |i: usize| health.cooling(&self.candidates[i].route);
        let group_of = |healthy: bool| {
            (0..n)
                .filter(open)
                .filter(|i| !healthy || !cooling(*i))
                .map(|i| self.candidates[i].group)
                .min()
        };
        let (group, healthy) = match group_of(true) {
            Some(g) => (g, true),
            None => (group_of(false)?, false),
        };
        let eligible =
            |i: &usize| open(i) && self.candidates[*i].group == group && (!healthy || !cooling(*i));
        let mut choices = (0..n).filter(eligible);
        let first = choices.next()?;
        let chosen = if choices.next().is_none() {
            first
        } else {
            let total: f64 = (0..n)
                .filter(eligible)
                .map(|i| self.candidates[i].weight)
                .sum();
            let mut at = roll().clamp(0.0, 1.0) * total;
            let mut pick = first;
            for i in (0..n).filter(eligible) {
                pick = i;
                at -= self.candidates[i].weight;
                if at < 0.0 {
                    break;
                }
            }
            pick
        };
        attempts.tried |= 1u64 << chosen;
        Some(chosen)
    }

    /// Whether a candidate not yet tried remains.
    pub fn others_left(&self, attempts: &Attempts) -> bool {
        (0..self.len()).any(|i| attempts.tried & (1u64 << i) == 0)
    }
}

/// Consecutive failures and cooldowns per target (`provider/model`), per node.
#[derive(Debug)]
pub struct Health {
    failures: u32,
    cooldown: Duration,
    targets: Mutex<HashMap<String, TargetHealth>>,
    /// Targets with a failure on record: zero on a healthy gateway, so the happy path
    /// takes no lock.
    troubled: AtomicUsize,
}

#[derive(Debug, Default, Clone, Copy)]
struct TargetHealth {
    consecutive: u32,
    until: Option<Instant>,
}

/// What a failure did to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Counted.
    Counted,
    /// The target just started cooling down.
    CooledDown,
}

fn key(route: &Route) -> String {
    format!("{}/{}", route.provider.name, route.upstream_model)
}

impl Health {
    /// A target cools down for `cooldown` after `failures` consecutive failures.
    pub fn new(failures: u32, cooldown: Duration) -> Self {
        Self {
            failures: failures.max(1),
            cooldown,
            targets: Mutex::new(HashMap::new()),
            troubled: AtomicUsize::new(0),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, TargetHealth>) -> R) -> R {
        let mut map = match self.targets.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut map)
    }

    /// Whether `route`'s target is cooling down now.
    pub fn cooling(&self, route: &Route) -> bool {
        if self.troubled.load(Ordering::Relaxed) == 0 || self.cooldown.is_zero() {
            return false;
        }
        let now = Instant::now();
        self.with(|m| {
            m.get(&key(route))
                .and_then(|t| t.until)
                .is_some_and(|until| until > now)
        })
    }

    /// A failed attempt on `route`.
    pub fn failed(&self, route: &Route) -> Failed {
        let now = Instant::now();
        let (failures, cooldown) = (self.failures, self.cooldown);
        self.with(|m| {
            let entry = m.entry(key(route)).or_insert_with(|| {
                self.troubled.fetch_add(1, Ordering::Relaxed);
                TargetHealth::default()
            });
            if entry.until.is_some_and(|u| u <= now) {
                // Back from a cooldown: it gets a fresh count.
                *entry = TargetHealth::default();
            }
            entry.consecutive += 1;
            if entry.consecutive >= failures && entry.until.is_none() && !cooldown.is_zero() {
                entry.until = Some(now + cooldown);
                Failed::CooledDown
            } else {
                Failed::Counted
            }
        })
    }

    /// A served attempt on `route`: its failures are forgotten.
    pub fn succeeded(&self, route: &Route) {
        if self.troubled.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.with(|m| {
            if m.remove(&key(route)).is_some() {
                self.troubled.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }

    /// Targets cooling down now, by provider.
    pub fn cooling_by_provider(&self) -> HashMap<String, i64> {
        let now = Instant::now();
        self.with(|m| {
            let mut out = HashMap::new();
            for (k, t) in m.iter() {
                if t.until.is_some_and(|u| u > now) {
                    let provider = k.split('/').next().unwrap_or_default().to_string();
                    *out.entry(provider).or_insert(0) += 1;
                }
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Router;
    use beacon_config::{Api, ProviderConfig, ProviderKind};

    fn router() -> Router {
        let p = |name: &str| ProviderConfig {
            name: name.into(),
            base_url: format!("http://{name}.example/v1"),
            api_key: None,
            default: false,
            headers: vec![],
            models: vec![],
            kind: ProviderKind::OpenAi,
            apis: ProviderKind::OpenAi.default_apis(),
        };
        Router::new(&[p("a"), p("b"), p("c")], &[]).unwrap()
    }

    fn plan(weights: &[(&str, f64, u32)]) -> Plan {
        let r = router();
        Plan {
            candidates: weights
                .iter()
                .map(|(m, w, g)| Candidate {
                    route: r.route(m, Api::Chat).unwrap(),
                    weight: *w,
                    group: *g,
                })
                .collect(),
        }
    }

    #[test]
    fn weights_split_picks_within_a_group_and_groups_go_in_order() {
        let p = plan(&[("a/x", 3.0, 0), ("b/x", 1.0, 0), ("c/x", 1.0, 1)]);
        let h = Health::new(3, Duration::from_secs(30));
        let first = |roll: f64| p.next(&mut Attempts::default(), &h, || roll).unwrap();
        assert_eq!(first(0.0), 0);
        assert_eq!(first(0.74), 0);
        assert_eq!(first(0.76), 1);
        let mut a = Attempts::default();
        assert_eq!(p.next(&mut a, &h, || 0.1), Some(0));
        assert_eq!(
            p.next(&mut a, &h, || 0.1),
            Some(1),
            "then the rest of the group"
        );
        assert!(p.others_left(&a));
        assert_eq!(
            p.next(&mut a, &h, || 0.1),
            Some(2),
            "then the fallback group"
        );
        assert!(!p.others_left(&a));
        assert_eq!(p.next(&mut a, &h, || 0.1), None);
    }

    #[test]
    fn a_target_cools_down_after_consecutive_failures_and_comes_back() {
        let p = plan(&[("a/x", 1.0, 0), ("b/x", 1.0, 0)]);
        let h = Health::new(2, Duration::from_millis(50));
        let a = &p.candidates[0].route;
        assert_eq!(h.failed(a), Failed::Counted);
        h.succeeded(a);
        assert_eq!(h.failed(a), Failed::Counted, "a success resets the count");
        assert_eq!(h.failed(a), Failed::CooledDown);
        assert!(h.cooling(a));
        assert_eq!(h.cooling_by_provider().get("a"), Some(&1));
        // While it cools, the other target is taken whatever the roll.
        for _ in 0..20 {
            assert_eq!(p.next(&mut Attempts::default(), &h, || 0.0), Some(1));
        }
        // Alone, a cooling target is still tried.
        let solo = plan(&[("a/x", 1.0, 0)]);
        assert_eq!(solo.next(&mut Attempts::default(), &h, || 0.5), Some(0));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!h.cooling(a));
        assert_eq!(p.next(&mut Attempts::default(), &h, || 0.0), Some(0));
        assert_eq!(
            h.failed(a),
            Failed::Counted,
            "a fresh count after the cooldown"
        );
    }
}
