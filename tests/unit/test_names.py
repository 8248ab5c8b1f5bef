"""Names on hosts are unique by construction and fit the kernel's limit, with no hash."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iris_haas.contract import names

pytestmark = pytest.mark.unit

ID = st.integers(min_value=0, max_value=36**4 - 1)


def test_base36_and_the_largest_numbers_still_fit():
    assert [names.b36(n) for n in (0, 35, 36, 1295)] == ["0", "z", "10", "zz"]
    big = 36**4 - 1
    for n in [names.segment_bridge(names.pod_segment(36**9 - 1)),
              names.segment_tunnel(names.tenant_segment(big), names.l0_peer(big)),
              *names.l1_port(names.l1_name(36**5 - 1)), *names.l1_port(names.volume_nic(36**8 - 1)),
              *names.l1_port(names.router_leg(36**7 - 1, "segment"))]:
        assert len(n) <= names.IFNAMSIZ and n.startswith("iris"), n
    with pytest.raises(names.NameTooLong):
        names.segment_tunnel(names.tenant_segment(36**4), names.l0_peer(36**4))


@given(a=st.tuples(st.sampled_from("ts"), ID, st.sampled_from("xgn"), ID),
       b=st.tuples(st.sampled_from("ts"), ID, st.sampled_from("xgn"), ID))
def test_two_different_tunnels_never_share_a_name(a, b):
    def name(seg_kind, seg, peer_kind, peer):
        segment = names.tenant_segment(seg) if seg_kind == "t" else names.pod_segment(seg)
        p = {"x": names.trunk_peer, "g": names.gateway_peer, "n": names.l0_peer}[peer_kind](peer)
        return names.segment_tunnel(segment, p)

    assert (name(*a) == name(*b)) == (a == b)


@given(a=st.integers(min_value=0, max_value=36**5 - 1), b=st.integers(min_value=0, max_value=36**5 - 1))
def test_l1_ports_and_export_ports_never_collide(a, b):
    l1, vol = names.l1_port(names.l1_name(a)), names.l1_port(names.volume_nic(b))
    assert not set(l1) & set(vol)
    assert (names.l1_port(names.l1_name(a)) == names.l1_port(names.l1_name(b))) == (a == b)
