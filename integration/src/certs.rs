//! Throw-away certificates for the inner-TLS tests, made at test time with the `openssl` CLI
//! (installed by `scripts/setup.sh`): one CA, and leaf certificates it signs, each with one DNS
//! subject alternative name. Nothing here is committed; the files live in the test's directory.
//!
//! Keys are EC P-256 (fast to make); certificates are valid for two days.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

/// A certificate and its private key (PEM files).
#[derive(Clone, Debug)]
pub struct CertPair {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key (unencrypted).
    pub key: PathBuf,
}

/// A test CA: its certificate and key, in a directory where it also writes what it issues.
pub struct TestCa {
    dir: PathBuf,
    /// The CA's own certificate and key.
    pub ca: CertPair,
}

impl TestCa {
    /// Makes a CA (subject `CN=<name>`) in `dir` (files `<name>.pem`, `<name>.key`).
    ///
    /// Errors: `openssl` missing or failing (its stderr is in the message).
    pub fn create(dir: &Path, name: &str) -> Result<TestCa> {
        let ca = CertPair { cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")) };
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .arg("-keyout")
            .arg(&ca.key)
            .arg("-out")
            .arg(&ca.cert)
            .args(["-days", "2", "-subj", &format!("/CN={name}")])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        run(cmd, "make a CA")?;
        Ok(TestCa { dir: dir.to_path_buf(), ca })
    }

    /// Path of the CA certificate (what both sides trust).
    pub fn ca_cert(&self) -> &Path {
        &self.ca.cert
    }

    /// Issues a leaf certificate signed by this CA: subject `CN=<file_stem>`, one DNS SAN `dns_san`,
    /// usable as TLS server and client certificate. Files `<file_stem>.pem` / `.key` in the CA's
    /// directory.
    pub fn issue(&self, file_stem: &str, dns_san: &str) -> Result<CertPair> {
        self.issue_sans(file_stem, &[dns_san])
    }

    /// [`TestCa::issue`] with several DNS SANs (at least one).
    pub fn issue_sans(&self, file_stem: &str, dns_sans: &[&str]) -> Result<CertPair> {
        if dns_sans.is_empty() {
            return Err(Error::msg("a certificate needs at least one DNS SAN"));
        }
        let san_list: Vec<String> = dns_sans.iter().map(|s| format!("DNS:{s}")).collect();
        let pair = CertPair {
            cert: self.dir.join(format!("{file_stem}.pem")),
            key: self.dir.join(format!("{file_stem}.key")),
        };
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .arg("-keyout")
            .arg(&pair.key)
            .arg("-out")
            .arg(&pair.cert)
            .args(["-days", "2", "-subj", &format!("/CN={file_stem}")])
            .arg("-CA")
            .arg(&self.ca.cert)
            .arg("-CAkey")
            .arg(&self.ca.key)
            .args(["-addext", &format!("subjectAltName={}", san_list.join(","))])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "extendedKeyUsage=serverAuth,clientAuth"]);
        run(cmd, &format!("issue a certificate for {}", san_list.join(",")))?;
        Ok(pair)
    }
}

fn run(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd.output().map_err(|e| Error(format!("openssl (to {what}): {e}; run scripts/setup.sh")))?;
    if !out.status.success() {
        return Err(Error(format!(
            "openssl could not {what} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
