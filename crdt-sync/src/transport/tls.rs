//! Mutual TLS for QUIC: the one place where rustls and quinn are configured.
//!
//! Both sides present their node certificate and verify the other's chain to the cluster CA
//! with webpki (rustls' `WebPkiServerVerifier` and `WebPkiClientVerifier`, ring as the
//! provider, TLS 1.3 only as QUIC requires). The dialing side expects
//! [`SERVER_NAME`](crate::certs::SERVER_NAME); the accepting side requires a client
//! certificate. ALPN `warden-sync` keeps other QUIC protocols out; the protocol version is
//! checked later, in the Hello, so that a mismatch can be said clearly.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::WebPkiClientVerifier;

use super::TransportError;
use crate::certs::Parsed;
use crate::limits;

/// The ALPN protocol name of node-to-node sync.
const ALPN: &[u8] = b"warden-sync";

/// The server and client configurations of one node.
pub(super) fn configs(
    id: &Parsed,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), TransportError> {
    let tls = |e: rustls::Error| TransportError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![id.cert.clone()];

    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(id.roots.clone(), provider.clone())
            .build()
            .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), id.key.clone_key())
        .map_err(tls)?;
    server.alpn_protocols = vec![ALPN.to_vec()];

    let server_verifier =
        WebPkiServerVerifier::builder_with_provider(id.roots.clone(), provider.clone())
            .build()
            .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_webpki_verifier(server_verifier)
        .with_client_auth_cert(chain, id.key.clone_key())
        .map_err(tls)?;
    client.alpn_protocols = vec![ALPN.to_vec()];

    let quic = |e: quinn::crypto::rustls::NoInitialCipherSuite| TransportError::Tls(e.to_string());
    let transport = Arc::new(transport_config()?);
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(server).map_err(quic)?,
    ));
    server.transport_config(transport.clone());
    server.migration(false);
    let mut client =
        quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client).map_err(quic)?));
    client.transport_config(transport);
    Ok((server, client))
}

/// The endpoint's configuration. Its stateless-reset key and connection-ID key are derived
/// from the node's private key, so they survive a restart: a node that comes back after a
/// crash (no close was sent) recognises the connection IDs it gave out before and resets
/// its peers' stale connections at their first packet, instead of leaving them to the idle
/// timeout.
pub(super) fn endpoint_config(key: &PrivateKeyDer<'_>) -> quinn::EndpointConfig {
    let derive = |label: &[u8]| {
        let mut input = label.to_vec();
        input.extend_from_slice(key.secret_der());
        ring::digest::digest(&ring::digest::SHA256, &input)
    };
    let reset = derive(b"warden-sync stateless reset key v1\0");
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset.as_ref());
    let cid = derive(b"warden-sync connection id key v1\0");
    let cid_key = u64::from_le_bytes(cid.as_ref()[..8].try_into().expect("8 of 32 bytes"));
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

/// QUIC's bounds: streams, windows, idle timeout and keep-alive, no datagrams, no
/// bidirectional streams.
fn transport_config() -> Result<quinn::TransportConfig, TransportError> {
    let varint = |n: u64| {
        quinn::VarInt::from_u64(n).map_err(|e| TransportError::Tls(format!("QUIC limit: {e}")))
    };
    let idle = Duration::from_millis(limits::IDLE_TIMEOUT_MS);
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_uni_streams(limits::CONCURRENT_STREAMS_MAX.into())
        .max_concurrent_bidi_streams(0u32.into())
        .stream_receive_window(varint(limits::MAX_MESSAGE_BYTES as u64)?)
        .receive_window(varint(limits::CONNECTION_WINDOW_BYTES)?)
        .send_window(limits::CONNECTION_WINDOW_BYTES)
        .max_idle_timeout(Some(
            idle.try_into()
                .map_err(|e| TransportError::Tls(format!("idle timeout: {e}")))?,
        ))
        .keep_alive_interval(Some(Duration::from_millis(limits::KEEP_ALIVE_INTERVAL_MS)))
        .initial_rtt(Duration::from_millis(limits::INITIAL_RTT_MS))
        .datagram_receive_buffer_size(None);
    Ok(t)
}
