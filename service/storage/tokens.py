"""API tokens: issue, look up, list, revoke."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.auth import Principal, TokenKind, hash_token, new_token
from service.db.base import utcnow
from service.db.models import ApiToken
from service.errors import NotFoundError


def issue(
    session: Session, kind: TokenKind, name: str, run_id: int | None = None, *, commit: bool = True
) -> tuple[ApiToken, str]:
    """A new token row and the token itself (shown once; only its hash is stored)."""
    token = new_token(kind)
    row = ApiToken(
        kind=kind, run_id=run_id, name=name[:128], token_hash=hash_token(token), prefix=token[:8]
    )
    session.add(row)
    if commit:
        session.commit()
    else:
        session.flush()
    return row, token


def lookup(session: Session, token: str) -> Principal | None:
    row = session.scalars(
        select(ApiToken).where(
            ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None)
        )
    ).first()
    if row is None:
        return None
    return Principal(kind=row.kind, run_id=row.run_id, token_id=row.id)  # type: ignore[arg-type]


def list_tokens(session: Session, include_revoked: bool = False) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.id)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return list(session.scalars(query))


def revoke(session: Session, token_id: int) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFoundError(f"token {token_id} does not exist", field="token_id")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()
    return row


def revoke_ingest_tokens(session: Session, run_id: int) -> int:
    """Revoke (not commit) every live ingest token of a run; returns how many."""
    result = session.execute(
        update(ApiToken)
        .where(
            ApiToken.run_id == run_id,
            ApiToken.kind == "ingest",
            ApiToken.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def rotate_ingest(session: Session, run_id: int) -> str:
    """A run's new ingest token, every older one revoked, in one transaction: a re-registered
    run's previous trainer can no longer write to it."""
    revoke_ingest_tokens(session, run_id)
    return issue(session, "ingest", f"run {run_id} ingest", run_id)[1]
