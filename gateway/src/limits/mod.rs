//! Rate limits for MCP calls, counted per MCP method, kept in memory or shared through Redis.
//!
//! A [`Limits`] holds a list of [`Rule`]s. Each call the gateway forwards is described by a
//! [`CallKey`] (method, client, server, tool) and counted against every rule that applies to it;
//! the call goes through only if all of them allow it. Every rule is a GCRA ("generic cell rate
//! algorithm") limiter with its own buckets, one bucket per global/server/client/client-tool key
//! depending on the rule's [`Scope`].
//!
//! With [`Backend::Local`] the buckets live in this process (governor's keyed limiters). With
//! [`Backend::Redis`] they live in Redis, so that every replica of the gateway counts against the
//! same buckets; when Redis cannot be reached, [`OnBackendError`] decides whether calls are refused
//! or counted locally until Redis is back.

mod redis;

use std::{
    cell::Cell,
    fmt::{self, Write as _},
    num::NonZeroU32,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::NoOpMiddleware,
    state::keyed::DashMapStateStore,
};

use self::redis::{Outcome, Shared};

/// Which calls share one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// One bucket for every call the rule applies to.
    Global,
    /// One bucket per upstream server.
    Server,
    /// One bucket per client.
    Client,
    /// One bucket per client and tool.
    ClientTool,
}

impl Scope {
    /// The name used in configuration, logs and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Server => "server",
            Self::Client => "client",
            Self::ClientTool => "client-tool",
        }
    }

    /// The order in which rules are checked: buckets that belong to one client come before
    /// buckets that every client shares. A call refused by its client's own bucket therefore never
    /// spends a token of a shared bucket, so one client hammering the gateway cannot use up the
    /// global or per-server allowance of everyone else with calls that are refused anyway.
    fn check_order(self) -> u8 {
        match self {
            Self::ClientTool => 0,
            Self::Client => 1,
            Self::Server => 2,
            Self::Global => 3,
        }
    }

    /// The bucket of `key` within a rule of this scope.
    ///
    /// The client-tool key starts with the length of the client name, so that no pair of
    /// (client, tool) can be mistaken for another whatever characters the names contain.
    fn bucket(self, key: &CallKey<'_>) -> String {
        match self {
            Self::Global => String::new(),
            Self::Server => key.server.to_owned(),
            Self::Client => key.client.to_owned(),
            Self::ClientTool => {
                let tool = key.tool.unwrap_or_default();
                // Built by hand rather than with `format!`: this runs on every call, and one
                // allocation of the right size costs less than a buffer that `format!` may have to
                // grow. 20 digits hold any usize.
                let mut bucket = String::with_capacity(20 + key.client.len() + tool.len() + 2);
                // Writing to a String cannot fail.
                let _ = write!(bucket, "{}:", key.client.len());
                bucket.push_str(key.client);
                bucket.push(':');
                bucket.push_str(tool);
                bucket
            }
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rate limit: `requests` per `per`, with bursts of up to `burst` calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub scope: Scope,
    /// MCP methods this rule counts, e.g. "tools/call", "resources/read", "prompts/get",
    /// "tools/list"; empty = every method.
    pub methods: Vec<String>,
    /// Only calls to this server (None = every server).
    pub server: Option<String>,
    /// `requests` per `per`, with bursts up to `burst` (>= 1).
    pub requests: NonZeroU32,
    pub per: Duration,
    pub burst: NonZeroU32,
}

impl Rule {
    /// A rule for every method and server, whose burst equals `requests`.
    pub fn new(scope: Scope, requests: NonZeroU32, per: Duration) -> Self {
        Self {
            scope,
            methods: Vec::new(),
            server: None,
            requests,
            per,
            burst: requests,
        }
    }

    /// Whether this rule counts `key`.
    pub fn applies_to(&self, key: &CallKey<'_>) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m == key.method))
            && self.server.as_deref().is_none_or(|s| s == key.server)
    }

    /// The time one call uses up: the emission interval of the GCRA. It is never shorter than one
    /// nanosecond, the resolution of governor's clock, so that a zero `per` cannot divide away,
    /// nor longer than [`MAX_SPAN`].
    fn interval(&self) -> Duration {
        (self.per / self.requests.get()).clamp(Duration::from_nanos(1), MAX_SPAN)
    }

    /// `burst`, lowered if need be so that a full burst spans at most [`MAX_SPAN`].
    fn effective_burst(&self) -> NonZeroU32 {
        let fits = MAX_SPAN.as_nanos() / self.interval().as_nanos();
        let fits = u32::try_from(fits).unwrap_or(u32::MAX);
        NonZeroU32::new(self.burst.get().min(fits)).unwrap_or(NonZeroU32::MIN)
    }

    /// Whether a full burst would span more than [`MAX_SPAN`], so that the rule cannot be kept
    /// as configured.
    fn spans_too_long(&self) -> bool {
        (self.per / self.requests.get())
            .as_nanos()
            .saturating_mul(u128::from(self.burst.get()))
            > MAX_SPAN.as_nanos()
    }

    /// How far ahead of the clock a bucket may run before it refuses: the GCRA's tolerance, which
    /// is what lets `burst` calls through at once.
    fn tolerance(&self) -> Duration {
        self.interval()
            .saturating_mul(self.effective_burst().get().saturating_sub(1))
    }

    fn quota(&self) -> Quota {
        // `interval` is at least one nanosecond, and `with_period` refuses only a zero period, so
        // the fallback is never used; it exists so that no panic path is left in this code.
        Quota::with_period(self.interval())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(self.effective_burst())
    }
}

/// Where the buckets are kept.
#[derive(Clone, PartialEq, Eq)]
pub enum Backend {
    /// In this process: every replica of the gateway counts on its own.
    Local,
    /// In Redis, shared by every gateway that uses the same URL, prefix and rules.
    Redis { url: String },
}

impl fmt::Debug for Backend {
    /// Leaves out the URL's password, which must not end up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local => f.write_str("Local"),
            Self::Redis { url } => f
                .debug_struct("Redis")
                .field("url", &redact_url(url))
                .finish(),
        }
    }
}

