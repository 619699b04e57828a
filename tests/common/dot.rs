//! A DNS-over-TLS client for the tests that need what kdig cannot show: several
//! queries written at once on one connection, and the certificate a connection got.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hickory_proto::op::Message;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub type Dot = TlsStream<TcpStream>;

/// A DoT connection to `addr` trusting `ca`, asking for `name` (SNI).
pub async fn connect(addr: SocketAddr, ca: &Path, name: &str) -> std::io::Result<Dot> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"dot".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
}

/// Writes `queries`, framed, in one write.
pub async fn send_all(s: &mut Dot, queries: &[Message]) {
    let mut out = Vec::new();
    for q in queries {
        let bytes = q.to_vec().unwrap();
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    s.write_all(&out).await.unwrap();
    s.flush().await.unwrap();
}

/// The next framed message on the connection.
pub async fn read(s: &mut Dot) -> std::io::Result<Message> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let mut msg = vec![0; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut msg).await?;
    Ok(Message::from_vec(&msg).unwrap())
}

/// The certificate the server presented on this connection (its leaf, DER).
pub fn peer_leaf(s: &Dot) -> Vec<u8> {
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The leaf of a PEM certificate file (DER).
pub fn leaf_of(pem: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(pem)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}
