//! Rate limit buckets kept in Redis, so that every replica of the gateway counts against the same
//! ones.
//!
//! The algorithm is the GCRA that governor uses locally, written as a Lua script so that one call
//! reads and updates all of its buckets atomically in one round trip. Each bucket is one string
//! key, `{prefix}:{rule index}:{bucket}`, holding the bucket's theoretical arrival time (TAT) in
//! microseconds of Redis's own clock (`TIME`), so that replicas whose clocks disagree still agree
//! on the buckets. The key expires when its TAT passes, because from then on a missing key and
//! the stored one mean the same thing. Whole microseconds are the script's resolution, so a rule
//! allowing more than a million calls a second is held to one call a microsecond in Redis.
//!
//! The script reads the time itself, so it relies on effects replication, the default since
//! Redis 5. Several keys in one script is fine for a single Redis (or Valkey) server; Redis
//! Cluster would need all of a call's keys in one hash slot, and is not supported here.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use ::redis::{
    Client, Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use super::{LimitsError, OnBackendError};

/// How long one attempt to connect to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);

/// How long Redis may take to answer one command on an open connection.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(250);

/// The most one call spends on Redis, connecting included. The connection manager has its own
/// timeouts; this one bounds everything around them too, so that no call can hang on Redis.
const CALL_TIMEOUT: Duration = CONNECT_TIMEOUT.saturating_add(RESPONSE_TIMEOUT);

/// While Redis is unreachable, how often one call tries it again. The calls in between do not
/// try, so that an outage where connecting times out does not slow every call down.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The GCRA over several buckets at once.
///
/// KEYS are the buckets; ARGV holds, for bucket i, its emission interval (the time one call uses
/// up) at 2i-1 and its tolerance (how far the TAT may run ahead of now) at 2i, in microseconds.
/// A call is allowed when no bucket's TAT minus its tolerance lies in the future; then every
/// bucket's TAT moves on by its interval. Otherwise no bucket changes, and the script returns the
/// longest wait, in whole milliseconds rounded up (so never 0), and the 1-based index of the
/// bucket that imposes it. `{0, 0}` means allowed.
///
/// TATs are written with `%d` because Lua's default number formatting would round them to 14
/// digits; microsecond timestamps have 16 and still fit exactly in a Lua number (a double).
const GCRA: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local next_tats = {}
local longest, worst = 0, 0
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then
    tat = now
  end
  local allow_at = tat - tolerance
  if now < allow_at then
    if allow_at - now > longest then
      longest = allow_at - now
      worst = i
    end
  else
    next_tats[i] = tat + interval
  end
end
if worst > 0 then
  return {math.ceil(longest / 1000), worst}
end
for i, key in ipairs(KEYS) do
  local ttl = math.ceil((next_tats[i] - now) / 1000)
  redis.call('SET', key, string.format('%d', next_tats[i]), 'PX', string.format('%d', ttl))
end
return {0, 0}
";

/// One bucket a call is counted in.
pub(super) struct Bucket {
    /// The rule's position in the configuration.
    pub(super) index: usize,
    /// The bucket within the rule, see `Scope::bucket`.
    pub(super) name: String,
    pub(super) interval: Duration,
    pub(super) tolerance: Duration,
}

/// What Redis said about a call.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Allowed,
    /// `bucket` is the position, in the slice given to [`Shared::check`], of the bucket with the
    /// longest wait.
    Refused {
        retry_after: Duration,
        bucket: usize,
    },
    /// Redis could not be reached, failed or took too long; nothing is known about the call.
    Unavailable,
}

/// The connection to Redis and what is known of its health.
pub(super) struct Shared {
    /// Reconnects by itself after a failure; clones share one multiplexed connection.
    manager: ConnectionManager,
    script: Script,
    prefix: String,
    /// What calls get while Redis is unreachable, for the log.
    on_error: OnBackendError,
    degraded: AtomicBool,
    /// When the next call may try Redis while degraded, in milliseconds since `epoch`.
    next_probe: AtomicU64,
    epoch: Instant,
}

