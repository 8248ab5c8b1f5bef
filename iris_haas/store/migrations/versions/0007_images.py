"""OS images per L1 kind, registered by the HaaS admin

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'images',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('l1_kind', sa.String(length=8), nullable=False),
        sa.Column('path', sa.String(length=4096), nullable=False),
        sa.Column('digest', sa.String(length=64), nullable=True),
        sa.Column('description', sa.String(length=256), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('images')
