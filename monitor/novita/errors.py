"""Errors of the Novita API client, one tree, mapped at the boundary.

NovitaError
└── APIError(status, reason, message, path)   a call to the API failed
    ├── AuthenticationError      MISSING_API_KEY, INVALID_API_KEY, FAILED_TO_AUTH, UNAUTHORIZED,
    │                            FORBIDDEN, ...; or HTTP 401/403 with an unknown reason
    ├── NotFoundError            RESOURCE_NOT_FOUND, TASK_NOT_FOUND, API_NOT_FOUND, ...; or 404
    ├── InsufficientBalanceError BALANCE_NOT_ENOUGH, NOT_ENOUGH_BALANCE, BILLING_BALANCE_NOT_ENOUGH,
    │                            EXPIRED_OR_BALANCE_NOT_ENOUGH
    ├── RateLimitedError         RATE_LIMIT_EXCEEDED, LIST_BILL_TOO_FAST, SEND_CODE_TOO_FAST,
    │                            TOKEN_LIMIT_EXCEEDED; or 429 (carries ``retry_after`` seconds)
    ├── InvalidRequestError      other business reasons (the API answers most of them with 400);
    │                            or any other 4xx
    ├── ServerError              UNKNOWN, LIST_BILL_ERROR, BILLING_FAILED, ...; or 5xx
    ├── UnavailableError         SERVICE_NOT_AVAILABLE / 503; connection failures and timeouts
    │                            of a read request after its retries (``status`` is None then)
    ├── OutcomeUnknownError      an action (POST) whose result is unknown: a 5xx or a read timeout
    │                            after the request was sent; never retried, the caller reconciles
    ├── MalformedResponseError   a 2xx body that is not JSON or does not parse into the model
    │   └── IncompleteListingError   a listing whose pages hold fewer items than its ``total``
    └── ResponseTooLargeError    an answer over the client's size cap, refused before it was
                                 read whole (never retried: it would be as large again)

An action (POST) answered 2xx is a success only when its body carries no error: a body with a
non-empty ``reason``, a non-empty ``error`` or a non-zero ``code`` (wire-format §7.7) raises the
error it names, mapped as above (by ``reason``; else by ``code`` when it is an HTTP status, as
in the kratos envelope; else :class:`InvalidRequestError`), with ``status`` the 2xx received.
A server error so named (``UNKNOWN``, a ``code`` of 5xx) on a POST is an
:class:`OutcomeUnknownError`, as a 5xx would be. Every :class:`APIError` built from an answer
keeps the answer's body in ``answer`` (a dict, the key scrubbed) for the action ledger.

Why by ``reason`` first: the GPU API answers nearly every business error with HTTP 400, even
"not found" and "balance not enough" (wire-format §1.6), so the status alone says little. An
unknown reason, or a body that is not the ``{code, reason, message, metadata}`` envelope, falls back
on the HTTP status.

No error ever contains the API key: the client never puts request headers into an error, and
:func:`redact` scrubs the key from any server message before it is stored.
"""

from __future__ import annotations

from typing import Any


class NovitaError(Exception):
    """Root of every error raised by :mod:`monitor.novita`."""


class APIError(NovitaError):
    """A call to the Novita API failed.

    ``status`` is the HTTP status (None when no response arrived), ``reason`` the envelope's
    UPPER_SNAKE token (None when the body had none), ``message`` a human text, ``path`` the
    request path (no query string, no host), ``answer`` the body received (a JSON object, or
    ``{"raw": text}``; the API key scrubbed; None when no answer arrived).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str | None = None,
        path: str | None = None,
        method: str | None = None,
        answer: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.path = path
        self.method = method
        self.answer = answer
        super().__init__(message)

    def __str__(self) -> str:
        where = f"{self.method} {self.path}" if self.method else (self.path or "?")
        parts = [where]
        if self.status is not None:
            parts.append(str(self.status))
        if self.reason:
            parts.append(self.reason)
        return f"{' '.join(parts)}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, reason={self.reason!r}, "
            f"message={self.message!r}, path={self.path!r})"
        )


class AuthenticationError(APIError):
    """The key is missing, wrong or not allowed to do this: a person must fix the config."""


class NotFoundError(APIError):
    """The instance, task or endpoint does not exist (often answered with HTTP 400)."""


class InsufficientBalanceError(APIError):
    """The account cannot pay (renewal, conversion, start): ``BALANCE_NOT_ENOUGH`` and its
    kin. Nothing was charged; retrying before a top-up fails the same way."""


class RateLimitedError(APIError):
    """Too many requests. ``retry_after`` is the server's hint in seconds, if it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class InvalidRequestError(APIError):
    """The API rejected the request's parameters or the operation in this state."""


