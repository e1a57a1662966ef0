"""runtime.rpc_policy: per-RPC policy read from the contracts' method options."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from agentmesh.agent.v1 import agent_pb2
from agentmesh.auth.v1 import auth_pb2
from agentmesh.evals.v1 import evals_pb2
from agentmesh.options.v1 import options_pb2
from runtime import rpc_policy
from runtime.server import Mount

AUTH = auth_pb2.DESCRIPTOR.services_by_name["AuthService"]
AGENT = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
EVALS = evals_pb2.DESCRIPTOR.services_by_name["EvalService"]


def test_public_rpcs_are_the_ones_auth_proto_declares() -> None:
    # The list services/auth/server.py used to keep by hand (PUBLIC_METHODS).
    assert rpc_policy.public_methods(AUTH) == {
        f"/agentmesh.auth.v1.AuthService/{name}"
        for name in ("Register", "Login", "Refresh", "Logout", "GetJwks", "IssueServiceToken")
    }
    assert rpc_policy.is_public(AUTH.methods_by_name["Login"])
    assert rpc_policy.public_methods(AGENT) == frozenset()


def test_an_rpc_without_options_needs_a_token_and_counts_as_default() -> None:
    get_me = AUTH.methods_by_name["GetMe"]
    assert not rpc_policy.is_public(get_me)
    assert not rpc_policy.is_service_only(get_me)
    assert rpc_policy.declared_rate_limit_class(get_me) is None
    assert rpc_policy.rate_limit_class(get_me) == rpc_policy.DEFAULT_RATE_LIMIT_CLASS == "default"


def test_rate_limit_classes_come_from_the_contracts() -> None:
    assert rpc_policy.rate_limit_class(AUTH.methods_by_name["Login"]) == "login"
    assert rpc_policy.rate_limit_class(AUTH.methods_by_name["Refresh"]) == "login"
    assert rpc_policy.rate_limit_class(AUTH.methods_by_name["Register"]) == "register"
    assert rpc_policy.rate_limit_class(AGENT.methods_by_name["Chat"]) == "chat"
    assert rpc_policy.rate_limit_class(AGENT.methods_by_name["StreamChat"]) == "chat_stream"
    assert rpc_policy.rate_limit_class(AGENT.methods_by_name["GetHistory"]) == "messages"
    assert rpc_policy.rate_limit_class(AGENT.methods_by_name["ListRuns"]) == "default"


def test_service_only_rpcs() -> None:
    assert rpc_policy.service_only_methods(AUTH) == {"/agentmesh.auth.v1.AuthService/WatchRevocations"}
    assert rpc_policy.service_only_methods(EVALS) == {
        "/agentmesh.evals.v1.EvalService/RecordTrace",
        "/agentmesh.evals.v1.EvalService/BatchRecordTraces",
        "/agentmesh.evals.v1.EvalService/EraseUserData",
    }


def _service_with_policy(pool_name: str, **options: object) -> descriptor_pool.DescriptorPool:
    """A one-method service in a private pool, as the gateway loads contracts."""
    pool = descriptor_pool.DescriptorPool()
    for dependency in (descriptor_pb2.DESCRIPTOR, options_pb2.DESCRIPTOR):
        proto = descriptor_pb2.FileDescriptorProto()
        dependency.CopyToProto(proto)
        pool.Add(proto)
    method_options = descriptor_pb2.MethodOptions()
    for name, value in options.items():
        method_options.Extensions[getattr(options_pb2, name)] = value
    file_proto = descriptor_pb2.FileDescriptorProto(
        name=f"{pool_name}.proto",
        package=pool_name,
        syntax="proto3",
        dependency=["agentmesh/options/v1/options.proto"],
        message_type=[descriptor_pb2.DescriptorProto(name="Empty")],
        service=[
            descriptor_pb2.ServiceDescriptorProto(
                name="Probe",
                method=[
                    descriptor_pb2.MethodDescriptorProto(
                        name="Do",
                        input_type=f".{pool_name}.Empty",
                        output_type=f".{pool_name}.Empty",
                        options=method_options,
                    )
                ],
            )
        ],
    )
    pool.Add(file_proto)
    return pool


def test_options_are_read_from_a_private_pool_too() -> None:
    pool = _service_with_policy("probe_public", public=True, rate_limit_class="login")
    method = pool.FindServiceByName("probe_public.Probe").methods_by_name["Do"]
    assert rpc_policy.is_public(method)
    assert rpc_policy.rate_limit_class(method) == "login"
    assert rpc_policy.grpc_path(method) == "/probe_public.Probe/Do"


def test_public_and_service_only_together_is_refused() -> None:
    pool = _service_with_policy("probe_both", public=True, service_only=True)
    service = pool.FindServiceByName("probe_both.Probe")
    with pytest.raises(rpc_policy.PolicyError, match="both public and service_only"):
        rpc_policy.check_service(service)


def test_mount_derives_its_policy_from_the_descriptor() -> None:
    mount = Mount(descriptor=AUTH, add_to_server=lambda servicer, server: None, servicer=object())
    assert mount.full_public_methods == rpc_policy.public_methods(AUTH)
    assert "/agentmesh.auth.v1.AuthService/Login" in mount.full_public_methods
    assert mount.full_service_methods == {"/agentmesh.auth.v1.AuthService/WatchRevocations"}


def test_mount_refuses_a_contract_that_contradicts_itself() -> None:
    service = _service_with_policy("probe_mount", public=True, service_only=True).FindServiceByName("probe_mount.Probe")
    with pytest.raises(rpc_policy.PolicyError, match="both public and service_only"):
        Mount(descriptor=service, add_to_server=lambda servicer, server: None, servicer=object())
