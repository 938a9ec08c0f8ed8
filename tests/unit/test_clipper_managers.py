"""Clipper's container-manager keywords, mapped onto Schooner's managers (no engine needed:
constructing a manager does no I/O)."""

from __future__ import annotations

import pytest

from admin.clipper import (
    CLIPPER_DOCKER_LABEL,
    ClipperConnection,
    DockerContainerManager,
    KubernetesContainerManager,
    UnconnectedException,
)
from admin.exceptions import InvalidRequestError


def test_clippers_docker_keywords_become_schooners_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SCHOONER_DOCKER_NETWORK", raising=False)
    monkeypatch.delenv("SCHOONER_BASE_IMAGE", raising=False)
    cm = DockerContainerManager(
        cluster_name="c1",
        docker_ip_address="localhost",
        use_centralized_log=False,
        fluentd_port=24225,
        clipper_query_port=31337,
        clipper_management_port=31338,
        clipper_rpc_port=31339,
        redis_ip="10.1.2.3",
        redis_port=6380,
        prometheus_port=9091,
        extra_container_kwargs={"labels": {"team": "ml"}, "mem_limit": "1g"},
    )
    s = cm.settings
    assert (s.query_port, s.management_port, s.rpc_port) == (31337, 31338, 31339)
    assert s.redis_url == "redis://10.1.2.3:6380"
    assert not s.host_mode and s.network == "clipper_network"  # Clipper's default network
    assert cm.get_query_addr() == "127.0.0.1:31337"
    assert cm.get_admin_addr() == "127.0.0.1:31338" == cm.get_management_addr()
    assert cm.get_metric_addr() == "127.0.0.1:31337"  # the query frontend's /metrics
    assert cm.extra_container_kwargs == {"mem_limit": "1g"}
    assert cm.common_labels == {"team": "ml", CLIPPER_DOCKER_LABEL: "c1"}
    assert (cm.cluster_name, cm.cluster_identifier, cm.centralize_log) == ("c1", "c1", False)
    assert (cm.prometheus_port, cm.redis_ip, cm.redis_port) == (9091, "10.1.2.3", 6380)


def test_the_host_network_and_the_base_image_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCHOONER_DOCKER_NETWORK", "host")
    monkeypatch.setenv("SCHOONER_BASE_IMAGE", "me/python:3.11")
    cm = DockerContainerManager(cluster_name="c2")
    assert cm.settings.host_mode and cm.docker_network == "host"
    assert cm.base_image == "me/python:3.11"
    # An argument wins over the environment; Clipper's refused "host", which works here.
    assert not DockerContainerManager(cluster_name="c3", docker_network="net").settings.host_mode
    assert DockerContainerManager(cluster_name="c4", base_image="b:1").base_image == "b:1"


def test_ports_that_coincide_are_refused_when_starting_not_when_made() -> None:
    # Clipper's test utilities make a manager with random ports only to stop a cluster.
    cm = DockerContainerManager(cluster_name="c5", clipper_management_port=40000, redis_port=40000)
    with pytest.raises(InvalidRequestError, match="both 40000"):
        cm.start_cluster()


def test_clippers_kubernetes_keywords_become_schooners_settings() -> None:
    cm = KubernetesContainerManager(
        cluster_name="k1",
        kubernetes_proxy_addr=None,
        redis_ip="10.0.0.5",
        redis_port=6379,
        useInternalIP=True,
        namespace="default",
        service_types={"query": "NodePort", "redis": "ClusterIP"},
        create_namespace_if_not_exists=True,
        registry="localhost:5000",
    )
    assert cm.settings.namespace == "default"
    assert cm.settings.service_type == "NodePort"
    assert cm.settings.redis_url == "redis://10.0.0.5:6379"
    assert cm.registry == "localhost:5000"
    assert cm.get_admin_addr() == cm.get_management_addr()


def test_a_connection_needs_start_clipper_or_connect_first() -> None:
    conn = ClipperConnection(DockerContainerManager(cluster_name="c6"))
    for call in (
        conn.get_all_apps,
        lambda: conn.register_application("a", "doubles", "-1", 1000),
        conn.get_query_addr,
        conn.get_clipper_logs,
    ):
        with pytest.raises(UnconnectedException):
            call()
