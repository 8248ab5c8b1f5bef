"""links of kind nsi: a circuit an NSI CS 2.0 provider reserves per reservation

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('links') as b:
        b.add_column(sa.Column('kind', sa.String(length=8), server_default='static', nullable=False))
        b.add_column(sa.Column('nsi_provider', sa.String(length=512), nullable=True))
        b.add_column(sa.Column('nsi_provider_nsa', sa.String(length=256), nullable=True))
        b.add_column(sa.Column('source_stp', sa.String(length=256), nullable=True))
        b.add_column(sa.Column('dest_stp', sa.String(length=256), nullable=True))
        b.add_column(sa.Column('service_type', sa.String(length=256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('links') as b:
        for c in ('service_type', 'dest_stp', 'source_stp', 'nsi_provider_nsa', 'nsi_provider', 'kind'):
            b.drop_column(c)
