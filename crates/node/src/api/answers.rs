//! The API's answers as plain functions of what the store holds: the server gives them, and
//! the CLI gives the same ones from the database when no node runs.

use std::fmt;

use dp2ptcs_store::{Cancel, ContactRecord, Direction, MessageRecord};
use dp2ptcs_types::{MessageId, NodeId};

use super::{CancelResponse, Message};

/// Shortest node-id prefix that names a contact or recipient.
pub const MIN_ID_PREFIX: usize = 8;

/// A request refused: the HTTP status, a stable code (as in [`super::ErrorBody`]) and a
/// sentence for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// The stable, machine-readable code.
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
}

impl Refusal {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    pub(crate) fn unknown_contact(query: &str) -> Self {
        Self::new(
            404,
            "unknown_contact",
            format!("no contact named {query:?} (see `dp2ptcs contact list`)"),
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

/// The contact's name, if `id` is a contact.
pub fn peer_name(contacts: &[ContactRecord], id: &NodeId) -> Option<String> {
    contacts
        .iter()
        .find(|c| c.node_id == *id)
        .map(|c| c.name.clone())
}

/// Refuses a name for a new contact that [`validate_display_name`] refuses, that would read as
/// a node-id prefix (8 or more hex digits: a command naming it could mean another contact), or
/// that holds invisible characters changing how text is shown (bidirectional controls,
/// zero-width characters: a name could look like another).
///
/// [`validate_display_name`]: dp2ptcs_crypto::contact_uri::validate_display_name
pub fn check_new_contact_name(name: &str) -> Result<(), String> {
    dp2ptcs_crypto::contact_uri::validate_display_name(name).map_err(|e| e.to_string())?;
    if id_prefix(name).is_some() {
        return Err(format!(
            "{name:?} would read as a node id prefix ({MIN_ID_PREFIX} or more hex digits): \
             choose another name"
        ));
    }
    if name.chars().any(is_format_control) {
        return Err(
            "the name holds invisible characters that change how text is shown (bidirectional \
             controls or zero-width characters): choose another name"
                .into(),
        );
    }
    Ok(())
}

/// Whether `c` is invisible and changes how the text around it is shown: the bidirectional
/// controls (which can show a text reversed, U+202E), zero-width characters, and the line and
/// paragraph separators (U+2028, U+2029), which some programs show as a line break.
pub fn is_format_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{2029}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
    )
}

/// `query` lowercased, if it can be a node-id prefix: 8 to 64 hex digits.
fn id_prefix(query: &str) -> Option<String> {
    let q = query.to_ascii_lowercase();
    (q.len() >= MIN_ID_PREFIX
        && q.len() <= NodeId::LEN * 2
        && q.bytes().all(|b| b.is_ascii_hexdigit()))
    .then_some(q)
}

/// The one of `ids` that `prefix` starts; `what` names them in the refusal when several do.
fn one_by_prefix<'a, T>(
    items: &'a [T],
    id: impl Fn(&T) -> NodeId,
    query: &str,
    prefix: &str,
    what: &str,
) -> Result<Option<&'a T>, Refusal> {
    let matches: Vec<&T> = items
        .iter()
        .filter(|i| id(i).to_hex().starts_with(prefix))
        .collect();
    match matches.as_slice() {
        [one] => Ok(Some(one)),
        [] => Ok(None),
        many => Err(Refusal::bad_request(format!(
            "{query:?} matches {} {what}; give more digits of the node id",
            many.len()
        ))),
    }
}

/// A contact by exact name, else by a node-id prefix of at least 8 hex digits that matches one
/// contact.
pub fn contact_named(contacts: &[ContactRecord], query: &str) -> Result<ContactRecord, Refusal> {
    if let Some(c) = contacts.iter().find(|c| c.name == query) {
        return Ok(c.clone());
    }
    if let Some(prefix) = id_prefix(query) {
        if let Some(c) = one_by_prefix(contacts, |c| c.node_id, query, &prefix, "contacts")? {
            return Ok(c.clone());
        }
    }
    Err(Refusal::unknown_contact(query))
}

/// The recipient `query` names: a contact (as [`contact_named`]), or else, for messages left
/// waiting for someone no longer a contact, a node id (at least 8 hex digits) of one of the
/// peers in `waiting` (those with messages in the outbox).
pub fn recipient_named(
    contacts: &[ContactRecord],
    waiting: &[NodeId],
    query: &str,
) -> Result<NodeId, Refusal> {
    let unknown = match contact_named(contacts, query) {
        Ok(c) => return Ok(c.node_id),
        Err(e) if e.code == "unknown_contact" => e,
        Err(e) => return Err(e),
    };
    let Some(prefix) = id_prefix(query) else {
        return Err(unknown);
    };
    one_by_prefix(waiting, |p| *p, query, &prefix, "recipients")?
        .copied()
        .ok_or(unknown)
}

