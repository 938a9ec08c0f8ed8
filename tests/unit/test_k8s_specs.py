"""What the Kubernetes manager's objects contain, and how it reads pods back, without a
cluster: labels and selectors, probes and resources, how frontends and model pods find
each other, names that stay DNS labels, and the states a pod can be in."""

from __future__ import annotations

import re
from typing import Any

import pytest
from kubernetes.client import (
    V1Container,
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStateTerminated,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1LoadBalancerIngress,
    V1LoadBalancerStatus,
    V1Node,
    V1NodeAddress,
    V1NodeCondition,
    V1NodeStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
    V1PodStatus,
    V1ResourceRequirements,
    V1Service,
    V1ServicePort,
    V1ServiceSpec,
    V1ServiceStatus,
)

from admin import InvalidRequestError
from admin.container_managers import _k8s_specs as specs
from admin.container_managers import _k8s_status as readback
from admin.container_managers._k8s_specs import KubeSettings, dns_label, to_json

IMAGE = "registry.example.com/schooner/frontend:abc"
MODEL_IMAGE = "registry.example.com/schooner/model-iris:1-abc"
DIGEST = "ab" * 32
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def settings(**kw: Any) -> KubeSettings:
    return KubeSettings("prod", namespace="ml", **kw)


def model(s: KubeSettings | None = None, **kw: Any) -> Any:
    s = s or settings()
    args = {
        "name": "iris",
        "version": "1",
        "input_type": "doubles",
        "bundle_sha256": DIGEST,
        "replicas": 2,
    }
    return s.replica_deployment(MODEL_IMAGE, **{**args, **kw})


def all_objects(s: KubeSettings) -> list[Any]:
    return [
        s.redis_service(),
        s.redis_stateful_set("redis:7"),
        s.management_deployment(IMAGE),
        s.management_service(),
        s.query_deployment(IMAGE),
        s.query_service(),
        s.query_rpc_service(),
        model(s),
    ]


def env(container: Any) -> dict[str, Any]:
    return {
        e.name: e.value if e.value_from is None else e.value_from.field_ref.field_path
        for e in container.env
    }


def arg(container: Any, flag: str) -> str:
    return str(container.args[container.args.index(flag) + 1])


# --------------------------------------------------------------------------- labels


def test_every_object_carries_the_recommended_labels_and_the_clusters() -> None:
    for obj in all_objects(settings()):
        labels = obj.metadata.labels
        assert labels["app.kubernetes.io/name"] == "schooner"
        assert labels["app.kubernetes.io/instance"] == "prod"
        assert labels["app.kubernetes.io/part-of"] == "schooner"
        assert labels["app.kubernetes.io/managed-by"] == "schooner"
        assert labels["app.kubernetes.io/component"] in specs.COMPONENTS.values()
        assert labels["schooner.io/cluster"] == "prod"
        assert labels["schooner.io/role"] in specs.ROLES
        assert obj.metadata.namespace == "ml"
        assert DNS_LABEL.match(obj.metadata.name), obj.metadata.name


def test_workloads_select_their_own_pods_and_services_the_pods_of_their_role() -> None:
    s = settings()
    workloads = [o for o in all_objects(s) if o.kind in ("Deployment", "StatefulSet")]
    pods = {}
    for w in workloads:
        template = w.spec.template.metadata.labels
        assert w.spec.selector.match_labels.items() <= template.items()
        assert w.metadata.labels == template
        pods[w.metadata.name] = template
    for svc in (o for o in all_objects(s) if o.kind == "Service"):
        chosen = [n for n, labels in pods.items() if svc.spec.selector.items() <= labels.items()]
        assert len(chosen) == 1, (svc.metadata.name, chosen)
    # Versions of one model never select each other's pods.
    one, two = model(version="1"), model(version="2")
    assert not one.spec.selector.match_labels.items() <= two.spec.template.metadata.labels.items()


