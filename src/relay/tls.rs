//! The relay's TLS client configuration: rustls with the ring provider,
//! trusting either the system's roots or only the certificates of a PEM
//! file given with `--ca-file`.

use anyhow::{bail, Context};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// Builds the connector. With `ca_file` only its certificates are trusted,
/// like curl's `--cacert`: a private CA should not widen to the world's.
pub fn connector(ca_file: Option<&Path>) -> anyhow::Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("cannot read CA file {}", path.display()))?;
            for cert in certs {
                let cert =
                    cert.with_context(|| format!("bad PEM in CA file {}", path.display()))?;
                roots.add(cert).with_context(|| {
                    format!("unusable certificate in CA file {}", path.display())
                })?;
            }
            if roots.is_empty() {
                bail!("no certificate in CA file {}", path.display());
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            // Some system bundles carry certificates rustls cannot parse;
            // skipping them is what every rustls-based client does.
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                bail!("no system root certificates found; give the upstream's CA with --ca-file");
            }
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup failed")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}
