//! OpenAI-style error answers: `{"error":{"message":..,"type":..,"code":..}}`.
use http::{header, HeaderValue, Response, StatusCode};
use switchyard::RouteError;

use crate::body::GatewayBody;

/// An error the gateway answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) retry_after_s: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        )
    }

    pub(crate) fn retry_after(mut self, s: u64) -> Self {
        self.retry_after_s = Some(s.max(1));
        self
    }

    /// The JSON body.
    pub(crate) fn json(&self) -> String {
        serde_json::json!({
            "error": {"message": self.message, "type": self.kind, "code": self.code}
        })
        .to_string()
    }

    pub(crate) fn into_response(self) -> Response<GatewayBody> {
        let mut r = Response::new(GatewayBody::full(self.json()));
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(s) = self.retry_after_s {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }

    /// The answer to a request the router refused.
    pub(crate) fn from_route(e: RouteError, retry_after_s: u64) -> Self {
        let unavailable = |code, msg: &str| {
            Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", code, msg)
                .retry_after(retry_after_s)
        };
        match e {
            RouteError::TenantRateLimited => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limit_exceeded",
                "the tenant is over its token rate",
            )
            .retry_after(retry_after_s),
            RouteError::Saturated => unavailable(
                "overloaded",
                "every model server for this model is at capacity",
            ),
            RouteError::ConstraintsUnsatisfiable => unavailable(
                "slo_unsatisfiable",
                "no model server can meet the request's latency limit",
            ),
            RouteError::NoHealthyRoute => unavailable(
                "no_healthy_backend",
                "every model server for this model is ejected or paused",
            ),
            // NoCapableRoute, EmptyFleet, StaleRoute, and any obstacle a later core adds.
            _ => unavailable("no_backend", "no model server serves this model now"),
        }
    }
}
