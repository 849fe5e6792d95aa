"""The Novita API: a typed async client, its error tree, and the payload models.

``from monitor.novita import NovitaClient, RetryPolicy, NovitaError`` is the public surface;
see :mod:`monitor.novita.client`, :mod:`monitor.novita.errors`, :mod:`monitor.novita.models`.

The client's names are imported lazily, so that code which only needs the models (the rules, the
store) does not pull in httpx and tenacity by importing ``monitor.novita.models``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from monitor.novita.errors import (
    APIError,
    AuthenticationError,
    IncompleteListingError,
    InsufficientBalanceError,
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    NovitaError,
    OutcomeUnknownError,
    RateLimitedError,
    ResponseTooLargeError,
    ServerError,
    UnavailableError,
)
from monitor.novita.models import (
    AsyncTask,
    Balance,
    Cluster,
    CpuProduct,
    FixedTermBill,
    Instance,
    InstanceMetrics,
    MetricPoint,
    NetworkStorage,
    Product,
    TrainingTask,
    UsageBill,
    UserInfo,
)

__all__ = [
    "APIError",
    "AsyncTask",
    "AuthenticationError",
    "Balance",
    "Cluster",
    "CpuProduct",
    "FixedTermBill",
    "IncompleteListingError",
    "Instance",
    "InstanceMetrics",
    "InsufficientBalanceError",
    "InvalidRequestError",
    "MalformedResponseError",
    "MetricPoint",
    "NetworkStorage",
    "NotFoundError",
    "NovitaClient",
    "NovitaError",
    "OutcomeUnknownError",
    "Product",
    "RateLimitedError",
    "ResponseTooLargeError",
    "RetryPolicy",
    "ServerError",
    "TrainingTask",
    "UnavailableError",
    "UsageBill",
    "UserInfo",
    "parse_retry_after",
    "split_window",
]

_CLIENT_NAMES = frozenset({"NovitaClient", "RetryPolicy", "parse_retry_after", "split_window"})

if TYPE_CHECKING:
    from monitor.novita.client import NovitaClient, RetryPolicy, parse_retry_after, split_window


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from monitor.novita import client

        return getattr(client, name)
    raise AttributeError(f"module 'monitor.novita' has no attribute {name!r}")
