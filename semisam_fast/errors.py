"""One exception type for input the user can fix; the CLI prints it as one line and exits 2."""


class UserError(Exception):
    """Bad input (missing file, wrong model type, corrupt artefact...). Message is shown to the user as is."""