/// `url` without the user information (`user:password@`), which may hold a secret.
fn redact_url(url: &str) -> String {
    let rest_at = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[rest_at..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| rest_at + i);
    match url[rest_at..authority_end].rfind('@') {
        Some(at) => format!("{}***@{}", &url[..rest_at], &url[rest_at + at + 1..]),
        None => url.to_owned(),
    }
}

/// What happens when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnBackendError {
    /// Refuse every call that a rule applies to, until Redis answers again.
    Deny,
    /// Count calls in this process's own buckets, until Redis answers again. Each replica then
    /// allows the full limit on its own, so the fleet as a whole allows more.
    Local,
}

/// The rate limits of one gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    pub backend: Backend,
    pub on_backend_error: OnBackendError,
    pub rules: Vec<Rule>,
    /// key prefix in Redis so several gateways or tests can share one Redis
    pub redis_prefix: String,
}

impl Default for LimitsConfig {
    /// No rules, kept locally; should Redis be configured later, an outage falls back to local
    /// counting so that the gateway stays available.
    fn default() -> Self {
        Self {
            backend: Backend::Local,
            on_backend_error: OnBackendError::Local,
            rules: Vec::new(),
            redis_prefix: "mcp-gateway:limits".to_owned(),
        }
    }
}

impl LimitsConfig {
    /// Checks what the types cannot: every rule's period must be longer than zero, and a full
    /// burst (`burst` times `per / requests`) must span at most 100 years.
    pub fn validate(&self) -> Result<(), LimitsError> {
        for (index, rule) in self.rules.iter().enumerate() {
            if rule.per.is_zero() {
                return Err(LimitsError::ZeroPeriod { index });
            }
            if rule.spans_too_long() {
                return Err(LimitsError::SpanTooLong { index });
            }
        }
        Ok(())
    }
}

/// What one call is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallKey<'a> {
    /// The MCP method, e.g. "tools/call".
    pub method: &'a str,
    /// Who makes the call, as authenticated.
    pub client: &'a str,
    /// The upstream server the call goes to.
    pub server: &'a str,
    /// The tool called, for "tools/call". Pass only names of tools that exist: every distinct name
    /// gets its own client-tool bucket, so made-up names would let a client grow the limiter.
    pub tool: Option<&'a str>,
}

/// A refused call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// How long to wait before the call can go through (or, when `backend_unavailable`, before it
    /// is worth trying again).
    pub retry_after: Duration,
    /// The scope of the rule that refused the call.
    pub scope: Scope,
    /// true when refused because the shared backend is unreachable and config says deny
    pub backend_unavailable: bool,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.backend_unavailable {
            write!(
                f,
                "rate limit backend unavailable, retry after {:?}",
                self.retry_after
            )
        } else {
            write!(
                f,
                "rate limit exceeded ({} scope), retry after {:?}",
                self.scope, self.retry_after
            )
        }
    }
}