def test_a_model_version_is_labelled_with_its_model_version_and_input_type() -> None:
    deployment = model()
    assert deployment.metadata.name == "schooner-prod-iris-1"
    assert deployment.spec.selector.match_labels == {
        "schooner.io/cluster": "prod",
        "schooner.io/role": "replica",
        "schooner.io/model": "iris",
        "schooner.io/version": "1",
    }
    assert deployment.spec.template.metadata.labels["schooner.io/input-type"] == "doubles"
    assert settings().label_selector("replica", **KubeSettings.model_labels("iris", "1")) == (
        "schooner.io/cluster=prod,schooner.io/role=replica,schooner.io/model=iris,"
        "schooner.io/version=1"
    )


# --------------------------------------------------------------------------- pods


def test_every_container_has_probes_resources_and_no_privileges() -> None:
    for obj in all_objects(settings()):
        if obj.kind not in ("Deployment", "StatefulSet"):
            continue
        pod = obj.spec.template.spec
        assert pod.security_context.run_as_non_root is True
        assert pod.security_context.run_as_user == specs.USER_ID
        assert pod.automount_service_account_token is False
        for c in pod.containers:
            assert c.readiness_probe is not None, c.name
            assert c.resources.requests["cpu"] and c.resources.requests["memory"], c.name
            assert c.resources.limits["memory"], c.name
            assert c.security_context.allow_privilege_escalation is False
            assert c.security_context.capabilities.drop == ["ALL"]
            assert c.image_pull_policy == "IfNotPresent"  # tags are content hashes
            if obj.metadata.labels["schooner.io/role"] != "replica":
                assert c.liveness_probe is not None, c.name


def test_frontends_are_ready_when_healthz_answers_and_alive_while_they_listen() -> None:
    s = settings()
    for deployment in (s.management_deployment(IMAGE), s.query_deployment(IMAGE)):
        (c,) = deployment.spec.template.spec.containers
        assert c.readiness_probe.http_get.path == "/healthz"
        assert c.readiness_probe.http_get.port == "http"
        assert c.liveness_probe.tcp_socket.port == "http"


def test_redis_requires_the_password_from_its_secret_not_argv() -> None:
    sts = settings().redis_stateful_set("redis:7")
    (c,) = sts.spec.template.spec.containers
    assert c.command[:2] == ["redis-server", "/run/schooner/redis/redis.conf"]
    assert "--protected-mode" not in c.command and "--requirepass" not in c.command
    assert c.env is None  # the password is in no environment variable either
    mount = next(m for m in c.volume_mounts if m.mount_path == "/run/schooner/redis")
    assert mount.read_only is True
    (volume,) = [v for v in sts.spec.template.spec.volumes if v.name == mount.name]
    assert volume.secret.secret_name == "schooner-prod-redis-config"
    assert volume.secret.default_mode == 0o440
    # Ready when it answers, which without the password is NOAUTH.
    assert "NOAUTH" in c.readiness_probe.var_exec.command[-1]


def test_frontends_mount_their_secret_read_only_and_are_told_where() -> None:
    s = settings()
    for deployment in (s.management_deployment(IMAGE), s.query_deployment(IMAGE)):
        pod = deployment.spec.template.spec
        (volume,) = pod.volumes
        assert volume.secret.secret_name == "schooner-prod-frontend-secrets"
        (c,) = pod.containers
        (mount,) = c.volume_mounts
        assert (mount.mount_path, mount.read_only) == ("/run/schooner/secrets", True)
        assert env(c)["SCHOONER_SECRETS_DIR"] == "/run/schooner/secrets"


def test_redis_keeps_an_append_only_file_on_a_claim_that_outlives_it() -> None:
    sts = settings(redis_storage="5Gi", storage_class="fast").redis_stateful_set("redis:7")
    (c,) = sts.spec.template.spec.containers
    assert c.command[c.command.index("--appendonly") + 1] == "yes"
    assert c.volume_mounts[0].mount_path == "/data"
    (claim,) = sts.spec.volume_claim_templates
    assert claim.spec.resources.requests == {"storage": "5Gi"}
    assert claim.spec.storage_class_name == "fast"
    assert sts.spec.persistent_volume_claim_retention_policy.when_deleted == "Retain"
    assert "redis-cli ping" in " ".join(c.readiness_probe.var_exec.command)


