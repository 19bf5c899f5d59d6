//! Who may have an environment, and which idle ones stay. The pool owns the
//! idle environments of every configuration, admission (the account's
//! concurrency, each function's reserved concurrency, and each function's
//! scaling rate for new environments), the provisioned environments'
//! progress (and the signal that one was lost, which its keeper waits on to
//! start a replacement), and reclaiming idle environments: after the keep-warm period,
//! at their maximum lifetime, and least recently used first when the node
//! runs short of memory. It never starts or runs an environment itself.
//!
//! The reaper sleeps until the next idle environment is due, or until the
//! idle set changes; with nothing idle it sleeps on a notification only, so
//! an idle node spends no CPU here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nimbus_core::{Concurrency, ThrottleReason};

use crate::env::Env;

/// How the node scales.
#[derive(Debug, Clone)]
pub struct ScalingLimits {
    /// Invocations in flight at once, account-wide (`--max-concurrency`).
    pub max_concurrency: u32,
    /// New environments per function per 10 s (AWS: 1,000), refilled continuously.
    pub burst: u32,
    /// How long an idle environment is kept warm.
    pub keep_warm: Duration,
    /// The longest an environment lives, busy or idle.
    pub max_lifetime: Duration,
    /// Below this much available memory, starting an environment first
    /// reclaims the least recently used idle one.
    pub min_free_memory_mb: u64,
}

impl ScalingLimits {
    /// AWS's defaults; concurrency follows the node's memory.
    pub fn for_node() -> Self {
        let total_mb = meminfo_mb("MemTotal:").unwrap_or(4096);
        Self {
            max_concurrency: default_concurrency(total_mb),
            burst: 1000,
            keep_warm: Duration::from_secs(300),
            max_lifetime: Duration::from_secs(2 * 3600),
            min_free_memory_mb: total_mb / 20,
        }
    }
}

/// One warm environment per 16 MiB of the node's memory: about what an idle
/// Python or Node environment holds, so the limit is what the node can keep.
fn default_concurrency(total_memory_mb: u64) -> u32 {
    u32::try_from(total_memory_mb / 16).unwrap_or(u32::MAX).max(10)
}

/// A field of /proc/meminfo in MB.
fn meminfo_mb(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 =
        text.lines().find_map(|l| l.strip_prefix(field))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024)
}

/// A provisioned configuration's progress, as GetProvisionedConcurrencyConfig reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedStatus {
    pub requested: u32,
    /// Initialized and kept ready.
    pub ready: u32,
    /// Why provisioning failed, when it did.
    pub failed: Option<String>,
}

/// A provisioned configuration the pool keeps count of.
struct Provisioned {
    status: ProvisionedStatus,
    /// Told when one of its environments is lost, and when the
    /// configuration goes (its keeper then finds it gone and stops).
    keeper: Arc<tokio::sync::Notify>,
}

/// Which provisioned configuration a keeper keeps: its key, and the signal
/// that tells one configuration from a later one of the same key.
pub(crate) struct Keeper {
    function: String,
    qualifier: String,
    pub(crate) lost: Arc<tokio::sync::Notify>,
}

struct Idle {
    env: Env,
    function: String,
    since: Instant,
    /// Set for provisioned environments: (qualifier) they are kept for.
    provisioned: Option<String>,
}

impl Idle {
    /// When it is retired unless used again: after the keep-warm period, or
    /// at its maximum lifetime. Provisioned environments stay for as long
    /// as their configuration does.
    fn due(&self, limits: &ScalingLimits) -> Option<Instant> {
        match self.provisioned {
            Some(_) => None,
            None => Some((self.since + limits.keep_warm).min(self.env.born() + limits.max_lifetime)),
        }
    }
}

/// Refills at `burst` per 10 s up to `burst`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
struct State {
    idle: HashMap<String, Vec<Idle>>,
    /// In-flight invocations per function, and in all.
    busy: HashMap<String, u32>,
    busy_all: u32,
    /// In-flight invocations of functions without reserved concurrency.
    busy_unreserved: u32,
    reserved: HashMap<String, u32>,
    buckets: HashMap<String, Bucket>,
    /// (function, qualifier) → progress.
    provisioned: HashMap<(String, String), Provisioned>,
    /// When the reaper wakes next (`None`: not until the idle set changes).
    reaper_due: Option<Instant>,
}

impl State {
    fn reserved_total(&self) -> u32 {
        self.reserved.values().sum()
    }