impl std::error::Error for Refused {}

impl Refused {
    /// `retry_after` in whole seconds, rounded up, as HTTP's `Retry-After` header wants it.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs();
        if self.retry_after.subsec_nanos() > 0 {
            secs.saturating_add(1)
        } else {
            secs
        }
    }
}

/// Why the limits could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    #[error("rate limit rule {index} has a zero period")]
    ZeroPeriod { index: usize },
    #[error("rate limit rule {index}: a full burst would span more than 100 years")]
    SpanTooLong { index: usize },
    #[error("invalid redis url: {source}")]
    RedisUrl {
        #[source]
        source: ::redis::RedisError,
    },
    #[error("cannot set up the redis connection: {source}")]
    Redis {
        #[source]
        source: ::redis::RedisError,
    },
}

/// A keyed GCRA limiter whose keys are bucket names.
type Limiter<C> =
    RateLimiter<String, DashMapStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One configured rule and its local buckets.
struct Checked<C: Clock> {
    /// The rule's position in the configuration, which names its buckets in Redis.
    index: usize,
    rule: Rule,
    limiter: Limiter<C>,
}

/// The longest a full burst of one rule may span (its interval times its burst). governor counts
/// time in u64 nanoseconds from the limiter's creation (584 years, and it panics on durations
/// beyond) and the Redis script in microseconds since 1970 held in a double (exact for 285
/// years); 100 years leaves room in both.
const MAX_SPAN: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The fewest checks between two sweeps of stale buckets (see [`Limits::housekeeping`]).
const SWEEP_EVERY_MIN: u64 = 1024;

/// How many checks a thread makes before it adds them to the shared count that paces sweeps.
const COUNT_BATCH: u64 = 64;

/// How long a call refused because Redis is unreachable should wait before trying again.
const BACKEND_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The rate limits of one gateway, checked once per MCP call.
pub struct Limits<C: Clock = DefaultClock> {
    /// The rules in the order they are checked (see [`Scope::check_order`]).
    rules: Vec<Checked<C>>,
    clock: C,
    on_backend_error: OnBackendError,
    /// Redis, when it is the backend.
    shared: Option<Shared>,
    /// Local checks made so far, which pace the sweeps of stale buckets.
    checks: AtomicU64,
    /// The value of `checks` at which the next sweep is due.
    next_sweep: AtomicU64,
    /// Held while sweeping, so that only one caller sweeps at a time.
    sweeping: Mutex<()>,
}

impl<C: Clock> fmt::Debug for Limits<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limits")
            .field(
                "rules",
                &self.rules.iter().map(|c| &c.rule).collect::<Vec<_>>(),
            )
            .field("shared", &self.shared.is_some())
            .field("on_backend_error", &self.on_backend_error)
            .field("degraded", &self.degraded())
            .finish_non_exhaustive()
    }
}

impl Limits {
    /// Builds the limits with the real clock. With Redis as the backend, this also connects to
    /// it, waiting at most about half a second: an unreachable Redis does not stop the gateway
    /// from starting, it starts degraded (see [`Limits::degraded`]) and tries again as calls come.
    pub async fn new(config: LimitsConfig) -> Result<Self, LimitsError> {
        config.validate()?;
        let shared = match &config.backend {
            Backend::Local => None,
            Backend::Redis { url } => {
                let prefix = config.redis_prefix.clone();
                Some(Shared::connect(url, prefix, config.on_backend_error).await?)
            }
        };
        let mut limits = Self::with_clock(config, DefaultClock::default());
        limits.shared = shared;
        Ok(limits)
    }
}

impl<C: Clock + Clone> Limits<C> {
    /// Builds local limits that read time from `clock`, for tests; the configured backend is
    /// ignored, every bucket is kept in memory. Rules that [`LimitsConfig::validate`] rejects are
    /// adjusted rather than refused: a zero period is taken as one nanosecond, and a burst that
    /// spans too long is lowered to fit.
    pub fn with_clock(config: LimitsConfig, clock: C) -> Self {
        let mut rules: Vec<Checked<C>> = config
            .rules
            .into_iter()
            .enumerate()
            .map(|(index, rule)| Checked {
                index,
                limiter: RateLimiter::dashmap_with_clock(rule.quota(), clock.clone()),
                rule,
            })
            .collect();
        // A stable sort keeps the configured order among rules of the same scope.
        rules.sort_by_key(|c| c.rule.scope.check_order());
        Self {
            rules,
            clock,
            on_backend_error: config.on_backend_error,
            shared: None,
            checks: AtomicU64::new(0),
            next_sweep: AtomicU64::new(SWEEP_EVERY_MIN),
            sweeping: Mutex::new(()),
        }
    }
}

