//! One queue's messages in memory: which are visible, which are in flight
//! (and until when), FIFO group blocking and the deduplication window.
//! Pure and synchronous (the engine holds it under a mutex, never across an
//! await); what must survive a crash is written by the engine.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nimbus_core::queues::StoredMessage;

use crate::rules::DEDUP_WINDOW_MS;

/// Deduplication ids held before expired ones are first dropped.
const DEDUP_PRUNE_MIN: usize = 10_000;

/// The payloads (bodies and attributes) the node's queues hold in memory,
/// in bytes, and the most they may: past it a payload is left in the store
/// and read when its message is received, as a large one always is. A
/// backlog of small messages grew the node by each whole body.
#[derive(Debug)]
pub struct PayloadBudget {
    held: AtomicUsize,
    max: usize,
}

impl PayloadBudget {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { held: AtomicUsize::new(0), max })
    }

    /// Bytes held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn try_take(&self, n: usize) -> bool {
        self.held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| (h + n <= self.max).then_some(h + n)).is_ok()
    }

    fn give_back(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::Relaxed);
    }
}

impl Default for PayloadBudget {
    fn default() -> Self {
        Self { held: AtomicUsize::new(0), max: usize::MAX }
    }
}

/// The bytes of a message's payload that memory holds (0 when it was left
/// in the store: a body is never empty otherwise).
pub fn payload_size(m: &StoredMessage) -> usize {
    if m.body.is_empty() {
        return 0;
    }
    m.body.len()
        + [&m.attributes, &m.system_attributes]
            .iter()
            .flat_map(|a| a.iter())
            .map(|(k, v)| crate::rules::attribute_size(k, v))
            .sum::<usize>()
}

/// Leaves a message's payload to the store (its body then empty).
pub fn strip_payload(m: &mut StoredMessage) {
    m.body = String::new();
    m.attributes = BTreeMap::new();
    m.system_attributes = BTreeMap::new();
}

/// A message as the engine sees it now.
#[derive(Debug, Clone)]
pub struct Live {
    pub seq: i64,
    pub message: StoredMessage,
    /// When it is (next) visible.
    pub visible_at: i64,
    /// The receipt of its latest receive; `None` if never received since
    /// this node started.
    pub receipt: Option<u64>,
    /// When that receive was.
    pub received_at: i64,
}

impl Live {
    /// A message not received since this node started, visible when it
    /// says (`visible_ms`).
    pub fn new(seq: i64, message: StoredMessage) -> Self {
        Self { seq, visible_at: message.visible_ms, message, receipt: None, received_at: 0 }
    }

    /// A stored message as the store had it: in flight under its latest
    /// receipt until its visibility timeout, across a restart as on AWS.
    pub fn restored(seq: i64, message: StoredMessage, in_flight: Option<nimbus_store::InFlight>) -> Self {
        let mut live = Self::new(seq, message);
        if let Some(f) = in_flight {
            live.visible_at = live.visible_at.max(f.until_ms);
            live.receipt = Some(f.receipt);
            live.received_at = f.received_ms;
        }
        live
    }

    pub fn in_flight(&self, now: i64) -> bool {
        self.receipt.is_some() && self.visible_at > now
    }
}

/// What one receive decided.
#[derive(Debug, Default)]
pub struct Taken {
    /// Received now (visibility, count and receipt already updated).
    pub received: Vec<Live>,
    /// Past the retention period: removed, to be deleted from the store.
    pub expired: Vec<i64>,
    /// Received more often than the redrive policy allows: removed, to be
    /// moved to the dead-letter queue.
    pub dead: Vec<Live>,
}

/// How a receive treats messages.
#[derive(Debug, Clone, Copy)]
pub struct TakeRules {
    pub now: i64,
    pub max: usize,
    pub visibility_ms: i64,
    pub retention_ms: i64,
    /// maxReceiveCount of the redrive policy, if its target exists.
    pub max_receives: Option<u32>,
}

#[derive(Debug)]
pub struct Messages {
    fifo: bool,
    by_seq: BTreeMap<i64, Live>,
    /// (visible_at, seq) of every message.
    ready: BTreeSet<(i64, i64)>,
    /// FIFO deduplication ids: when each expires and the message id sent.
    dedup: HashMap<String, (i64, String)>,
    /// The deduplication map's size at which expired ids are next dropped:
    /// twice what was left after the last time, so that a map of ids all
    /// within their window is not scanned again at every send.
    dedup_prune_at: usize,
    /// What the node's queues may hold of payloads; this one's are charged.
    payloads: Arc<PayloadBudget>,
}