    fn take_token(&mut self, function: &str, burst: u32) -> bool {
        let now = Instant::now();
        let capacity = f64::from(burst);
        let b = self.buckets.entry(function.to_string()).or_insert(Bucket { tokens: capacity, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * capacity / 10.0).min(capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// A provisioned environment is gone: one fewer ready, and its keeper
    /// is told to replace it.
    fn lose_provisioned(&mut self, function: &str, qualifier: &str) {
        if let Some(p) = self.provisioned.get_mut(&(function.to_string(), qualifier.to_string())) {
            p.status.ready = p.status.ready.saturating_sub(1);
            p.keeper.notify_one();
        }
    }

    /// The configuration `keeper` keeps, unless it was removed or replaced.
    fn kept(&mut self, keeper: &Keeper) -> Option<&mut Provisioned> {
        self.provisioned
            .get_mut(&(keeper.function.clone(), keeper.qualifier.clone()))
            .filter(|p| Arc::ptr_eq(&p.keeper, &keeper.lost))
    }

    fn release(&mut self, function: &str) {
        let reserved = self.reserved.contains_key(function);
        self.busy_all = self.busy_all.saturating_sub(1);
        if let Some(n) = self.busy.get_mut(function) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.busy.remove(function);
            }
        }
        if !reserved {
            self.busy_unreserved = self.busy_unreserved.saturating_sub(1);
        }
    }
}

pub(crate) struct Pool {
    limits: ScalingLimits,
    state: Mutex<State>,
    /// Wakes the reaper when the idle set changes.
    changed: tokio::sync::Notify,
}

/// An admitted invocation: a concurrency slot, and the warm environment it
/// got if there was one. Dropping it frees the slot.
pub(crate) struct Ticket {
    pool: Arc<Pool>,
    function: String,
    pub warm: Option<Env>,
    /// The qualifier a provisioned environment is kept for.
    provisioned: Option<String>,
    /// What ran at once when it was admitted, itself included.
    pub concurrency: Concurrency,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.pool.lock().release(&self.function);
    }
}

impl Ticket {
    /// Hands the environment back to the pool, or retires it.
    pub async fn finish(mut self, env: Env, reusable: bool) {
        if reusable && env.alive() && env.age() < self.pool.limits.max_lifetime {
            let idle = Idle {
                function: self.function.clone(),
                env,
                since: Instant::now(),
                provisioned: self.provisioned.take(),
            };
            let due = idle.due(&self.pool.limits);
            let mut s = self.pool.lock();
            s.idle.entry(idle.env.key().to_string()).or_default().push(idle);
            // The reaper only needs waking when this one is due before it
            // wakes anyway: with a constant keep-warm, only when it sleeps
            // with nothing idle. A wake-up every invoke would cost one.
            let sooner = match (due, s.reaper_due) {
                (Some(d), Some(r)) => d < r,
                (Some(_), None) => true,
                (None, _) => false,
            };
            drop(s);
            if sooner {
                self.pool.changed.notify_one();
            }
        } else {
            if let Some(q) = self.provisioned.take() {
                self.pool.lock().lose_provisioned(&self.function, &q);
            }
            env.retire().await;
        }
    }
}

