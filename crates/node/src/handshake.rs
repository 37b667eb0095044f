//! The transport handshake on the first stream of a connection (`PROTOCOL.md` section 9).

use std::sync::Arc;

use dp2ptcs_crypto::ratchet::SessionError;
use dp2ptcs_crypto::x3dh::{InitialMessage, X3dhError};
use dp2ptcs_crypto::{PreKeyBundle, PublicIdentity, Session};
use dp2ptcs_store::ContactRecord;
use dp2ptcs_types::NodeId;
use dp2ptcs_wire::{
    ErrorReport, HandshakeInit, HandshakeOffer, Hello, HelloBody, HelloReply, MessageKind,
    PrekeyBundle,
};
use quinn::{RecvStream, SendStream};
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::frames::{write_frame, FrameReader};
use crate::node::Inner;
use crate::sessions::{blocking, lock, Handle};
use crate::NodeError;

fn to_wire_bundle(b: &PreKeyBundle) -> PrekeyBundle {
    PrekeyBundle {
        identity_key: b.identity().to_bytes(),
        signed_prekey_id: b.signed_prekey_id(),
        signed_prekey: *b.signed_prekey(),
        signed_prekey_signature: *b.signed_prekey_signature(),
        one_time_prekey: b.one_time_prekey().map(|(id, k)| (id, *k)),
    }
}

fn empty() -> Zeroizing<Vec<u8>> {
    Zeroizing::new(Vec::new())
}

impl Inner {
    /// Dialer side: runs X3DH as initiator from `bundle` (already verified, of `peer`), installs
    /// and saves the new session, and returns it with the handshake to send.
    async fn start_session(
        self: &Arc<Self>,
        peer: NodeId,
        bundle: &PreKeyBundle,
    ) -> Result<(Handle, HandshakeInit), NodeError> {
        let new = Session::initiate(&mut OsRng, &self.identity, bundle)
            .map_err(|_| NodeError::Authentication("X3DH failed"))?;
        let initial = new
            .pending_initial_message()
            .cloned()
            .ok_or(NodeError::Internal("no initial message".into()))?;
        let h = self.sessions.install(peer, new, true).await?;
        let first = self
            .sessions
            .encrypt(peer, &h, MessageKind::SessionProof, empty())
            .await?;
        let init = HandshakeInit {
            identity_key: initial.identity().to_bytes(),
            ephemeral_key: *initial.ephemeral_key(),
            signed_prekey_id: initial.signed_prekey_id(),
            one_time_prekey_id: initial.one_time_prekey_id(),
            first_message: first,
        };
        Ok((h, init))
    }

    /// Dialer side: proves the existing session or runs X3DH with `contact`, directly from a
    /// learned bundle if there is one, else from the bundle the responder offers.
    pub(crate) async fn dial_handshake(
        self: &Arc<Self>,
        send: &mut SendStream,
        recv: &mut RecvStream,
        contact: &ContactRecord,
    ) -> Result<(), NodeError> {
        let peer = contact.node_id;
        let mut reader = FrameReader::new();
        let session: Option<Handle> = self.sessions.current(peer).await?;
        // Whether the first hello is a handshake made from a learned bundle.
        let mut direct = false;
        let body = match &session {
            Some(h) => HelloBody::Proof(
                self.sessions
                    .encrypt(peer, h, MessageKind::SessionProof, empty())
                    .await?,
            ),
            None => match self.learned_bundle(contact) {
                Some(bundle) => {
                    direct = true;
                    HelloBody::Handshake(self.start_session(peer, &bundle).await?.1)
                }
                None => HelloBody::BundleRequest,
            },
        };
        let hello = |body| Hello {
            identity_key: self.identity.public().to_bytes(),
            responder_id: peer,
            body,
        };
        write_frame(send, &hello(body).encode()).await?;
        let mut offered = false;
        loop {
            let reply = HelloReply::decode(&reader.expect(recv).await?)?;
            match reply {
                HelloReply::Proof(env) => {
                    if env.sender != peer || env.kind != MessageKind::SessionProof {
                        return Err(NodeError::Authentication("bad session proof"));
                    }
                    self.sessions.decrypt(peer, &env).await?;
                    let _ = send.finish();
                    return Ok(());
                }
                HelloReply::Offer(offer) if !offered => {
                    if direct {
                        // The responder no longer accepts the learned bundle.
                        self.forget_bundle(&peer);
                    }
                    let b = offer.bundle;
                    if b.identity_key != contact.public_key {
                        return Err(NodeError::Authentication("offer from another identity"));
                    }
                    let identity = PublicIdentity::from_bytes(&b.identity_key)
                        .map_err(|_| NodeError::Authentication("bad identity key"))?;
                    let bundle = PreKeyBundle::new(
                        identity,
                        b.signed_prekey_id,
                        b.signed_prekey,
                        b.signed_prekey_signature,
                        b.one_time_prekey,
                    );
                    bundle
                        .verify()
                        .map_err(|_| NodeError::Authentication("bundle signature"))?;
                    let (_, init) = self.start_session(peer, &bundle).await?;
                    write_frame(send, &hello(HelloBody::Handshake(init)).encode()).await?;
                    offered = true;
                }
                HelloReply::Offer(_) => {
                    return Err(NodeError::Authentication("second offer"));
                }
                HelloReply::Error(e) => {
                    if direct && !offered {
                        self.forget_bundle(&peer);
                    }
                    return Err(NodeError::Refused {
                        code: e.code,
                        reason: e.reason,
                    });
                }
                _ => return Err(NodeError::Authentication("unexpected hello reply")),
            }
        }
    }

