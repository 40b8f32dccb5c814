//! The `tls-server-end-point` channel binding (RFC 5929 §4.1) that SCRAM-SHA-256-PLUS signs: a hash of the
//! server's certificate, with the hash function of the certificate's signature algorithm — SHA-256 when that is
//! MD5 or SHA-1 — exactly as PostgreSQL computes it on both sides.
//!
//! Reads only the certificate's outer `signatureAlgorithm` (a few DER headers); certificates signed with an
//! algorithm whose hash is not fixed by the algorithm itself (RSA-PSS, Ed25519) have no binding here — PostgreSQL
//! refuses those too — and SCRAM then runs without channel binding.

use ring::digest;

/// `tls-server-end-point` data for the DER certificate `cert`, or None when its algorithm gives no binding (or the
/// certificate cannot be read).
pub fn end_point(cert: &[u8]) -> Option<Vec<u8>> {
    let algorithm = hash_of(signature_algorithm(cert)?)?;
    Some(digest::digest(algorithm, cert).as_ref().to_vec())
}

/// Signature algorithm OIDs (content bytes) and the hash the binding uses for each.
const ALGORITHMS: &[(&[u8], &digest::Algorithm)] = &[
    // md5WithRSAEncryption, sha1WithRSAEncryption: upgraded to SHA-256 (RFC 5929).
    (&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04], &digest::SHA256),
    (&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05], &digest::SHA256),
    // sha256/384/512WithRSAEncryption
    (&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b], &digest::SHA256),
    (&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c], &digest::SHA384),
    (&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d], &digest::SHA512),
    // ecdsa-with-SHA1 (upgraded), ecdsa-with-SHA256/384/512
    (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01], &digest::SHA256),
    (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02], &digest::SHA256),
    (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03], &digest::SHA384),
    (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04], &digest::SHA512),
];

fn hash_of(oid: &[u8]) -> Option<&'static digest::Algorithm> {
    ALGORITHMS
        .iter()
        .find(|(known, _)| *known == oid)
        .map(|(_, hash)| *hash)
}

/// The OID of `Certificate.signatureAlgorithm`: SEQUENCE { tbsCertificate, SEQUENCE { OID, … }, BIT STRING }.
fn signature_algorithm(cert: &[u8]) -> Option<&[u8]> {
    let (tag, certificate, _) = element(cert)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, after_tbs) = element(certificate)?;
    let (tag, algorithm, _) = element(after_tbs)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = element(algorithm)?;
    (tag == 0x06).then_some(oid)
}

/// One DER element at the start of `der`: (tag, contents, what follows). Definite lengths only, as DER requires.
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0usize, |len, &b| (len << 8) | usize::from(b))
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testing::Pki;

    #[test]
    fn an_ecdsa_p256_certificate_binds_with_sha256_of_its_der() {
        let pki = Pki::new();
        let binding = end_point(&pki.cert_der).expect("a binding");
        assert_eq!(binding, digest::digest(&digest::SHA256, &pki.cert_der).as_ref());
    }

    #[test]
    fn unknown_algorithms_and_garbage_give_no_binding() {
        // A certificate-shaped value signed with Ed25519 (1.3.101.112).
        let ed25519 = [
            0x30, 0x0b, 0x30, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x00,
        ];
        assert_eq!(end_point(&ed25519), None);
        for garbage in [&[][..], &[0x30], &[0x30, 0x82, 0xff, 0xff, 0x00], &[0x04, 0x00]] {
            assert_eq!(end_point(garbage), None, "{garbage:?}");
        }
        // The same shape with sha384WithRSAEncryption hashes with SHA-384.
        let sha384 = [
            0x30, 0x12, 0x30, 0x00, 0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c, 0x03,
            0x01, 0x00,
        ];
        assert_eq!(end_point(&sha384).map(|b| b.len()), Some(48));
    }
}