impl Pool {
    pub fn new(limits: ScalingLimits) -> Arc<Self> {
        let pool = Arc::new(Self { limits, state: Mutex::new(State::default()), changed: tokio::sync::Notify::new() });
        tokio::spawn(pool.clone().reap());
        pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one invocation of `function` on configuration `key`, or says
    /// which limit it hit. Also returns idle environments found dead, to retire.
    pub fn admit(self: &Arc<Self>, function: &str, key: &str) -> Result<(Ticket, Vec<Env>), ThrottleReason> {
        let mut s = self.lock();
        let busy = s.busy.get(function).copied().unwrap_or(0);
        match s.reserved.get(function) {
            Some(&r) if busy >= r => return Err(ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded),
            Some(_) => {}
            None => {
                let unreserved = self.limits.max_concurrency.saturating_sub(s.reserved_total());
                if s.busy_unreserved >= unreserved {
                    return Err(ThrottleReason::ConcurrentInvocationLimitExceeded);
                }
            }
        }
        let mut dead = Vec::new();
        let mut warm = None;
        if let Some(list) = s.idle.get_mut(key) {
            // Most recently used first: the others can then age out.
            while let Some(i) = list.pop() {
                if i.env.alive() {
                    warm = Some(i);
                    break;
                }
                dead.push(i);
            }
        }
        for i in &dead {
            if let Some(q) = &i.provisioned {
                s.lose_provisioned(&i.function, q);
            }
        }
        if warm.is_none() && !s.take_token(function, self.limits.burst) {
            drop(s);
            return Err(ThrottleReason::FunctionInvocationRateLimitExceeded);
        }
        let mine = s.busy.entry(function.to_string()).or_default();
        *mine += 1;
        let mine = *mine;
        s.busy_all += 1;
        if !s.reserved.contains_key(function) {
            s.busy_unreserved += 1;
        }
        let concurrency = Concurrency { account: s.busy_all, function: mine, unreserved: s.busy_unreserved };
        let (warm, provisioned) = match warm {
            Some(i) => (Some(i.env), i.provisioned),
            None => (None, None),
        };
        let ticket = Ticket { pool: self.clone(), function: function.to_string(), warm, provisioned, concurrency };
        Ok((ticket, dead.into_iter().map(|i| i.env).collect()))
    }

    /// In-flight invocations, idle environments, and of those the provisioned.
    pub fn counts(&self) -> (u32, u32, u32) {
        let s = self.lock();
        let busy = s.busy_all;
        let idle = s.idle.values().map(Vec::len).sum::<usize>() as u32;
        let provisioned = s.idle.values().flatten().filter(|i| i.provisioned.is_some()).count() as u32;
        (busy, idle, provisioned)
    }

    /// In-flight invocations per function, by name.
    pub fn running(&self) -> Vec<(String, u32)> {
        let mut v: Vec<_> = self.lock().busy.iter().map(|(f, n)| (f.clone(), *n)).collect();
        v.sort();
        v
    }

    /// Before a new environment starts: when the node is short of memory,
    /// the least recently used idle (not provisioned) environment goes.
    pub fn reclaim_for_memory(&self) -> Option<Env> {
        let available = meminfo_mb("MemAvailable:")?;
        if available >= self.limits.min_free_memory_mb {
            return None;
        }
        let mut s = self.lock();
        let (key, index) = s
            .idle
            .iter()
            .flat_map(|(k, list)| list.iter().enumerate().map(move |(i, e)| (k, i, e)))
            .filter(|(_, _, e)| e.provisioned.is_none())
            .min_by_key(|(_, _, e)| e.since)
            .map(|(k, i, _)| (k.clone(), i))?;
        let idle = s.idle.get_mut(&key)?.remove(index);
        tracing::info!(
            available_mb = available,
            "memory is short; reclaiming the least recently used idle environment"
        );
        Some(idle.env)
    }

    pub fn set_reserved(&self, function: &str, reserved: Option<u32>) {
        let mut s = self.lock();
        let busy = s.busy.get(function).copied().unwrap_or(0);
        let was_reserved = s.reserved.contains_key(function);
        match reserved {
            Some(r) => {
                s.reserved.insert(function.to_string(), r);
            }
            None => {
                s.reserved.remove(function);
            }
        }
        // Keep the unreserved count true for invocations already in flight.
        match (was_reserved, reserved.is_some()) {
            (true, false) => s.busy_unreserved += busy,
            (false, true) => s.busy_unreserved = s.busy_unreserved.saturating_sub(busy),
            _ => {}
        }
    }

    /// Removes idle environments whose key matches, returning them to retire.
    pub fn remove_idle(&self, matches: impl Fn(&str) -> bool) -> Vec<Env> {
        let mut s = self.lock();
        let keys: Vec<String> = s.idle.keys().filter(|k| matches(k)).cloned().collect();
        keys.into_iter().filter_map(|k| s.idle.remove(&k)).flatten().map(|i| i.env).collect()
    }

    /// Every idle environment (shutdown); provisioned configurations'
    /// keepers stop.
    pub fn drain(&self) -> Vec<Env> {
        let mut s = self.lock();
        for (_, p) in s.provisioned.drain() {
            p.keeper.notify_one();
        }
        s.idle.drain().flat_map(|(_, v)| v).map(|i| i.env).collect()
    }

    // ---- provisioned concurrency ----

    /// Starts counting a configuration's environments (replacing an
    /// earlier configuration of the same key); its keeper is returned.
    pub fn provisioning(&self, function: &str, qualifier: &str, requested: u32) -> Keeper {
        let lost = Arc::new(tokio::sync::Notify::new());
        let status = ProvisionedStatus { requested, ready: 0, failed: None };
        let earlier = self
            .lock()
            .provisioned
            .insert((function.to_string(), qualifier.to_string()), Provisioned { status, keeper: lost.clone() });
        if let Some(earlier) = earlier {
            earlier.keeper.notify_one();
        }
        Keeper { function: function.to_string(), qualifier: qualifier.to_string(), lost }
    }

    /// How many environments `keeper`'s configuration lacks; `None` once it
    /// was removed or replaced.
    pub fn provisioned_missing(&self, keeper: &Keeper) -> Option<u32> {
        self.lock().kept(keeper).map(|p| p.status.requested.saturating_sub(p.status.ready))
    }

    /// Adds a ready provisioned environment. Hands it back when the
    /// configuration was removed or replaced meanwhile, for the caller to retire.
    pub fn add_provisioned(&self, keeper: &Keeper, env: Env) -> Option<Env> {
        let mut s = self.lock();
        let Some(p) = s.kept(keeper) else {
            return Some(env);
        };
        p.status.ready += 1;
        let idle = Idle {
            function: keeper.function.clone(),
            since: Instant::now(),
            provisioned: Some(keeper.qualifier.clone()),
            env,
        };
        s.idle.entry(idle.env.key().to_string()).or_default().push(idle);
        None
    }

    pub fn provisioning_failed(&self, keeper: &Keeper, reason: String) {
        if let Some(p) = self.lock().kept(keeper) {
            p.status.failed.get_or_insert(reason);
        }
    }

    pub fn provisioned_status(&self, function: &str, qualifier: &str) -> Option<ProvisionedStatus> {
        self.lock().provisioned.get(&(function.to_string(), qualifier.to_string())).map(|p| p.status.clone())
    }

    /// Stops keeping environments for (function, qualifier); with `None`,
    /// for every qualifier of the function. Its idle environments are
    /// returned to retire.
    pub fn unprovision(&self, function: &str, qualifier: Option<&str>) -> Vec<Env> {
        let mut s = self.lock();
        s.provisioned.retain(|(f, q), p| {
            let keep = !(f == function && qualifier.is_none_or(|x| x == q));
            if !keep {
                p.keeper.notify_one();
            }
            keep
        });
        let mut gone = Vec::new();
        for list in s.idle.values_mut() {
            let (keep, drop): (Vec<Idle>, Vec<Idle>) = std::mem::take(list).into_iter().partition(|i| {
                !(i.function == function && i.provisioned.as_deref().is_some_and(|q| qualifier.is_none_or(|x| x == q)))
            });
            *list = keep;
            gone.extend(drop.into_iter().map(|i| i.env));
        }
        gone
    }

    // ---- reclaiming ----

    /// Retires idle environments as they pass their keep-warm period or
    /// lifetime; sleeps until the next one is due or the idle set changes.
    async fn reap(self: Arc<Self>) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (expired, next) = self.expired(Instant::now());
            for env in expired {
                tokio::spawn(env.retire());
            }
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep_until(at.into()) => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// Takes the idle environments due at `now`; says when the next one is.
    fn expired(&self, now: Instant) -> (Vec<Env>, Option<Instant>) {
        let mut s = self.lock();
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        for list in s.idle.values_mut() {
            let mut keep = Vec::with_capacity(list.len());
            for i in list.drain(..) {
                match i.due(&self.limits) {
                    Some(d) if d <= now => expired.push(i.env),
                    Some(d) => {
                        next = Some(next.map_or(d, |n| n.min(d)));
                        keep.push(i);
                    }
                    None => keep.push(i),
                }
            }
            *list = keep;
        }
        s.idle.retain(|_, l| !l.is_empty());
        s.reaper_due = next;
        (expired, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_concurrency_follows_memory() {
        assert_eq!(default_concurrency(24 * 1024), 1536);
        assert_eq!(default_concurrency(64), 10);
    }

    #[test]
    fn the_bucket_refills_at_burst_per_ten_seconds() {
        let mut s = State::default();
        assert!(s.take_token("f", 2) && s.take_token("f", 2));
        assert!(!s.take_token("f", 2), "the burst is spent");
        // Five seconds later one of the two is back.
        s.buckets.get_mut("f").unwrap().at -= Duration::from_secs(5);
        assert!(s.take_token("f", 2));
        assert!(!s.take_token("f", 2));
        assert!(s.take_token("g", 2), "each function has its own rate");
    }
}
