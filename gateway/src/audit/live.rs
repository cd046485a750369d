//! Live audit events for operators: every committed record, as Server-Sent Events at
//! `/admin/events`, with a replay buffer for `Last-Event-ID`.
//!
//! Events are published only after their commit, so a watcher never sees a record the trail
//! does not have. A reconnecting watcher gets exactly the events it missed, as long as they are
//! still in the buffer; if they are not, it gets a `gap` event first. A watcher that falls
//! behind the live stream by more than the channel holds is cut off with a `lagged` event
//! instead of making the gateway buffer for it without end.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use tokio::sync::broadcast;

/// Events kept for reconnecting watchers.
const BUFFER: usize = 4096;
/// Events a live watcher may fall behind before it is cut off.
const CHANNEL: usize = 1024;

/// One event: its id (counting from 1 in this process) and its JSON.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    pub id: u64,
    pub data: Arc<str>,
}

/// The event feed.
pub struct Live {
    tx: broadcast::Sender<LiveEvent>,
    state: Mutex<State>,
}

struct State {
    next_id: u64,
    buffer: VecDeque<LiveEvent>,
}

/// What a watcher receives first when it connects.
pub struct Catchup {
    /// The buffered events after its `Last-Event-ID`.
    pub missed: Vec<LiveEvent>,
    /// Whether some events it missed are no longer buffered.
    pub gap: bool,
    /// The live events from here on.
    pub live: broadcast::Receiver<LiveEvent>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CHANNEL).0,
            state: Mutex::new(State {
                next_id: 1,
                buffer: VecDeque::with_capacity(BUFFER),
            }),
        }
    }
}

impl Live {
    /// Publishes committed records (their canonical JSON), in order.
    pub fn publish(&self, records: &[(i64, String)]) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (_, body) in records {
            let event = LiveEvent {
                id: state.next_id,
                data: body.as_str().into(),
            };
            state.next_id += 1;
            if state.buffer.len() == BUFFER {
                state.buffer.pop_front();
            }
            state.buffer.push_back(event.clone());
            // No watcher is not an error.
            let _ = self.tx.send(event);
        }
    }

    /// Subscribes a watcher that has seen events up to `last_seen` (0 for none). Subscribing and
    /// reading the buffer happen under one lock, so no event falls between them.
    pub fn watch(&self, last_seen: u64) -> Catchup {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.tx.subscribe();
        let oldest = state.buffer.front().map_or(state.next_id, |e| e.id);
        let missed: Vec<LiveEvent> = state
            .buffer
            .iter()
            .filter(|e| e.id > last_seen)
            .cloned()
            .collect();
        Catchup {
            gap: last_seen > 0 && last_seen + 1 < oldest,
            missed,
            live,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(live: &Live, n: usize) {
        let records: Vec<(i64, String)> = (0..n)
            .map(|i| (i as i64, format!("{{\"i\":{i}}}")))
            .collect();
        live.publish(&records);
    }

    #[test]
    fn a_reconnecting_watcher_gets_exactly_what_it_missed() {
        let live = Live::default();
        publish(&live, 5);
        let catchup = live.watch(3);
        assert_eq!(
            catchup.missed.iter().map(|e| e.id).collect::<Vec<_>>(),
            [4, 5]
        );
        assert!(!catchup.gap);
        assert!(live.watch(5).missed.is_empty());
        assert_eq!(live.watch(0).missed.len(), 5);
    }

    #[test]
    fn a_watcher_too_far_behind_is_told_of_the_gap() {
        let live = Live::default();
        publish(&live, BUFFER + 10);
        let catchup = live.watch(3);
        assert!(catchup.gap);
        assert_eq!(catchup.missed.first().map(|e| e.id), Some(11));
    }

    #[tokio::test]
    async fn a_slow_live_watcher_lags_instead_of_growing_memory() {
        let live = Live::default();
        let mut catchup = live.watch(0);
        publish(&live, CHANNEL + 10);
        assert!(matches!(
            catchup.live.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
    }
}
