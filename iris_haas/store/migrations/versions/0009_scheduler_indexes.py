"""The scheduler's queries answered from indexes: each reservation's committed end beside its
lifecycle state, and reservations by provision state

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('reservations') as b:
        b.add_column(sa.Column('committed_end', sa.Float(), nullable=True))
    op.execute('UPDATE reservations SET committed_end = (SELECT criteria."end" FROM criteria WHERE '
               'criteria.reservation_id = reservations.id AND criteria.version = reservations.committed_version)')
    op.create_index('ix_reservations_due', 'reservations', ['lifecycle_state', 'committed_end'])
    op.create_index('ix_reservations_provision_state', 'reservations', ['provision_state'])


def downgrade() -> None:
    op.drop_index('ix_reservations_provision_state', table_name='reservations')
    op.drop_index('ix_reservations_due', table_name='reservations')
    with op.batch_alter_table('reservations') as b:
        b.drop_column('committed_end')
