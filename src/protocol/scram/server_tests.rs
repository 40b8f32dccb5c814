//! The server side against RFC 7677's example, against PostgreSQL's own verifier format, against pgsplit's and
//! tokio-postgres's clients, with and without channel binding, and against broken or hostile messages.

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use super::super::{Channel, Scram};
use super::*;

const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

fn rfc_verifier() -> Verifier {
    let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    Verifier::with_salt("pencil", &salt, 4096)
}

#[test]
fn rfc_7677_example_exchange() {
    let verifier = rfc_verifier();
    let first = format!("n,,n=user,r={RFC_CLIENT_NONCE}");
    let (exchange, server_first) = Exchange::start_with_nonce(
        MECHANISM.as_bytes(),
        first.as_bytes(),
        &verifier,
        Binding::None,
        RFC_SERVER_NONCE,
    )
    .unwrap();
    assert_eq!(
        server_first,
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let client_final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                        p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    assert_eq!(
        exchange.finish(client_final.as_bytes()).unwrap(),
        "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
}

#[test]
fn a_wrong_proof_fails_without_saying_why() {
    let verifier = rfc_verifier();
    let first = format!("n,,n=user,r={RFC_CLIENT_NONCE}");
    let (exchange, _) = Exchange::start_with_nonce(
        b"SCRAM-SHA-256",
        first.as_bytes(),
        &verifier,
        Binding::None,
        RFC_SERVER_NONCE,
    )
    .unwrap();
    let forged = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=eHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    assert_eq!(exchange.finish(forged.as_bytes()), Err(ScramServerError::Failed));
}

#[test]
fn verifiers_match_the_ones_postgresql_stores() {
    // `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, as PostgreSQL (and postgres-protocol) write it.
    let stored = postgres_protocol::password::scram_sha_256(b"s3cret \xc2\xaa");
    let (_, rest) = stored.split_once('$').unwrap();
    let (params, keys) = rest.split_once('$').unwrap();
    let (iterations, salt) = params.split_once(':').unwrap();
    let (stored_key, server_key) = keys.split_once(':').unwrap();
    let ours = Verifier::with_salt(
        "s3cret \u{aa}",
        &STANDARD.decode(salt).unwrap(),
        iterations.parse().unwrap(),
    );
    assert_eq!(STANDARD.encode(ours.stored_key), stored_key);
    assert_eq!(STANDARD.encode(ours.server_key), server_key);
}

/// Runs pgsplit's client against the server; Ok(()) when both sides accept.
fn run(password: &str, verifier: &Verifier, channel: Channel, binding: Binding<'_>) -> Result<(), ScramServerError> {
    let mechanism = channel.mechanism();
    let (mut client, first) = Scram::new(password, channel);
    let (exchange, server_first) = Exchange::start(mechanism.as_bytes(), first.as_bytes(), verifier, binding)?;
    let client_final = client.respond(server_first.as_bytes()).expect("the client answers");
    let server_final = exchange.finish(client_final.as_bytes())?;
    client
        .verify(server_final.as_bytes())
        .expect("the client accepts the server");
    Ok(())
}

#[test]
fn pgsplits_client_and_server_agree_with_and_without_channel_binding() {
    let verifier = Verifier::from_password("pw");
    let data = [7u8; 32];
    assert_eq!(run("pw", &verifier, Channel::Unbound, Binding::None), Ok(()));
    assert_eq!(run("pw", &verifier, Channel::NotOffered, Binding::Unavailable), Ok(()));
    assert_eq!(run("pw", &verifier, Channel::Unbound, Binding::EndPoint(&data)), Ok(()));
    assert_eq!(
        run(
            "pw",
            &verifier,
            Channel::EndPoint(data.to_vec()),
            Binding::EndPoint(&data)
        ),
        Ok(())
    );
    assert_eq!(
        run(
            "wrong",
            &verifier,
            Channel::EndPoint(data.to_vec()),
            Binding::EndPoint(&data)
        ),
        Err(ScramServerError::Failed)
    );
}

#[test]
fn a_binding_to_another_certificate_fails() {
    // What a client sees through a TLS-terminating man in the middle: the other connection's certificate.
    let verifier = Verifier::from_password("pw");
    assert_eq!(
        run(
            "pw",
            &verifier,
            Channel::EndPoint(vec![1; 32]),
            Binding::EndPoint(&[2; 32])
        ),
        Err(ScramServerError::Failed)
    );
}

#[test]
fn channel_binding_downgrades_and_mismatches_are_refused() {
    let verifier = Verifier::from_password("pw");
    let data = [7u8; 32];
    // `y` while -PLUS was offered: someone stripped it.
    assert!(matches!(
        run("pw", &verifier, Channel::NotOffered, Binding::EndPoint(&data)),
        Err(ScramServerError::Malformed(m)) if m.contains("negotiation")
    ));
    // -PLUS without TLS (or without binding data) was never offered.
    for binding in [Binding::None, Binding::Unavailable] {
        assert!(matches!(
            run("pw", &verifier, Channel::EndPoint(data.to_vec()), binding),
            Err(ScramServerError::Malformed(_))
        ));
    }
    // -PLUS with the `n` flag, or a binding type nobody offered.
    let bad_firsts: [(&str, &str); 4] = [
        (MECHANISM_PLUS, "n,,n=,r=abc"),
        (MECHANISM_PLUS, "p=tls-unique,,n=,r=abc"),
        (MECHANISM, "p=tls-server-end-point,,n=,r=abc"),
        (MECHANISM, "n,a=admin,n=,r=abc"),
    ];
    for (mechanism, first) in bad_firsts {
        let started = Exchange::start(
            mechanism.as_bytes(),
            first.as_bytes(),
            &verifier,
            Binding::EndPoint(&data),
        );
        assert!(
            matches!(started, Err(ScramServerError::Malformed(_))),
            "{mechanism} {first}"
        );
    }
}

#[test]
fn tokio_postgres_s_client_logs_in_with_and_without_channel_binding() {
    let verifier = Verifier::from_password("pw");
    let data = [9u8; 48];
    for (channel, binding, mechanism) in [
        (ChannelBinding::unsupported(), Binding::None, MECHANISM),
        (ChannelBinding::unrequested(), Binding::Unavailable, MECHANISM),
        (
            ChannelBinding::tls_server_end_point(data.to_vec()),
            Binding::EndPoint(&data),
            MECHANISM_PLUS,
        ),
    ] {
        let mut client = ScramSha256::new(b"pw", channel);
        let (exchange, server_first) =
            Exchange::start(mechanism.as_bytes(), client.message(), &verifier, binding).unwrap();
        client.update(server_first.as_bytes()).unwrap();
        let server_final = exchange.finish(client.message()).unwrap();
        client.finish(server_final.as_bytes()).unwrap();
    }
}

#[test]
fn unknown_users_see_a_stable_salt_of_their_own_and_always_fail() {
    let secret = [3u8; 32];
    let (a, again, b) = (
        Verifier::mock("nobody", &secret),
        Verifier::mock("nobody", &secret),
        Verifier::mock("someone", &secret),
    );
    assert_eq!(a.salt, again.salt);
    assert_ne!(a.salt, b.salt);
    assert_eq!(a.salt.len(), 16);
    assert_eq!(a.iterations.get(), ITERATIONS);
    assert_eq!(
        run("anything", &a, Channel::Unbound, Binding::None),
        Err(ScramServerError::Failed)
    );
    assert!(!format!("{a:?}").contains("stored_key"));
}

#[test]
fn truncated_and_garbled_messages_are_errors_not_panics() {
    let verifier = Verifier::from_password("pw");
    let first = "n,,n=,r=abcdef";
    for end in 0..first.len() {
        let _ = Exchange::start(MECHANISM.as_bytes(), &first.as_bytes()[..end], &verifier, Binding::None);
    }
    let _ = Exchange::start(MECHANISM.as_bytes(), b"\xff\xfe,,", &verifier, Binding::None);
    let (mut client, first) = Scram::new("pw", Channel::Unbound);
    let (exchange, server_first) =
        Exchange::start(MECHANISM.as_bytes(), first.as_bytes(), &verifier, Binding::None).unwrap();
    let client_final = client.respond(server_first.as_bytes()).unwrap();
    for end in 0..client_final.len() {
        let exchange = clone_of(&exchange);
        assert!(exchange.finish(&client_final.as_bytes()[..end]).is_err());
    }
    for bad in ["c=biws,r=x,p=AAAA", "r=x,c=biws,p=AAAA", "c=biws,p=", ",p=", "p="] {
        assert!(clone_of(&exchange).finish(bad.as_bytes()).is_err(), "{bad}");
    }
    assert!(exchange.finish(client_final.as_bytes()).is_ok());
}

fn clone_of<'a>(exchange: &Exchange<'a>) -> Exchange<'a> {
    Exchange {
        verifier: exchange.verifier,
        expected_binding: exchange.expected_binding.clone(),
        nonce: exchange.nonce.clone(),
        client_first_bare: exchange.client_first_bare.clone(),
        server_first: exchange.server_first.clone(),
    }
}
