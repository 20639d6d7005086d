class SkipRetry(Exception):
    """A permanent failure: the message is failed at once, without retries.

    Declared in the ``throws=`` option of every actor, so Dramatiq's Retries middleware aborts the
    message instead of retrying it (the counterpart of asynq's ``SkipRetry``).
    """