/// The approximate counts GetQueueAttributes reports.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

impl Messages {
    #[cfg(test)]
    pub fn new(fifo: bool) -> Self {
        Self::with_budget(fifo, Arc::default())
    }

    /// A queue's messages, whose payloads in memory count against `payloads`.
    pub fn with_budget(fifo: bool, payloads: Arc<PayloadBudget>) -> Self {
        Self {
            fifo,
            by_seq: BTreeMap::new(),
            ready: BTreeSet::new(),
            dedup: HashMap::new(),
            dedup_prune_at: 0,
            payloads,
        }
    }

    /// Keeps `live`, with its payload if the budget has room for it.
    pub fn insert(&mut self, mut live: Live) {
        if self.by_seq.contains_key(&live.seq) {
            return;
        }
        let size = payload_size(&live.message);
        if size > 0 && !self.payloads.try_take(size) {
            strip_payload(&mut live.message);
        }
        self.ready.insert((live.visible_at, live.seq));
        self.by_seq.insert(live.seq, live);
    }

    pub fn remove(&mut self, seq: i64) -> Option<Live> {
        let live = self.by_seq.remove(&seq)?;
        self.ready.remove(&(live.visible_at, seq));
        self.payloads.give_back(payload_size(&live.message));
        Some(live)
    }

    pub fn get(&self, seq: i64) -> Option<&Live> {
        self.by_seq.get(&seq)
    }

