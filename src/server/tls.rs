//! The server side of TLS: the certificate and key of `[tls]`, loaded into a
//! rustls configuration that STARTTLS (submission, mx), STLS (pop3) and the
//! implicit-TLS listeners (submissions, pop3s) share, and swapped on reload
//! without disturbing connections already in a handshake or in a session.
//!
//! The rustls configuration uses the `ring` provider explicitly (not the
//! process default), TLS 1.2 and 1.3, no client certificates.
//!
//! # Security
//!
//! The PEM files are trusted (the administrator names them), but may be
//! wrong: a missing file, no certificate, no key, or a key that does not go
//! with the certificate is an error naming the file, and a failed reload
//! keeps the previous certificate in service. The TLS handshake itself,
//! untrusted input, is rustls's.

use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::{Context as _, anyhow};
use mxguard_config::TlsConfig;
use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The server's current TLS configuration; [`TlsState::reload`] replaces
/// it, and every [`TlsState::acceptor`] taken afterwards uses the new one.
pub struct TlsState {
    current: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState").finish_non_exhaustive()
    }
}

impl TlsState {
    /// Reads the certificate chain and the private key named by `cfg` and
    /// builds the rustls configuration. Errors name the file at fault.
    pub fn load(cfg: &TlsConfig) -> anyhow::Result<TlsState> {
        Ok(TlsState {
            current: RwLock::new(Arc::new(server_config(cfg)?)),
        })
    }

    /// An acceptor with the current configuration, for one connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config())
    }

    /// The current rustls configuration.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the files of `cfg` again (they may name new files) and, when
    /// they are good, serves them from now on. On error the current
    /// certificate stays in service.
    pub fn reload(&self, cfg: &TlsConfig) -> anyhow::Result<()> {
        let new = Arc::new(server_config(cfg)?);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new;
        Ok(())
    }
}

/// The rustls server configuration of `cfg`'s files.
fn server_config(cfg: &TlsConfig) -> anyhow::Result<ServerConfig> {
    let chain = read_chain(&cfg.certificate)?;
    let key = read_key(&cfg.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider supports no protocol version")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| {
            format!(
                "tls.certificate {} and tls.key {} cannot be used together",
                cfg.certificate.display(),
                cfg.key.display()
            )
        })
}

/// Every certificate of the PEM file at `path`, in order (the server's
/// first); at least one.
fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let what = || format!("tls.certificate {}", path.display());
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)
        .with_context(what)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)
        .with_context(what)?;
    if chain.is_empty() {
        return Err(anyhow!(
            "{}: no certificate found (expected a PEM \"BEGIN CERTIFICATE\" block)",
            what()
        ));
    }
    Ok(chain)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of the PEM file at
/// `path`.
fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => anyhow!(
            "tls.key {}: no private key found (expected a PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block)",
            path.display()
        ),
        other => pem_error(other).context(format!("tls.key {}", path.display())),
    })
}

