"""A local cluster started with TLS: both HTTP frontends serve HTTPS with a certificate
from a CA made here (``trustme``), and every client verifies it.

The notebook flow runs unchanged against it once the manager is given the CA; plain
HTTP to either port gets no answer; a client that does not trust the CA is refused with
``TLSVerificationError``, whose message says to pass the CA.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from admin import (
    Connection,
    LocalContainerManager,
    QueryClient,
    ServiceUnavailableError,
    TLSVerificationError,
)
from admin._http import ManagementClient
from admin.deployers.python import deploy_python_closure

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


class Certs:
    """The files of a CA and of the frontends' certificate (for 127.0.0.1 and localhost)."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = root / "ca.pem"
        self.cert_file = root / "server.pem"
        self.key_file = root / "server.key"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        cert.cert_chain_pems[0].write_to_path(str(self.cert_file))
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(str(self.cert_file), append=True)
        cert.private_key_pem.write_to_path(str(self.key_file))
        self.key_file.chmod(0o600)

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls-cluster")


@pytest.fixture(scope="module")
def conn(
    certs: Certs, data_dir: Path, cluster_ports: Callable[[], dict[str, int]]
) -> Iterator[Connection]:
    cm = LocalContainerManager(
        data_dir=data_dir,
        tls_certfile=certs.cert_file,
        tls_keyfile=certs.key_file,
        tls_ca=certs.ca_file,
        **cluster_ports(),
    )
    c = Connection(cm)
    c.start()
    try:
        yield c
    finally:
        c.stop_all()


def test_the_notebook_flow_runs_over_https_verified_by_the_ca(
    conn: Connection, certs: Certs
) -> None:
    assert conn.cm.management_url.startswith("https://127.0.0.1:")
    assert conn.cm.query_url.startswith("https://127.0.0.1:")
    conn.register_application("secure", "doubles", -1, 2_000_000)
    deploy_python_closure(conn, "sum", "1", "doubles", lambda xs: [sum(x) for x in xs])
    conn.link_model_to_app("secure", "sum")
    assert "sum:1" in conn.get_all_models()

    with httpx.Client(verify=certs.context()) as client:
        r = client.post(f"{conn.cm.query_url}/secure/predict", json={"input": [1.0, 2.0]})
    assert r.status_code == 200, r.text
    assert r.json()["output"] == 3.0
    assert r.json()["default"] is False


def test_a_query_client_of_the_connection_predicts_over_https_with_its_ca(
    conn: Connection,
) -> None:
    conn.register_application("secure-client", "doubles", "none", 50_000, exist_ok=True)
    with QueryClient.for_connection(conn) as client:
        assert client.base_url.startswith("https://")
        assert client.predict("secure-client", [1.0]).output == "none"
    with (
        QueryClient(conn.get_query_addr(), max_retries=0) as plain,
        pytest.raises(ServiceUnavailableError, match="broke before an answer"),
    ):
        plain.predict("secure-client", [1.0])  # plain HTTP to an HTTPS port gets no answer


def test_plain_http_to_either_port_gets_no_answer(conn: Connection) -> None:
    for addr in (conn.get_query_addr(), conn.get_management_addr()):
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{addr}/healthz", timeout=5)


def test_a_client_that_does_not_trust_the_ca_is_refused_saying_to_pass_it(
    conn: Connection, data_dir: Path, tmp_path: Path
) -> None:
    # No CA: the system's trust store does not know the test CA.
    with (
        ManagementClient(conn.cm.management_url) as client,
        pytest.raises(TLSVerificationError) as exc,
    ):
        client.list_apps()
    assert exc.value.code == "tls"
    assert "tls_ca=" in str(exc.value)
    assert "unable to get local issuer certificate" in str(exc.value)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.post(f"{conn.cm.query_url}/secure/predict", json={"input": [1.0]}, timeout=5)

    # Another process attaching with a CA that did not sign the frontends' certificate.
    other = Certs(tmp_path / "other")
    stranger = Connection(LocalContainerManager(data_dir=data_dir, tls_ca=other.ca_file))
    with pytest.raises(TLSVerificationError, match="tls_ca="):
        stranger.connect()
    assert not stranger.connected


def test_another_process_attaches_over_https_with_the_ca_the_cluster_was_started_with(
    conn: Connection, data_dir: Path
) -> None:
    conn.register_application("attached", "doubles", -1, 2_000_000)
    with Connection(LocalContainerManager(data_dir=data_dir)) as other:
        other.connect()
        assert other.cm.management_url == conn.cm.management_url
        assert "attached" in other.get_all_apps()


def test_start_with_a_ca_that_did_not_sign_the_certificate_fails_at_once_and_cleans_up(
    certs: Certs, tmp_path: Path, cluster_ports: Callable[[], dict[str, int]]
) -> None:
    other = Certs(tmp_path / "other")
    cm = LocalContainerManager(
        data_dir=tmp_path / "data",
        tls_certfile=certs.cert_file,
        tls_keyfile=certs.key_file,
        tls_ca=other.ca_file,
        start_timeout=120,
        **cluster_ports(),
    )
    with pytest.raises(TLSVerificationError, match="tls_ca="):
        Connection(cm).start()
    assert not any(p["running"] for p in cm.processes())
