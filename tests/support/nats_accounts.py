"""Decentralized NATS sign-in for tests: an operator, an account with JetStream and a user,
as nkeys and signed JWTs, and the user's .creds file (what `nsc` makes, made here)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import nkeys

UNLIMITED = -1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _keypair(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _public(keypair: nkeys.KeyPair) -> str:
    return keypair.public_key.decode()


def _jwt(issuer: nkeys.KeyPair, subject: str, name: str, nats: dict) -> str:
    """A JWT as nats-server reads it: ed25519-nkey signed by `issuer`."""
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    claims = {"iat": int(time.time()), "iss": _public(issuer), "name": name, "sub": subject, "nats": nats}
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()).decode()
    body = _b64(json.dumps(claims).encode())
    signature = _b64(issuer.sign(f"{header}.{body}".encode()))
    return f"{header}.{body}.{signature}"


@dataclass
class NatsAccounts:
    """One operator, its system account (JetStream needs one), one account with JetStream
    allowed and one user of it."""

    operator_jwt: str
    system_public_key: str
    system_jwt: str
    account_public_key: str
    account_jwt: str
    user_jwt: str
    user_seed: str

    @classmethod
    def make(cls, user_name: str = "forwarder") -> NatsAccounts:
        operator = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
        system = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
        account = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
        user = _keypair(nkeys.PREFIX_BYTE_USER)
        limits = {
            "subs": UNLIMITED,
            "data": UNLIMITED,
            "payload": UNLIMITED,
            "imports": UNLIMITED,
            "exports": UNLIMITED,
            "wildcards": True,
            "conn": UNLIMITED,
            "leaf": UNLIMITED,
            # JetStream for the account: streams and storage without limit.
            "mem_storage": UNLIMITED,
            "disk_storage": UNLIMITED,
            "streams": UNLIMITED,
            "consumer": UNLIMITED,
        }
        return cls(
            operator_jwt=_jwt(
                operator,
                _public(operator),
                "tests",
                {"system_account": _public(system), "type": "operator", "version": 2},
            ),
            system_public_key=_public(system),
            system_jwt=_jwt(operator, _public(system), "SYS", {"type": "account", "version": 2}),
            account_public_key=_public(account),
            account_jwt=_jwt(
                operator, _public(account), "webhooks", {"limits": limits, "type": "account", "version": 2}
            ),
            user_jwt=_jwt(
                account,
                _public(user),
                user_name,
                {
                    "pub": {},
                    "sub": {},
                    "subs": UNLIMITED,
                    "data": UNLIMITED,
                    "payload": UNLIMITED,
                    "type": "user",
                    "version": 2,
                },
            ),
            user_seed=user.seed.decode(),
        )

    def server_config(self) -> str:
        """The lines of nats-server's configuration that trust the operator and know the account."""
        return (
            f'operator: "{self.operator_jwt}"\n'
            f"system_account: {self.system_public_key}\n"
            "resolver: MEMORY\n"
            "resolver_preload: {\n"
            f'  {self.system_public_key}: "{self.system_jwt}"\n'
            f'  {self.account_public_key}: "{self.account_jwt}"\n'
            "}\n"
        )

    def write_creds(self, path: Path) -> Path:
        """The user's .creds file, as nsc writes it (0600)."""
        path.write_text(
            "-----BEGIN NATS USER JWT-----\n"
            f"{self.user_jwt}\n"
            "------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            "-----BEGIN USER NKEY SEED-----\n"
            f"{self.user_seed}\n"
            "------END USER NKEY SEED------\n"
        )
        path.chmod(0o600)
        return path
