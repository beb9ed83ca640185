"""Server-rendered pages for managers, on-call engineers and postmortem authors."""
