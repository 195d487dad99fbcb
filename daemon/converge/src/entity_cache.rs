//! The processor's entity states in memory: the states it last wrote, which
//! may be ahead of the store by the batches the journal has not committed
//! yet, and the ones it read, least recently used first out.
//!
//! Its size is `storage.entity_cache_entries`. The cache never evicts on
//! its own: the processor evicts (`evict_lru`) only an entry whose state is
//! committed (`lru_seq` at or before the committed cursor), since a state
//! dropped while its batch is on its way to the database would be read back
//! stale from the store.

use std::num::NonZeroUsize;
use std::sync::Arc;

use converge_model::{EntityKey, EntityState};
use lru::LruCache;

/// At least this many entries: more than a batch of events can write, so
/// the least recently used entry is never one of the batch being decided.
pub const MIN_ENTRIES: usize = 1024;

pub struct EntityCache {
    entries: LruCache<EntityKey, Cached>,
    capacity: NonZeroUsize,
}

struct Cached {
    /// Shared with the journal's batch that writes it, until that commits.
    state: Arc<EntityState>,
    /// The journal `seq` of the event whose processing wrote it; 0 for a
    /// state read from the store.
    seq: i64,
}

impl EntityCache {
    pub fn new(capacity: usize) -> EntityCache {
        EntityCache {
            entries: LruCache::unbounded(),
            capacity: NonZeroUsize::new(capacity.max(MIN_ENTRIES)).expect("at least MIN_ENTRIES"),
        }
    }

    /// The state, taken out: for an event about to change it, whose new
    /// state goes back in with [`EntityCache::insert`] as the most recently
    /// used (taking it saves a copy of the state per event). The journal
    /// has usually written the state by the entity's next event and let go
    /// of it; when it has not, the state taken is a copy.
    pub fn take(&mut self, key: &EntityKey) -> Option<EntityState> {
        self.entries.pop(key).map(|c| Arc::unwrap_or_clone(c.state))
    }

    pub fn contains(&self, key: &EntityKey) -> bool {
        self.entries.contains(key)
    }

    /// Keeps `state` as written by the event at `seq` (0: read from the store).
    pub fn insert(&mut self, state: impl Into<Arc<EntityState>>, seq: i64) {
        let state = state.into();
        self.entries.put(state.key(), Cached { state, seq });
    }

    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.capacity.get()
    }

    /// The `seq` that wrote the least recently used entry.
    pub fn lru_seq(&self) -> Option<i64> {
        self.entries.peek_lru().map(|(_, c)| c.seq)
    }

    /// Drops the least recently used entry; the caller has checked that its
    /// state is committed.
    pub fn evict_lru(&mut self) {
        self.entries.pop_lru();
    }

    /// Evicts down to the capacity, when every state is committed (between
    /// the cluster loop's pages).
    pub fn trim_committed(&mut self) {
        while self.entries.len() > self.capacity.get() {
            self.entries.pop_lru();
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: &str) -> EntityState {
        EntityState::new(&key(id), chrono::DateTime::UNIX_EPOCH)
    }

    fn key(id: &str) -> EntityKey {
        EntityKey::parse(&format!("task/{id}")).unwrap()
    }

    #[test]
    fn the_least_recently_used_goes_first_and_an_event_counts_as_a_use() {
        let mut cache = EntityCache::new(0);
        for i in 0..MIN_ENTRIES {
            cache.insert(state(&i.to_string()), i as i64 + 1);
        }
        assert!(cache.is_full());
        assert_eq!(cache.lru_seq(), Some(1));
        // An event about task/0 makes task/1 the least recently used.
        let taken = cache.take(&key("0")).unwrap();
        assert!(!cache.contains(&key("0")));
        cache.insert(taken, MIN_ENTRIES as i64 + 1);
        assert_eq!(cache.lru_seq(), Some(2));
        cache.evict_lru();
        assert!(!cache.contains(&key("1")));
        assert!(cache.contains(&key("0")));
        assert!(!cache.is_full());
    }

    #[test]
    fn a_state_the_journal_still_holds_is_copied_when_taken() {
        let mut cache = EntityCache::new(0);
        let written = Arc::new(state("0"));
        cache.insert(Arc::clone(&written), 1);
        // The next event changes the state it took; the batch being
        // committed keeps the state as the event before left it.
        let mut taken = cache.take(&key("0")).unwrap();
        assert_eq!(taken, *written);
        taken.events += 1;
        assert_eq!((written.events, taken.events), (0, 1));
        assert!(!cache.contains(&key("0")));
    }

    #[test]
    fn it_never_evicts_on_its_own_and_trims_down_to_its_capacity() {
        let mut cache = EntityCache::new(MIN_ENTRIES);
        for i in 0..MIN_ENTRIES + 10 {
            cache.insert(state(&i.to_string()), 0);
        }
        assert_eq!(cache.entries.len(), MIN_ENTRIES + 10);
        cache.trim_committed();
        assert_eq!(cache.entries.len(), MIN_ENTRIES);
        assert!(!cache.contains(&key("9")) && cache.contains(&key("10")));
    }
}
