"""The model-signing keys of a local stack or demo: one Ed25519 pair per writer of ``models``.

The trainer signs what it publishes, the supervisor its decisions, and ``release`` is a
person's key (the demo's careless release, ``pooch models`` commands). Every service trusts the
three public keys. A stack keeps its keys in its state folder (mode 0600) because the events on
its topics stay signed with them across restarts; a demo makes fresh ones per run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from libs.common.signing import ModelEventSigner, new_keypair

WRITERS = ("trainer", "supervisor", "release")


@dataclass(frozen=True)
class LocalKeys:
    private: dict[str, str]  # writer -> base64 private key
    public: dict[str, str]  # writer -> base64 public key

    @classmethod
    def generate(cls) -> LocalKeys:
        pairs = {w: new_keypair() for w in WRITERS}
        return cls({w: p[0] for w, p in pairs.items()}, {w: p[1] for w, p in pairs.items()})

    @classmethod
    def in_folder(cls, folder: Path) -> LocalKeys:
        """The folder's keys, made on first use."""
        path = folder / "model-signing-keys.json"
        if path.exists():
            data = json.loads(path.read_text())
            return cls(data["private"], data["public"])
        keys = cls.generate()
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"private": keys.private, "public": keys.public}, f, indent=2)
        return keys

    def environment(self, service: str) -> dict[str, str]:
        """What a service's process needs: the trusted public keys, and its private key if it writes."""
        env = {"POOCH_MODELS_TRUSTED_KEYS": json.dumps([self.public[w] for w in WRITERS])}
        if service in self.private:
            env["POOCH_MODELS_SIGNING_KEY"] = self.private[service]
        return env

    def signer(self, writer: str = "release") -> ModelEventSigner:
        return ModelEventSigner(self.private[writer])