impl Shared {
    /// Sets up the connection and loads the script, giving up after [`CALL_TIMEOUT`]. Only a bad
    /// URL is an error: an unreachable Redis leaves the backend degraded, to be retried by calls.
    pub(super) async fn connect(
        url: &str,
        prefix: String,
        on_error: OnBackendError,
    ) -> Result<Self, LimitsError> {
        let client = Client::open(url).map_err(|source| LimitsError::RedisUrl { source })?;
        // No retries inside the manager: a call must not wait for a series of reconnection
        // attempts, and the probing below tries again soon enough.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(0);
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|source| LimitsError::Redis { source })?;
        let shared = Self {
            manager,
            script: Script::new(GCRA),
            prefix,
            on_error,
            degraded: AtomicBool::new(false),
            next_probe: AtomicU64::new(0),
            epoch: Instant::now(),
        };
        // Loading the script now connects, so that the start-up log says whether Redis is
        // reachable, and spares the first call the round trip that would load it.
        let mut connection = shared.manager.clone();
        let loading = shared.script.load_async(&mut connection);
        match tokio::time::timeout(CALL_TIMEOUT, loading).await {
            Ok(Ok(_)) => tracing::info!("rate limits are shared through redis"),
            Ok(Err(e)) => shared.failed(&e),
            Err(_) => shared.failed(&"timed out"),
        }
        Ok(shared)
    }

    /// Whether the last call to Redis failed.
    pub(super) fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// Counts one call in `buckets`, all or none.
    pub(super) async fn check(&self, buckets: &[Bucket]) -> Outcome {
        if self.degraded() && !self.claim_probe() {
            return Outcome::Unavailable;
        }
        let mut invocation = self.script.prepare_invoke();
        for bucket in buckets {
            invocation
                .key(format!("{}:{}:{}", self.prefix, bucket.index, bucket.name))
                .arg(micros(bucket.interval).max(1))
                .arg(micros(bucket.tolerance));
        }
        let mut connection = self.manager.clone();
        let attempts = async {
            let first = invocation.invoke_async(&mut connection).await;
            match first {
                // An I/O error makes the manager start a new connection, which the second attempt
                // waits for: a dropped connection (Redis restarted, say) then costs no outage, and
                // a probe finds Redis back as soon as it is. Should the first attempt have run the
                // script before failing, the call is counted twice; that is rare and errs towards
                // refusing.
                Err(e) if e.is_io_error() => invocation.invoke_async(&mut connection).await,
                other => other,
            }
        };
        let reply: Result<Result<(u64, usize), _>, _> =
            tokio::time::timeout(CALL_TIMEOUT, attempts).await;
        match reply {
            Ok(Ok((0, _))) => {
                self.recovered();
                Outcome::Allowed
            }
            Ok(Ok((wait_ms, worst))) => {
                self.recovered();
                Outcome::Refused {
                    retry_after: Duration::from_millis(wait_ms),
                    // The script counts from 1, as Lua does.
                    bucket: worst.saturating_sub(1),
                }
            }
            Ok(Err(e)) => {
                self.failed(&e);
                Outcome::Unavailable
            }
            Err(_) => {
                self.failed(&"timed out");
                Outcome::Unavailable
            }
        }
    }

    /// While degraded, lets one call through to Redis per [`PROBE_INTERVAL`]; returns whether
    /// the caller is that one.
    fn claim_probe(&self) -> bool {
        let now = self.millis();
        let due = self.next_probe.load(Ordering::Relaxed);
        now >= due
            && self
                .next_probe
                .compare_exchange(
                    due,
                    now.saturating_add(millis(PROBE_INTERVAL)),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Records a failure, logging it when it starts an outage.
    fn failed(&self, error: &dyn std::fmt::Display) {
        self.next_probe.store(
            self.millis().saturating_add(millis(PROBE_INTERVAL)),
            Ordering::Relaxed,
        );
        if !self.degraded.swap(true, Ordering::AcqRel) {
            let meanwhile = match self.on_error {
                OnBackendError::Deny => "refusing rate-limited calls",
                OnBackendError::Local => "counting calls locally",
            };
            tracing::warn!(error = %error, "rate limit backend redis is unreachable, {meanwhile}");
        }
    }

    /// Records a success, logging it when it ends an outage.
    fn recovered(&self) {
        if self.degraded.swap(false, Ordering::AcqRel) {
            tracing::info!("rate limit backend redis answers again");
        }
    }

    fn millis(&self) -> u64 {
        millis(self.epoch.elapsed())
    }
}

/// Whole microseconds, rounded to the nearest, as the script counts time.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().saturating_add(500) / 1000).unwrap_or(u64::MAX)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
