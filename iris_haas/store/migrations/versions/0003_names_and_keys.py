"""names by construction (sequences), GRE keys never given twice

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    meta = sa.table('meta', sa.column('key', sa.String), sa.column('value', sa.Integer))
    op.bulk_insert(meta, [{'key': k, 'value': 0} for k in ('l1', 'volume', 'segment')])
    keys = op.create_table('tunnel_keys',
    sa.Column('key', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('owner', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, tunnel_key FROM tenants")).all()
    if rows:
        op.bulk_insert(keys, [{'key': k, 'owner': f'tenant:{i}'} for i, k in rows])
    with op.batch_alter_table('tenants') as b:
        b.alter_column('tunnel_key', type_=sa.BigInteger(), existing_type=sa.Integer())
    with op.batch_alter_table('reservations') as b:
        b.add_column(sa.Column('segment_no', sa.Integer(), nullable=True))
        b.add_column(sa.Column('segment_key', sa.BigInteger(), nullable=True))
        b.create_unique_constraint('uq_reservations_segment_no', ['segment_no'])


def downgrade() -> None:
    with op.batch_alter_table('reservations') as b:
        b.drop_constraint('uq_reservations_segment_no')
        b.drop_column('segment_key')
        b.drop_column('segment_no')
    op.drop_table('tunnel_keys')
    op.execute("DELETE FROM meta WHERE key IN ('l1', 'volume', 'segment')")
