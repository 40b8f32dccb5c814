//! One request in, one response out: which endpoint a path names, the method it takes, the bearer-token check for
//! mutating calls, and the JSON (or text) each endpoint answers with. Every failure is an [`ApiError`] rendered as
//! `{"error": "..."}` with its status code; nothing here panics on any input.
//!
//! Handlers only read the topology snapshot or call the control plane; they never hold a lock across an await and
//! never touch client sessions.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use super::body::{self, BodyError, PauseBody, PromoteBody};
use super::metrics;
use super::status::{Paused, PausedAnswer, Status};
use crate::context::AdminContext;
use crate::topology::changeover;
use crate::topology::control::ReloadError;
use crate::topology::patroni::promote::{self, PromoteError};
use crate::topology::progress::{AbortRefused, Refused};

pub type Answer = Response<Full<Bytes>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Healthz,
    Status,
    Metrics,
    Reload,
    Pause,
    Resume,
    Promote,
    PromoteAbort,
}

impl Endpoint {
    fn find(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/healthz" => Endpoint::Healthz,
            "/status" => Endpoint::Status,
            "/metrics" => Endpoint::Metrics,
            "/reload" => Endpoint::Reload,
            "/pause" => Endpoint::Pause,
            "/resume" => Endpoint::Resume,
            "/promote" => Endpoint::Promote,
            "/promote/abort" => Endpoint::PromoteAbort,
            _ => return None,
        })
    }

    /// Reads are GET; everything that changes the proxy is POST and needs the token.
    fn method(self) -> Method {
        match self {
            Endpoint::Healthz | Endpoint::Status | Endpoint::Metrics => Method::GET,
            Endpoint::Reload | Endpoint::Pause | Endpoint::Resume | Endpoint::Promote | Endpoint::PromoteAbort => {
                Method::POST
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no such endpoint: {0}")]
    NotFound(String),
    #[error("{path} takes {allowed} only")]
    MethodNotAllowed { path: String, allowed: Method },
    #[error("this call needs the header `Authorization: Bearer <proxy.admin_token>`")]
    Unauthorized,
    #[error("mutating calls need `Content-Type: application/json` (even without a body)")]
    NotJson,
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Reload(#[from] ReloadError),
    #[error("{0}; follow it in GET /status")]
    Refused(#[from] Refused),
    #[error("{0}")]
    AbortRefused(#[from] AbortRefused),
    #[error(
        "a changeover is running; it releases the writes it holds itself (to stop it and roll back: POST \
         /promote/abort, `pgsplit promote --abort`)"
    )]
    ChangeoverRunning,
    #[error("cannot encode the answer: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("{0}")]
    Patroni(#[from] PromoteError),
    #[error(
        "with topology.source = \"patroni\", {0} does not apply: Patroni carries the switchover out (cancel a \
         scheduled one with `patronictl flush <cluster> switchover`)"
    )]
    NotWithPatroni(&'static str),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Body(BodyError::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Body(_) => StatusCode::BAD_REQUEST,
            ApiError::Reload(ReloadError::NoFile) => StatusCode::CONFLICT,
            ApiError::Reload(ReloadError::Invalid(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Refused(_) | ApiError::AbortRefused(_) | ApiError::ChangeoverRunning => StatusCode::CONFLICT,
            ApiError::Encode(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Patroni(PromoteError::Unreachable(_)) => StatusCode::BAD_GATEWAY,
            ApiError::Patroni(_) | ApiError::NotWithPatroni(_) => StatusCode::CONFLICT,
        }
    }

    fn into_answer(self) -> Answer {
        #[derive(Serialize)]
        struct Error {
            error: String,
        }
        let status = self.status();
        let body = serde_json::to_vec(&Error {
            error: self.to_string(),
        })
        .unwrap_or_default();
        let mut answer = respond(status, "application/json", body);
        match self {
            ApiError::Unauthorized => {
                answer
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::MethodNotAllowed { allowed, .. } => {
                if let Ok(allowed) = HeaderValue::from_str(allowed.as_str()) {
                    answer.headers_mut().insert(header::ALLOW, allowed);
                }
            }
            _ => {}
        }
        answer
    }
}

/// Answers one request.
pub async fn handle(request: Request<Incoming>, ctx: &Arc<AdminContext>) -> Answer {
    answer(request, ctx).await.unwrap_or_else(ApiError::into_answer)
}

async fn answer(request: Request<Incoming>, ctx: &Arc<AdminContext>) -> Result<Answer, ApiError> {
    let path = request.uri().path();
    let endpoint = Endpoint::find(path).ok_or_else(|| ApiError::NotFound(path.to_owned()))?;
    if request.method() != endpoint.method() {
        return Err(ApiError::MethodNotAllowed {
            path: path.to_owned(),
            allowed: endpoint.method(),
        });
    }
    let config = ctx.config();
    let guarded = match endpoint {
        Endpoint::Healthz => false,
        Endpoint::Status | Endpoint::Metrics => config.proxy.admin_token_for_reads,
        _ => true,
    };
    if guarded {
        let token = config.proxy.admin_token.as_ref().map(|t| t.expose());
        authorize(token, request.headers().get(header::AUTHORIZATION))?;
    }
    if endpoint.method() == Method::POST && !is_json(request.headers().get(header::CONTENT_TYPE)) {
        // A browser cannot send this cross-site without a preflight, which the API never answers with consent.
        return Err(ApiError::NotJson);
    }
    drop(config);
    let control = &ctx.control;
    match endpoint {
        Endpoint::Healthz => Ok(respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n")),
        Endpoint::Status => json(StatusCode::OK, &Status::capture(ctx)),
        Endpoint::Metrics => Ok(respond(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            metrics::render(&Status::capture(ctx)),
        )),
        Endpoint::Reload => json(StatusCode::OK, &control.reload().await?),
        Endpoint::Pause => {
            let body = body::read(request.into_body()).await?;
            for &direction in PauseBody::parse(&body)?.direction.directions() {
                control.gate.pause(direction);
            }
            json(
                StatusCode::OK,
                &PausedAnswer {
                    paused: Paused::of(&control.gate),
                },
            )
        }
        Endpoint::Resume => {
            if control.board().is_running() {
                return Err(ApiError::ChangeoverRunning);
            }
            control.gate.resume();
            json(
                StatusCode::OK,
                &PausedAnswer {
                    paused: Paused::of(&control.gate),
                },
            )
        }
        Endpoint::Promote => {
            let body = body::read(request.into_body()).await?;
            let request = PromoteBody::parse(&body)?;
            if control.patroni().is_some() {
                // Patroni promotes; pgsplit asks it for a switchover every instance sees ahead of time.
                if request != changeover::PromoteRequest::new(&request.instance) {
                    return Err(ApiError::NotWithPatroni(
                        "repoint, drain_timeout_ms or catchup_timeout_ms",
                    ));
                }
                return json(
                    StatusCode::ACCEPTED,
                    &promote::schedule(control, &request.instance).await?,
                );
            }
            changeover::start(control, request)?;
            json(StatusCode::ACCEPTED, &control.board().current())
        }
        Endpoint::PromoteAbort if control.patroni().is_some() => Err(ApiError::NotWithPatroni("an abort")),
        Endpoint::PromoteAbort => {
            // Answered at once: the rollback goes on in the changeover's own task, shown in GET /status.
            json(StatusCode::ACCEPTED, &changeover::abort(control)?)
        }
    }
}

/// With a token configured, the request must carry `Authorization: Bearer <token>`.
fn authorize(token: Option<&str>, header: Option<&HeaderValue>) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Ok(());
    };
    let given = header
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, credentials)| credentials.trim());
    if same_secret(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// Compares every byte whatever the first difference, so the time taken does not tell a guesser how much of the
/// token was right (only whether the length was).
fn same_secret(given: &[u8], token: &[u8]) -> bool {
    given.len() == token.len() && given.iter().zip(token).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

fn json(status: StatusCode, value: &impl Serialize) -> Result<Answer, ApiError> {
    let mut body = serde_json::to_vec_pretty(value)?;
    body.push(b'\n');
    Ok(respond(status, "application/json", body))
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut answer = Response::new(Full::new(body.into()));
    *answer.status_mut() = status;
    answer
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(value: &str) -> HeaderValue {
        HeaderValue::from_str(value).unwrap()
    }

    #[test]
    fn without_a_token_every_call_is_allowed() {
        assert!(authorize(None, None).is_ok());
        assert!(authorize(None, Some(&bearer("Bearer whatever"))).is_ok());
    }

    #[test]
    fn with_a_token_the_bearer_must_match_exactly() {
        let token = Some("s3cret");
        assert!(authorize(token, Some(&bearer("Bearer s3cret"))).is_ok());
        assert!(
            authorize(token, Some(&bearer("bearer s3cret"))).is_ok(),
            "the scheme is case-insensitive"
        );
        for wrong in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Bearer S3CRET",
            "Basic s3cret",
            "s3cret",
            "Bearer ",
        ] {
            assert!(
                matches!(authorize(token, Some(&bearer(wrong))), Err(ApiError::Unauthorized)),
                "{wrong:?}"
            );
        }
        assert!(matches!(authorize(token, None), Err(ApiError::Unauthorized)));
    }

    #[test]
    fn only_json_is_json() {
        let json = |value: &str| is_json(Some(&HeaderValue::from_str(value).unwrap()));
        assert!(json("application/json") && json("Application/JSON; charset=utf-8"));
        for other in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "application/jsonx",
        ] {
            assert!(!json(other), "{other}");
        }
        assert!(!is_json(None));
    }

    #[test]
    fn same_secret_needs_equal_length_and_bytes() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(same_secret(b"", b""));
    }

    #[test]
    fn endpoints_and_methods() {
        assert_eq!(Endpoint::find("/status"), Some(Endpoint::Status));
        assert_eq!(Endpoint::find("/status/"), None);
        assert_eq!(Endpoint::find("/nope"), None);
        assert_eq!(Endpoint::Metrics.method(), Method::GET);
        assert_eq!(Endpoint::Promote.method(), Method::POST);
        assert_eq!(Endpoint::find("/promote/abort"), Some(Endpoint::PromoteAbort));
        assert_eq!(Endpoint::PromoteAbort.method(), Method::POST);
    }

    #[test]
    fn errors_map_to_their_status_codes() {
        let cases = [
            (ApiError::NotFound("/x".into()), StatusCode::NOT_FOUND),
            (ApiError::Unauthorized, StatusCode::UNAUTHORIZED),
            (ApiError::Body(BodyError::TooLarge), StatusCode::PAYLOAD_TOO_LARGE),
            (ApiError::Body(BodyError::Invalid("x".into())), StatusCode::BAD_REQUEST),
            (ApiError::Reload(ReloadError::NoFile), StatusCode::CONFLICT),
            (ApiError::Refused(Refused::Running), StatusCode::CONFLICT),
            (ApiError::AbortRefused(AbortRefused::NotRunning), StatusCode::CONFLICT),
            (ApiError::AbortRefused(AbortRefused::TooLate), StatusCode::CONFLICT),
        ];
        for (error, status) in cases {
            assert_eq!(error.status(), status, "{error}");
        }
    }

    #[test]
    fn errors_answer_json_with_their_headers() {
        let answer = ApiError::Unauthorized.into_answer();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(answer.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(answer.headers()[header::CONTENT_TYPE], "application/json");
        let answer = ApiError::MethodNotAllowed {
            path: "/reload".into(),
            allowed: Method::POST,
        }
        .into_answer();
        assert_eq!(answer.headers()[header::ALLOW], "POST");
    }
}
