//! The command line's side of the admin API: where the API is (`--admin`, else `proxy.admin_listen` from the
//! config file, else the default address), the bearer token, and one HTTP/1.1 exchange per call on a fresh
//! connection with short timeouts. Knows HTTP and JSON, not what the answers mean; never retries on its own.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use crate::config::Config;

/// `proxy.admin_listen`'s default, tried when neither `--admin` nor a readable config says otherwise.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9930";
/// The admin API listens on loopback or a near network: a connection that takes longer is not coming.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Generous: a reload waits until a running changeover is over (one topology change at a time).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "cannot reach the admin API at {addr}: {reason}\n(is pgsplit running? give --admin HOST:PORT, or the config \
         with proxy.admin_listen via -c)"
    )]
    Unreachable { addr: String, reason: String },
    #[error("the admin API at {addr} did not answer within {} s", ANSWER_TIMEOUT.as_secs())]
    NoAnswer { addr: String },
    #[error("talking to the admin API at {addr}: {source}")]
    Http { addr: String, source: hyper::Error },
    #[error("cannot build the request: {0} (check --admin and the admin token)")]
    Request(String),
    /// The server's own `error` text, as it gave it.
    #[error("the admin API answered {status}: {message}")]
    Refused { status: StatusCode, message: String },
    #[error("unexpected answer from the admin API at {addr}: {reason}")]
    BadAnswer { addr: String, reason: String },
}

pub struct AdminClient {
    addr: String,
    token: Option<String>,
}

impl AdminClient {
    pub fn new(addr: impl Into<String>, token: Option<String>) -> AdminClient {
        AdminClient {
            addr: addr.into(),
            token,
        }
    }

    /// The address and token given on the command line (or in the environment); what is missing is taken from
    /// the config file, and the address falls back to [`DEFAULT_ADMIN`] when the file cannot be read.
    pub fn locate(config_path: &Path, admin: Option<String>, token: Option<String>) -> AdminClient {
        if let (Some(addr), Some(token)) = (&admin, &token) {
            return AdminClient::new(addr, Some(token.clone()));
        }
        let config = Config::load(config_path);
        if let (None, Err(_)) = (&admin, &config)
            && config_path.exists()
        {
            eprintln!(
                "pgsplit: {} is not a valid config (`pgsplit check` says why); trying the admin API at {DEFAULT_ADMIN}",
                config_path.display()
            );
        }
        let config = config.ok();
        let addr = admin
            .or_else(|| config.as_ref().map(|c| c.proxy.admin_listen.to_string()))
            .unwrap_or_else(|| DEFAULT_ADMIN.to_owned());
        let token = token.or_else(|| config.and_then(|c| c.proxy.admin_token.map(|t| t.expose().to_owned())));
        AdminClient::new(addr, token)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The body of a successful GET, as sent.
    pub async fn get_raw(&self, path: &str) -> Result<Bytes, AdminError> {
        self.exchange(Method::GET, path, None).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, AdminError> {
        let body = self.get_raw(path).await?;
        self.decode(&body)
    }

    /// POSTs `body` as JSON (or nothing) and decodes the JSON answer.
    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: Option<&impl Serialize>) -> Result<T, AdminError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|error| AdminError::Request(error.to_string()))?;
        let answer = self.exchange(Method::POST, path, body).await?;
        self.decode(&answer)
    }

    fn decode<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, AdminError> {
        serde_json::from_slice(body).map_err(|error| AdminError::BadAnswer {
            addr: self.addr.clone(),
            reason: error.to_string(),
        })
    }

    /// One request on a fresh connection; a non-2xx answer becomes [`AdminError::Refused`] with the server's text.
    async fn exchange(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Bytes, AdminError> {
        let request = self.request(method, path, body)?;
        let cannot_reach = |reason: String| AdminError::Unreachable {
            addr: self.addr.clone(),
            reason,
        };
        let http = |source| AdminError::Http {
            addr: self.addr.clone(),
            source,
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| cannot_reach(format!("no connection within {} s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|error| cannot_reach(error.to_string()))?;
        let exchange = async {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(http)?;
            // Drives the socket while we wait for the answer; ends with the exchange.
            tokio::spawn(connection);
            let answer = sender.send_request(request).await.map_err(http)?;
            let status = answer.status();
            let body = answer.into_body().collect().await.map_err(http)?.to_bytes();
            Ok((status, body))
        };
        let (status, body) =
            tokio::time::timeout(ANSWER_TIMEOUT, exchange)
                .await
                .map_err(|_| AdminError::NoAnswer {
                    addr: self.addr.clone(),
                })??;
        if status.is_success() {
            Ok(body)
        } else {
            Err(AdminError::Refused {
                status,
                message: error_text(&body),
            })
        }
    }

    fn request(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Request<Full<Bytes>>, AdminError> {
        // Every POST says JSON, with a body or without: the admin API refuses other mutating requests.
        let json = body.is_some() || method == Method::POST;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.addr);
        if let Some(token) = &self.token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| AdminError::Request("the admin token has characters a header cannot carry".into()))?;
            request = request.header(header::AUTHORIZATION, value);
        }
        if json {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        request
            .body(Full::new(body.unwrap_or_default().into()))
            .map_err(|error| AdminError::Request(error.to_string()))
    }
}

/// The `error` of a JSON error answer, else the body as text.
fn error_text(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Error {
        error: String,
    }
    match serde_json::from_slice::<Error>(body) {
        Ok(Error { error }) => error,
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_is_the_servers_error_field_or_the_body() {
        assert_eq!(
            error_text(br#"{"error": "no such endpoint: /x"}"#),
            "no such endpoint: /x"
        );
        assert_eq!(error_text(b"Bad Request\n"), "Bad Request");
    }

    #[test]
    fn the_command_line_wins_over_the_config_and_the_default_is_loopback() {
        let missing = Path::new("/nonexistent/pgsplit/proxy.toml");
        let client = AdminClient::locate(missing, Some("10.0.0.1:9000".into()), None);
        assert_eq!((client.addr(), client.token.as_deref()), ("10.0.0.1:9000", None));
        let client = AdminClient::locate(missing, None, Some("t".into()));
        assert_eq!((client.addr(), client.token.as_deref()), (DEFAULT_ADMIN, Some("t")));
    }

    #[test]
    fn the_token_goes_in_a_bearer_header() {
        let client = AdminClient::new("127.0.0.1:9930", Some("s3cret".into()));
        let request = client.request(Method::POST, "/pause", Some(b"{}".to_vec())).unwrap();
        assert_eq!(request.headers()[header::AUTHORIZATION], "Bearer s3cret");
        assert_eq!(request.headers()[header::CONTENT_TYPE], "application/json");
        let bad = AdminClient::new("127.0.0.1:9930", Some("a\nb".into()));
        assert!(matches!(
            bad.request(Method::GET, "/status", None),
            Err(AdminError::Request(_))
        ));
    }

    #[tokio::test]
    async fn an_unreachable_api_names_the_address_tried() {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        let client = AdminClient::new("127.0.0.1:1", None);
        let error = client.get_raw("/status").await.unwrap_err();
        assert!(matches!(error, AdminError::Unreachable { .. }), "{error}");
        assert!(error.to_string().contains("127.0.0.1:1"), "{error}");
    }
}
