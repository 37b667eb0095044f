//! The contact URI: what one person gives another (as text or as a QR code) to be added as a
//! contact.
//!
//! ```text
//! dp2ptcs://contact?v=1&key=<base64url public key>[&name=<pct-encoded>][&addr=<pct-encoded>]*&sig=<base64url signature>
//! ```
//!
//! The URI carries the whole Ed25519 public key (never only the node id), optional address hints
//! and display name, and an Ed25519 signature by that key over all of them. The signature makes
//! the card tamper-evident and turns every typo into an error instead of a different key. It does
//! not prove *who* holds the key: that is what the safety number is for.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use dp2ptcs_types::limits::{
    MAX_ADDRESS_HINTS, MAX_ADDRESS_HINT_LEN, MAX_CONTACT_URI_LEN, MAX_DISPLAY_NAME_LEN,
};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::{Identity, PublicIdentity, PublicKeyError};

/// The URI prefix (scheme, authority and the start of the query), compared case-insensitively.
pub const PREFIX: &str = "dp2ptcs://contact?";
/// Domain separator at the start of the signed bytes.
pub const SIGNATURE_CONTEXT: &[u8] = b"dp2ptcs contact v1\x00";

/// Characters left as they are in query values: RFC 3986 unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A validated, signature-checked contact card.
#[derive(Clone, PartialEq, Eq)]
pub struct ContactUri {
    key: PublicIdentity,
    name: Option<String>,
    addresses: Vec<SocketAddr>,
    signature: [u8; 64],
}

/// Why a string is not a usable contact URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContactUriError {
    /// Longer than [`MAX_CONTACT_URI_LEN`].
    #[error("the contact URI is too long ({0} bytes, at most {MAX_CONTACT_URI_LEN})")]
    TooLong(usize),
    /// Does not start with `dp2ptcs://contact?`.
    #[error("not a DP2PTCS contact URI (it should start with \"dp2ptcs://contact?\")")]
    NotAContactUri,
    /// `v` names a version this program does not know.
    #[error("contact URI version {0:?} is not supported (this program reads version 1)")]
    UnsupportedVersion(String),
    /// A required field is absent.
    #[error("the contact URI has no {0:?} field")]
    MissingField(&'static str),
    /// A field that may appear once appears twice.
    #[error("the contact URI has the {0:?} field more than once")]
    DuplicateField(String),
    /// A field this version does not define.
    #[error("the contact URI has an unknown field {0:?}")]
    UnknownField(String),
    /// A field's value is not properly encoded.
    #[error("the contact URI's {0} field is not properly encoded")]
    Encoding(&'static str),
    /// The key is not a valid Ed25519 public key.
    #[error("the contact URI's key is unusable: {0}")]
    Key(#[from] PublicKeyError),
    /// The display name breaks the rules.
    #[error("invalid display name: {0}")]
    Name(String),
    /// An address hint is not `IP:port`.
    #[error(
        "invalid address hint {0:?} (expected IP:port, e.g. 192.0.2.7:4433 or [2001:db8::7]:4433)"
    )]
    Address(String),
    /// More than [`MAX_ADDRESS_HINTS`] address hints.
    #[error("the contact URI has {0} address hints, at most {MAX_ADDRESS_HINTS} are allowed")]
    TooManyAddresses(usize),
    /// The signature does not verify: the URI was altered or mistyped.
    #[error("the contact URI's signature does not match its contents: it was altered or mistyped")]
    BadSignature,
}

