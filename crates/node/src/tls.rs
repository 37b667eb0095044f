//! TLS for QUIC: an ephemeral self-signed certificate, and a client that accepts any
//! certificate.
//!
//! # Why the client accepts any certificate
//!
//! A DP2PTCS node has no name a certificate authority could vouch for, and its long-term identity
//! is an Ed25519 key that never touches TLS. TLS here gives the connection confidentiality and
//! integrity against on-path observers; *who* is at the other end is proven afterwards by the
//! transport handshake (`PROTOCOL.md` section 9): X3DH against the contact's identity key, or a
//! frame that decrypts under the session only that contact holds. A certificate is made fresh at
//! every start and is never reused, so it links nothing across restarts.
//!
//! [`AcceptAnyCertificate`] therefore skips the chain and name checks, but it still verifies the
//! TLS 1.3 `CertificateVerify` signature with the presented certificate's key, so the server must
//! hold the private key of the certificate it shows, and the handshake transcript is
//! authenticated as usual. Only TLS 1.3 is offered.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::{NodeError, ALPN, ALPN_V1, DHT_ALPN, SERVER_NAME};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate verifier that accepts any server certificate but checks the handshake
/// signature made with its key (module docs).
#[derive(Debug)]
pub struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl AcceptAnyCertificate {
    /// A verifier using the ring crypto provider.
    pub fn new() -> Self {
        Self {
            provider: provider(),
        }
    }
}

impl Default for AcceptAnyCertificate {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is configured; refuse anything else.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Test support: a QUIC endpoint on `socket` with `config` and the node's TLS settings, as
/// server and as client.
#[cfg(test)]
pub(crate) fn test_endpoint(
    config: quinn::EndpointConfig,
    socket: std::net::UdpSocket,
) -> quinn::Endpoint {
    let server =
        quinn::crypto::rustls::QuicServerConfig::try_from(server_crypto().unwrap()).unwrap();
    let client =
        quinn::crypto::rustls::QuicClientConfig::try_from(client_crypto().unwrap()).unwrap();
    let mut ep = quinn::Endpoint::new(
        config,
        Some(quinn::ServerConfig::with_crypto(Arc::new(server))),
        socket,
        quinn::default_runtime().unwrap(),
    )
    .unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(client)));
    ep
}

/// The messaging protocols a node speaks, preferred first.
pub const MESSAGING: [&[u8]; 2] = [ALPN, ALPN_V1];

/// The rustls server configuration with a fresh self-signed certificate, for every messaging
/// protocol version ([`MESSAGING`]) and the DHT.
pub fn server_crypto() -> Result<rustls::ServerConfig, NodeError> {
    server_crypto_for(&MESSAGING)
}

/// [`server_crypto`] for these messaging protocols (preferred first) and the DHT.
pub fn server_crypto_for(messaging: &[&[u8]]) -> Result<rustls::ServerConfig, NodeError> {
    let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
        .map_err(|e| NodeError::Tls(e.to_string()))?;
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NodeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| NodeError::Tls(e.to_string()))?;
    // The server picks the first of these that the client offers.
    config.alpn_protocols = messaging
        .iter()
        .chain([&DHT_ALPN])
        .map(|p| p.to_vec())
        .collect();
    Ok(config)
}

/// The rustls client configuration: TLS 1.3, offering every messaging protocol version
/// ([`MESSAGING`]), [`AcceptAnyCertificate`].
pub fn client_crypto() -> Result<rustls::ClientConfig, NodeError> {
    client_crypto_offering(&MESSAGING)
}

/// [`client_crypto`] offering the ALPN protocol `alpn` instead (`DHT_ALPN` for DHT
/// connections).
pub fn client_crypto_for(alpn: &[u8]) -> Result<rustls::ClientConfig, NodeError> {
    client_crypto_offering(&[alpn])
}

/// [`client_crypto`] offering these ALPN protocols.
pub fn client_crypto_offering(alpns: &[&[u8]]) -> Result<rustls::ClientConfig, NodeError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NodeError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new()))
        .with_no_client_auth();
    config.alpn_protocols = alpns.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
