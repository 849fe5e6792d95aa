"""The :class:`Store` facade: the union of the repository mixins, over one engine."""

from __future__ import annotations

from monitor.store.alerting import AlertingRepo
from monitor.store.ledger import LedgerRepo
from monitor.store.metrics import MetricsRepo
from monitor.store.money import MoneyRepo
from monitor.store.problems import DataProblemsRepo
from monitor.store.progress import ProgressRepo
from monitor.store.repo import InstancesRepo
from monitor.store.reports import ReportsRepo
from monitor.store.tasks import TasksRepo


class Store(
    InstancesRepo,
    MetricsRepo,
    MoneyRepo,
    TasksRepo,
    AlertingRepo,
    DataProblemsRepo,
    LedgerRepo,
    ProgressRepo,
    ReportsRepo,
):
    """Every repository function of the store (see the package docstring for the list).

    Build it with :func:`monitor.store.open_store`, which migrates the database first.
    """
