//! Request bodies of the mutating calls: read whole but never more than [`MAX_BODY`], and parsed into the values
//! the control plane takes. The body types are shared with the CLI, which sends them, so both sides agree on the
//! field names. Never acts on what it parses.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body;
use serde::{Deserialize, Serialize};

use crate::topology::changeover::PromoteRequest;
use crate::topology::gate::Direction;

/// Larger request bodies are refused (413): every body we take is a few dozen bytes of JSON.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("the request body is over {MAX_BODY} bytes")]
    TooLarge,
    #[error("cannot read the request body: {0}")]
    Read(String),
    #[error("bad request body: {0}")]
    Invalid(String),
}

/// The whole body, up to [`MAX_BODY`] bytes.
pub async fn read<B>(body: B) -> Result<Bytes, BodyError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(BodyError::TooLarge),
        Err(error) => Err(BodyError::Read(error.to_string())),
    }
}

/// `POST /pause`: `{"direction": "writes" | "reads" | "both"}`; an empty body means both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    #[serde(default)]
    pub direction: PauseDirection,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PauseDirection {
    Writes,
    Reads,
    #[default]
    Both,
}

impl PauseDirection {
    /// The gate directions to pause.
    pub fn directions(self) -> &'static [Direction] {
        match self {
            PauseDirection::Writes => &[Direction::Writes],
            PauseDirection::Reads => &[Direction::Reads],
            PauseDirection::Both => &[Direction::Writes, Direction::Reads],
        }
    }
}

impl PauseBody {
    pub fn parse(body: &[u8]) -> Result<PauseBody, BodyError> {
        if body.trim_ascii().is_empty() {
            return Ok(PauseBody::default());
        }
        json(body)
    }
}

/// `POST /promote`: only `instance` is required; the timeouts default to the changeover's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteBody {
    pub instance: String,
    #[serde(default)]
    pub repoint: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup_timeout_ms: Option<u64>,
}

impl PromoteBody {
    pub fn parse(body: &[u8]) -> Result<PromoteRequest, BodyError> {
        let body: PromoteBody = json(body)?;
        if body.instance.trim().is_empty() {
            return Err(BodyError::Invalid("\"instance\" must name a follower".into()));
        }
        let mut request = PromoteRequest::new(&body.instance);
        request.repoint = body.repoint;
        if let Some(ms) = body.drain_timeout_ms {
            request.drain_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = body.catchup_timeout_ms {
            request.catchup_timeout = Duration::from_millis(ms);
        }
        Ok(request)
    }
}

fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, BodyError> {
    serde_json::from_slice(body).map_err(|error| BodyError::Invalid(error.to_string()))
}

#[cfg(test)]
mod tests {
    use http_body_util::Full;

    use super::*;

    #[test]
    fn pause_defaults_to_both_directions() {
        assert_eq!(PauseBody::parse(b"").unwrap().direction, PauseDirection::Both);
        assert_eq!(PauseBody::parse(b" \n").unwrap().direction, PauseDirection::Both);
        assert_eq!(PauseBody::parse(b"{}").unwrap().direction, PauseDirection::Both);
        assert_eq!(
            PauseBody::parse(br#"{"direction": "writes"}"#).unwrap().direction,
            PauseDirection::Writes
        );
        assert_eq!(PauseDirection::Reads.directions(), [Direction::Reads]);
    }

    #[test]
    fn pause_rejects_unknown_directions_and_fields() {
        for bad in [&br#"{"direction": "up"}"#[..], br#"{"dir": "reads"}"#, b"reads", b"{"] {
            assert!(
                matches!(PauseBody::parse(bad), Err(BodyError::Invalid(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn promote_needs_only_the_instance() {
        let request = PromoteBody::parse(br#"{"instance": "f1"}"#).unwrap();
        assert_eq!(request, PromoteRequest::new("f1"));
        let request = PromoteBody::parse(
            br#"{"instance": "f2", "repoint": true, "drain_timeout_ms": 250, "catchup_timeout_ms": 1000}"#,
        )
        .unwrap();
        assert_eq!(request.instance, "f2");
        assert!(request.repoint);
        assert_eq!(request.drain_timeout, Duration::from_millis(250));
        assert_eq!(request.catchup_timeout, Duration::from_secs(1));
    }

    #[test]
    fn promote_rejects_a_missing_or_empty_instance_and_unknown_fields() {
        for bad in [
            &b""[..],
            b"{}",
            br#"{"instance": ""}"#,
            br#"{"instance": "f1", "force": true}"#,
            br#"{"instance": 7}"#,
        ] {
            assert!(
                matches!(PromoteBody::parse(bad), Err(BodyError::Invalid(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_cli_body_reads_back_as_the_same_request() {
        let sent = PromoteBody {
            instance: "f1".into(),
            repoint: true,
            drain_timeout_ms: Some(100),
            catchup_timeout_ms: None,
        };
        let request = PromoteBody::parse(&serde_json::to_vec(&sent).unwrap()).unwrap();
        assert_eq!(request.drain_timeout, Duration::from_millis(100));
        assert_eq!(request.catchup_timeout, PromoteRequest::new("f1").catchup_timeout);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused() {
        let small = Full::new(Bytes::from_static(b"{}"));
        assert_eq!(read(small).await, Ok(Bytes::from_static(b"{}")));
        let exact = Full::new(Bytes::from(vec![b' '; MAX_BODY]));
        assert_eq!(read(exact).await.map(|b| b.len()), Ok(MAX_BODY));
        let large = Full::new(Bytes::from(vec![b' '; MAX_BODY + 1]));
        assert_eq!(read(large).await, Err(BodyError::TooLarge));
    }
}
