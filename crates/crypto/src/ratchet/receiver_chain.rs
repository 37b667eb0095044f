//! The receiving side of the ratchet: `DHr`, `CKr`, `Nr`, and `SkipMessageKeys`.

use super::chain_key::ChainKey;
use super::message_key::MessageKey;
use super::ratchet_key::RatchetPublicKey;
use super::skipped_keys::SkippedKey;

/// `DHr` (None before the first message arrives), `CKr` (None until a DH ratchet step with a
/// received key), `Nr`.
#[derive(Clone, Debug)]
pub(crate) struct ReceiverChain {
    pub(crate) ratchet_key: Option<RatchetPublicKey>,
    pub(crate) chain_key: Option<ChainKey>,
    pub(crate) index: u32,
}

impl ReceiverChain {
    /// `SkipMessageKeys(state, until)` without the `MAX_SKIP` check (done by the caller, before
    /// any derivation): stores the keys of messages `Nr..until` in `out`.
    pub(crate) fn skip_until(&mut self, until: u32, out: &mut Vec<SkippedKey>) {
        let (Some(ck), Some(dh)) = (self.chain_key.as_mut(), self.ratchet_key) else {
            return;
        };
        while self.index < until {
            let (next, mk) = ck.step();
            *ck = next;
            out.push(SkippedKey {
                ratchet_key: dh,
                index: self.index,
                key: mk,
            });
            self.index += 1;
        }
    }

    /// `CKr, mk = KDF_CK(CKr); Nr += 1`. None without a receiving chain or at `Nr = 2^32 - 1`.
    pub(crate) fn next_key(&mut self) -> Option<MessageKey> {
        let ck = self.chain_key.as_mut()?;
        let index = self.index.checked_add(1)?;
        let (next, mk) = ck.step();
        *ck = next;
        self.index = index;
        Some(mk)
    }
}
