"""The emulator's networking API: Cloud Firewalls, VPCs and subnets."""

from __future__ import annotations

import json
from ipaddress import IPv4Network, ip_network
from typing import Any, Final

from aiaas_infra.testing._linode._base import _ApiBase
from aiaas_infra.testing._linode._model import (
    JSON,
    _bad,
    _limit,
    _not_found,
    _now,
    _public,
)

__all__: list[str] = []

_RFC1918: Final = (
    IPv4Network("10.0.0.0/8"),
    IPv4Network("172.16.0.0/12"),
    IPv4Network("192.168.0.0/16"),
)


class _NetworkApi(_ApiBase):
    """The emulator's networking API: Cloud Firewalls, VPCs and subnets."""

    # -- firewalls ------------------------------------------------------------------------------

    def _firewall(self, fid: str | int) -> JSON:
        return self._find(self.store.firewalls, fid)

    @staticmethod
    def _validate_rules(rules: Any) -> JSON:
        if not isinstance(rules, dict):
            raise _bad("rules must be an object", "rules")
        inbound = rules.get("inbound", [])
        outbound = rules.get("outbound", [])
        if not isinstance(inbound, list) or not isinstance(outbound, list):
            raise _bad("inbound and outbound must be lists", "rules")
        if len(inbound) + len(outbound) > 25:
            raise _bad("Too many rules: a firewall holds at most 25", "rules")
        for direction, listed in (("inbound", inbound), ("outbound", outbound)):
            for i, rule in enumerate(listed):
                if not isinstance(rule, dict) or rule.get("action") not in ("ACCEPT", "DROP"):
                    raise _bad("action must be ACCEPT or DROP", f"rules.{direction}[{i}].action")
                if rule.get("protocol") not in ("TCP", "UDP", "ICMP", "IPENCAP"):
                    raise _bad("Invalid protocol", f"rules.{direction}[{i}].protocol")
        for policy in ("inbound_policy", "outbound_policy"):
            if rules.get(policy, "ACCEPT") not in ("ACCEPT", "DROP"):
                raise _bad("must be ACCEPT or DROP", f"rules.{policy}")
        return {
            "inbound": inbound,
            "inbound_policy": rules.get("inbound_policy", "ACCEPT"),
            "outbound": outbound,
            "outbound_policy": rules.get("outbound_policy", "ACCEPT"),
        }

    @staticmethod
    def _fingerprint(rules: JSON) -> str:
        canonical = json.dumps(
            {k: rules[k] for k in ("inbound", "inbound_policy", "outbound", "outbound_policy")},
            sort_keys=True,
        )
        import hashlib  # noqa: PLC0415

        return hashlib.sha256(canonical.encode()).hexdigest()[:8]

    def _list_firewalls(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page([_public(f) for f in self.store.firewalls.values()], query, headers)

    def _create_firewall(self, *, body: Any, **_: Any) -> JSON:
        body = self._require(body, "label", "rules")
        label = body["label"]
        if not isinstance(label, str) or not 3 <= len(label) <= 32:
            raise _bad("Label must be 3-32 characters", "label")
        self._unique_label(
            self.store.firewalls.values(), label, "Label must be unique among your firewalls"
        )
        rules = self._validate_rules(body["rules"])
        tags = self._tags(body)
        if len(self.store.firewalls) >= self.limits.firewalls:
            raise _limit("Cloud Firewall")
        fid = self.store.new_id()
        now = _now()
        rules.update(version=1, fingerprint=self._fingerprint(rules))
        fw: JSON = {
            "id": fid,
            "label": label,
            "created": now,
            "updated": now,
            "status": "enabled",
            "rules": rules,
            "tags": tags,
        }
        self.store.firewalls[fid] = fw
        return _public(fw)

    def _get_firewall(self, *, fid: str, **_: Any) -> JSON:
        return _public(self._firewall(fid))

    def _update_firewall(self, *, fid: str, body: Any, **_: Any) -> JSON:
        fw = self._firewall(fid)
        body = self._require(body)
        if "label" in body:
            self._unique_label(
                self.store.firewalls.values(),
                body["label"],
                "Label must be unique among your firewalls",
                own=fw,
            )
            fw["label"] = body["label"]
        if "tags" in body:
            fw["tags"] = self._tags(body)
        if "status" in body:
            if body["status"] not in ("enabled", "disabled"):
                raise _bad("status must be enabled or disabled", "status")
            fw["status"] = body["status"]
        fw["updated"] = _now()
        return _public(fw)

    def _delete_firewall(self, fid: int) -> None:
        self.store.firewalls.pop(fid, None)
        for pool in self.store.pools.values():
            if pool.get("firewall_id") == fid:
                pool["firewall_id"] = None

    def _delete_firewall_route(self, *, fid: str, **_: Any) -> JSON:
        self._firewall(fid)
        self._delete_firewall(int(fid))
        return {}

    def _get_rules(self, *, fid: str, **_: Any) -> JSON:
        return dict(self._firewall(fid)["rules"])

    def _put_rules(self, *, fid: str, body: Any, **_: Any) -> JSON:
        fw = self._firewall(fid)
        rules = self._validate_rules(body)
        rules.update(version=fw["rules"]["version"] + 1, fingerprint=self._fingerprint(rules))
        fw["rules"] = rules
        fw["updated"] = _now()
        return dict(rules)

    # -- VPCs -----------------------------------------------------------------------------------

    def _vpc(self, vid: str | int) -> JSON:
        return self._find(self.store.vpcs, vid)

    def _list_vpcs(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page([_public(v) for v in self.store.vpcs.values()], query, headers)

    def _create_vpc(self, *, body: Any, **_: Any) -> JSON:
        body = self._require(body, "label", "region")
        label = body["label"]
        if not isinstance(label, str) or not 1 <= len(label) <= 64 or "--" in label:
            raise _bad("Label must be 1-64 letters, digits and single hyphens", "label")
        self._check_region(body["region"], "VPCs")
        self._unique_label(self.store.vpcs.values(), label, "Label must be unique among your VPCs")
        if len(self.store.vpcs) >= self.limits.vpcs:
            raise _limit("VPC")
        vid = self.store.new_id()
        now = _now()
        vpc: JSON = {
            "label": label,
            "id": vid,
            "description": body.get("description", ""),
            "region": body["region"],
            "ipv6": [{"range": f"fd71:1140:{vid % 0xFFFF:x}::/52"}],
            "created": now,
            "updated": now,
        }
        self.store.vpcs[vid] = vpc
        for subnet in body.get("subnets") or []:
            self._add_subnet(vpc, subnet)
        return _public(vpc)

    def _get_vpc(self, *, vid: str, **_: Any) -> JSON:
        return _public(self._vpc(vid))

    def _update_vpc(self, *, vid: str, body: Any, **_: Any) -> JSON:
        vpc = self._vpc(vid)
        body = self._require(body)
        if "region" in body and body["region"] != vpc["region"]:
            raise _bad("region cannot be changed", "region")
        for field in ("label", "description"):
            if field in body:
                vpc[field] = body[field]
        vpc["updated"] = _now()
        return _public(vpc)

    def _delete_vpc(self, *, vid: str, **_: Any) -> JSON:
        vpc = self._vpc(vid)
        for sid in [s for s, sub in self.store.subnets.items() if sub["_vpc"] == vpc["id"]]:
            if self._subnet_in_use(sid):
                raise _bad("The VPC has a subnet in use by a database")
        for sid in [s for s, sub in self.store.subnets.items() if sub["_vpc"] == vpc["id"]]:
            del self.store.subnets[sid]
        del self.store.vpcs[vpc["id"]]
        return {}

    def _subnet_in_use(self, sid: int) -> bool:
        return any(
            (db.get("private_network") or {}).get("subnet_id") == sid
            for db in self.store.databases.values()
        )

    def _subnet_json(self, subnet: JSON) -> JSON:
        out = _public(subnet)
        out["databases"] = [
            {"id": db["id"], "ipv4_range": subnet["ipv4"], "ipv6_ranges": []}
            for db in self.store.databases.values()
            if (db.get("private_network") or {}).get("subnet_id") == subnet["id"]
        ]
        return out

    def _add_subnet(self, vpc: JSON, body: Any) -> JSON:
        body = self._require(body, "label", "ipv4")
        try:
            net = ip_network(body["ipv4"], strict=True)
        except ValueError:
            raise _bad("ipv4 must be a network in CIDR notation", "ipv4") from None
        if not isinstance(net, IPv4Network) or not any(net.subnet_of(r) for r in _RFC1918):
            raise _bad("ipv4 must be an RFC 1918 range", "ipv4")
        if not 1 <= net.prefixlen <= 29:
            raise _bad("ipv4 prefix must be /1 to /29", "ipv4")
        siblings = [s for s in self.store.subnets.values() if s["_vpc"] == vpc["id"]]
        self._unique_label(siblings, body["label"], "Label must be unique in the VPC")
        if any(net.overlaps(ip_network(s["ipv4"])) for s in siblings):
            raise _bad("ipv4 overlaps another subnet of the VPC", "ipv4")
        if len(siblings) >= self.limits.subnets_per_vpc:
            raise _limit("subnet")
        sid = self.store.new_id()
        now = _now()
        subnet: JSON = {
            "label": body["label"],
            "id": sid,
            "ipv4": str(net),
            "ipv6": [],
            "linodes": [],
            "databases": [],
            "created": now,
            "updated": now,
            "_vpc": vpc["id"],
        }
        self.store.subnets[sid] = subnet
        return subnet

    def _subnet(self, vid: str, sid: str) -> JSON:
        self._vpc(vid)
        subnet = self.store.subnets.get(int(sid))
        if subnet is None or subnet["_vpc"] != int(vid):
            raise _not_found()
        return subnet

    def _list_subnets(self, *, vid: str, query: Any, headers: Any, **_: Any) -> JSON:
        self._vpc(vid)
        rows = [self._subnet_json(s) for s in self.store.subnets.values() if s["_vpc"] == int(vid)]
        return self._page(rows, query, headers)

    def _create_subnet(self, *, vid: str, body: Any, **_: Any) -> JSON:
        return self._subnet_json(self._add_subnet(self._vpc(vid), body))

    def _get_subnet(self, *, vid: str, sid: str, **_: Any) -> JSON:
        return self._subnet_json(self._subnet(vid, sid))

    def _update_subnet(self, *, vid: str, sid: str, body: Any, **_: Any) -> JSON:
        subnet = self._subnet(vid, sid)
        body = self._require(body)
        if "ipv4" in body and body["ipv4"] != subnet["ipv4"]:
            raise _bad("ipv4 cannot be changed", "ipv4")
        if "label" in body:
            subnet["label"] = body["label"]
        subnet["updated"] = _now()
        return self._subnet_json(subnet)

    def _delete_subnet(self, *, vid: str, sid: str, **_: Any) -> JSON:
        subnet = self._subnet(vid, sid)
        if self._subnet_in_use(subnet["id"]):
            raise _bad("The subnet is in use by a database")
        del self.store.subnets[subnet["id"]]
        return {}