impl<C: Clock> Limits<C> {
    /// Counts one call against every rule that applies (method, server filter); Ok if all allow.
    ///
    /// With Redis as the backend, all the call's buckets are checked in one atomic script: the
    /// call is counted in every bucket if all of them allow it and in none if one refuses, and
    /// `retry_after` is the longest wait among the refusing rules. If Redis cannot be reached, the
    /// call is refused or counted locally, as [`OnBackendError`] says.
    ///
    /// With the local backend this is [`Limits::check_local`].
    pub async fn check(&self, key: &CallKey<'_>) -> Result<(), Refused> {
        let Some(shared) = &self.shared else {
            return self.check_local(key);
        };
        let applicable: Vec<&Checked<C>> = self.applicable(key).collect();
        let Some(first) = applicable.first() else {
            return Ok(());
        };
        let buckets: Vec<redis::Bucket> = applicable
            .iter()
            .map(|c| redis::Bucket {
                index: c.index,
                name: c.rule.scope.bucket(key),
                interval: c.rule.interval(),
                tolerance: c.rule.tolerance(),
            })
            .collect();
        match shared.check(&buckets).await {
            Outcome::Allowed => Ok(()),
            Outcome::Refused {
                retry_after,
                bucket,
            } => Err(Refused {
                retry_after,
                scope: applicable
                    .get(bucket)
                    .map_or(first.rule.scope, |c| c.rule.scope),
                backend_unavailable: false,
            }),
            Outcome::Unavailable => match self.on_backend_error {
                OnBackendError::Deny => Err(Refused {
                    retry_after: BACKEND_RETRY_AFTER,
                    scope: first.rule.scope,
                    backend_unavailable: true,
                }),
                OnBackendError::Local => self.check_local(key),
            },
        }
    }

    /// Counts one call against the local buckets of every rule that applies, whatever the backend;
    /// [`Limits::check`] uses it for the local backend and when Redis is down.
    ///
    /// Rules are checked in turn, client-tool, then client, then server, then global rules (in
    /// configured order within a scope), and the first refusal ends the check. governor cannot
    /// test a bucket without counting the call in it, so the rules checked before the refusing one
    /// have counted a call that does not happen; the order makes those the caller's own buckets
    /// rather than everyone's, so that one client's refused calls never use up a bucket that other
    /// clients share. Because the rules after the refusing one are not consulted, `retry_after`
    /// is the wait of the refusing rule: a later rule could make the caller wait longer still.
    pub fn check_local(&self, key: &CallKey<'_>) -> Result<(), Refused> {
        let mut applicable = self.applicable(key).peekable();
        // A call no rule counts makes no bucket, so it neither needs nor paces a sweep.
        if applicable.peek().is_none() {
            return Ok(());
        }
        let result = applicable.try_for_each(|c| {
            c.limiter
                .check_key(&c.rule.scope.bucket(key))
                .map_err(|not_until| Refused {
                    retry_after: not_until.wait_time_from(self.clock.now()),
                    scope: c.rule.scope,
                    backend_unavailable: false,
                })
        });
        self.housekeeping();
        result
    }

    /// Whether the shared backend is currently degraded (unreachable) — for /readyz and logs.
    pub fn degraded(&self) -> bool {
        self.shared.as_ref().is_some_and(Shared::degraded)
    }

    /// Whether there are no rules at all, so that every call goes through.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules that count `key`, in the order they are checked.
    fn applicable<'s>(&'s self, key: &CallKey<'_>) -> impl Iterator<Item = &'s Checked<C>> {
        self.rules.iter().filter(|c| c.rule.applies_to(key))
    }

