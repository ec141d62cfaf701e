"""Users with roles and quotas, key expiry and revocation, the audit log, trusted models, and
the job columns of fault tolerance (attempts, worker lease, heartbeat, enqueue time, time limit).

Every owner already named by a key or a job becomes a `member` user.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    users = op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("max_running_jobs", sa.Integer(), nullable=True),
        sa.Column("max_queued_jobs", sa.Integer(), nullable=True),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_actor", "audit_log", ["actor"])
    op.create_table(
        "trusted_models",
        sa.Column("model", sa.String(512), primary_key=True),
        sa.Column("allowed_by", sa.String(128), nullable=False),
        sa.Column("allowed_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("label", sa.String(128), nullable=True))
        batch.add_column(sa.Column("created_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(sa.Column("worker", sa.String(256), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("time_limit_s", sa.Integer(), nullable=True))

    conn = op.get_bind()
    owners = conn.execute(
        sa.text("SELECT owner FROM api_keys UNION SELECT owner FROM jobs")
    ).scalars()
    now = datetime.now(UTC)
    rows = [{"name": o, "role": "member", "created_at": now} for o in sorted(set(owners))]
    if rows:
        op.bulk_insert(users, rows)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for column in ("time_limit_s", "enqueued_at", "heartbeat_at", "worker", "attempts"):
            batch.drop_column(column)
    with op.batch_alter_table("api_keys") as batch:
        for column in ("last_used_at", "revoked_at", "expires_at", "created_by", "label"):
            batch.drop_column(column)
    op.drop_table("trusted_models")
    op.drop_index("ix_audit_log_actor", "audit_log")
    op.drop_index("ix_audit_log_at", "audit_log")
    op.drop_table("audit_log")
    op.drop_table("users")
