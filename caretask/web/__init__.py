"""What caretask serves to browsers: server-rendered pages (Jinja2 templates) and their
static files."""
