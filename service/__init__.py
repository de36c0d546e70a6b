"""The HTTP service: the job API under /v1, completion webhooks' submit side, the console.

`wickson-purge serve` runs `service.app.create_app` with uvicorn. It runs the same
producer and store code as the CLI: it never talks to the Wickson API itself.
"""
