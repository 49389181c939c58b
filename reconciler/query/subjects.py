"""Who is asking: users, their groups and their tokens, from the instance configuration.

Tokens live in files or environment variables named by `reconciler.yaml`, never in git, and
are compared in constant time against every user's token (no early exit that would tell a
caller which user's token it almost guessed). Token values never appear in messages.
"""
from __future__ import annotations

import difflib
import hashlib
import hmac
import os
from typing import Mapping

from reconciler.core.access import Subject
from reconciler.core.diagnostics import UserError


class Directory:
    def __init__(self, users: Mapping[str, tuple[frozenset[str], str | None]] | None = None,
                 admin_groups: frozenset[str] = frozenset(), groups: frozenset[str] = frozenset()):
        # user -> (groups, token); digests let every comparison take the same time whatever the length
        self._users = dict(users or {})
        self._digests = [(name, hashlib.sha256(tok.encode()).digest())
                         for name, (_, tok) in sorted(self._users.items()) if tok]
        self.admin_groups = admin_groups
        self.groups = groups | frozenset(g for gs, _ in self._users.values() for g in gs)

    @classmethod
    def empty(cls) -> "Directory":
        return cls()

    @classmethod
    def from_config(cls, config, environ: Mapping[str, str] | None = None) -> "Directory":
        """Users, groups and tokens of a DaemonConfig (None: nobody is configured)."""
        if config is None:
            return cls.empty()
        from reconciler.daemon.config import read_user_token
        from reconciler.engine.access_plan import InstanceSubjects

        # who is who (users, groups, admins) is read once, for plans and for enforcement alike; only the
        # tokens are this module's own
        known = InstanceSubjects.from_config(config)
        env = os.environ if environ is None else environ
        users = {name: (frozenset(groups), read_user_token(name, config.users[name], env))
                 for name, groups in known.users}
        return cls(users, known.admin_groups, known.groups)

    def known_subjects(self) -> set[str]:
        return set(self._users) | set(self.groups)

    def user_groups(self) -> dict[str, frozenset[str]]:
        return {name: gs for name, (gs, _) in self._users.items()}

    def subject(self, user: str) -> Subject:
        """The subject `user` is; an unknown user is refused, naming the known ones."""
        if user not in self._users:
            known = sorted(self._users)
            close = difflib.get_close_matches(user, known, n=1)
            raise UserError(f"unknown user '{user}'" + (f"; did you mean '{close[0]}'?" if close else ""),
                            hint=(f"users in the instance config: {', '.join(known)}" if known else
                                  "no users are configured: pass --config reconciler.yaml (its `users:` "
                                  "section names them and their groups)"))
        groups = self._users[user][0]
        return Subject(user, groups, admin=not groups.isdisjoint(self.admin_groups))

    def by_token(self, token: str) -> Subject | None:
        """The user whose token this is, or None. Every stored token is compared, in constant time."""
        if not token:
            return None
        given = hashlib.sha256(token.encode()).digest()
        found = None
        for name, digest in self._digests:
            if hmac.compare_digest(given, digest) and found is None:
                found = name
        return self.subject(found) if found else None
