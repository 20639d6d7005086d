"""The second factor, one module per factor (after allauth's ``mfa``) and the flows over them:

- ``crypto``: encryption at rest of TOTP secrets (Fernet, key from HKDF)
- ``totp``: the authenticator-app factor — secret, ``otpauth://`` URI, QR code, code checks
- ``recovery_codes``: ten single-use codes, stored hashed
- ``flows``: set-up, confirm, turn off, new codes, checking a proof, staff's reset, and the second
  step of a log-in (``mfa_token``)

A proof is a ``code`` today (TOTP or recovery code); passkeys add ``credential`` and a method to
``flows.methods`` without changing the callers (``users.reauth``, the log-in).
"""