/// Checks a display name: 1 to [`MAX_DISPLAY_NAME_LEN`] bytes of UTF-8, no control characters, no
/// leading or trailing whitespace.
pub fn validate_display_name(name: &str) -> Result<(), ContactUriError> {
    if name.is_empty() {
        return Err(ContactUriError::Name("it is empty".into()));
    }
    if name.len() > MAX_DISPLAY_NAME_LEN {
        return Err(ContactUriError::Name(format!(
            "it has {} bytes, at most {MAX_DISPLAY_NAME_LEN} are allowed",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ContactUriError::Name(
            "it contains control characters".into(),
        ));
    }
    if name.trim() != name {
        return Err(ContactUriError::Name(
            "it starts or ends with whitespace".into(),
        ));
    }
    Ok(())
}

impl ContactUri {
    /// A contact card for `identity`, signed by it.
    pub fn new(
        identity: &Identity,
        name: Option<&str>,
        addresses: &[SocketAddr],
    ) -> Result<Self, ContactUriError> {
        if let Some(name) = name {
            validate_display_name(name)?;
        }
        if addresses.len() > MAX_ADDRESS_HINTS {
            return Err(ContactUriError::TooManyAddresses(addresses.len()));
        }
        let key = identity.public();
        let name = name.map(str::to_owned);
        let addresses = addresses.to_vec();
        let signature = identity.sign(&signed_bytes(&key, name.as_deref(), &addresses));
        Ok(Self {
            key,
            name,
            addresses,
            signature,
        })
    }

    /// The contact's public identity.
    pub fn public_identity(&self) -> &PublicIdentity {
        &self.key
    }

    /// The display name the contact chose for themselves, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Addresses where the contact said it could be reached.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }
}

/// The bytes the signature covers (see `PROTOCOL.md`, "Contact URI").
fn signed_bytes(key: &PublicIdentity, name: Option<&str>, addresses: &[SocketAddr]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(SIGNATURE_CONTEXT);
    out.extend_from_slice(&key.to_bytes());
    let name = name.unwrap_or("");
    // Lengths fit in a byte: names are at most 64 bytes, hints at most 128, at most 8 hints.
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.push(addresses.len() as u8);
    for addr in addresses {
        let text = addr.to_string();
        out.push(text.len() as u8);
        out.extend_from_slice(text.as_bytes());
    }
    out
}

impl fmt::Display for ContactUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}v=1&key={}", B64URL.encode(self.key.to_bytes()))?;
        if let Some(name) = &self.name {
            write!(f, "&name={}", utf8_percent_encode(name, QUERY_VALUE))?;
        }
        for addr in &self.addresses {
            write!(
                f,
                "&addr={}",
                utf8_percent_encode(&addr.to_string(), QUERY_VALUE)
            )?;
        }
        write!(f, "&sig={}", B64URL.encode(self.signature))
    }
}

impl fmt::Debug for ContactUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContactUri")
            .field("node_id", &self.key.node_id())
            .field("name", &self.name)
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

fn decode_value(field: &'static str, raw: &str) -> Result<String, ContactUriError> {
    // Reject malformed escapes ("%", "%G1") instead of passing them through as literal text.
    let bytes = raw.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' {
            let ok = bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return Err(ContactUriError::Encoding(field));
            }
        }
    }
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ContactUriError::Encoding(field))
}

fn decode_b64<const N: usize>(field: &'static str, raw: &str) -> Result<[u8; N], ContactUriError> {
    let bytes = B64URL
        .decode(raw)
        .map_err(|_| ContactUriError::Encoding(field))?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| ContactUriError::Encoding(field))
}

fn set_once<T>(slot: &mut Option<T>, field: &str, value: T) -> Result<(), ContactUriError> {
    if slot.is_some() {
        return Err(ContactUriError::DuplicateField(field.to_owned()));
    }
    *slot = Some(value);
    Ok(())
}

impl FromStr for ContactUri {
    type Err = ContactUriError;

