"""Links of kind nsi: the provider, its NSA and the two STPs are checked and stored."""

from __future__ import annotations

import json

import pytest

from iris_haas.api.service import LocalCoordinator

pytestmark = pytest.mark.unit

NSI = {"name": "wan", "site_a": "haas", "site_b": "iaas-alice", "capacity_mbps": 1000, "kind": "nsi",
       "nsi_provider": "http://198.18.0.5:9080/nsi/provider", "nsi_provider_nsa": "urn:ogf:network:lab.iris:2026:nsa:upa",
       "source_stp": "urn:ogf:network:lab.iris:2026:dc1-gw?vlan=1780-1799",
       "dest_stp": "urn:ogf:network:lab.iris:2026:dc2-gw?vlan=1780-1799"}


def test_nsi_link_is_stored(api):
    out = api.ok("POST", "/links", json=NSI)
    assert out["kind"] == "nsi" and out["source_stp"] == NSI["source_stp"]
    assert out["service_type"] == "http://services.ogf.org/nsi/2013/12/descriptions/EVTS.A-GOLE"
    static = api.ok("GET", "/links/link-alice")
    assert static["kind"] == "static" and static["nsi_provider"] is None


@pytest.mark.parametrize("change,field", [
    ({"nsi_provider": None}, "nsi_provider"),
    ({"nsi_provider": "ftp://x/"}, "nsi_provider"),
    ({"nsi_provider_nsa": "provider"}, "nsi_provider_nsa"),
    ({"source_stp": "urn:ogf:network:lab.iris:2026:dc1?vlan=4000-5000"}, "source_stp"),
    ({"source_stp": "urn:ogf:network:lab.iris:2026:dc1?vlan=1799-1780"}, "source_stp"),
    ({"dest_stp": "port7"}, "dest_stp"),
    ({"kind": "static"}, "nsi_provider"),
    ({"kind": "mpls"}, "kind"),
])
def test_bad_nsi_link_is_422_naming_the_field(api, change, field):
    body = {k: v for k, v in (NSI | change).items() if v is not None}
    r = api.call("POST", "/links", json=body)
    assert r.status_code == 422, r.text
    assert field in r.json()["message"], r.json()
    assert api.call("GET", "/links/wan").status_code == 404


def test_iris_link_add_nsi(tmp_path):
    from tests.unit.test_cli import iris

    with LocalCoordinator(tmp_path) as c:
        admin = c.admin_token
        iris(c.url, admin, "site", "add", "haas")
        iris(c.url, admin, "site", "add", "far")
        iris(c.url, admin, "link", "add", "wan", "--site-a", "haas", "--site-b", "far", "--capacity-mbps", "100",
             "--nsi-provider", NSI["nsi_provider"], "--nsi-provider-nsa", NSI["nsi_provider_nsa"],
             "--source-stp", NSI["source_stp"], "--dest-stp", NSI["dest_stp"])
        out = json.loads(iris(c.url, admin, "link", "show", "wan", "--json").output)
        assert out["kind"] == "nsi" and out["nsi_provider"] == NSI["nsi_provider"]
        bad = iris(c.url, admin, "link", "add", "wan2", "--site-a", "haas", "--site-b", "far", "--capacity-mbps", "1",
                   "--nsi-provider", NSI["nsi_provider"], "--source-stp", NSI["source_stp"], ok=False)
        assert bad.exit_code != 0 and "nsi_provider_nsa" in bad.output
