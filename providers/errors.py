"""Errors raised by the provider layer. Every failure says whether trying again can help."""


class ProviderError(Exception):
    """A call to an outside service failed.

    `permanent` failures (bad input, rejected by the model, bad credentials) must not be retried;
    transient ones (connection trouble, 429, 5xx, a lost instance) may be. `code` is a short
    machine-readable reason stored on the job.
    """

    def __init__(self, message: str, *, code: str = "provider_error", permanent: bool = False,
                 status: int | None = None, retry_after: float | None = None, transport: bool = False,
                 nothing_ran: bool = False):
        super().__init__(message)
        self.message = message
        self.code = code
        self.permanent = permanent
        self.status = status
        self.retry_after = retry_after
        # True when the call itself failed (connection, timeout, 429, 5xx), which says nothing about
        # the work the remote may be doing for an earlier call.
        self.transport = transport
        # True when the remote certainly did no work for this attempt (the GPU never took the job): the
        # attempt is handed back rather than counted, since the fault was the machine's, not the job's.
        self.nothing_ran = nothing_ran

    def __str__(self):
        return self.message


class TransientError(ProviderError):
    def __init__(self, message: str, *, code: str = "transient", **kwargs):
        super().__init__(message, code=code, permanent=False, **kwargs)


class PermanentError(ProviderError):
    def __init__(self, message: str, *, code: str = "permanent", **kwargs):
        super().__init__(message, code=code, permanent=True, **kwargs)


class ConfigurationError(PermanentError):
    def __init__(self, message: str, **kwargs):
        super().__init__(message, code="configuration", **kwargs)