def test_frontends_reach_redis_by_its_service_or_the_external_url() -> None:
    q = settings().query_deployment(IMAGE).spec.template.spec.containers[0]
    assert arg(q, "--redis-url") == "redis://schooner-prod-redis:6379/0"
    m = settings(redis_url="redis://r:6379/1").management_deployment(IMAGE)
    assert arg(m.spec.template.spec.containers[0], "--redis-url") == "redis://r:6379/1"


def test_each_query_frontend_pod_is_named_by_its_pod_name() -> None:
    deployment = settings(query_replicas=4).query_deployment(IMAGE)
    assert deployment.spec.replicas == 4
    assert settings().query_deployment(IMAGE, autoscaled=True).spec.replicas is None
    (c,) = deployment.spec.template.spec.containers
    # The owner of its replica records in Redis: the pod's name, from the downward API.
    assert env(c)["SCHOONER_FRONTEND_ID"] == "metadata.name"
    assert "--frontend-id" not in c.args
    # Every address, so that `kubectl port-forward` reaches it too.
    assert (arg(c, "--host"), arg(c, "--port")) == ("0.0.0.0", "1337")
    assert (arg(c, "--rpc-host"), arg(c, "--rpc-port")) == ("0.0.0.0", "7000")
    assert {p.name: p.container_port for p in c.ports} == {"http": 1337, "rpc": 7000}
    strategy = deployment.spec.strategy.rolling_update
    assert (strategy.max_unavailable, strategy.max_surge) == (0, 1)


def test_a_query_frontend_pod_drains_before_it_goes() -> None:
    deployment = settings().query_deployment(IMAGE)
    pod = deployment.spec.template.spec
    (c,) = pod.containers
    # Still serving while the Service forgets it; a sleep the frontend's image can run.
    assert c.lifecycle.pre_stop.var_exec.command == ["python", "-c", "import time; time.sleep(5)"]
    # Then SIGTERM: /healthz answers 503 while it drains, so it is not ready.
    assert c.readiness_probe.http_get.path == "/healthz"
    # The grace covers the preStop wait, the frontend's drain (30 s) and its exit.
    assert pod.termination_grace_period_seconds >= 5 + 30
    assert "--drain-timeout" not in c.args
    slow = settings(drain_timeout=90).query_deployment(IMAGE)
    (c,) = slow.spec.template.spec.containers
    assert arg(c, "--drain-timeout") == "90"
    assert slow.spec.template.spec.termination_grace_period_seconds >= 5 + 90
    with pytest.raises(InvalidRequestError, match="drain_timeout"):
        settings(drain_timeout=0)


def test_a_model_versions_memory_limit_is_its_pods_limit_and_caps_the_request() -> None:
    def resources(**kw: Any) -> Any:
        d = settings().replica_deployment(
            IMAGE,
            name="m",
            version="1",
            input_type="doubles",
            bundle_sha256=DIGEST,
            replicas=1,
            **kw,
        )
        return d.spec.template.spec.containers[0].resources

    small = resources(memory_limit=256 * 2**20)
    assert small.limits["memory"] == "256Mi"
    assert small.requests["memory"] == "256Mi"  # the default request (512Mi) would exceed it
    assert small.requests["cpu"] == "250m"
    large = resources(memory_limit=8 * 2**30)
    assert (large.limits["memory"], large.requests["memory"]) == ("8Gi", "512Mi")
    odd = resources(memory_limit=100_000_000)
    assert odd.limits["memory"] == odd.requests["memory"] == "100000000"
    assert resources().limits["memory"] == "4Gi"  # none given: the role's default


