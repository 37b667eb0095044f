//! `MKSKIPPED`: message keys of skipped messages, bounded per session.

use std::collections::VecDeque;

use super::message_key::MessageKey;
use super::ratchet_key::RatchetPublicKey;
use super::MAX_SKIPPED_KEYS;

/// One stored key, indexed by (`DHr` of its chain, message number).
#[derive(Clone, Debug)]
pub(crate) struct SkippedKey {
    pub(crate) ratchet_key: RatchetPublicKey,
    pub(crate) index: u32,
    pub(crate) key: MessageKey,
}

/// Oldest first. When full, storing a key evicts the oldest one (its message can then never
/// be decrypted).
#[derive(Clone, Debug, Default)]
pub(crate) struct SkippedKeys {
    entries: VecDeque<SkippedKey>,
}

impl SkippedKeys {
    pub(crate) fn position(&self, ratchet_key: &RatchetPublicKey, index: u32) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.index == index && &e.ratchet_key == ratchet_key)
    }

    pub(crate) fn get(&self, i: usize) -> Option<&SkippedKey> {
        self.entries.get(i)
    }

    /// Removes entry `i` (its key is zeroized when dropped).
    pub(crate) fn remove(&mut self, i: usize) {
        self.entries.remove(i);
    }

    pub(crate) fn extend(&mut self, keys: Vec<SkippedKey>) {
        for k in keys {
            if self.entries.len() >= MAX_SKIPPED_KEYS {
                self.entries.pop_front();
            }
            self.entries.push_back(k);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &SkippedKey> {
        self.entries.iter()
    }
}