fn pem_error(e: pem::Error) -> anyhow::Error {
    match e {
        pem::Error::Io(io) => anyhow!("cannot read it: {io}"),
        other => anyhow!("not a valid PEM file: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A self-signed certificate for `name`: its PEM files in `dir`, and
    /// its DER.
    fn make_cert(dir: &Path, stem: &str, name: &str) -> (TlsConfig, CertificateDer<'static>) {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let certificate = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&certificate, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let cfg = TlsConfig {
            certificate,
            key,
            allow_plaintext_auth: false,
        };
        (cfg, ck.cert.der().clone())
    }

    /// Handshakes with `acceptor` over an in-memory pipe, as a client that
    /// trusts only `trusted` and asks for `name`; returns the certificate
    /// the server presented, or the client's error.
    async fn handshake(
        acceptor: tokio_rustls::TlsAcceptor,
        trusted: &CertificateDer<'static>,
        name: &str,
    ) -> Result<CertificateDer<'static>, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(trusted.clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut tls = acceptor
                .accept(server_io)
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
            tls.shutdown().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(buf)
        });
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let result = async {
            let mut tls = connector
                .connect(server_name, client_io)
                .await
                .map_err(|e| e.to_string())?;
            let presented = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .cloned()
                .ok_or("no certificate")?;
            tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            assert_eq!(&buf, b"pong");
            Ok(presented)
        }
        .await;
        match &result {
            Ok(_) => assert_eq!(&server.await.unwrap().unwrap(), b"ping"),
            Err(_) => server.abort(),
        }
        result
    }

    #[tokio::test]
    async fn load_handshake_reload() {
        let dir = tempfile::tempdir().unwrap();
        let (first, first_der) = make_cert(dir.path(), "first", "mx.example.test");
        let (second, second_der) = make_cert(dir.path(), "second", "mx.example.test");
        assert_ne!(first_der, second_der);

        let state = TlsState::load(&first).unwrap();
        let before = state.acceptor();
        let got = handshake(state.acceptor(), &first_der, "mx.example.test")
            .await
            .unwrap();
        assert_eq!(got, first_der);
        // A client that trusts another certificate refuses this one.
        assert!(
            handshake(state.acceptor(), &second_der, "mx.example.test")
                .await
                .is_err()
        );

        state.reload(&second).unwrap();
        let got = handshake(state.acceptor(), &second_der, "mx.example.test")
            .await
            .unwrap();
        assert_eq!(got, second_der);
        // An acceptor taken before the reload keeps the old certificate.
        let got = handshake(before, &first_der, "mx.example.test")
            .await
            .unwrap();
        assert_eq!(got, first_der);

        // A failed reload keeps the current certificate.
        let broken = TlsConfig {
            certificate: second.certificate.clone(),
            key: first.key.clone(),
            allow_plaintext_auth: false,
        };
        let err = format!("{:#}", state.reload(&broken).unwrap_err());
        assert!(err.contains("cannot be used together"), "{err}");
        let got = handshake(state.acceptor(), &second_der, "mx.example.test")
            .await
            .unwrap();
        assert_eq!(got, second_der);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (good, _) = make_cert(dir.path(), "good", "mx.example.test");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not PEM at all\n").unwrap();
        let missing = dir.path().join("missing.pem");
        let bad_pem = dir.path().join("bad.pem");
        std::fs::write(
            &bad_pem,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();

        let cases: Vec<(PathBuf, PathBuf, PathBuf, &str)> = vec![
            (
                missing.clone(),
                good.key.clone(),
                missing.clone(),
                "cannot read it",
            ),
            (
                empty.clone(),
                good.key.clone(),
                empty.clone(),
                "no certificate found",
            ),
            (
                bad_pem.clone(),
                good.key.clone(),
                bad_pem.clone(),
                "not a valid PEM file",
            ),
            (
                good.certificate.clone(),
                missing.clone(),
                missing.clone(),
                "cannot read it",
            ),
            (
                good.certificate.clone(),
                empty.clone(),
                empty.clone(),
                "no private key found",
            ),
            // The certificate file holds no key.
            (
                good.certificate.clone(),
                good.certificate.clone(),
                good.certificate.clone(),
                "no private key found",
            ),
        ];
        for (certificate, key, named, expected) in cases {
            let cfg = TlsConfig {
                certificate,
                key,
                allow_plaintext_auth: false,
            };
            let err = format!("{:#}", TlsState::load(&cfg).unwrap_err());
            assert!(
                err.contains(&named.display().to_string()) && err.contains(expected),
                "{err}"
            );
        }

        // Certificate and key in one file is fine.
        let both = dir.path().join("both.pem");
        let mut text = std::fs::read_to_string(&good.certificate).unwrap();
        text.push_str(&std::fs::read_to_string(&good.key).unwrap());
        std::fs::write(&both, text).unwrap();
        TlsState::load(&TlsConfig {
            certificate: both.clone(),
            key: both,
            allow_plaintext_auth: false,
        })
        .unwrap();
    }
}