def test_model_pods_find_every_query_frontend_pod_through_the_headless_service() -> None:
    s = settings()
    rpc = s.query_rpc_service()
    assert rpc.metadata.name == "schooner-prod-query-rpc"
    assert rpc.spec.cluster_ip == "None"
    assert rpc.spec.publish_not_ready_addresses is True
    assert rpc.spec.selector == {"schooner.io/cluster": "prod", "schooner.io/role": "query"}
    assert [(p.port, p.target_port) for p in rpc.spec.ports] == [(7000, "rpc")]
    (c,) = model(s).spec.template.spec.containers
    assert env(c) == {
        "SCHOONER_BUNDLE": "/opt/schooner/model",
        # The digest recorded in Redis: the pod refuses a bundle in the image that differs.
        "SCHOONER_BUNDLE_SHA256": DIGEST,
        "SCHOONER_MODEL_NAME": "iris",
        "SCHOONER_MODEL_VERSION": "1",
        "SCHOONER_INPUT_TYPE": "doubles",
        "SCHOONER_REPLICA_ID": "metadata.name",
        "SCHOONER_FRONTEND": "dns+tcp://schooner-prod-query-rpc.ml.svc.cluster.local:7000",
        "SCHOONER_METRICS_HOST": "0.0.0.0",
        "SCHOONER_METRICS_PORT": "9100",
        "SCHOONER_SECRETS_DIR": "/run/schooner/secrets",
    }
    assert c.command == ["python", "-m", "model_container"]
    assert c.image == MODEL_IMAGE
    assert c.readiness_probe.tcp_socket.port == "metrics"


def test_model_pods_run_the_model_container_alone() -> None:
    """One process per pod, no supervisor: nothing mounted but its credentials."""
    from model_container.discovery import parse_frontends

    pod = model().spec.template.spec
    (volume,) = pod.volumes
    assert volume.secret.secret_name == "schooner-prod-replica-secrets"
    (c,) = pod.containers
    (mount,) = c.volume_mounts
    assert (mount.name, mount.mount_path, mount.read_only) == (
        volume.name,
        "/run/schooner/secrets",
        True,
    )
    # What model_container makes of it: one name to resolve, no fixed address.
    targets = parse_frontends(env(c)["SCHOONER_FRONTEND"])
    assert targets.dns == (("schooner-prod-query-rpc.ml.svc.cluster.local", 7000),)
    assert targets.static == ()


def test_resources_and_pull_secrets_can_be_set_per_role() -> None:
    gpu = {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"nvidia.com/gpu": "1"}}
    s = settings(resources={"replica": gpu}, image_pull_secrets=("regcred",))
    pod = model(s).spec.template.spec
    assert pod.containers[0].resources.limits == {"nvidia.com/gpu": "1"}
    assert [r.name for r in pod.image_pull_secrets] == ["regcred"]
    query = s.query_deployment(IMAGE).spec.template.spec.containers[0]
    assert query.resources.requests == specs.DEFAULT_RESOURCES["query"]["requests"]


# --------------------------------------------------------------------------- names, settings


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("schooner", "prod", "iris", "1"), "schooner-prod-iris-1"),
        (("schooner", "prod", "iris", "2024-05-01"), "schooner-prod-iris-2024-05-01"),
    ],
)
def test_dns_names_are_kept_when_they_are_valid(parts: tuple[str, ...], expected: str) -> None:
    assert dns_label(*parts) == expected