    /// Every message, in seq order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &Live> {
        self.by_seq.values()
    }

    pub fn clear(&mut self) {
        self.payloads.give_back(self.by_seq.values().map(|l| payload_size(&l.message)).sum());
        self.by_seq.clear();
        self.ready.clear();
    }

    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    /// A FIFO queue's delay is retroactive (AWS): a message never received
    /// is visible its queue's current delay after its send.
    pub fn redelay(&mut self, delay_ms: i64) {
        let waiting: Vec<(i64, i64)> = self
            .by_seq
            .values()
            .filter(|l| l.receipt.is_none() && l.message.receive_count == 0)
            .map(|l| (l.seq, l.message.sent_ms + delay_ms))
            .collect();
        for (seq, at) in waiting {
            self.set_visible_at(seq, at);
        }
    }

    /// Makes a message visible at `at` (a visibility change).
    pub fn set_visible_at(&mut self, seq: i64, at: i64) {
        if let Some(live) = self.by_seq.get_mut(&seq) {
            self.ready.remove(&(live.visible_at, seq));
            live.visible_at = at;
            self.ready.insert((at, seq));
        }
    }

    /// The message id a deduplication id was sent as within the window.
    pub fn duplicate_of(&mut self, dedup_id: &str, now: i64) -> Option<String> {
        match self.dedup.get(dedup_id) {
            Some((expires, id)) if *expires > now => Some(id.clone()),
            Some(_) => {
                self.dedup.remove(dedup_id);
                None
            }
            None => None,
        }
    }

    /// Remembers a deduplication id for five minutes from `sent_ms`.
    pub fn remember(&mut self, dedup_id: &str, message_id: &str, sent_ms: i64) {
        if self.dedup.len() >= self.dedup_prune_at {
            let now = sent_ms;
            self.dedup.retain(|_, (expires, _)| *expires > now);
            self.dedup_prune_at = (self.dedup.len() * 2).max(DEDUP_PRUNE_MIN);
        }
        self.dedup.insert(dedup_id.to_string(), (sent_ms + DEDUP_WINDOW_MS, message_id.to_string()));
    }

    /// Removes the messages past `retention_ms` and the deduplication ids
    /// past their window; the removed messages' sequence numbers.
    pub fn expire(&mut self, now: i64, retention_ms: i64) -> Vec<i64> {
        let gone: Vec<i64> = self
            .by_seq
            .iter()
            .filter(|(_, l)| l.message.retained_from().saturating_add(retention_ms) <= now)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in &gone {
            self.remove(*seq);
        }
        self.dedup.retain(|_, (expires, _)| *expires > now);
        gone
    }

    pub fn forget(&mut self, dedup_id: &str) {
        self.dedup.remove(dedup_id);
    }

    /// When the next message not visible now becomes visible, if any.
    pub fn next_visible(&self, now: i64) -> Option<i64> {
        self.ready.range((now + 1, i64::MIN)..).next().map(|(at, _)| *at)
    }

    /// Counts what is there; messages past `retention_ms` are gone already
    /// as far as clients can tell.
    pub fn counts(&self, now: i64, retention_ms: i64) -> Counts {
        let mut c = Counts::default();
        for live in self.by_seq.values() {
            if live.message.retained_from() + retention_ms <= now {
                continue;
            } else if live.visible_at <= now {
                c.visible += 1;
            } else if live.receipt.is_some() {
                c.in_flight += 1;
            } else {
                c.delayed += 1;
            }
        }
        c
    }

    /// Receives up to `rules.max` messages: the visible ones in visibility
    /// order (standard) or, for FIFO, in send order skipping every group
    /// that has a message in flight or waiting.
    pub fn take(&mut self, rules: TakeRules, mut receipt: impl FnMut() -> u64) -> Taken {
        let mut taken = Taken::default();
        let candidates: Vec<i64> = if self.fifo { self.fifo_candidates(rules.now) } else { self.visible(rules.now) };
        for seq in candidates {
            if taken.received.len() >= rules.max {
                break;
            }
            let Some(live) = self.by_seq.get(&seq) else { continue };
            if live.message.retained_from() + rules.retention_ms <= rules.now {
                self.remove(seq);
                taken.expired.push(seq);
                continue;
            }
            if rules.max_receives.is_some_and(|max| live.message.receive_count >= max) {
                taken.dead.extend(self.remove(seq));
                continue;
            }
            let at = rules.now + rules.visibility_ms;
            self.set_visible_at(seq, at);
            if let Some(live) = self.by_seq.get_mut(&seq) {
                live.message.receive_count += 1;
                live.message.first_receive_ms.get_or_insert(rules.now);
                live.receipt = Some(receipt());
                live.received_at = rules.now;
                taken.received.push(live.clone());
            }
        }
        taken
    }

    /// Visible messages in visibility order; more than a receive takes, as
    /// some may turn out expired or dead.
    fn visible(&self, now: i64) -> Vec<i64> {
        self.ready.range(..=(now, i64::MAX)).map(|(_, seq)| *seq).take(100).collect()
    }

    fn fifo_candidates(&self, now: i64) -> Vec<i64> {
        let mut blocked: HashSet<&str> = HashSet::new();
        let mut out = Vec::new();
        for live in self.by_seq.values() {
            let group = live.message.group_id.as_deref().unwrap_or_default();
            if blocked.contains(group) {
                continue;
            }
            if live.visible_at > now {
                blocked.insert(group);
            } else {
                out.push(live.seq);
                if out.len() >= 100 {
                    break;
                }
            }
        }
        out
    }

    /// Takes up to `max` messages that are not in flight (for a move task).
    pub fn drain(&mut self, now: i64, max: usize) -> Vec<Live> {
        let seqs: Vec<i64> = self.by_seq.values().filter(|l| !l.in_flight(now)).map(|l| l.seq).take(max).collect();
        seqs.into_iter().filter_map(|s| self.remove(s)).collect()
    }
}

