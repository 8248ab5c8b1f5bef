"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-27 00:31:01.441909
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    meta = op.create_table('meta',
    sa.Column('key', sa.String(length=32), nullable=False),
    sa.Column('value', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    # the inventory generation that admission's node cache follows (models.Meta)
    op.bulk_insert(meta, [{'key': 'inventory', 'value': 0}])
    op.create_table('tenants',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('tunnel_key', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name'),
    sa.UniqueConstraint('token_hash'),
    sa.UniqueConstraint('tunnel_key')
    )
    op.create_table('sites',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=True),
    sa.Column('gateway_underlay', sa.String(length=64), nullable=True),
    sa.Column('vlans', sa.String(length=256), nullable=True),
    sa.Column('mgmt_vlan', sa.Integer(), nullable=True),
    sa.Column('service_model', sa.String(length=1), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sites_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('gateways',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('underlay_address', sa.String(length=64), nullable=False),
    sa.Column('fabric_address', sa.String(length=64), nullable=True),
    sa.Column('uplink', sa.String(length=15), nullable=False),
    sa.Column('agent_url', sa.String(length=256), nullable=True),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    with op.batch_alter_table('gateways', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gateways_site_id'), ['site_id'], unique=False)

    op.create_table('links',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('site_a_id', sa.Integer(), nullable=False),
    sa.Column('site_b_id', sa.Integer(), nullable=False),
    sa.Column('capacity_mbps', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['site_a_id'], ['sites.id'], ),
    sa.ForeignKeyConstraint(['site_b_id'], ['sites.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('nodes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('cpus', sa.Integer(), nullable=False),
    sa.Column('memory_mb', sa.Integer(), nullable=False),
    sa.Column('disk_gb', sa.Integer(), nullable=False),
    sa.Column('l1_kinds', sa.String(length=64), nullable=False),
    sa.Column('underlay_address', sa.String(length=64), nullable=True),
    sa.Column('agent_url', sa.String(length=256), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_nodes_site_id'), ['site_id'], unique=False)

    op.create_table('reservations',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('description', sa.String(length=256), nullable=False),
    sa.Column('service_model', sa.String(length=1), nullable=False),
    sa.Column('routing', sa.JSON(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('committed_version', sa.Integer(), nullable=False),
    sa.Column('reservation_state', sa.String(length=24), nullable=False),
    sa.Column('provision_state', sa.String(length=24), nullable=False),
    sa.Column('lifecycle_state', sa.String(length=24), nullable=False),
    sa.Column('data_plane_active', sa.Boolean(), nullable=False),
    sa.Column('hold_expires_at', sa.Float(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reservations_lifecycle_state'), ['lifecycle_state'], unique=False)
        batch_op.create_index(batch_op.f('ix_reservations_reservation_state'), ['reservation_state'], unique=False)
        batch_op.create_index(batch_op.f('ix_reservations_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('storage_pools',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('capacity_gb', sa.Integer(), nullable=False),
    sa.Column('host', sa.String(length=64), nullable=True),
    sa.Column('path', sa.String(length=256), nullable=True),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    with op.batch_alter_table('storage_pools', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_storage_pools_site_id'), ['site_id'], unique=False)

    op.create_table('allocations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reservation_id', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('item', sa.Integer(), nullable=False),
    sa.Column('resource_kind', sa.String(length=8), nullable=False),
    sa.Column('resource_id', sa.Integer(), nullable=False),
    sa.Column('start', sa.Float(), nullable=False),
    sa.Column('end', sa.Float(), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=False),
    sa.Column('cpus', sa.Integer(), nullable=False),
    sa.Column('memory_mb', sa.Integer(), nullable=False),
    sa.Column('disk_gb', sa.Integer(), nullable=False),
    sa.Column('mbps', sa.Integer(), nullable=False),
    sa.Column('gb', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['reservation_id'], ['reservations.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('allocations', schema=None) as batch_op:
        batch_op.create_index('ix_alloc_kind_duration', ['resource_kind', 'duration_s'], unique=False)
        batch_op.create_index('ix_alloc_kind_start', ['resource_kind', 'start'], unique=False)
        batch_op.create_index('ix_alloc_reservation', ['reservation_id', 'resource_kind', 'status'], unique=False)
        batch_op.create_index('ix_alloc_resource', ['resource_kind', 'resource_id', 'start'], unique=False)

    op.create_table('criteria',
    sa.Column('reservation_id', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('start', sa.Float(), nullable=False),
    sa.Column('end', sa.Float(), nullable=False),
    sa.Column('items', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['reservation_id'], ['reservations.id'], ),
    sa.PrimaryKeyConstraint('reservation_id', 'version')
    )
    op.create_table('events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reservation_id', sa.String(length=32), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['reservation_id'], ['reservations.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_events_reservation_id'), ['reservation_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_reservation_id'))

    op.drop_table('events')
    op.drop_table('criteria')
    with op.batch_alter_table('allocations', schema=None) as batch_op:
        batch_op.drop_index('ix_alloc_resource')
        batch_op.drop_index('ix_alloc_reservation')
        batch_op.drop_index('ix_alloc_kind_start')
        batch_op.drop_index('ix_alloc_kind_duration')

    op.drop_table('allocations')
    with op.batch_alter_table('storage_pools', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_storage_pools_site_id'))

    op.drop_table('storage_pools')
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reservations_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_reservations_reservation_state'))
        batch_op.drop_index(batch_op.f('ix_reservations_lifecycle_state'))

    op.drop_table('reservations')
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_nodes_site_id'))

    op.drop_table('nodes')
    op.drop_table('links')
    with op.batch_alter_table('gateways', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gateways_site_id'))

    op.drop_table('gateways')
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sites_tenant_id'))

    op.drop_table('sites')
    op.drop_table('tenants')
    op.drop_table('meta')