    /// Drops stale local buckets now and then, so that memory follows the number of clients and
    /// tools seen recently rather than all those ever seen.
    ///
    /// A bucket is stale when its state cannot be told from a fresh one (its theoretical arrival
    /// time lies in the past); governor's `retain_recent` removes those, and `shrink_to_fit` then
    /// gives back the map's spare capacity. A sweep visits every bucket, so sweeps are spaced by
    /// as many checks as there were buckets left after the last one (and at least
    /// [`SWEEP_EVERY_MIN`]): the sweeping costs a constant amount per check, and the maps hold at
    /// most the live buckets plus the buckets made since the last sweep (and a few batches, see
    /// below). The caller whose check makes a sweep due does it; others carry on meanwhile.
    ///
    /// Checks are counted per thread and added to the shared count in batches of
    /// [`COUNT_BATCH`]: one shared counter bumped by every check made threads wait on each other
    /// for its cache line, which cost a quarter of a check's time on two threads. The per-thread
    /// count is shared by every `Limits` on the thread, so a batch is credited to whichever one
    /// completes it; that only blurs when sweeps happen, not whether they do.
    fn housekeeping(&self) {
        thread_local!(static UNCOUNTED: Cell<u64> = const { Cell::new(0) });
        let uncounted = UNCOUNTED.get() + 1;
        if uncounted < COUNT_BATCH {
            UNCOUNTED.set(uncounted);
            return;
        }
        UNCOUNTED.set(0);
        let done = self.checks.fetch_add(uncounted, Ordering::Relaxed) + uncounted;
        if done < self.next_sweep.load(Ordering::Relaxed) {
            return;
        }
        let Ok(_sweeping) = self.sweeping.try_lock() else {
            return;
        };
        // Another caller may have swept between the load above and taking the lock.
        if done < self.next_sweep.load(Ordering::Relaxed) {
            return;
        }
        let left = self.sweep();
        let gap = u64::try_from(left).unwrap_or(u64::MAX).max(SWEEP_EVERY_MIN);
        self.next_sweep
            .store(done.saturating_add(gap), Ordering::Relaxed);
    }

