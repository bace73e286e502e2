"""Domain errors. Each has a stable `code` and an HTTP status; the web layer renders them in one
handler (problem details JSON for the API, a friendly page for HTML) and the CLI prints them."""

from __future__ import annotations


class DomainError(Exception):
    code = "error"
    status = 400
    title = "Request failed"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(DomainError):
    code = "not_found"
    status = 404
    title = "Not found"


class UnknownOrganization(NotFound):
    code = "unknown_organization"


class NotAMember(NotFound):
    """Answered as 404, like an unknown org, so membership of other orgs cannot be probed."""

    code = "not_a_member"


class UnknownUser(NotFound):
    code = "unknown_user"


class Forbidden(DomainError):
    code = "forbidden"
    status = 403
    title = "Not allowed"


class InvalidInput(DomainError):
    code = "invalid_input"
    status = 422
    title = "Invalid input"


class Conflict(DomainError):
    code = "conflict"
    status = 409
    title = "Conflict"


class LinkExpired(DomainError):
    """A genuine download link past its lifetime, followed by a member who may see the export:
    the page offers a new export of that org."""

    code = "link_expired"
    status = 410
    title = "Download link expired"

    def __init__(self, org_id: str, org_name: str) -> None:
        super().__init__(f"this download link has expired; start a new export of {org_name} to get a fresh file")
        self.org_id = org_id
        self.org_name = org_name


class ExportFailed(DomainError):
    """A run ended without a file. Raised inside the workflow, so it must stay importable by
    any process that reads a run's result."""

    code = "export_failed"
    status = 409
    title = "Export failed"


class NothingToExport(ExportFailed):
    """Permanent: the org had no invoices when the run started. Never retried."""

    code = "nothing_to_export"
