"""The one error type the demos raise for problems a person can fix."""


class HubError(Exception):
    """Bad input or an unavailable model; the message is shown to the person as it is."""


class ModelUnavailableError(HubError):
    """A model could not be loaded (offline and not cached, missing folder, corrupt files)."""