    /// Parses and verifies a contact URI. Surrounding whitespace (as left by copy and paste) is
    /// ignored; everything else must be exact.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() > MAX_CONTACT_URI_LEN {
            return Err(ContactUriError::TooLong(s.len()));
        }
        let query = match s.get(..PREFIX.len()) {
            Some(head) if head.eq_ignore_ascii_case(PREFIX) => &s[PREFIX.len()..],
            _ => return Err(ContactUriError::NotAContactUri),
        };

        let (mut version, mut key, mut name, mut sig) = (None, None, None, None);
        let mut addr_texts = Vec::new();
        for pair in query.split('&') {
            let (field, value) = pair.split_once('=').unwrap_or((pair, ""));
            match field {
                "v" => set_once(&mut version, field, value)?,
                "key" => set_once(&mut key, field, decode_b64::<32>("key", value)?)?,
                "name" => set_once(&mut name, field, decode_value("name", value)?)?,
                "sig" => set_once(&mut sig, field, decode_b64::<64>("sig", value)?)?,
                "addr" => {
                    if addr_texts.len() == MAX_ADDRESS_HINTS {
                        return Err(ContactUriError::TooManyAddresses(MAX_ADDRESS_HINTS + 1));
                    }
                    addr_texts.push(decode_value("addr", value)?);
                }
                other => {
                    let mut shown = other.to_owned();
                    shown.truncate(shown.floor_char_boundary_compat(32));
                    return Err(ContactUriError::UnknownField(shown));
                }
            }
        }

        match version {
            Some("1") => {}
            Some(other) => {
                let mut shown = other.to_owned();
                shown.truncate(shown.floor_char_boundary_compat(16));
                return Err(ContactUriError::UnsupportedVersion(shown));
            }
            None => return Err(ContactUriError::MissingField("v")),
        }
        let key = PublicIdentity::from_bytes(&key.ok_or(ContactUriError::MissingField("key"))?)?;
        let signature = sig.ok_or(ContactUriError::MissingField("sig"))?;
        if let Some(name) = &name {
            validate_display_name(name)?;
        }
        let mut addresses = Vec::with_capacity(addr_texts.len());
        for text in addr_texts {
            if text.len() > MAX_ADDRESS_HINT_LEN {
                return Err(ContactUriError::Address(
                    text[..text.floor_char_boundary_compat(32)].to_owned(),
                ));
            }
            let addr: SocketAddr = text
                .parse()
                .map_err(|_| ContactUriError::Address(text.clone()))?;
            // Only the canonical spelling is signed; anything else cannot verify anyway.
            if addr.to_string() != text {
                return Err(ContactUriError::Address(text));
            }
            addresses.push(addr);
        }
        if !key.verify(&signed_bytes(&key, name.as_deref(), &addresses), &signature) {
            return Err(ContactUriError::BadSignature);
        }
        Ok(Self {
            key,
            name,
            addresses,
            signature,
        })
    }
}

