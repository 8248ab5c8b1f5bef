"""the event feed's cursor (events.seq, numbered at commit); tenants' webhooks

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('events') as b:
        b.add_column(sa.Column('seq', sa.BigInteger(), nullable=True))
    # the events written before: committed long ago, so their ids are in commit order
    op.execute("UPDATE events SET seq = id")
    with op.batch_alter_table('events') as b:
        b.create_index('ix_events_seq', ['seq'], unique=True)
    op.create_table('webhooks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('url', sa.String(length=512), nullable=False),
    sa.Column('secret', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('cursor', sa.BigInteger(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_try', sa.Float(), nullable=False),
    sa.Column('last_error', sa.String(length=256), nullable=True),
    sa.Column('delivered_at', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('webhooks') as b:
        b.create_index('ix_webhooks_tenant_id', ['tenant_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('webhooks') as b:
        b.drop_index('ix_webhooks_tenant_id')
    op.drop_table('webhooks')
    with op.batch_alter_table('events') as b:
        b.drop_index('ix_events_seq')
        b.drop_column('seq')
