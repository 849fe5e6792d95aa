"""The ``http:`` section (issue 11 §3): on by default at 127.0.0.1:9464, ``http: false`` off,
``listen: HOST:PORT`` checked with errors that name the file, the line and what is expected."""

from __future__ import annotations

import pytest

from monitor.config import Config, split_listen
from monitor.errors import ConfigError

BASE = "accounts:\n  - name: main\n    api_key_env: K\ndatabase: sqlite:////tmp/x.db\n"


def load(extra: str) -> Config:
    return Config.from_yaml(BASE + extra, "f.yaml", env={"K": "v"})


@pytest.mark.parametrize(
    ("extra", "address"),
    [
        ("", ("127.0.0.1", 9464)),
        ("http: true\n", ("127.0.0.1", 9464)),
        ("http: {listen: '0.0.0.0:9464'}\n", ("0.0.0.0", 9464)),
        ("http: {listen: 'localhost:0'}\n", ("localhost", 0)),
        ("http: {listen: '[::1]:9100'}\n", ("::1", 9100)),
    ],
)
def test_where_the_endpoint_listens(extra: str, address: tuple[str, int]) -> None:
    http = load(extra).http
    assert http is not None and http.address == address


def test_http_false_switches_it_off() -> None:
    config = load("http: false\n")
    assert config.http is None
    assert config.describe()["http"] is False


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("http:\n  listen: 127.0.0.1\n", "f.yaml:6: http.listen: '127.0.0.1' is not HOST:PORT"),
        ("http:\n  listen: ':9464'\n", "f.yaml:6: http.listen: ':9464' is not HOST:PORT"),
        ("http:\n  listen: 'x:70000'\n", "f.yaml:6: http.listen: 'x:70000': port 70000 is out"),
        ("http:\n  listen: '::1:9464'\n", "f.yaml:6: http.listen: '::1:9464': write an IPv6"),
        ("http:\n  listen: 'a b:1'\n", "f.yaml:6: http.listen: 'a b:1': 'a b' is not a host"),
        ("http:\n  port: 9464\n", "f.yaml:6: http.port: unknown key (expected one of: listen)"),
        ("http:\n", "f.yaml:5: http: empty (expected http: {listen: HOST:PORT}, or http: false"),
    ],
)
def test_a_bad_http_section_names_its_line_and_what_is_expected(extra: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(extra)
    assert any(str(p).startswith(expected) for p in caught.value.problems), caught.value.problems


def test_split_listen_says_what_is_expected() -> None:
    with pytest.raises(ValueError, match=r"expected HOST:PORT, e\.g\. 127\.0\.0\.1:9464"):
        split_listen("9464")
