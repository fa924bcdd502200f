"""The consumer groups and consumers of a decK file (`ConsumerReader`, a part of deck_translator's
Translator): native consumers with their key-auth keys, consumer groups and acl groups, and the
ids Kong gives entities without one (`kong_id`)."""

from __future__ import annotations

import uuid
from typing import Any

from .deck_registry import Loc, Origin, known_fields


CONSUMER_FIELDS = ("username", "custom_id", "id", "tags", "keyauth_credentials", "groups", "plugins", "acls")
ACL_FIELDS = ("group", "id", "tags", "created_at")
CREDENTIAL_HINT = "only keyauth_credentials (key-auth) are supported"
CONSUMER_HINTS = {name: CREDENTIAL_HINT for name in (
    "basicauth_credentials", "jwt_secrets", "hmacauth_credentials", "oauth2_credentials", "mtls_auth_credentials")}
KEY_FIELDS = ("key", "id", "tags", "created_at")
GROUP_FIELDS = ("name", "id", "tags", "plugins")


_KONG_ENTITIES = uuid.UUID("fd02801f-0957-4a15-a55a-c8d9606f30b5")  # Kong's declarative config: ids of entities


def kong_id(entity: str, key: str) -> str:
    """The id Kong's declarative config gives an entity without one (a UUID v5 of its endpoint
    key, e.g. a consumer's username), so that X-Consumer-ID is the value Kong would send."""
    return str(uuid.uuid5(uuid.uuid5(_KONG_ENTITIES, entity), key))


class ConsumerReader:
    """The consumer groups and consumers of a decK file, with their keys and acl groups (a part
    of Translator, which holds what they become)."""

    def _read_group(self, group: Any, loc: Loc) -> None:
        if (group := self._mapping(group, loc)) is None:
            return
        known_fields(group, loc, GROUP_FIELDS, "consumer group", self.problems)
        name = group.get("name")
        if not isinstance(name, str) or not name:
            self.problems.add(loc, "a consumer group needs a name")
            return
        if name in self.groups:
            self.problems.add(loc, f"consumer group {name!r} is declared twice")
        self.groups.append(name)
        for i, plugin in enumerate(self._list(group, "plugins", loc)):
            self._add_plugin(plugin, (*loc, "plugins", i), {"consumer_group": name})

    def _read_consumer(self, consumer: Any, loc: Loc) -> None:
        if (consumer := self._mapping(consumer, loc)) is None:
            return
        known_fields(consumer, loc, CONSUMER_FIELDS, "consumer", self.problems, CONSUMER_HINTS)
        username = consumer.get("username")
        if not isinstance(username, str) or not username:
            self.problems.add(loc, "a consumer needs a username (native consumers are named by username)")
            return
        if username in self.consumers:
            self.problems.add(loc, f"consumer {username!r} is declared twice")
        native: dict[str, Any] = {"id": str(consumer["id"]) if consumer.get("id") is not None else kong_id(
            "consumers", username)}
        if consumer.get("custom_id") is not None:
            native["custom_id"] = str(consumer["custom_id"])
        keys = []
        for i, credential in enumerate(self._list(consumer, "keyauth_credentials", loc)):
            cloc = (*loc, "keyauth_credentials", i)
            if (credential := self._mapping(credential, cloc)) is None:
                continue
            known_fields(credential, cloc, KEY_FIELDS, "key-auth credential", self.problems,
                         {"ttl": "expiring keys are not supported; remove the key to revoke it"})
            if not isinstance(credential.get("key"), str) or not credential["key"]:
                self.problems.add(cloc, "a key-auth credential needs a key")
                continue
            self.origins[("consumers", username, "keys", len(keys))] = Origin((*cloc, "key"))
            # Kong gives a key without an id a random one; a stable one here, made from what is not secret.
            key_id = str(credential["id"]) if credential.get("id") is not None else kong_id(
                "keyauth_credentials", f"{native['id']}:{len(keys)}")
            keys.append({"key": self.secret(credential["key"]), "id": key_id})
        groups = []
        for i, group in enumerate(self._list(consumer, "groups", loc)):
            name = group.get("name") if isinstance(group, dict) else group
            if not isinstance(name, str) or not name:
                self.problems.add((*loc, "groups", i), "expected a consumer group name ({name: ...})")
            elif name not in self.groups:
                self.problems.add((*loc, "groups", i), f"consumer group {name!r} is not declared under consumer_groups")
            else:
                groups.append(name)
        if groups:
            native["groups"] = groups
        acls = []  # the acl plugin's groups (Kong's acls credentials)
        for i, acl in enumerate(self._list(consumer, "acls", loc)):
            aloc = (*loc, "acls", i)
            if (acl := self._mapping(acl, aloc)) is None:
                continue
            known_fields(acl, aloc, ACL_FIELDS, "acl credential", self.problems)
            if not isinstance(acl.get("group"), str) or not acl["group"]:
                self.problems.add(aloc, "an acl credential needs a group")
            elif acl["group"] not in acls:
                acls.append(acl["group"])
        if acls:
            native["acls"] = acls
        if keys:
            native["keys"] = keys
        self.consumers[username] = native
        self.origins[("consumers", username)] = Origin(loc)
        for value in (username, native.get("id"), native.get("custom_id")):
            if value is not None:
                self.consumer_ids.setdefault(value, username)
        for i, plugin in enumerate(self._list(consumer, "plugins", loc)):
            self._add_plugin(plugin, (*loc, "plugins", i), {"consumer": username})
