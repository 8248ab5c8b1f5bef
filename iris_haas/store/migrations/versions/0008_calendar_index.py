"""Admission's queries answered from covering indexes

Revision ID: 0008
Revises: 0007
"""
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

AMOUNTS = ['resource_id', 'cpus', 'memory_mb', 'disk_gb', 'mbps', 'gb']


def upgrade() -> None:
    with op.batch_alter_table('allocations') as b:
        b.drop_index('ix_alloc_kind_start')
        b.drop_index('ix_alloc_status')
        b.create_index('ix_alloc_calendar', ['resource_kind', 'start', 'end', 'status', 'reservation_id', *AMOUNTS])
        b.create_index('ix_alloc_status', ['resource_kind', 'status', *AMOUNTS])


def downgrade() -> None:
    with op.batch_alter_table('allocations') as b:
        b.drop_index('ix_alloc_status')
        b.drop_index('ix_alloc_calendar')
        b.create_index('ix_alloc_status', ['resource_kind', 'status'])
        b.create_index('ix_alloc_kind_start', ['resource_kind', 'start'])
