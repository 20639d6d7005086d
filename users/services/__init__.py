"""Use cases of the users app, one module per flow (views and actors call these; they own
transactions and side effects):

- ``signup``: sign-up, the "account exists" notice, asking for a new link
- ``links``: verification links — making, checking and consuming them
- ``delivery``: the engine every email goes through — queue, claim, send, record, sweep
- ``emails``: building each kind of email from ``templates/emails/``
- ``accounts``: the account after sign-up (profile, address change, password change and reset)
- ``sessions``: log-in sessions and their tokens
- ``address_requests``: reset and resend requests — recorded for every address, looked up by the worker
"""
