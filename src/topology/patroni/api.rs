//! pgsplit's side of Patroni's REST API: `GET /cluster` from the first of the configured members that answers, and
//! `POST /switchover` with a `scheduled_at` for `pgsplit promote`. One HTTP/1.1 exchange per call on a fresh
//! connection, all of it (connect, request, answer) within `request_timeout`, and an answer's body capped at
//! [`MAX_BODY`]. Knows HTTP and Patroni's paths; decides nothing about the topology.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::time::format_utc;
use super::view::{BadView, ClusterView};
use crate::config::PatroniUrl;

/// A `/cluster` answer of a few hundred members fits many times over; anything larger is not Patroni.
const MAX_BODY: usize = 1 << 20;

/// Why one exchange with one Patroni member failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{url}: cannot connect: {reason}")]
    Connect { url: String, reason: String },
    #[error("{url}: no answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{url} answered {status}: {text}")]
    Status { url: String, status: u16, text: String },
    #[error("{url}: {source}")]
    View {
        url: String,
        #[source]
        source: BadView,
    },
}

/// No configured member answered `/cluster`; each one's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no Patroni REST API answered: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Unreachable(pub Vec<ApiError>);

/// `GET /cluster` from the members in `urls`, starting at index `first` (the one that answered last time) and
/// going round; returns the index that answered and its view.
pub async fn cluster(
    urls: &[PatroniUrl],
    first: usize,
    timeout: Duration,
) -> Result<(usize, ClusterView), Unreachable> {
    let mut errors = Vec::new();
    for offset in 0..urls.len() {
        let index = (first + offset) % urls.len();
        let url = &urls[index];
        let answer = exchange(url, Method::GET, "/cluster", None, timeout).await;
        match answer.and_then(|body| {
            ClusterView::parse(&body).map_err(|source| ApiError::View {
                url: url.to_string(),
                source,
            })
        }) {
            Ok(view) => return Ok((index, view)),
            Err(error) => errors.push(error),
        }
    }
    Err(Unreachable(errors))
}

/// What Patroni said to a scheduled switchover request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scheduled {
    /// The member that took the request.
    pub via: String,
    /// Patroni's own words ("Switchover scheduled").
    pub answer: String,
    pub leader: String,
    pub candidate: String,
    /// As sent to Patroni.
    pub at: String,
}

/// `POST /switchover {leader, candidate, scheduled_at}` to the first member in `urls` that takes it (a member that
/// cannot be reached is skipped; one that refuses the request answers for all: they share the DCS).
pub async fn schedule_switchover(
    urls: &[PatroniUrl],
    leader: &str,
    candidate: &str,
    at: SystemTime,
    timeout: Duration,
) -> Result<Scheduled, Unreachable> {
    let at = format_utc(at);
    let body = serde_json::json!({"leader": leader, "candidate": candidate, "scheduled_at": at}).to_string();
    let mut errors = Vec::new();
    for url in urls {
        match exchange(url, Method::POST, "/switchover", Some(body.clone()), timeout).await {
            Ok(answer) => {
                return Ok(Scheduled {
                    via: url.to_string(),
                    answer: String::from_utf8_lossy(&answer).trim().to_owned(),
                    leader: leader.to_owned(),
                    candidate: candidate.to_owned(),
                    at,
                });
            }
            Err(error @ ApiError::Status { .. }) => return Err(Unreachable(vec![error])),
            Err(error) => errors.push(error),
        }
    }
    Err(Unreachable(errors))
}

/// One request on a fresh connection, bounded by `timeout` as a whole; a non-2xx answer is [`ApiError::Status`].
async fn exchange(
    url: &PatroniUrl,
    method: Method,
    path: &str,
    body: Option<String>,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let name = url.to_string();
    let work = async {
        let stream = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|error| ApiError::Connect {
                url: name.clone(),
                reason: error.to_string(),
            })?;
        let http = |error: hyper::Error| ApiError::Http {
            url: name.clone(),
            reason: error.to_string(),
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        // Drives the socket while we wait for the answer; ends with the exchange (or with this future, dropped).
        let driver = tokio::spawn(connection);
        let request = request(url, method, path, body).map_err(|reason| ApiError::Http {
            url: name.clone(),
            reason,
        })?;
        let answer = sender.send_request(request).await.map_err(http)?;
        let status = answer.status();
        let body = Limited::new(answer.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|error| ApiError::Http {
                url: name.clone(),
                reason: format!("reading the answer: {error}"),
            })?
            .to_bytes();
        driver.abort();
        if status.is_success() {
            Ok(body)
        } else {
            Err(ApiError::Status {
                url: name.clone(),
                status: status.as_u16(),
                text: status_text(status, &body),
            })
        }
    };
    tokio::time::timeout(timeout, work).await.unwrap_or_else(|_| {
        Err(ApiError::Timeout {
            url: name.clone(),
            after: timeout,
        })
    })
}

fn request(url: &PatroniUrl, method: Method, path: &str, body: Option<String>) -> Result<Request<Full<Bytes>>, String> {
    let host = HeaderValue::from_str(&url.to_string()["http://".len()..]).map_err(|error| error.to_string())?;
    let mut request = Request::builder().method(method).uri(path).header(header::HOST, host);
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|error| error.to_string())
}

/// Patroni answers refusals in plain text ("Switchover is not possible: …"); keep it short for a log line.
fn status_text(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let text: String = text.chars().take(300).collect();
    if text.is_empty() {
        status.canonical_reason().unwrap_or("").to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A one-shot HTTP server on loopback that answers every connection with `answer` (the raw response).
    async fn serve(answer: &'static str) -> PatroniUrl {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = vec![0; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        PatroniUrl {
            host: "127.0.0.1".into(),
            port,
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn the_first_member_that_answers_is_used_and_the_others_say_why_not() {
        let refused = PatroniUrl {
            host: "127.0.0.1".into(),
            port: 1,
        };
        let garbage = serve("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello").await;
        let body = r#"{"members": [{"name": "n1", "role": "leader", "host": "h", "port": 5432}]}"#;
        let answer: &'static str = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        );
        let good = serve(answer).await;
        let urls = [refused.clone(), garbage.clone(), good.clone()];
        let (index, view) = cluster(&urls, 0, SECOND).await.unwrap();
        assert_eq!(index, 2);
        assert_eq!(view.leader().map(|m| m.name.as_str()), Some("n1"));
        let Unreachable(errors) = cluster(&urls[..2], 1, SECOND).await.unwrap_err();
        assert!(matches!(errors[0], ApiError::View { .. }), "{errors:?}");
        assert!(matches!(errors[1], ApiError::Connect { .. }), "{errors:?}");
    }

    #[tokio::test]
    async fn a_silent_member_times_out_and_a_refusal_carries_patronis_words() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent = PatroniUrl {
            host: "127.0.0.1".into(),
            port: listener.local_addr().unwrap().port(),
        };
        let Unreachable(errors) = cluster(&[silent], 0, Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(errors[0], ApiError::Timeout { .. }), "{errors:?}");
        drop(listener);
        let refusing = serve(
            "HTTP/1.1 412 Precondition Failed\r\nContent-Length: 37\r\nConnection: close\r\n\r\n\
             Switchover is not possible: no member",
        )
        .await;
        let Unreachable(errors) = schedule_switchover(&[refusing], "n1", "n2", SystemTime::now(), SECOND)
            .await
            .unwrap_err();
        match &errors[0] {
            ApiError::Status { status, text, .. } => {
                assert_eq!(*status, 412);
                assert!(text.starts_with("Switchover is not possible"), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }
}
