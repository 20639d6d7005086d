"""The second factor, one module per factor (after allauth's ``mfa``) and the flows over them:

- ``crypto``: encryption at rest of TOTP secrets (Fernet, key from HKDF)
- ``totp``: the authenticator-app factor — secret, ``otpauth://`` URI, QR code, code checks
- ``passkeys``: WebAuthn through py_webauthn — the options, the registration and assertion checks,
  challenges spent once (``WebAuthnChallenge``), relying party from ``SITE_URL``
- ``recovery_codes``: ten single-use codes, stored hashed
- ``flows``: set-up, confirm, turn off, new codes, checking a proof, staff's reset, and the second
  step of a log-in (``mfa_token``)

A proof is a ``code`` (TOTP or recovery code) or a ``credential`` (a passkey's assertion);
``flows.methods`` names what a user can give (``totp``, ``passkey``, ``recovery_code``).
"""
