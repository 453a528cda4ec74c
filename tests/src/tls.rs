//! TLS for the Kafka tests: certificates made at test time, for the TLS-terminating
//! [`crate::proxy`] in front of a plaintext broker.
//!
//! Why a proxy: tansu 0.6 has `--cert` and `--key` flags but cannot serve TLS. Its command
//! line declares the two flags mutually exclusive (so both cannot be given), and the broker
//! never uses the acceptor it would build from them. The TLS endpoint pulse talks to is
//! therefore the proxy (OpenSSL, like a TLS sidecar or load balancer in front of Kafka),
//! and the broker advertises the proxy's address, so every connection librdkafka opens,
//! bootstrap and broker alike, goes through TLS.

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslMethod};
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, SubjectAlternativeName};
use openssl::x509::{X509, X509NameBuilder};

/// A certificate authority of a test's own: trusted by nobody else.
#[derive(Debug)]
pub struct Authority {
    certificate: X509,
    key: PKey<Private>,
}

/// A server certificate for `127.0.0.1` and `localhost`, with its key.
#[derive(Debug)]
pub struct ServerIdentity {
    certificate: X509,
    key: PKey<Private>,
}

impl Authority {
    /// A self-signed CA named `name`, valid for two days.
    pub fn new(name: &str) -> Authority {
        let key = new_key();
        let mut builder = certificate_builder(name, 1, &key);
        let subject = subject_name(name);
        builder.set_issuer_name(&subject).expect("issuer name");
        let ca = BasicConstraints::new()
            .critical()
            .ca()
            .build()
            .expect("CA constraint");
        builder.append_extension(ca).expect("CA constraint");
        builder
            .sign(&key, MessageDigest::sha256())
            .expect("self-signing");
        Authority {
            certificate: builder.build(),
            key,
        }
    }

    /// The CA certificate in PEM, for `ssl.ca.location`.
    pub fn pem(&self) -> Vec<u8> {
        self.certificate.to_pem().expect("PEM encoding")
    }

    /// A server certificate signed by this CA.
    pub fn issue_server(&self) -> ServerIdentity {
        let key = new_key();
        let mut builder = certificate_builder("pulse test broker", 2, &key);
        builder
            .set_issuer_name(self.certificate.subject_name())
            .expect("issuer name");
        let names = SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .dns("localhost")
            .build(&builder.x509v3_context(Some(&self.certificate), None))
            .expect("subject alternative names");
        builder.append_extension(names).expect("names");
        let usage = ExtendedKeyUsage::new()
            .server_auth()
            .build()
            .expect("server usage");
        builder.append_extension(usage).expect("usage");
        builder
            .sign(&self.key, MessageDigest::sha256())
            .expect("signing");
        ServerIdentity {
            certificate: builder.build(),
            key,
        }
    }
}

impl ServerIdentity {
    /// A TLS server configuration that presents this identity.
    pub fn acceptor(&self) -> SslAcceptor {
        let mut acceptor =
            SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).expect("TLS acceptor");
        acceptor
            .set_certificate(&self.certificate)
            .expect("certificate");
        acceptor.set_private_key(&self.key).expect("key");
        acceptor.check_private_key().expect("matching key");
        acceptor.build()
    }
}

fn new_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    PKey::from_ec_key(EcKey::generate(&group).expect("an EC key")).expect("a key")
}

fn subject_name(name: &str) -> openssl::x509::X509Name {
    let mut subject = X509NameBuilder::new().expect("name builder");
    subject
        .append_entry_by_nid(Nid::COMMONNAME, name)
        .expect("common name");
    subject.build()
}

fn certificate_builder(name: &str, serial: u32, key: &PKey<Private>) -> openssl::x509::X509Builder {
    let mut builder = X509::builder().expect("certificate builder");
    builder.set_version(2).expect("X.509 v3");
    let serial = BigNum::from_u32(serial)
        .and_then(|n| n.to_asn1_integer())
        .expect("serial");
    builder.set_serial_number(&serial).expect("serial");
    builder
        .set_subject_name(&subject_name(name))
        .expect("subject");
    builder.set_pubkey(key).expect("public key");
    let not_before = Asn1Time::days_from_now(0).expect("now");
    let not_after = Asn1Time::days_from_now(2).expect("in two days");
    builder.set_not_before(&not_before).expect("not before");
    builder.set_not_after(&not_after).expect("not after");
    builder
}