    /// Responder side: returns the authenticated peer.
    pub(crate) async fn accept_handshake(
        self: &Arc<Self>,
        send: &mut SendStream,
        recv: &mut RecvStream,
    ) -> Result<NodeId, NodeError> {
        let mut reader = FrameReader::new();
        let result = self.accept_inner(send, recv, &mut reader).await;
        if let Err(e) = &result {
            if e.is_peer_fault() {
                let report = ErrorReport {
                    code: e.wire_code().code(),
                    reason: e.to_string(),
                };
                let _ = write_frame(send, &HelloReply::Error(report).encode()).await;
            }
        }
        result
    }

    async fn accept_inner(
        self: &Arc<Self>,
        send: &mut SendStream,
        recv: &mut RecvStream,
        reader: &mut FrameReader,
    ) -> Result<NodeId, NodeError> {
        let mut offered = false;
        loop {
            let hello = Hello::decode(&reader.expect(recv).await?)?;
            if hello.responder_id != self.node_id {
                return Err(NodeError::Authentication("hello for another node"));
            }
            let identity = PublicIdentity::from_bytes(&hello.identity_key)
                .map_err(|_| NodeError::Authentication("bad identity key"))?;
            let peer = identity.node_id();
            let store = self.store.clone();
            let contact = blocking(move || Ok(lock(&store).contact(&peer)?)).await?;
            match contact {
                Some(c) if c.public_key == hello.identity_key => {}
                _ => return Err(NodeError::NotAContact),
            }
            let reply_with = match hello.body {
                HelloBody::Proof(env) if !offered => {
                    if env.sender != peer || env.kind != MessageKind::SessionProof {
                        return Err(NodeError::Authentication("bad session proof"));
                    }
                    match self.sessions.decrypt(peer, &env).await {
                        Ok((h, _)) => Some(h),
                        // No session, or it does not decrypt: offer a fresh X3DH.
                        Err(NodeError::Authentication(_)) => None,
                        Err(e) => return Err(e),
                    }
                }
                HelloBody::BundleRequest if !offered => None,
                HelloBody::Handshake(init) => {
                    if init.identity_key != hello.identity_key
                        || init.first_message.sender != peer
                        || init.first_message.kind != MessageKind::SessionProof
                    {
                        return Err(NodeError::Authentication("inconsistent handshake"));
                    }
                    let initial = InitialMessage::new(
                        identity,
                        init.ephemeral_key,
                        init.signed_prekey_id,
                        init.one_time_prekey_id,
                    );
                    match self.respond_x3dh(initial, &init.first_message).await? {
                        Ok(session) => Some(self.sessions.install(peer, session, false).await?),
                        Err(SessionError::X3dh(X3dhError::ReplayedInitialMessage)) => {
                            return Err(NodeError::Authentication("replayed initial message"))
                        }
                        // A handshake made from a bundle we no longer accept (say, a signed
                        // prekey past its grace period): offer a fresh bundle instead, once.
                        Err(e) if !offered => {
                            tracing::debug!(error = %e, peer = %peer.short(8), "direct handshake refused, offering a bundle");
                            None
                        }
                        Err(_) => return Err(NodeError::Authentication("X3DH failed")),
                    }
                }
                _ => return Err(NodeError::Authentication("unexpected hello")),
            };
            match reply_with {
                Some(h) => {
                    let proof = self
                        .sessions
                        .encrypt(peer, &h, MessageKind::SessionProof, empty())
                        .await?;
                    write_frame(send, &HelloReply::Proof(proof).encode()).await?;
                    let _ = send.finish();
                    return Ok(peer);
                }
                None => {
                    let bundle = self.offer_bundle().await?;
                    let offer = HandshakeOffer {
                        bundle: to_wire_bundle(&bundle),
                    };
                    write_frame(send, &HelloReply::Offer(offer).encode()).await?;
                    offered = true;
                }
            }
        }
    }
}
