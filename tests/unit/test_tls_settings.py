"""TLS settings without a server: both frontends' flags (and their environment
fallbacks), the local manager's arguments and URLs, and the CA the admin client loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from ports import cluster_ports

from admin import ContainerManagerError, InvalidRequestError, LocalContainerManager
from admin._http import tls_context
from management_frontend.cli import parse_config
from query_frontend.__main__ import parse_args


def test_the_management_frontend_takes_a_certificate_and_key_by_flag_or_environment() -> None:
    secrets = ["--secrets-dir", "/s"]
    config = parse_config([*secrets, "--tls-certfile", "/c.pem", "--tls-keyfile", "/k.pem"], env={})
    assert (config.tls_certfile, config.tls_keyfile, config.scheme) == ("/c.pem", "/k.pem", "https")
    env = {"SCHOONER_TLS_CERTFILE": "/e.pem", "SCHOONER_TLS_KEYFILE": "/ek.pem"}
    assert parse_config(secrets, env=env).tls_certfile == "/e.pem"
    assert parse_config(secrets, env={}).scheme == "http"


def test_the_query_frontend_takes_a_certificate_and_key_by_flag_or_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = parse_args(["--tls-certfile", "/c.pem", "--tls-keyfile", "/k.pem"])
    assert (config.tls_certfile, config.tls_keyfile) == ("/c.pem", "/k.pem")
    assert parse_args([]).tls_certfile is None
    monkeypatch.setenv("SCHOONER_TLS_CERTFILE", "/e.pem")
    monkeypatch.setenv("SCHOONER_TLS_KEYFILE", "/ek.pem")
    assert parse_args([]).tls_keyfile == "/ek.pem"


def test_a_certificate_without_its_key_is_a_usage_error_on_both_frontends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as management:
        parse_config(["--tls-certfile", "/c.pem"], env={})
    with pytest.raises(SystemExit) as query:
        parse_args(["--tls-keyfile", "/k.pem"])
    assert management.value.code == query.value.code == 2
    err = capsys.readouterr().err
    assert err.count("--tls-certfile and --tls-keyfile") == 2


def test_the_local_manager_serves_https_when_given_a_certificate(tmp_path: Path) -> None:
    cm = LocalContainerManager(
        data_dir=tmp_path, tls_certfile="c.pem", tls_keyfile="k.pem", tls_ca="ca.pem"
    )
    assert cm.management_url == "https://127.0.0.1:1338"
    assert cm.query_url == "https://127.0.0.1:1337"
    # Absolute: the frontends run with the data dir as their working directory.
    assert cm.tls_certfile == str(Path.cwd() / "c.pem")
    assert cm.tls_ca == str(Path.cwd() / "ca.pem")
    assert LocalContainerManager(data_dir=tmp_path).management_url == "http://127.0.0.1:1338"
    with pytest.raises(InvalidRequestError, match="tls_certfile= and tls_keyfile= together"):
        LocalContainerManager(data_dir=tmp_path, tls_certfile="c.pem")


def test_a_ca_that_cannot_be_loaded_is_refused_with_the_fix(tmp_path: Path) -> None:
    assert tls_context(None) is True  # the system's trust store, never "off"
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    for ca in (tmp_path / "missing.pem", tmp_path / "bad.pem"):
        with pytest.raises(InvalidRequestError, match="tls_ca="):
            tls_context(str(ca))


def test_start_refuses_a_certificate_it_cannot_read_before_starting_anything(
    tmp_path: Path,
) -> None:
    cm = LocalContainerManager(
        data_dir=tmp_path / "data",
        tls_certfile=tmp_path / "missing.pem",
        tls_keyfile=tmp_path / "missing.key",
        **cluster_ports(),
    )
    with pytest.raises(ContainerManagerError, match=r"tls_certfile=.*missing\.pem.*cannot be read"):
        cm.start_cluster()
    assert cm.processes() == []