/// A message id given as 32 hex digits.
pub fn message_id(text: &str) -> Result<MessageId, Refusal> {
    text.trim()
        .parse()
        .map_err(|_| Refusal::bad_request("a message id is 32 hex digits"))
}

impl Message {
    /// The message `m` as the API shows it, its peer named if a contact.
    pub fn from_record(m: &MessageRecord, contacts: &[ContactRecord]) -> Self {
        Self {
            seq: m.seq,
            id: m.id.to_hex(),
            peer: m.peer.to_hex(),
            peer_name: peer_name(contacts, &m.peer),
            direction: match m.direction {
                Direction::Incoming => "incoming",
                Direction::Outgoing => "outgoing",
            }
            .to_owned(),
            body: m.body.clone(),
            sent_at_ms: m.sent_at_ms,
            state: m.state.to_string(),
            state_at_ms: m.state_at_ms,
            expires_at_ms: m.expires_at_ms,
        }
    }
}

/// The answer to cancelling the message `id`, which the store answered with `outcome`;
/// `in_flight` if a copy was leaving at that moment.
pub fn cancel_answer(
    outcome: Cancel,
    in_flight: bool,
    id: &MessageId,
    contacts: &[ContactRecord],
) -> Result<CancelResponse, Refusal> {
    match outcome {
        Cancel::Cancelled { was, message } => Ok(CancelResponse {
            was: was.to_string(),
            in_flight,
            message: Message::from_record(&message, contacts),
        }),
        Cancel::NotWaiting(m) => Err(Refusal::new(
            409,
            "not_waiting",
            format!(
                "message {} is {}, not waiting in the outbox: there is nothing to cancel",
                m.id.to_hex(),
                m.state
            ),
        )),
        Cancel::Unknown => Err(Refusal::new(
            404,
            "unknown_message",
            format!("no message was sent with id {}", id.to_hex()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_contact_names_that_could_mislead_are_refused() {
        for ok in [
            "Bravo",
            "Team 2",
            "deadbee",
            "Grüße",
            "0123456789abcdefg",
            "cafe babe",
        ] {
            assert!(check_new_contact_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "deadbeef",
            "DEADBEEF00",
            "0123456789",
            "Al\u{202e}ice",
            "Bo\u{200b}b",
            "",
        ] {
            assert!(check_new_contact_name(bad).is_err(), "{bad:?}");
        }
    }

    fn contact(name: &str, first: u8) -> ContactRecord {
        let mut id = [0x11u8; 32];
        id[0] = first;
        ContactRecord {
            node_id: NodeId::from_bytes(id),
            public_key: [0; 32],
            name: name.into(),
            addresses: vec![],
            verified: false,
            verified_at: None,
            added_at: 0,
        }
    }

    #[test]
    fn names_and_node_id_prefixes_pick_one_contact_or_recipient() {
        let contacts = [contact("Bravo", 0xab), contact("Charlie", 0xac)];
        let gone = NodeId::from_bytes([0xcd; 32]);
        let named = |q: &str| recipient_named(&contacts, &[gone], q);
        assert_eq!(named("Bravo"), Ok(contacts[0].node_id));
        assert_eq!(named("AB111111"), Ok(contacts[0].node_id));
        // Someone no longer a contact, by the id of their waiting messages only.
        assert_eq!(named("cdcdcdcd"), Ok(gone));
        assert_eq!(
            contact_named(&contacts, "cdcdcdcd").unwrap_err().code,
            "unknown_contact"
        );
        // Too short, not hex, or matching two: refused, with the reason.
        assert_eq!(named("cdcdcd").unwrap_err().code, "unknown_contact");
        assert_eq!(named("bravo").unwrap_err().status, 404);
        let two = [contact("Delta", 0xab), contact("Echo", 0xab)];
        let e = contact_named(&two, "ab111111").unwrap_err();
        assert_eq!((e.status, e.code), (400, "bad_request"));
        assert!(e.message.contains("matches 2 contacts"), "{e}");
        assert!(message_id("xyz").is_err());
        assert!(message_id(&format!(" {} ", "0".repeat(32))).is_ok());
    }
}
