//! Client authentication against `[[users]]`: SCRAM-SHA-256 by default, md5, trust; one answer (28P01) for a wrong
//! password and an unknown user.

use pgsplit::config::AuthMethod;
use tokio_postgres::error::SqlState;

use crate::support::{cluster, proxy};

async fn proxy_with(method: AuthMethod) -> proxy::TestProxy {
    let c = cluster();
    let mut config = proxy::config_for(c);
    config.users[0].auth = method;
    proxy::TestProxy::start(config, c).await
}

async fn current_user(client: &tokio_postgres::Client) -> String {
    client.query_one("SELECT current_user::text", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn scram_accepts_the_right_password_and_refuses_wrong_ones_and_unknown_users_alike() {
    let p = proxy_with(AuthMethod::ScramSha256).await;
    let client = p.connect_as("app", "app").await.expect("right password");
    assert_eq!(current_user(&client).await, "app");

    let wrong = p.connect_as("app", "nope").await.unwrap_err();
    assert_eq!(wrong.code(), Some(&SqlState::INVALID_PASSWORD));
    let unknown = p.connect_as("mallory", "app").await.unwrap_err();
    assert_eq!(unknown.code(), Some(&SqlState::INVALID_PASSWORD));
    let message = |e: &tokio_postgres::Error| e.as_db_error().unwrap().message().to_owned();
    assert_eq!(
        message(&wrong).replace("\"app\"", "\"?\""),
        message(&unknown).replace("\"mallory\"", "\"?\"")
    );
    drop(client);
    p.stop().await;
}

#[tokio::test]
async fn md5_users_log_in_with_their_password_only() {
    let p = proxy_with(AuthMethod::Md5).await;
    p.connect_as("app", "app").await.expect("right password over md5");
    let wrong = p.connect_as("app", "nope").await.unwrap_err();
    assert_eq!(wrong.code(), Some(&SqlState::INVALID_PASSWORD));
    p.stop().await;
}

#[tokio::test]
async fn trust_users_need_no_password_but_pgsplit_still_logs_in_upstream_with_its_own() {
    let p = proxy_with(AuthMethod::Trust).await;
    let client = p.connect_as("app", "anything").await.expect("trust");
    assert_eq!(current_user(&client).await, "app");
    drop(client);
    p.stop().await;
}

#[tokio::test]
async fn a_database_the_server_refuses_fails_at_login_with_the_servers_code() {
    let p = proxy_with(AuthMethod::ScramSha256).await;
    let conninfo = p.conninfo("app", "app").replace("dbname=app", "dbname=no_such_db");
    let err = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Some(&SqlState::INVALID_CATALOG_NAME));
    p.stop().await;
}
