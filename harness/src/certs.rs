//! A private CA and a server certificate it signed, made by the `openssl` CLI, for the tests
//! that need TLS against our own servers (the streams' HTTPS receiver, forwarding to an owner
//! behind `https://`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;

use crate::HarnessError;

/// The files [`test_certificates`] wrote: the CA's certificate, and the server's certificate and
/// key (PEM).
#[derive(Debug, Clone)]
pub struct TestCertificates {
    pub ca_pem: PathBuf,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

impl TestCertificates {
    /// A TLS server configuration (rustls on `ring`) presenting the server certificate.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let certs = CertificateDer::pem_file_iter(&self.cert_pem)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .unwrap_or_else(|e| panic!("{}: {e}", self.cert_pem.display()));
        let key = PrivateKeyDer::from_pem_file(&self.key_pem)
            .unwrap_or_else(|e| panic!("{}: {e}", self.key_pem.display()));
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
            .expect("a server configuration of the test certificate");
        Arc::new(config)
    }

    /// The CA's certificate (PEM).
    pub fn ca(&self) -> String {
        std::fs::read_to_string(&self.ca_pem)
            .unwrap_or_else(|e| panic!("{}: {e}", self.ca_pem.display()))
    }
}

/// Makes, in `dir`, a CA valid for 2 days and a certificate it signed for `subject_alt_name`
/// (`IP:127.0.0.1`, `DNS:collector.test`), both on P-256 keys.
pub fn test_certificates(
    dir: &Path,
    subject_alt_name: &str,
) -> Result<TestCertificates, HarnessError> {
    let p = |name: &str| dir.join(name).display().to_string();
    let ext = dir.join("leaf.ext");
    std::fs::write(
        &ext,
        format!("subjectAltName={subject_alt_name}\nbasicConstraints=critical,CA:FALSE\n"),
    )
    .map_err(|source| HarnessError::Io {
        what: "write the certificate's extensions",
        path: ext.clone(),
        source,
    })?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let (ca_key, ca_pem, key, csr, cert) = (
        p("ca.key"),
        p("ca.pem"),
        p("key.pem"),
        p("leaf.csr"),
        p("cert.pem"),
    );
    let ext = ext.display().to_string();
    let ca: Vec<&str> = [&["req", "-x509"][..], &ec]
        .concat()
        .into_iter()
        .chain([
            "-keyout",
            &ca_key,
            "-out",
            &ca_pem,
            "-days",
            "2",
            "-subj",
            "/CN=codestax test CA",
        ])
        .collect();
    let request: Vec<&str> = [&["req"][..], &ec]
        .concat()
        .into_iter()
        .chain([
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=codestax test server",
        ])
        .collect();
    let sign = vec![
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &cert,
        "-days",
        "2",
        "-extfile",
        &ext,
    ];
    for args in [ca, request, sign] {
        let out = Command::new("openssl")
            .args(&args)
            .output()
            .map_err(|source| HarnessError::Spawn {
                program: "openssl".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(HarnessError::Command {
                command: format!("openssl {}", args.join(" ")),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
    }
    Ok(TestCertificates {
        ca_pem: dir.join("ca.pem"),
        cert_pem: dir.join("cert.pem"),
        key_pem: dir.join("key.pem"),
    })
}
