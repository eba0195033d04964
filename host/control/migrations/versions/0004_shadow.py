"""Shadow traffic: the challengers' comparisons, one running-total row per route and challenger.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "shadow_comparisons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("route", sa.String(length=256), nullable=False),
        sa.Column("challenger", sa.String(length=256), nullable=False),
        sa.Column("copied", sa.Integer(), nullable=False),
        sa.Column("compared", sa.Integer(), nullable=False),
        sa.Column("agreed", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("champion_ms", sa.Float(), nullable=False),
        sa.Column("challenger_ms", sa.Float(), nullable=False),
        sa.Column("last_error", sa.String(length=1024), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shadow_comparisons")),
        sa.UniqueConstraint(
            "route", "challenger", name=op.f("uq_shadow_comparisons_route_challenger")
        ),
    )


def downgrade() -> None:
    op.drop_table("shadow_comparisons")