impl Drop for Messages {
    /// A deleted queue's payloads leave the budget with it.
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_past_the_nodes_budget_are_left_in_the_store() {
        let budget = PayloadBudget::new(100);
        let with_body = |seq: i64, body: char| {
            let mut l = live(seq, None);
            l.message.body = body.to_string().repeat(40);
            l
        };
        let mut a = Messages::with_budget(false, budget.clone());
        let mut b = Messages::with_budget(false, budget.clone());
        a.insert(with_body(1, 'x'));
        b.insert(with_body(2, 'y'));
        a.insert(with_body(3, 'z'));
        assert_eq!(budget.held(), 80);
        assert!(a.get(3).unwrap().message.body.is_empty(), "past the budget: read from the store when received");
        assert_eq!(a.remove(1).unwrap().message.body.len(), 40);
        assert_eq!(budget.held(), 40);
        a.insert(with_body(4, 'w'));
        assert_eq!(a.get(4).unwrap().message.body.len(), 40, "room again");
        drop(a);
        assert_eq!(budget.held(), 40, "a deleted queue gives its share back");
        b.clear();
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn ids_within_their_window_are_not_scanned_again_at_every_send() {
        let mut m = Messages::new(true);
        for i in 0..DEDUP_PRUNE_MIN {
            m.remember(&format!("d{i}"), "id", 0);
        }
        assert_eq!(m.dedup_prune_at, DEDUP_PRUNE_MIN, "no scan before the minimum");
        m.remember("one-more", "id", 1);
        // Scanned once, nothing expired: the next scan waits for twice as many.
        assert_eq!(m.dedup_prune_at, 2 * DEDUP_PRUNE_MIN);
        m.remember("later", "id", DEDUP_WINDOW_MS + 2);
        assert_eq!(m.dedup.len(), DEDUP_PRUNE_MIN + 2, "expired ids wait for the next scan or the minute's expiry");
        assert_eq!(m.duplicate_of("d0", DEDUP_WINDOW_MS + 2), None, "but are never taken for duplicates");
    }

    fn live(seq: i64, group: Option<&str>) -> Live {
        Live::new(
            seq,
            StoredMessage {
                id: format!("m{seq}"),
                body: format!("b{seq}"),
                attributes: Default::default(),
                system_attributes: Default::default(),
                sent_ms: 0,
                visible_ms: 0,
                sender_id: "s".into(),
                receive_count: 0,
                first_receive_ms: None,
                group_id: group.map(str::to_string),
                dedup_id: None,
                sequence_number: None,
                dead_letter_source: None,
                enqueued_ms: None,
            },
        )
    }

    fn rules(now: i64, max: usize) -> TakeRules {
        TakeRules { now, max, visibility_ms: 30_000, retention_ms: 1_000_000, max_receives: None }
    }

    fn bodies(t: &Taken) -> Vec<&str> {
        t.received.iter().map(|l| l.message.body.as_str()).collect()
    }

    #[test]
    fn fifo_keeps_a_group_behind_its_message_in_flight() {
        let mut m = Messages::new(true);
        for (seq, g) in [(1, "a"), (2, "b"), (3, "a"), (4, "b")] {
            m.insert(live(seq, Some(g)));
        }
        let mut n = 0;
        let first = m.take(rules(10, 1), || {
            n += 1;
            n
        });
        assert_eq!(bodies(&first), ["b1"]);
        // Group a is blocked by b1 in flight; b2 comes, then b4; b3 waits.
        let second = m.take(rules(10, 10), || 9);
        assert_eq!(bodies(&second), ["b2", "b4"]);
        // Deleting b1 unblocks group a.
        m.remove(1);
        assert_eq!(bodies(&m.take(rules(10, 10), || 9)), ["b3"]);
    }

    #[test]
    fn in_flight_messages_return_after_their_timeout() {
        let mut m = Messages::new(false);
        m.insert(live(1, None));
        assert_eq!(m.take(rules(10, 10), || 1).received.len(), 1);
        assert!(m.take(rules(20, 10), || 2).received.is_empty());
        assert_eq!(m.next_visible(20), Some(30_010));
        assert_eq!(m.counts(20, 1_000_000), Counts { visible: 0, in_flight: 1, delayed: 0 });
        let again = m.take(rules(30_010, 10), || 3);
        assert_eq!(again.received[0].message.receive_count, 2);
    }

    #[test]
    fn redrive_and_retention_remove_messages() {
        let mut m = Messages::new(false);
        m.insert(live(1, None));
        let mut r = rules(10, 10);
        r.max_receives = Some(1);
        r.visibility_ms = 0;
        assert_eq!(m.take(r, || 1).received.len(), 1);
        let second = m.take(r, || 2);
        assert!(second.received.is_empty());
        assert_eq!(second.dead.len(), 1);
        m.insert(live(2, None));
        r.retention_ms = 5;
        assert_eq!(m.take(r, || 3).expired, [2]);
        assert_eq!(m.len(), 0);
        // A message moved into a FIFO dead-letter queue counts from the move.
        let mut moved = live(3, None);
        moved.message.enqueued_ms = Some(8);
        m.insert(moved);
        assert_eq!(m.take(r, || 4).received.len(), 1, "sent at 0, moved at 8: kept until 13");
        assert_eq!(m.expire(13, 5), [3]);
    }

    #[test]
    fn dedup_window_is_five_minutes() {
        let mut m = Messages::new(true);
        m.remember("d", "m1", 0);
        assert_eq!(m.duplicate_of("d", DEDUP_WINDOW_MS - 1).as_deref(), Some("m1"));
        assert_eq!(m.duplicate_of("d", DEDUP_WINDOW_MS), None);
    }
}
