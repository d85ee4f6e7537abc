"""A plugin file that cannot even be imported; discovery reports it and loads the others."""

from services.fine_tuning.data import NoSuchName  # noqa: F401 - the broken import is the point
