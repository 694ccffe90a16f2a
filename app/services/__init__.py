"""Use-cases of the web app: plain functions over the store, the file system and the settings.

Nothing here imports FastAPI; routes parse a request, call one service, and render the result.
"""
