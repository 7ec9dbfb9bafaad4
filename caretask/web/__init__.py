"""The task board's templates and static files (package data, read by caretask.http.board)."""
