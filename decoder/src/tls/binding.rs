//! `tls-server-end-point` channel binding data (RFC 5929 §4.1), as PostgreSQL computes it for
//! `SCRAM-SHA-256-PLUS`: the hash of the server's certificate, with the hash of the
//! certificate's own signature algorithm (SHA-256 when that is MD5 or SHA-1).
//!
//! Only the certificate's outer `signatureAlgorithm` is read, with a minimal DER walk:
//! `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm AlgorithmIdentifier, … }`.
//! Algorithms PostgreSQL itself cannot bind to (Ed25519, RSASSA-PSS) give `None`.

use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

/// DER tag of a SEQUENCE.
const TAG_SEQUENCE: u8 = 0x30;
/// DER tag of an OBJECT IDENTIFIER.
const TAG_OID: u8 = 0x06;

/// 1.2.840.113549.1.1.x — PKCS #1 signatures.
const PKCS1_PREFIX: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
/// 1.2.840.10045.4 — ECDSA signatures.
const ECDSA_PREFIX: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// The `tls-server-end-point` data for a server certificate (DER), or `None` when its signature
/// algorithm has no defined hash.
pub fn channel_binding(certificate: &[u8]) -> Option<Vec<u8>> {
    let hash = signature_hash(certificate)?;
    Some(match hash {
        Hash::Sha224 => Sha224::digest(certificate).to_vec(),
        Hash::Sha256 => Sha256::digest(certificate).to_vec(),
        Hash::Sha384 => Sha384::digest(certificate).to_vec(),
        Hash::Sha512 => Sha512::digest(certificate).to_vec(),
    })
}

fn signature_hash(certificate: &[u8]) -> Option<Hash> {
    let (certificate, _) = element(certificate, TAG_SEQUENCE)?;
    let (_tbs, rest) = element(certificate, TAG_SEQUENCE)?;
    let (algorithm, _) = element(rest, TAG_SEQUENCE)?;
    let (oid, _) = element(algorithm, TAG_OID)?;
    if let Some(last) = oid.strip_prefix(PKCS1_PREFIX) {
        return match last {
            // md5WithRSAEncryption, sha1WithRSAEncryption: SHA-256 by RFC 5929.
            [0x04] | [0x05] | [0x0b] => Some(Hash::Sha256),
            [0x0c] => Some(Hash::Sha384),
            [0x0d] => Some(Hash::Sha512),
            [0x0e] => Some(Hash::Sha224),
            _ => None,
        };
    }
    if let Some(last) = oid.strip_prefix(ECDSA_PREFIX) {
        return match last {
            // ecdsa-with-SHA1
            [0x01] => Some(Hash::Sha256),
            [0x03, 0x01] => Some(Hash::Sha224),
            [0x03, 0x02] => Some(Hash::Sha256),
            [0x03, 0x03] => Some(Hash::Sha384),
            [0x03, 0x04] => Some(Hash::Sha512),
            _ => None,
        };
    }
    None
}

/// The contents of the DER element at the start of `der` with tag `tag`, and what follows it.
fn element(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = der.split_first()?;
    if first != tag {
        return None;
    }
    let (&len_byte, rest) = rest.split_first()?;
    let (len, rest) = if len_byte < 0x80 {
        (usize::from(len_byte), rest)
    } else {
        let count = usize::from(len_byte & 0x7f);
        if count == 0 || count > std::mem::size_of::<usize>() || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let len = bytes.iter().try_fold(0usize, |acc, b| {
            acc.checked_mul(256)?.checked_add(usize::from(*b))
        })?;
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate-shaped DER value with the given signature algorithm OID.
    fn cert_with(oid: &[u8]) -> Vec<u8> {
        let tbs = [TAG_SEQUENCE, 3, 0x02, 1, 7];
        let mut algorithm = vec![TAG_OID, u8::try_from(oid.len()).unwrap()];
        algorithm.extend_from_slice(oid);
        algorithm.extend_from_slice(&[0x05, 0]); // NULL parameters
        let mut algorithm_seq = vec![TAG_SEQUENCE, u8::try_from(algorithm.len()).unwrap()];
        algorithm_seq.extend(algorithm);
        let signature = [0x03, 2, 0, 0xff];
        let mut body = tbs.to_vec();
        body.extend(algorithm_seq);
        body.extend_from_slice(&signature);
        // A long-form length, as real certificates have.
        let mut der = vec![TAG_SEQUENCE, 0x81, u8::try_from(body.len()).unwrap()];
        der.extend(body);
        der
    }

    fn pkcs1(last: u8) -> Vec<u8> {
        let mut oid = PKCS1_PREFIX.to_vec();
        oid.push(last);
        oid
    }

    #[test]
    fn hash_follows_the_signature_algorithm() {
        assert_eq!(signature_hash(&cert_with(&pkcs1(0x0b))), Some(Hash::Sha256));
        assert_eq!(signature_hash(&cert_with(&pkcs1(0x05))), Some(Hash::Sha256));
        assert_eq!(signature_hash(&cert_with(&pkcs1(0x0c))), Some(Hash::Sha384));
        assert_eq!(signature_hash(&cert_with(&pkcs1(0x0d))), Some(Hash::Sha512));
        let ecdsa384 = [ECDSA_PREFIX, &[0x03, 0x03]].concat();
        assert_eq!(signature_hash(&cert_with(&ecdsa384)), Some(Hash::Sha384));
        // RSASSA-PSS and Ed25519: no binding, as in PostgreSQL.
        assert_eq!(signature_hash(&cert_with(&pkcs1(0x0a))), None);
        assert_eq!(signature_hash(&cert_with(&[0x2b, 0x65, 0x70])), None);
    }

    #[test]
    fn binding_is_the_hash_of_the_whole_certificate() {
        let cert = cert_with(&pkcs1(0x0b));
        assert_eq!(
            channel_binding(&cert).unwrap(),
            Sha256::digest(&cert).to_vec()
        );
        let cert = cert_with(&pkcs1(0x0d));
        assert_eq!(channel_binding(&cert).unwrap().len(), 64);
    }

    #[test]
    fn malformed_der_gives_none() {
        let cert = cert_with(&pkcs1(0x0b));
        for cut in 0..cert.len() {
            assert_eq!(channel_binding(&cert[..cut]), None, "cut at {cut}");
        }
        assert_eq!(channel_binding(&[]), None);
        assert_eq!(channel_binding(&[TAG_SEQUENCE, 0x89, 1]), None);
        assert_eq!(channel_binding(&[0x31, 0]), None);
    }
}
