"""versioned desired state per host; draining allocations

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('host_sync',
    sa.Column('host', sa.String(length=64), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('acked', sa.Integer(), nullable=False),
    sa.Column('in_sync', sa.Boolean(), nullable=False),
    sa.Column('last_seen', sa.Float(), nullable=True),
    sa.Column('error', sa.String(length=1024), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_try', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('host')
    )
    with op.batch_alter_table('allocations') as b:
        b.add_column(sa.Column('drain_generation', sa.Integer(), nullable=True))
        b.create_index('ix_alloc_status', ['resource_kind', 'status'])


def downgrade() -> None:
    with op.batch_alter_table('allocations') as b:
        b.drop_index('ix_alloc_status')
        b.drop_column('drain_generation')
    op.drop_table('host_sync')
