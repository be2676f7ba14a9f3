"""`apply` handlers of the scoped API tokens: create one (its digest, role and expiry) and
revoke it by name. Pure, like every handler (`core.cluster`'s rules): the expiry is a value
the proposer put in the command; nodes compare it with their clock when a token is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshems.core.commands import Command
from meshems.core.zone_records import ApiToken, Result

if TYPE_CHECKING:
    from meshems.core.cluster import ZoneState

#: tokens the zone keeps, revoked ones included (a hostile admin cannot grow the state forever)
MAX_TOKENS = 1024


def token_create(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    f = cmd.fields
    live = [t for t in state.tokens.values() if not t.revoked and t.name == f["name"]]
    if live:
        msg = f"a token named {f['name']!r} exists (revoke it first: meshems token revoke {f['name']})"
        return {}, Result(False, "E_TOKEN_EXISTS", msg, term, index)
    if f["token_id"] in state.tokens:
        return {}, Result(False, "E_TOKEN_EXISTS", f"token id {f['token_id']} was used before", term, index)
    if len(state.tokens) >= MAX_TOKENS:
        return {}, Result(False, "E_TOKEN_LIMIT", f"the zone holds {MAX_TOKENS} tokens", term, index)
    token = ApiToken(f["token_id"], f["name"], f["role"], f["digest"], f["expires_s"], f["by"])
    tokens = {**state.tokens, token.id: token}
    return {"tokens": tokens}, Result(True, "OK", f"token {f['name']} ({f['role']}) created", term, index)


def token_revoke(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    name = cmd.fields["name"]
    hits = [t for t in state.tokens.values() if not t.revoked and name in (t.name, t.id)]
    if not hits:
        return {}, Result(False, "E_UNKNOWN_TOKEN", f"no live token named {name!r}", term, index)
    tokens = dict(state.tokens)
    for t in hits:
        tokens[t.id] = ApiToken(t.id, t.name, t.role, t.digest, t.expires_s, t.created_by, True)
    return {"tokens": tokens}, Result(True, "OK", f"token {name} revoked zone-wide", term, index)