/// `str::floor_char_boundary` is not stable on our minimum Rust version.
trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, index: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, index: usize) -> usize {
        if index >= self.len() {
            return self.len();
        }
        (0..=index)
            .rev()
            .find(|&i| self.is_char_boundary(i))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn identity() -> Identity {
        Identity::generate(&mut ChaCha20Rng::seed_from_u64(42))
    }

    fn sample() -> ContactUri {
        let addrs: Vec<SocketAddr> = vec![
            "192.0.2.7:4433".parse().unwrap(),
            "[2001:db8::7]:4433".parse().unwrap(),
        ];
        ContactUri::new(&identity(), Some("Alpha 1 / Zoë & co"), &addrs).unwrap()
    }

    #[test]
    fn round_trips_through_text() {
        let uri = sample();
        let text = uri.to_string();
        assert!(text.starts_with("dp2ptcs://contact?v=1&key="), "{text}");
        assert!(!text.contains(' '), "{text}");
        let back: ContactUri = text.parse().unwrap();
        assert_eq!(back, uri);
        assert_eq!(back.name(), Some("Alpha 1 / Zoë & co"));
        assert_eq!(back.addresses().len(), 2);
        assert_eq!(back.public_identity().node_id(), identity().node_id());
        // Whitespace from copy and paste and an upper-case scheme are tolerated.
        let pasted = format!(
            "  {}\n",
            text.replacen("dp2ptcs://contact", "DP2PTCS://CONTACT", 1)
        );
        assert_eq!(pasted.parse::<ContactUri>().unwrap(), uri);
    }

    #[test]
    fn minimal_uri_without_name_or_addresses() {
        let uri = ContactUri::new(&identity(), None, &[]).unwrap();
        assert_eq!(uri.to_string().parse::<ContactUri>().unwrap(), uri);
    }

    #[test]
    fn any_single_character_typo_is_detected() {
        let text = sample().to_string();
        let body_start = PREFIX.len();
        for i in body_start..text.len() {
            let mut chars: Vec<char> = text.chars().collect();
            if i >= chars.len() {
                break;
            }
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let typo: String = chars.into_iter().collect();
            assert!(
                typo.parse::<ContactUri>().is_err(),
                "typo at {i} accepted: {typo}"
            );
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let text = sample().to_string();
        assert_eq!(
            "https://example.com".parse::<ContactUri>(),
            Err(ContactUriError::NotAContactUri)
        );
        assert_eq!(
            "".parse::<ContactUri>(),
            Err(ContactUriError::NotAContactUri)
        );
        assert_eq!(
            text.replacen("v=1", "v=9", 1).parse::<ContactUri>(),
            Err(ContactUriError::UnsupportedVersion("9".into()))
        );
        assert_eq!(
            format!("{text}&x=1").parse::<ContactUri>(),
            Err(ContactUriError::UnknownField("x".into()))
        );
        assert_eq!(
            format!("{text}&v=1").parse::<ContactUri>(),
            Err(ContactUriError::DuplicateField("v".into()))
        );
        let no_sig = &text[..text.find("&sig=").unwrap()];
        assert_eq!(
            no_sig.parse::<ContactUri>(),
            Err(ContactUriError::MissingField("sig"))
        );
        let other = ContactUri::new(
            &Identity::generate(&mut ChaCha20Rng::seed_from_u64(1)),
            None,
            &[],
        )
        .unwrap()
        .to_string();
        let other_sig = &other[other.find("&sig=").unwrap()..];
        let forged = format!("{no_sig}{other_sig}");
        assert_eq!(
            forged.parse::<ContactUri>(),
            Err(ContactUriError::BadSignature)
        );
        assert_eq!(
            "x".repeat(MAX_CONTACT_URI_LEN + 1).parse::<ContactUri>(),
            Err(ContactUriError::TooLong(MAX_CONTACT_URI_LEN + 1))
        );
        assert_eq!(
            format!("{PREFIX}v=1&name=%E").parse::<ContactUri>(),
            Err(ContactUriError::Encoding("name"))
        );
        assert_eq!(
            format!("{PREFIX}v=1&addr=localhost")
                .parse::<ContactUri>()
                .unwrap_err(),
            ContactUriError::MissingField("key")
        );
    }

    #[test]
    fn names_are_validated() {
        let id = identity();
        assert!(ContactUri::new(&id, Some(""), &[]).is_err());
        assert!(ContactUri::new(&id, Some(" x"), &[]).is_err());
        assert!(ContactUri::new(&id, Some("a\u{7}b"), &[]).is_err());
        assert!(ContactUri::new(&id, Some(&"n".repeat(65)), &[]).is_err());
        assert!(ContactUri::new(&id, Some(&"n".repeat(64)), &[]).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn parse_never_panics(s in ".{0,400}") {
            let _ = s.parse::<ContactUri>();
        }

        #[test]
        fn parse_never_panics_after_the_prefix(s in "[a-z=&%0-9A-F_~.\\-\u{80}-\u{10ffff}]{0,300}") {
            let _ = format!("{PREFIX}{s}").parse::<ContactUri>();
        }

        #[test]
        fn any_name_and_addresses_round_trip(
            name in "[^\\p{Cc}]{1,20}",
            ports in proptest::collection::vec(any::<u16>(), 0..=MAX_ADDRESS_HINTS),
            ips in proptest::collection::vec(any::<[u8; 16]>(), MAX_ADDRESS_HINTS),
        ) {
            let name = name.trim();
            prop_assume!(validate_display_name(name).is_ok());
            let addrs: Vec<SocketAddr> = ports
                .iter()
                .zip(&ips)
                .enumerate()
                .map(|(i, (port, ip))| if i % 2 == 0 {
                    SocketAddr::from(([ip[0], ip[1], ip[2], ip[3]], *port))
                } else {
                    SocketAddr::from((*ip, *port))
                })
                .collect();
            let uri = ContactUri::new(&identity(), Some(name), &addrs).unwrap();
            let back: ContactUri = uri.to_string().parse().unwrap();
            prop_assert_eq!(back, uri);
        }
    }
}