def test_other_names_become_valid_and_stay_distinct() -> None:
    names = {
        dns_label("schooner", "prod", "iris", v) for v in ("V1", "v1", "v_1", "v.1", "v-1", "1")
    }
    assert len(names) == 6
    long = [dns_label("schooner", "c" * 63, "m" * 63, v) for v in ("1", "2")]
    assert long[0] != long[1]
    for name in [*names, *long]:
        assert DNS_LABEL.match(name) and len(name) <= 63, name


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"service_type": "Ingress"}, "ClusterIP, NodePort, LoadBalancer"),
        ({"query_replicas": 0}, ">= 1"),
        ({"query_port": 70000}, "1..65535"),
        ({"resources": {"frontend": {}}}, "unknown role"),
    ],
)
def test_bad_settings_say_what_is_allowed(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        settings(**kw)


def test_objects_serialise_as_the_api_servers_json() -> None:
    doc = to_json(settings().query_rpc_service())
    assert doc["spec"]["clusterIP"] == "None"
    assert doc["spec"]["publishNotReadyAddresses"] is True
    assert "status" not in doc  # nulls are left out


# --------------------------------------------------------------------------- reading back


def pod(
    name: str = "p",
    *,
    state: Any = None,
    last: Any = None,
    restarts: int = 0,
    phase: str = "Running",
    ip: str | None = "10.0.0.5",
    deleting: bool = False,
) -> V1Pod:
    status = V1ContainerStatus(
        name="model",
        image=MODEL_IMAGE,
        image_id="",
        ready=True,
        restart_count=restarts,
        state=state or V1ContainerState(running=V1ContainerStateRunning()),
        last_state=last,
    )
    meta = V1ObjectMeta(name=name)
    if deleting:
        meta.deletion_timestamp = "2026-01-01T00:00:00Z"
    return V1Pod(
        metadata=meta,
        status=V1PodStatus(phase=phase, pod_ip=ip, container_statuses=[status]),
    )


def waiting(reason: str, message: str = "") -> V1ContainerState:
    return V1ContainerState(waiting=V1ContainerStateWaiting(reason=reason, message=message))


def exited(code: int) -> V1ContainerState:
    return V1ContainerState(terminated=V1ContainerStateTerminated(exit_code=code))


def test_pods_running_or_starting_have_no_problem() -> None:
    assert readback.pod_problem(pod()) == ""
    assert readback.pod_problem(pod(state=waiting("ContainerCreating"))) == ""
    assert readback.pod_problem(pod(phase="Pending", ip=None, state=waiting("Pending"))) == ""
    # One crash is not yet a crash loop: the kubelet restarts it and it registers again.
    assert readback.pod_problem(pod(last=exited(137), restarts=1)) == ""


@pytest.mark.parametrize(
    ("p", "model", "expected"),
    [
        (pod(state=waiting("ImagePullBackOff", "not found")), False, "can the cluster pull"),
        (pod(state=waiting("ErrImagePull")), False, "ErrImagePull"),
        (pod(state=waiting("CreateContainerConfigError", "no secret")), False, "no secret"),
        (pod(last=exited(2), restarts=1, state=waiting("CrashLoopBackOff")), True, "status 2"),
        (pod(state=exited(2)), True, "its model cannot be loaded"),
        (pod(last=exited(1), restarts=3), False, "keeps exiting (last status 1, restarted 3"),
        (pod(phase="Failed"), False, "is Failed"),
    ],
)
def test_pods_that_will_not_serve_say_why(p: V1Pod, model: bool, expected: str) -> None:
    assert expected in readback.pod_problem(p, model=model)


def ended(code: int, reason: str | None = None, ran_s: float = 60.0) -> V1ContainerState:
    """A container's last run, ended with ``code`` (and ``reason``) after ``ran_s``."""
    import datetime as dt

    started = dt.datetime(2026, 1, 1, 10, 0, tzinfo=dt.UTC)
    return V1ContainerState(
        terminated=V1ContainerStateTerminated(
            exit_code=code,
            reason=reason,
            started_at=started,
            finished_at=started + dt.timedelta(seconds=ran_s),
        )
    )


def limited(p: V1Pod, memory: str = "256Mi") -> V1Pod:
    p.spec = V1PodSpec(
        containers=[
            V1Container(name="model", resources=V1ResourceRequirements(limits={"memory": memory}))
        ]
    )
    return p


def test_a_model_pod_that_hit_its_memory_limit_serves_again_and_says_why() -> None:
    oom = limited(pod("m-a", last=ended(137, "OOMKilled"), restarts=1))
    [state] = readback.replica_states([oom])
    assert state.running and state.memory_limit_hit and state.restarts == 1
    assert "hit its memory limit (256Mi)" in state.detail
    # Status 76: the model raised MemoryError.
    [raised] = readback.replica_states([limited(pod("m-b", last=ended(76), restarts=2))])
    assert raised.running and raised.memory_limit_hit
    assert "hit its memory limit (256Mi)" in raised.detail
    [fresh] = readback.replica_states([limited(pod("m-c"))])
    assert fresh.running and not fresh.memory_limit_hit and fresh.detail == ""


def test_restarts_a_query_frontend_asked_for_are_not_a_crash_loop() -> None:
    # Restarted five times, each after serving a minute: replaced, not failing.
    for last in (ended(75), ended(76), ended(137, "OOMKilled")):
        p = limited(pod(last=last, restarts=5))
        assert readback.pod_problem(p, model=True) == "", last
    [asked] = readback.replica_states([limited(pod("m", last=ended(75), restarts=5))])
    assert asked.running and "at its query frontend's request" in asked.detail
    # ... unless they keep coming right after the start (a model too big for its limit).
    looping = limited(pod("m", last=ended(137, "OOMKilled", ran_s=1), restarts=3))
    problem = readback.pod_problem(looping, model=True)
    assert "keeps exiting right after it starts (hit its memory limit (256Mi)" in problem
    [failed] = readback.replica_states([looping], {"m": "Killed"})
    assert not failed.running and failed.memory_limit_hit and failed.detail.endswith("Killed")
    # Any other status, over and over, is a crash loop however long each run lasted.
    assert "keeps exiting (last status 1" in readback.pod_problem(
        pod(last=ended(1), restarts=3), model=True
    )


def test_the_exit_status_of_a_model_that_cannot_load_is_model_containers() -> None:
    from model_container.cli import EXIT_CONFIG

    assert readback.EXIT_CONFIG == EXIT_CONFIG


def test_exit_status_2_of_a_frontend_is_no_model_failure() -> None:
    assert readback.pod_problem(pod(last=exited(2), restarts=1)) == ""


def test_each_model_pod_is_one_replica_named_by_the_pod() -> None:
    pods = [pod("m-a"), pod("m-b", state=exited(2)), pod("m-c", deleting=True)]
    states = readback.replica_states(pods, {"m-b": "Traceback ..."})
    assert [(s.replica_id, s.running) for s in states] == [("m-a", True), ("m-b", False)]
    assert "m-b" in states[1].detail and "Traceback ..." in states[1].detail
    assert "status 2" in states[1].detail


def test_the_query_frontends_model_pods_connect_to_are_those_with_an_address() -> None:
    frontends = [pod("q2", ip="fd00::2"), pod("q1", ip="10.0.0.1"), pod("q3", ip=None)]
    frontends.append(pod("q4", ip="10.0.0.4", deleting=True))
    assert readback.frontends(frontends) == ["q1", "q2"]


def node(name: str, ready: bool, **addresses: str) -> V1Node:
    return V1Node(
        metadata=V1ObjectMeta(name=name),
        status=V1NodeStatus(
            conditions=[V1NodeCondition(type="Ready", status=str(ready))],
            addresses=[V1NodeAddress(type=k, address=v) for k, v in addresses.items()],
        ),
    )


def test_node_ports_are_reached_on_a_ready_node_external_address_first() -> None:
    down = node("a", False, ExternalIP="198.51.100.1")
    internal = node("b", True, InternalIP="10.1.0.2")
    external = node("c", True, InternalIP="10.1.0.3", ExternalIP="198.51.100.3")
    assert readback.node_address([down, internal]) == "10.1.0.2"
    assert readback.node_address([down, internal, external]) == "198.51.100.3"
    assert readback.node_address([down]) == ""


def service(kind: str, port: int = 1337, node_port: int | None = None, **lb: str) -> V1Service:
    svc = V1Service(
        metadata=V1ObjectMeta(name="schooner-prod-query", namespace="ml"),
        spec=V1ServiceSpec(type=kind, ports=[V1ServicePort(port=port, node_port=node_port)]),
    )
    if lb:
        ingress = [V1LoadBalancerIngress(**lb)]
        svc.status = V1ServiceStatus(load_balancer=V1LoadBalancerStatus(ingress=ingress))
    return svc


def test_service_addresses_by_type() -> None:
    assert readback.service_netloc(service("ClusterIP")) == "schooner-prod-query.ml.svc:1337"
    assert readback.service_netloc(service("NodePort", node_port=30080), node="10.1.0.2") == (
        "10.1.0.2:30080"
    )
    assert readback.service_netloc(service("NodePort", node_port=30080)) == ""
    assert readback.service_netloc(service("LoadBalancer", 80)) == ""  # not provisioned yet
    assert (
        readback.service_netloc(service("LoadBalancer", 80, ip="203.0.113.9")) == "203.0.113.9:80"
    )
    lb = service("LoadBalancer", 80, hostname="a1.elb.example.com")
    assert readback.service_netloc(lb) == "a1.elb.example.com:80"


def test_model_pods_find_the_frontends_under_the_clusters_own_dns_domain() -> None:
    (c,) = model(settings(cluster_domain="corp.internal")).spec.template.spec.containers
    assert env(c)["SCHOONER_FRONTEND"] == (
        "dns+tcp://schooner-prod-query-rpc.ml.svc.corp.internal:7000"
    )


# --------------------------------------------------------------------------- privileges, TLS


def test_every_pod_runs_non_root_with_the_runtimes_seccomp_profile() -> None:
    for obj in all_objects(settings(tls_secret="schooner-tls")):
        if obj.kind not in ("Deployment", "StatefulSet"):
            continue
        pod = obj.spec.template.spec.security_context
        assert (pod.run_as_non_root, pod.run_as_user, pod.run_as_group) == (True, 10001, 10001)
        assert pod.seccomp_profile.type == "RuntimeDefault"
        for c in obj.spec.template.spec.containers:
            assert c.security_context.allow_privilege_escalation is False
            assert c.security_context.capabilities.drop == ["ALL"]
            assert c.security_context.privileged is None  # never privileged


def test_a_tls_secret_is_mounted_read_only_into_both_frontends_which_serve_https() -> None:
    s = settings(tls_secret="schooner-tls")
    for deployment in (s.management_deployment(IMAGE), s.query_deployment(IMAGE)):
        pod = deployment.spec.template.spec
        [c] = pod.containers
        assert arg(c, "--tls-certfile") == "/run/schooner/tls/tls.crt"
        assert arg(c, "--tls-keyfile") == "/run/schooner/tls/tls.key"
        [mount] = [m for m in c.volume_mounts if m.name == "tls"]
        assert (mount.name, mount.mount_path, mount.read_only) == ("tls", specs.TLS_DIR, True)
        [volume] = [v for v in pod.volumes if v.name == "tls"]
        assert volume.secret.secret_name == "schooner-tls"
        # Readable by the pod's group (fsGroup 10001), by no one else.
        assert volume.secret.default_mode == 0o440
        assert c.readiness_probe.http_get.scheme == "HTTPS"
    # Neither Redis nor the model pods get it.
    for obj in (s.redis_stateful_set("redis:7"), model(s)):
        assert "tls" not in [v.name for v in obj.spec.template.spec.volumes or []]
        assert "--tls-certfile" not in (obj.spec.template.spec.containers[0].args or [])


def test_without_a_tls_secret_the_frontends_serve_plain_http() -> None:
    s = settings()
    for deployment in (s.management_deployment(IMAGE), s.query_deployment(IMAGE)):
        pod = deployment.spec.template.spec
        assert [v.name for v in pod.volumes] == ["secrets"]  # the credentials only
        assert "--tls-certfile" not in pod.containers[0].args
        assert pod.containers[0].readiness_probe.http_get.scheme is None


def test_the_access_log_sample_reaches_the_query_frontend_when_set() -> None:
    (c,) = settings().query_deployment(IMAGE).spec.template.spec.containers
    assert "--access-log-sample" not in c.args  # the frontend's default: every request
    (c,) = settings(access_log_sample=0.25).query_deployment(IMAGE).spec.template.spec.containers
    assert arg(c, "--access-log-sample") == "0.25"
    for bad in (1.5, -0.1, True, "1"):
        with pytest.raises(InvalidRequestError, match="access_log_sample"):
            settings(access_log_sample=bad)
