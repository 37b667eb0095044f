//! The transport handshake on the first stream of a connection (`PROTOCOL.md` section 9).

use std::sync::Arc;

use dp2ptcs_crypto::x3dh::InitialMessage;
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
    /// Dialer side: proves the existing session or runs X3DH with `contact`.
    pub(crate) async fn dial_handshake(
        self: &Arc<Self>,
        send: &mut SendStream,
        recv: &mut RecvStream,
        contact: &ContactRecord,
    ) -> Result<(), NodeError> {
        let peer = contact.node_id;
        let mut reader = FrameReader::new();
        let mut session: Option<Handle> = self.sessions.current(peer).await?;
        let body = match &session {
            Some(h) => HelloBody::Proof(
                self.sessions
                    .encrypt(peer, h, MessageKind::SessionProof, empty())
                    .await?,
            ),
            None => HelloBody::BundleRequest,
        };
        let hello = |body| Hello {
            identity_key: self.identity.public().to_bytes(),
            responder_id: peer,
            body,
        };
        write_frame(send, &hello(body).encode()).await?;
        let mut sent_handshake = false;
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
                HelloReply::Offer(offer) if !sent_handshake => {
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
                    let new = Session::initiate(&mut OsRng, &self.identity, &bundle)
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
                    session = Some(h);
                    let init = HandshakeInit {
                        identity_key: initial.identity().to_bytes(),
                        ephemeral_key: *initial.ephemeral_key(),
                        signed_prekey_id: initial.signed_prekey_id(),
                        one_time_prekey_id: initial.one_time_prekey_id(),
                        first_message: first,
                    };
                    write_frame(send, &hello(HelloBody::Handshake(init)).encode()).await?;
                    sent_handshake = true;
                }
                HelloReply::Offer(_) => {
                    return Err(NodeError::Authentication("second offer"));
                }
                HelloReply::Error(e) => {
                    return Err(NodeError::Refused {
                        code: e.code,
                        reason: e.reason,
                    })
                }
                _ => return Err(NodeError::Authentication("unexpected hello reply")),
            }
            let _ = &session;
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
                    let first = crate::sessions::to_ratchet(&init.first_message);
                    let now = crate::sessions::now_ms() / 1000;
                    let session = {
                        let mut prekeys = lock(&self.prekeys);
                        Session::respond(
                            &mut OsRng,
                            &self.identity,
                            &mut prekeys,
                            &initial,
                            &first,
                            now,
                        )
                        .map_err(|_| NodeError::Authentication("X3DH failed"))?
                        .0
                    };
                    Some(self.sessions.install(peer, session, false).await?)
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
                    let bundle = {
                        let mut prekeys = lock(&self.prekeys);
                        let otk = prekeys
                            .generate_one_time_prekeys(&mut OsRng, 1)
                            .first()
                            .map(|(id, _)| *id);
                        prekeys.bundle(otk)
                    };
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
