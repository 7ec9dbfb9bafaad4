"""The service layer: what the HTTP edge and the command line call to read and write
tasks (tasks.TaskService, and the write pipeline's pure functions that an import runs)."""

from caretask.service.bundles import BundleService
from caretask.service.tasks import BodyLimits, Page, TaskService

__all__ = ["BodyLimits", "BundleService", "Page", "TaskService"]
