//! A test CA and a certificate for 127.0.0.1 it signed, made by `openssl`, for the TLS receivers
//! that streams deliver to (the end-to-end tests' and the bench's): the CA's PEM for the
//! stream's `ca_pem`, and a rustls server config presenting the certificate.

use crate::error::HarnessError;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use tokio_rustls::rustls::ServerConfig;

/// What [`TestCertificate::make`] made.
pub struct TestCertificate {
    /// The CA's certificate, PEM: what a stream's `ca_pem` trusts.
    pub ca_pem: String,
    /// A server config presenting the certificate for 127.0.0.1.
    pub server: Arc<ServerConfig>,
}

impl TestCertificate {
    /// Makes the CA and the certificate in `dir` (P-256 keys, valid two days).
    pub fn make(dir: &Path) -> Result<TestCertificate, HarnessError> {
        use rustls_pki_types::pem::PemObject;
        let p = |name: &str| dir.join(name).display().to_string();
        let io = |what, name: &str| {
            let path = dir.join(name);
            move |source| HarnessError::Io { what, path, source }
        };
        std::fs::write(
            dir.join("leaf.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n",
        )
        .map_err(io("write", "leaf.ext"))?;
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        let steps = [
            format!(
                "req -x509 {ec} -keyout {} -out {} -days 2 -subj /CN=codestax-test-CA",
                p("ca.key"),
                p("ca.pem")
            ),
            format!(
                "req {ec} -keyout {} -out {} -subj /CN=127.0.0.1",
                p("key.pem"),
                p("leaf.csr")
            ),
            format!(
                "x509 -req -in {} -CA {} -CAkey {} -CAcreateserial -out {} -days 2 -extfile {}",
                p("leaf.csr"),
                p("ca.pem"),
                p("ca.key"),
                p("cert.pem"),
                p("leaf.ext")
            ),
        ];
        for step in steps {
            let args: Vec<&str> = step.split(' ').collect();
            let out = Command::new("openssl")
                .args(&args)
                .output()
                .map_err(|source| HarnessError::Spawn {
                    program: "openssl".into(),
                    source,
                })?;
            if !out.status.success() {
                return Err(HarnessError::Command {
                    command: format!("openssl {step}"),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
        }
        let pem = |e: rustls_pki_types::pem::Error, name: &str| HarnessError::Command {
            command: format!("read {}", dir.join(name).display()),
            stderr: e.to_string(),
        };
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(dir.join("cert.pem"))
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| pem(e, "cert.pem"))?;
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(dir.join("key.pem"))
            .map_err(|e| pem(e, "key.pem"))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
            .map_err(|e| HarnessError::Command {
                command: "make the receiver's TLS config".into(),
                stderr: e.to_string(),
            })?;
        Ok(TestCertificate {
            ca_pem: std::fs::read_to_string(dir.join("ca.pem")).map_err(io("read", "ca.pem"))?,
            server: Arc::new(server),
        })
    }
}
