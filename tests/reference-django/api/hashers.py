import os

from django.contrib.auth.hashers import BCryptSHA256PasswordHasher


class ConfigurableBCryptSHA256PasswordHasher(BCryptSHA256PasswordHasher):
    """Django's BCryptSHA256 hasher with its cost from PEER_BCRYPT_ROUNDS.

    The algorithm name stays "bcrypt_sha256", so the stored hashes are exactly
    Django's own; only the cost differs (tests use 4 to stay fast, Django's
    default is 12)."""

    rounds = int(os.getenv("PEER_BCRYPT_ROUNDS", BCryptSHA256PasswordHasher.rounds))
