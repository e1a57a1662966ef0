"""Roles: never granted by registration; granted by the operator command or an admin's
SetUserRoles; every change audited; the old tokens (old roles) stop working."""

from __future__ import annotations

import uuid

import grpc

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from meshctl.mesh import Mesh
from tests.support.auth import role_changes, run_auth_command
from tests.support.grpc_errors import rpc_failure
from tests.support.users import MeshUser, register_user, unique_email
from tests.support.waiting import eventually


async def test_registration_never_grants_admin_even_for_a_configured_email(mesh: Mesh) -> None:
    # The old ADMIN_EMAILS setting made whoever registered this address first an admin.
    email = unique_email("boss")
    replica = mesh.start_service("auth", instance="-admin-emails", ADMIN_EMAILS=email)
    try:
        async with grpc.aio.insecure_channel(replica.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            registered = await stub.Register(auth_pb2.RegisterRequest(email=email, password=MeshUser.PASSWORD))
            assert list(registered.user.roles) == ["user"]
            me = await stub.GetMe(
                auth_pb2.GetMeRequest(), metadata=(("authorization", f"Bearer {registered.tokens.access_token}"),)
            )
            assert list(me.user.roles) == ["user"]
    finally:
        replica.stop()


async def test_grant_role_command_makes_an_admin_and_revoke_role_undoes_it(
    mesh: Mesh, auth_stub, auth_db, user: MeshUser
) -> None:
    code, out, err = await run_auth_command(mesh, "grant-role", "--email", user.email.upper(), "--role", "admin")
    assert code == 0, err
    assert "admin" in out
    # The token issued before the change carries the old roles: refused (the command
    # wrote to the database; the serving replica picks it up within its poll interval).

    async def stale_token_refused() -> None:
        stale = await rpc_failure(auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=user.metadata))
        assert (stale.code, stale.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")

    await eventually(stale_token_refused, timeout_s=2.0)
    login = await auth_stub.Login(auth_pb2.LoginRequest(email=user.email, password=MeshUser.PASSWORD))
    bearer = (("authorization", f"Bearer {login.access_token}"),)
    me = await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer)
    assert list(me.user.roles) == ["user", "admin"]

    code, _out, err = await run_auth_command(mesh, "revoke-role", "--email", user.email, "--role", "admin")
    assert code == 0, err
    login = await auth_stub.Login(auth_pb2.LoginRequest(email=user.email, password=MeshUser.PASSWORD))
    me = await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=(("authorization", f"Bearer {login.access_token}"),))
    assert list(me.user.roles) == ["user"]

    changes = await role_changes(auth_db, user.user_id)
    assert [(old, new) for _actor, old, new in changes] == [
        (["user"], ["user", "admin"]),
        (["user", "admin"], ["user"]),
    ]
    assert all(actor.startswith("operator:") for actor, _old, _new in changes)


async def test_grant_role_for_an_unknown_email_fails_clearly(mesh: Mesh) -> None:
    email = unique_email("nobody")
    code, _out, err = await run_auth_command(mesh, "grant-role", "--email", email, "--role", "admin")
    assert code != 0
    assert f"no account with the email {email!r}" in err
    assert "Traceback" not in err


async def test_grant_role_refuses_an_unknown_role(mesh: Mesh, user: MeshUser) -> None:
    code, _out, err = await run_auth_command(mesh, "grant-role", "--email", user.email, "--role", "root")
    assert code != 0
    assert "invalid choice: 'root'" in err


async def test_set_user_roles_is_admin_only(auth_stub, user: MeshUser, other_user: MeshUser) -> None:
    request = auth_pb2.SetUserRolesRequest(user_id=other_user.user_id, roles=["user", "admin"])
    refused = await rpc_failure(auth_stub.SetUserRoles(request, metadata=user.metadata))
    assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_REQUIRED")
    anonymous = await rpc_failure(auth_stub.SetUserRoles(request))
    assert anonymous.code == grpc.StatusCode.UNAUTHENTICATED
    # Nothing changed: the other user's token still works and says `user`.
    me = await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=other_user.metadata)
    assert list(me.user.roles) == ["user"]


async def test_set_user_roles_by_an_admin_is_audited(auth_stub, auth_db, admin: MeshUser) -> None:
    target = await register_user(auth_stub)
    response = await auth_stub.SetUserRoles(
        auth_pb2.SetUserRolesRequest(user_id=target.user_id, roles=["admin"]), metadata=admin.metadata
    )
    assert response.user.id == target.user_id
    assert list(response.user.roles) == ["user", "admin"]  # `user` is always kept
    # Setting the same roles again is no change: no second audit row.
    await auth_stub.SetUserRoles(
        auth_pb2.SetUserRolesRequest(user_id=target.user_id, roles=["user", "admin"]), metadata=admin.metadata
    )
    await auth_stub.SetUserRoles(
        auth_pb2.SetUserRolesRequest(user_id=target.user_id, roles=[]), metadata=admin.metadata
    )
    assert await role_changes(auth_db, target.user_id) == [
        (f"user:{admin.user_id}", ["user"], ["user", "admin"]),
        (f"user:{admin.user_id}", ["user", "admin"], ["user"]),
    ]


async def test_set_user_roles_refuses_bad_input(auth_stub, admin: MeshUser, user: MeshUser) -> None:
    cases = [
        (
            auth_pb2.SetUserRolesRequest(user_id=user.user_id, roles=["root"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ROLE_UNKNOWN",
        ),
        (
            auth_pb2.SetUserRolesRequest(user_id="not-a-uuid", roles=["admin"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "USER_ID_INVALID",
        ),
        (
            auth_pb2.SetUserRolesRequest(user_id=str(uuid.uuid4()), roles=["admin"]),
            grpc.StatusCode.NOT_FOUND,
            "USER_NOT_FOUND",
        ),
    ]
    for request, code, reason in cases:
        failure = await rpc_failure(auth_stub.SetUserRoles(request, metadata=admin.metadata))
        assert (failure.code, failure.reason) == (code, reason)