    /// Removes stale buckets from every rule; returns how many buckets are left.
    fn sweep(&self) -> usize {
        self.rules
            .iter()
            .map(|c| {
                c.limiter.retain_recent();
                c.limiter.shrink_to_fit();
                c.limiter.len()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::{num::NonZeroU32, time::Duration};

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    fn rule(scope: Scope, requests: u32, per: Duration) -> Rule {
        Rule::new(scope, n(requests), per)
    }

    fn local(rules: Vec<Rule>) -> (Limits<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let config = LimitsConfig {
            rules,
            ..LimitsConfig::default()
        };
        (Limits::with_clock(config, clock.clone()), clock)
    }

    fn call<'a>(client: &'a str, tool: &'a str) -> CallKey<'a> {
        CallKey {
            method: "tools/call",
            client,
            server: "files",
            tool: Some(tool),
        }
    }

    fn refused(result: Result<(), Refused>) -> Refused {
        result.expect_err("the call should have been refused")
    }

    #[test]
    fn scope_names() {
        let names: Vec<_> = [
            Scope::Global,
            Scope::Server,
            Scope::Client,
            Scope::ClientTool,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(names, ["global", "server", "client", "client-tool"]);
        let parsed: Scope = serde_json::from_str("\"client-tool\"").unwrap();
        assert_eq!(parsed, Scope::ClientTool);
    }

    #[test]
    fn n_calls_pass_then_the_next_waits_one_interval() {
        // 3 per minute: one call every 20 s, and a burst of 3.
        let (limits, clock) = local(vec![rule(Scope::Client, 3, Duration::from_secs(60))]);
        let key = call("alice", "read");
        for _ in 0..3 {
            limits.check_local(&key).unwrap();
        }
        let refusal = refused(limits.check_local(&key));
        assert_eq!(refusal.retry_after, Duration::from_secs(20));
        assert_eq!(refusal.scope, Scope::Client);
        assert!(!refusal.backend_unavailable);

        clock.advance(refusal.retry_after);
        limits.check_local(&key).unwrap();
        assert_eq!(
            refused(limits.check_local(&key)).retry_after,
            Duration::from_secs(20)
        );
    }

    #[test]
    fn burst_smaller_than_the_rate() {
        // 10 per second (one every 100 ms) but at most 2 at once.
        let (limits, clock) = local(vec![Rule {
            burst: n(2),
            ..rule(Scope::Global, 10, Duration::from_secs(1))
        }]);
        let key = call("alice", "read");
        limits.check_local(&key).unwrap();
        limits.check_local(&key).unwrap();
        let refusal = refused(limits.check_local(&key));
        assert_eq!(refusal.retry_after, Duration::from_millis(100));
        assert_eq!(refusal.retry_after_secs(), 1);

        // Part of the wait is not enough; the rest of it is.
        clock.advance(Duration::from_millis(40));
        assert_eq!(
            refused(limits.check_local(&key)).retry_after,
            Duration::from_millis(60)
        );
        clock.advance(Duration::from_millis(60));
        limits.check_local(&key).unwrap();
    }

    #[test]
    fn clients_have_their_own_buckets() {
        let (limits, _) = local(vec![rule(Scope::Client, 1, Duration::from_secs(60))]);
        limits.check_local(&call("alice", "read")).unwrap();
        refused(limits.check_local(&call("alice", "read")));
        limits.check_local(&call("bob", "read")).unwrap();
        refused(limits.check_local(&call("bob", "write")));
    }

    #[test]
    fn client_tool_buckets_are_per_tool() {
        let (limits, _) = local(vec![rule(Scope::ClientTool, 1, Duration::from_secs(60))]);
        limits.check_local(&call("alice", "read")).unwrap();
        limits.check_local(&call("alice", "write")).unwrap();
        limits.check_local(&call("bob", "read")).unwrap();
        let refusal = refused(limits.check_local(&call("alice", "read")));
        assert_eq!(refusal.scope, Scope::ClientTool);

        // No tool is a bucket of its own too.
        let no_tool = CallKey {
            tool: None,
            ..call("alice", "")
        };
        limits.check_local(&no_tool).unwrap();
        refused(limits.check_local(&no_tool));
    }

    #[test]
    fn client_tool_bucket_names_cannot_collide() {
        let a = CallKey {
            client: "a:1",
            ..call("", "b")
        };
        let b = CallKey {
            client: "a",
            ..call("", "1:b")
        };
        assert_ne!(Scope::ClientTool.bucket(&a), Scope::ClientTool.bucket(&b));
    }

    #[test]
    fn server_buckets_are_per_server() {
        let (limits, _) = local(vec![rule(Scope::Server, 1, Duration::from_secs(60))]);
        let files = call("alice", "read");
        let mail = CallKey {
            server: "mail",
            ..files
        };
        limits.check_local(&files).unwrap();
        limits.check_local(&mail).unwrap();
        // Another client still shares the server's bucket.
        let refusal = refused(limits.check_local(&call("bob", "read")));
        assert_eq!(refusal.scope, Scope::Server);
    }

    #[test]
    fn global_is_shared_by_all_clients() {
        let (limits, _) = local(vec![rule(Scope::Global, 2, Duration::from_secs(60))]);
        limits.check_local(&call("alice", "read")).unwrap();
        limits.check_local(&call("bob", "write")).unwrap();
        let refusal = refused(limits.check_local(&call("carol", "list")));
        assert_eq!(refusal.scope, Scope::Global);
        assert_eq!(refusal.retry_after, Duration::from_secs(30));
    }

    #[test]
    fn method_filter() {
        let (limits, _) = local(vec![Rule {
            methods: vec!["tools/call".to_owned(), "prompts/get".to_owned()],
            ..rule(Scope::Client, 1, Duration::from_secs(60))
        }]);
        let list = CallKey {
            method: "tools/list",
            tool: None,
            ..call("alice", "")
        };
        for _ in 0..10 {
            limits.check_local(&list).unwrap();
        }
        limits.check_local(&call("alice", "read")).unwrap();
        // "prompts/get" shares the rule's bucket with "tools/call".
        let prompt = CallKey {
            method: "prompts/get",
            ..list
        };
        refused(limits.check_local(&prompt));
    }

    #[test]
    fn server_filter() {
        let (limits, _) = local(vec![Rule {
            server: Some("mail".to_owned()),
            ..rule(Scope::Client, 1, Duration::from_secs(60))
        }]);
        let files = call("alice", "read");
        for _ in 0..10 {
            limits.check_local(&files).unwrap();
        }
        let mail = CallKey {
            server: "mail",
            ..files
        };
        limits.check_local(&mail).unwrap();
        refused(limits.check_local(&mail));
    }

    #[test]
    fn limits_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync>() {}
        fn sendable<T: Send>(_: &T) {}
        shareable::<Limits>();
        let (limits, _) = local(Vec::new());
        let key = call("alice", "read");
        // Handlers on a multi-threaded runtime need the future of `check` to be Send.
        sendable(&limits.check(&key));
    }

    #[test]
    fn no_rules_allow_everything() {
        let (limits, _) = local(Vec::new());
        assert!(limits.is_empty());
        assert!(!limits.degraded());
        for _ in 0..100 {
            limits.check_local(&call("alice", "read")).unwrap();
        }
    }

    #[test]
    fn any_refusing_rule_refuses() {
        let (limits, _) = local(vec![
            rule(Scope::Global, 100, Duration::from_secs(60)),
            rule(Scope::ClientTool, 1, Duration::from_secs(60)),
        ]);
        limits.check_local(&call("alice", "read")).unwrap();
        assert_eq!(
            refused(limits.check_local(&call("alice", "read"))).scope,
            Scope::ClientTool
        );
    }

    #[test]
    fn a_refusal_by_a_client_rule_spends_nothing_shared() {
        // Config order puts the global rule first; the client's own rule is checked first anyway.
        let (limits, _) = local(vec![
            rule(Scope::Global, 2, Duration::from_secs(60)),
            rule(Scope::Client, 1, Duration::from_secs(60)),
        ]);
        limits.check_local(&call("alice", "read")).unwrap();
        for _ in 0..10 {
            let refusal = refused(limits.check_local(&call("alice", "read")));
            assert_eq!(refusal.scope, Scope::Client);
        }
        // Alice's refused calls left the second global token for Bob.
        limits.check_local(&call("bob", "read")).unwrap();
        assert_eq!(
            refused(limits.check_local(&call("carol", "read"))).scope,
            Scope::Global
        );
    }

    #[test]
    fn stale_buckets_are_swept() {
        let (limits, clock) = local(vec![rule(Scope::Client, 1, Duration::from_secs(1))]);
        let clients: Vec<String> = (0..5000).map(|i| format!("client-{i}")).collect();
        for client in &clients {
            limits.check_local(&call(client, "read")).unwrap();
        }
        // Every bucket is still live, so sweeps so far could not drop any.
        assert_eq!(limits.rules[0].limiter.len(), clients.len());

        // Once the buckets are stale, the checks that follow sweep them within a bounded number of
        // checks: as many as there were buckets left after the last sweep.
        clock.advance(Duration::from_secs(2));
        for _ in 0..=clients.len() + 1 {
            let _ = limits.check_local(&call("alice", "read"));
        }
        assert!(limits.rules[0].limiter.len() <= 1);
    }

    #[test]
    fn zero_period_is_rejected() {
        let config = LimitsConfig {
            rules: vec![
                rule(Scope::Global, 1, Duration::from_secs(1)),
                rule(Scope::Client, 1, Duration::ZERO),
            ],
            ..LimitsConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(LimitsError::ZeroPeriod { index: 1 })
        ));
        // with_clock does not fail: it takes the period as one nanosecond.
        let limits = Limits::with_clock(config, FakeRelativeClock::default());
        limits.check_local(&call("alice", "read")).unwrap();
    }

    #[test]
    fn spans_beyond_a_century_are_rejected() {
        let millennium = Duration::from_secs(1000 * 365 * 24 * 60 * 60);
        for too_long in [
            rule(Scope::Global, 1, millennium),
            Rule {
                burst: NonZeroU32::MAX,
                ..rule(Scope::Client, 1, Duration::from_secs(3600))
            },
        ] {
            let config = LimitsConfig {
                rules: vec![too_long],
                ..LimitsConfig::default()
            };
            assert!(matches!(
                config.validate(),
                Err(LimitsError::SpanTooLong { index: 0 })
            ));
            // with_clock lowers the rule to fit instead of overflowing governor's arithmetic.
            let (limits, _) = local(config.rules);
            limits.check_local(&call("alice", "read")).unwrap();
        }
        // A long but possible rule is kept as it is.
        let year = rule(Scope::Client, 1, Duration::from_secs(365 * 24 * 60 * 60));
        assert!(!year.spans_too_long());
        assert_eq!(year.effective_burst(), year.burst);
    }

    #[test]
    fn redis_url_password_is_redacted() {
        let backend = Backend::Redis {
            url: "redis://user:secret@cache:6379/0".to_owned(),
        };
        let shown = format!("{backend:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("redis://***@cache:6379/0"), "{shown}");
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
    }

    #[tokio::test]
    async fn bad_redis_url_is_an_error() {
        let config = LimitsConfig {
            backend: Backend::Redis {
                url: "not a url".to_owned(),
            },
            ..LimitsConfig::default()
        };
        let error = Limits::new(config).await.unwrap_err();
        assert!(matches!(error, LimitsError::RedisUrl { .. }), "{error}");
    }

    /// The Redis URL for tests that need one, or None (and a note) to skip them.
    fn redis_url() -> Option<String> {
        let url = std::env::var("TEST_REDIS_URL").ok();
        if url.is_none() {
            println!("skipped: TEST_REDIS_URL not set");
        }
        url
    }

    /// A prefix no other test run uses, so that runs sharing one Redis do not see each other.
    fn unique_prefix() -> String {
        use std::hash::{BuildHasher, RandomState};
        let random = RandomState::new().hash_one(std::time::SystemTime::now());
        format!("mcp-gateway-test:limits:{random:016x}")
    }

    fn redis_config(url: &str, on_backend_error: OnBackendError, rules: Vec<Rule>) -> LimitsConfig {
        LimitsConfig {
            backend: Backend::Redis {
                url: url.to_owned(),
            },
            on_backend_error,
            rules,
            redis_prefix: unique_prefix(),
        }
    }

    #[tokio::test]
    async fn redis_buckets_are_shared_between_gateways() {
        let Some(url) = redis_url() else { return };
        let config = redis_config(
            &url,
            OnBackendError::Deny,
            vec![rule(Scope::Client, 3, Duration::from_secs(60))],
        );
        let one = Limits::new(config.clone()).await.unwrap();
        let two = Limits::new(config).await.unwrap();
        assert!(!one.degraded() && !two.degraded());

        let key = call("alice", "read");
        one.check(&key).await.unwrap();
        one.check(&key).await.unwrap();
        two.check(&key).await.unwrap();
        for limits in [&one, &two] {
            let refusal = refused(limits.check(&key).await);
            assert!(!refusal.backend_unavailable);
            assert_eq!(refusal.scope, Scope::Client);
            assert!(refusal.retry_after > Duration::ZERO);
            assert!(refusal.retry_after <= Duration::from_secs(20));
        }
        // Another client has a bucket of its own.
        two.check(&call("bob", "read")).await.unwrap();
    }

    #[tokio::test]
    async fn redis_refusal_spends_no_bucket() {
        let Some(url) = redis_url() else { return };
        let limits = Limits::new(redis_config(
            &url,
            OnBackendError::Deny,
            vec![
                rule(Scope::Global, 2, Duration::from_secs(60)),
                rule(Scope::Client, 1, Duration::from_secs(600)),
            ],
        ))
        .await
        .unwrap();
        limits.check(&call("alice", "read")).await.unwrap();
        for _ in 0..5 {
            let refusal = refused(limits.check(&call("alice", "read")).await);
            // The client's wait (600 s) is the longer one.
            assert_eq!(refusal.scope, Scope::Client);
            assert!(refusal.retry_after > Duration::from_secs(60));
        }
        limits.check(&call("bob", "read")).await.unwrap();
        let refusal = refused(limits.check(&call("carol", "read")).await);
        assert_eq!(refusal.scope, Scope::Global);
    }

    /// Nothing listens on port 1, so connecting fails at once.
    const UNREACHABLE: &str = "redis://127.0.0.1:1";

    #[tokio::test]
    async fn unreachable_redis_with_deny_refuses() {
        let limits = Limits::new(redis_config(
            UNREACHABLE,
            OnBackendError::Deny,
            vec![rule(Scope::Client, 3, Duration::from_secs(60))],
        ))
        .await
        .unwrap();
        assert!(limits.degraded());
        for _ in 0..3 {
            let refusal = refused(limits.check(&call("alice", "read")).await);
            assert!(refusal.backend_unavailable);
            assert_eq!(refusal.retry_after, BACKEND_RETRY_AFTER);
        }
        assert!(limits.degraded());
        // A call no rule applies to does not need Redis.
        let list = CallKey {
            method: "tools/list",
            ..call("alice", "read")
        };
        let filtered = Limits::new(redis_config(
            UNREACHABLE,
            OnBackendError::Deny,
            vec![Rule {
                methods: vec!["tools/call".to_owned()],
                ..rule(Scope::Client, 3, Duration::from_secs(60))
            }],
        ))
        .await
        .unwrap();
        filtered.check(&list).await.unwrap();
    }

    #[tokio::test]
    async fn unreachable_redis_with_local_counts_locally() {
        let limits = Limits::new(redis_config(
            UNREACHABLE,
            OnBackendError::Local,
            vec![rule(Scope::Client, 3, Duration::from_secs(60))],
        ))
        .await
        .unwrap();
        assert!(limits.degraded());
        let key = call("alice", "read");
        for _ in 0..3 {
            limits.check(&key).await.unwrap();
        }
        let refusal = refused(limits.check(&key).await);
        assert!(!refusal.backend_unavailable);
        assert!(refusal.retry_after > Duration::ZERO);
        assert!(limits.degraded());
    }
}