class ServerError(APIError):
    """The platform failed (5xx, ``UNKNOWN``)."""


class UnavailableError(APIError):
    """The platform could not be reached or said it is unavailable, after retries.

    ``not_sent`` is True when the request certainly never reached the server (connect error,
    connect or pool timeout): only then may an action be retried.
    """

    def __init__(self, message: str, *, not_sent: bool = False, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.not_sent = not_sent


class OutcomeUnknownError(APIError):
    """An action was sent but its result is unknown (5xx or read timeout on a POST).

    Never retried by the client: repeating a renew costs money. The caller checks the resource's
    state and reconciles its ledger. ``underlying`` is the mapped error of the response, if any.
    """

    def __init__(self, message: str, *, underlying: APIError | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.underlying = underlying


class MalformedResponseError(APIError):
    """A 2xx answer whose body is not JSON or does not have the documented shape."""


class IncompleteListingError(MalformedResponseError):
    """A paginated listing whose pages hold fewer items than the ``total`` it announced (an item
    that arrived but did not parse counts as received): what is missing is unknown, so the
    listing cannot stand for the whole account."""


class ResponseTooLargeError(APIError):
    """An answer larger than the client's cap (``limit`` bytes), refused as soon as that was
    known: from its ``Content-Length``, else once that many bytes had arrived. Never retried
    (the same request would bring the same answer); a caller that can ask for less (a shorter
    bills window) does so."""

    def __init__(self, message: str, *, limit: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.limit = limit


# ---------------------------------------------------------------------------------------------
# Mapping tables (reference.txt error tables + wire-format §1.6)

AUTH_REASONS = frozenset(
    {
        "MISSING_API_KEY",
        "INVALID_API_KEY",
        "FAILED_TO_AUTH",
        "UNAUTHORIZED",
        "FORBIDDEN",
        "ACCESS_DENY",
        "API_NOT_ALLOWED",
        "BILLING_AUTH_FAILED",
        "INVALID_USER_TOKEN",
        "GET_TOKEN_FAILED",
        "BANNED_USER",
    }
)
NOT_FOUND_REASONS = frozenset(
    {
        "RESOURCE_NOT_FOUND",
        "TASK_NOT_FOUND",
        "API_NOT_FOUND",
        "MODEL_NOT_FOUND",
        "USER_NOT_FOUND",
        "ORDER_NOT_FOUND",
        "INSTANCE_LOCAL_STORAGE_NOT_FOUND",
        "NETWORK_STORAGE_NOT_FOUND",
        "IMAGE_NOT_FOUND",
        "NETWORK_NOT_FOUND",
        "JOB_NOT_FOUND",
        "SERVERLESS_ENDPOINT_NOT_FOUND",
        "SERVERLESS_WORKER_NOT_FOUND",
        "SERVERLESS_PRODUCT_NOT_FOUND",
        "TEMPLATE_NOT_FOUND",
    }
)
BALANCE_REASONS = frozenset(
    {
        "BALANCE_NOT_ENOUGH",
        "NOT_ENOUGH_BALANCE",
        "BILLING_BALANCE_NOT_ENOUGH",
        "EXPIRED_OR_BALANCE_NOT_ENOUGH",
    }
)
RATE_LIMIT_REASONS = frozenset(
    {"RATE_LIMIT_EXCEEDED", "LIST_BILL_TOO_FAST", "SEND_CODE_TOO_FAST", "TOKEN_LIMIT_EXCEEDED"}
)
SERVER_REASONS = frozenset(
    {
        "UNKNOWN",
        "LIST_BILL_ERROR",
        "BILLING_FAILED",
        "CREATE_TASK_FAILED",
        "GET_RESULT_FAILED",
        "TASK_FAILED",
        "WALLET_NOT_FOUND",
    }
)
UNAVAILABLE_REASONS = frozenset({"SERVICE_NOT_AVAILABLE"})
INVALID_REQUEST_REASONS = frozenset(
    {
        "INVALID_REQUEST_BODY",
        "IMAGE_FILE_EXCEEDS_MAX_SIZE",
        "INVALID_IMAGE_FORMAT",
        "IMAGE_EXCEEDS_MAX_RESOLUTION",
        "INVALID_IMAGE_SIZE",
        "IMAGE_NO_FACE_DETECTED",
        "INVALID_CUSTOM_OUTPUT_PATH",
        "ILLEGAL_PROMPT",
        "ILLEGAL_IMAGE_CONTENT",
        "INVALID_AUDIO_FILE",
        "FEATURE_NOT_ALLOWED",
        "NEED_REAL_NAME_VERIFY",
        "USER_ALREADY_EXISTS",
        "INVALID_USER_OR_PASSWORD",
        "INVALID_CODE",
        "USER_PHONE_NOT_CONSIST",
        "INVALID_PUBLIC_KEY",
        "USER_NOT_ACTIVATED",
        "USER_ALREADY_ACTIVATED",
        "CONFLICT",
        "VALIDATOR_PARAM",
        "REQUEST",
        "OPERATION_LIMIT",
        "INSUFFICIENT_RESOURCE",
        "CLUSTER_STATUS",
        "NODE_STATUS",
        "DEPENDENT_RESOURCE_STATE",
        "PREPAID_INSTANCE_NOT_SUPPORT_RELEASE",
        "CREATING_INSTANCE_NOT_SUPPORT_RENEWAL",
        "INVALID_COMMAND_PARAM",
        "GPU_SPEC_USED",
        "INCORRECT_USER_SYNCER_REQUIRE_PARAMS",
        "MIGRATE_INSUFFICIENT_RESOURCE",
        "WALLET_UNSUPPORT_RECHARGE_METHOD",
        "UNSUPPORTED_BILLING_MODE",
        "SAVING_PLAN_ALREADY_EXISTS",
        "CREATE_INSTANCE_LIMIT",
        "NETWORK_STORAGE_TOO_LARGE",
        "CUR_CLUSTER_NETWORK_STORAGE_NOT_SUPPORT",
        "NETWORK_STORAGE_IN_USE",
        "NETWORK_STORAGE_UNAVAILABLE",
        "IMAGE_AUTH_IN_USE",
        "NETWORK_IN_USE",
        "NETWORK_MAX_LIMIT",
        "SEND_MSG_ERROR",
        "SERVERLESS_APP_NAME_IS_EXIST",
        "TEMPLATE_IS_PRIVATE",
        "INVALID_PRODUCT_CATEGORY",
        "INVALID_BILL_CYCLE",
    }
)

#: reason -> exception class; the single table the client maps through.
REASON_TO_ERROR: dict[str, type[APIError]] = {
    **dict.fromkeys(AUTH_REASONS, AuthenticationError),
    **dict.fromkeys(NOT_FOUND_REASONS, NotFoundError),
    **dict.fromkeys(BALANCE_REASONS, InsufficientBalanceError),
    **dict.fromkeys(RATE_LIMIT_REASONS, RateLimitedError),
    **dict.fromkeys(SERVER_REASONS, ServerError),
    **dict.fromkeys(UNAVAILABLE_REASONS, UnavailableError),
    **dict.fromkeys(INVALID_REQUEST_REASONS, InvalidRequestError),
}


def error_class_for_status(status: int) -> type[APIError]:
    """The fallback when the reason is unknown or absent."""
    if status in (401, 403):
        return AuthenticationError
    if status == 404:
        return NotFoundError
    if status == 429:
        return RateLimitedError
    if status == 503:
        return UnavailableError
    if status >= 500:
        return ServerError
    if 400 <= status < 500:
        return InvalidRequestError
    return APIError


def error_class_for(reason: str | None, status: int) -> type[APIError]:
    """Reason first (documented envelope), then HTTP status."""
    if reason:
        cls = REASON_TO_ERROR.get(reason.strip().upper())
        if cls is not None:
            return cls
    return error_class_for_status(status)


def redact(text: str, secret: str | None) -> str:
    """Remove ``secret`` from ``text`` (a server may echo the key it rejected)."""
    if secret and len(secret) >= 4 and secret in text:
        return text.replace(secret, "***")
    return text


def redact_json(value: Any, secret: str | None) -> Any:
    """``value`` (decoded JSON) with ``secret`` removed from every string in it."""
    if isinstance(value, str):
        return redact(value, secret)
    if isinstance(value, dict):
        return {redact(str(k), secret): redact_json(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v, secret) for v in value]
    return value
